"""The train labels a finished WGHT/SOFT/BOTH run distrusts (get-results.py --suspects).

Trust of train image i with given label y (the lower, the more suspect):
    WGHT  w_i                  the learned loss weight (1 at the start)
    SOFT  q_i[y]               the soft label's probability of the given label
    BOTH  w_i * q_i[y]         both: the weight of the given label in the training loss
The suggested label is the soft label's top class where it differs from y, else the
trained network's prediction where that differs from y, else y itself (nothing better
known). The learned tables always come from the last_ checkpoint (the end of training: a
best_ checkpoint may predate the hyper steps, which start at --hyper-start); the network
from --checkpoint (best_ by default: with noisy labels the best epoch is often an early
one, before the network memorised the wrong labels). Where the truth is known (noise injected with -nr), the top-K is scored against
the truly flipped labels, beside the self-confidence baseline of label-error detection:
rank by the trained network's probability of the given label.

The order (--rank-by, lowest score first; every score is a CSV column):
    self-confidence      p[y], the network's probability of the given label (the default;
                         bench/label_errors.py measures it against confident learning)
    margin               p[y] - max over the other classes of p
    trust                AutoDO's trust (above)
    trust-x-confidence   trust * p[y]
"""
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from custom_models.hyper_models import LossModel
from custom_runs import run_files
from custom_runs.checkpoints import load_network
from custom_runs.metrics import roc_auc

LEARNING_LOSS_MODELS = ("WGHT", "SOFT", "BOTH")
GRID_MAX_IMAGES = 100
COLUMNS = ("rank", "index", "path", "given", "suggested", "suggested_by", "trust", "weight",
           "soft_given", "soft_suggested", "predicted", "predicted_prob", "network_given_prob",
           "network_margin", "trust_x_confidence")
# --rank-by: the CSV column each ranking sorts by (lowest first) and its summary-line label
RANKINGS = {"self-confidence": ("network_given_prob", "network confidence"),
            "margin": ("network_margin", "network margin"),
            "trust": ("trust", "AutoDO trust"),
            "trust-x-confidence": ("trust_x_confidence", "trust x confidence")}
DEFAULT_RANK_BY = "self-confidence"


class SuspectsError(RuntimeError):
    """The report cannot be made (wrong configuration, missing files); the message says why."""


@dataclass
class Suspects:
    rows: List[Dict]  # one per train image, most suspect first
    top_k: int
    truth_known: bool
    scores: Dict[str, Dict[str, Optional[float]]]  # per ranking: precision, recall (top-K), auroc
    noisy_labels: int
    rank_by: str = DEFAULT_RANK_BY
    csv_path: Optional[Path] = None
    figure_paths: tuple = ()

    def summary_lines(self) -> List[str]:
        lines = [f"{len(self.rows)} train images ranked by {self.rank_by} (--rank-by); "
                 f"top {self.top_k} written"]
        if not self.truth_known:
            return lines
        def text(value):
            return "-" if value is None else f"{value:.3f}"
        lines.append(f"true label flips: {self.noisy_labels} of {len(self.rows)} "
                     f"({self.noisy_labels / max(1, len(self.rows)):.1%})")
        width = max(len(label) for _, label in RANKINGS.values()) + 2
        for name, (_, label) in RANKINGS.items():
            s = self.scores[name]
            lines.append(f"{label + ':':<{width}}precision@{self.top_k} {text(s['precision'])}, "
                         f"recall@{self.top_k} {text(s['recall'])}, AUROC {text(s['auroc'])}"
                         + ("  (the CSV's order)" if name == self.rank_by else ""))
        return lines


@torch.no_grad()
def network_probabilities(checkpoint: dict, model: str, settings, data, indices: torch.Tensor,
                          device: torch.device, batch_size: int = 500, workers: int = 0,
                          path: Path = Path("checkpoint"), text_wide_block: bool = False) -> torch.Tensor:
    """softmax of the trained network on the plain (eval-transformed) train images `indices`
    (text_wide_block: the run had `--paper-text wrn-block`)."""
    from custom_transforms.base import normalize
    encoder, decoder = load_network(checkpoint, model, settings, device, path, text_wide_block)
    if hasattr(data, "train_images"):
        batches = (data.train_images[indices[start:start + batch_size]]
                   for start in range(0, len(indices), batch_size))
    else:
        subset = torch.utils.data.Subset(data.train_plain, indices.tolist())
        batches = (images for images, _, _ in torch.utils.data.DataLoader(
            subset, batch_size=batch_size, num_workers=workers))
    probabilities = [F.softmax(decoder(encoder(normalize(images.to(device), settings))).float(), -1).cpu()
                     for images in batches]
    return torch.cat(probabilities)


def precision_recall_at(order: torch.Tensor, positive: torch.Tensor, k: int):
    hits = int(positive[order[:k]].sum())
    total = int(positive.sum())
    return hits / k, (hits / total if total else None)


def ranking_scores(given: torch.Tensor, trust: torch.Tensor, network: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Every --rank-by score of the train images (lower = more suspect)."""
    rows = torch.arange(len(given))
    network_given = network[rows, given]
    others = network.clone()
    others[rows, given] = -math.inf
    return {"self-confidence": network_given, "margin": network_given - others.max(-1).values,
            "trust": trust, "trust-x-confidence": trust * network_given}


def rank_suspects(given: torch.Tensor, weights: torch.Tensor, soft: torch.Tensor,
                  network: torch.Tensor, los_model: str,
                  rank_by: str = DEFAULT_RANK_BY) -> Dict[str, torch.Tensor]:
    """Trust, scores, order (most suspect first, by `rank_by`) and suggestions (module doc)."""
    if rank_by not in RANKINGS:
        raise SuspectsError(f"--rank-by {rank_by}: choose one of {', '.join(RANKINGS)}")
    rows = torch.arange(len(given))
    soft_given = soft[rows, given]
    trust = {"WGHT": weights, "SOFT": soft_given, "BOTH": weights * soft_given}[los_model]
    scores = ranking_scores(given, trust, network)
    order = torch.argsort(scores[rank_by], stable=True)
    soft_top, predicted = soft.argmax(-1), network.argmax(-1)
    from_soft = (soft_top != given) if los_model != "WGHT" else torch.zeros_like(given, dtype=torch.bool)
    from_network = ~from_soft & (predicted != given)
    suggested = torch.where(from_soft, soft_top, torch.where(from_network, predicted, given))
    return {"trust": trust, "scores": scores, "order": order, "suggested": suggested,
            "from_soft": from_soft, "from_network": from_network, "soft_given": soft_given,
            "predicted": predicted}


def build_report(data, settings, split, tables: dict, checkpoint: dict, los_model: str, model: str,
                 top_k: int, truth_known: bool, device: torch.device, batch_size: int = 500,
                 checkpoint_path: Path = Path("checkpoint"), text_wide_block: bool = False,
                 tables_path: Path = Path("tables"), rank_by: str = DEFAULT_RANK_BY) -> Suspects:
    """`tables`: the reweight_state_dict of the learned tables, read from `tables_path`;
    `checkpoint`: the network's, read from `checkpoint_path` (errors name the file at fault)."""
    if los_model not in LEARNING_LOSS_MODELS:
        raise SuspectsError(f"--suspects needs a run that learned loss weights or soft labels "
                            f"(--los-model WGHT, SOFT or BOTH), not --los-model {los_model}")
    _, train, targets = (torch.as_tensor(part).long() for part in split)
    reweight = tables
    if len(reweight.get("weight_logits", ())) != len(targets):
        raise run_files.UnreadableFile(f"{tables_path}: its tables do not match the "
                                       f"{len(targets)} images of the split file")
    if len(targets) != len(data.train_targets):
        raise SuspectsError(f"the run's split file covers {len(targets)} images, the data now has "
                            f"{len(data.train_targets)}: the folder changed since the run; "
                            f"train again (--force) to rank the new images")
    given = targets[train]
    weights = LossModel.weights(reweight["weight_logits"].float()[train]).cpu()
    soft = LossModel.soft_labels(reweight["soft_logits"].float()[train]).cpu()
    network = network_probabilities(checkpoint, model, settings, data, train, device, batch_size,
                                    path=checkpoint_path, text_wide_block=text_wide_block)
    ranked = rank_suspects(given, weights, soft, network, los_model, rank_by)
    scores_of = ranked["scores"]
    flipped = given != data.train_targets[train]
    names = settings.classes or tuple(str(c) for c in range(settings.num_classes))
    paths = getattr(data, "train_paths", None)
    rows = []
    for rank, position in enumerate(ranked["order"].tolist(), start=1):
        index, label, suggestion = int(train[position]), int(given[position]), int(ranked["suggested"][position])
        predicted = int(ranked["predicted"][position])
        row = {"rank": rank, "index": index, "path": paths[index] if paths else "",
               "given": names[label], "suggested": names[suggestion],
               "suggested_by": "soft label" if ranked["from_soft"][position] else
               "network" if ranked["from_network"][position] else "",
               "trust": float(ranked["trust"][position]), "weight": float(weights[position]),
               "soft_given": float(ranked["soft_given"][position]),
               "soft_suggested": float(soft[position, suggestion]),
               "predicted": names[predicted], "predicted_prob": float(network[position, predicted]),
               "network_given_prob": float(scores_of["self-confidence"][position]),
               "network_margin": float(scores_of["margin"][position]),
               "trust_x_confidence": float(scores_of["trust-x-confidence"][position]),
               "given_label": label, "suggested_label": suggestion}
        if truth_known:
            true = int(data.train_targets[index])
            row.update({"true": names[true], "mislabelled": int(true != label)})
        rows.append(row)
    top_k = max(1, min(top_k, len(rows)))
    scores = {}
    if truth_known:
        for name, score in scores_of.items():
            order = ranked["order"] if name == rank_by else torch.argsort(score, stable=True)
            precision, recall = precision_recall_at(order, flipped, top_k)
            scores[name] = {"precision": precision, "recall": recall,
                            "auroc": roc_auc(-score, flipped)}
    return Suspects(rows, top_k, truth_known, scores, int(flipped.sum()), rank_by)


def write_csv(report: Suspects, path: Path) -> None:
    columns = COLUMNS + (("true", "mislabelled") if report.truth_known else ())
    # surrogateescape: a file name that is not UTF-8 is written as the bytes it has on disk
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in report.rows:
            writer.writerow({key: f"{value:.6g}" if isinstance(value, float) else value
                             for key, value in row.items()})


def train_image(data, index: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 of official train image `index`, for the grid."""
    if hasattr(data, "train_images"):
        array = data.train_images[index].numpy()
        return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    from PIL import Image
    with Image.open(data.train_paths[index]) as image:
        return np.asarray(image.convert("RGB"))


def plot_grid(report: Suspects, data, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report.rows[:min(report.top_k, GRID_MAX_IMAGES)]
    columns = min(10, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(1.6 * columns, 1.9 * lines + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        image = train_image(data, row["index"])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        wrong = row.get("mislabelled")
        colour = "black" if wrong is None else ("tab:red" if wrong else "tab:green")
        score = row[RANKINGS[report.rank_by][0]]
        ax.set_title(f"{row['given']} → {row['suggested']}\n{score:.2f}", fontsize=7, color=colour)
    if report.truth_known:
        title += "\nred: truly mislabelled (injected noise), green: label was right"
    fig.suptitle(title, fontsize=9)
    return fig


def suspects_report(data_root, settings, run_folder: str, config, checkpoint_kind: str,
                    top_k: int, out_dir, device: torch.device,
                    rank_by: str = DEFAULT_RANK_BY) -> Suspects:
    """Ranks, writes suspects_{run_name}.csv/.png/.pdf (beside the run, or in out_dir)."""
    from custom_datasets.sources import load_data
    from custom_reports.drawing import figure_paths, write_figure
    if config.los_model not in LEARNING_LOSS_MODELS:
        raise SuspectsError(f"--suspects needs a run that learned loss weights or soft labels "
                            f"(--los-model WGHT, SOFT or BOTH), not --los-model {config.los_model}")
    folder = run_files.run_dir(data_root, settings.name, run_folder)
    checkpoint_path = run_files.checkpoint_path(folder, config.name, checkpoint_kind)
    last_path = run_files.last_checkpoint_path(folder, config.name)
    split_path = folder / run_files.split_file_name(config.imbalance_ratio, config.subsample_ratio,
                                                    config.noise_ratio)
    for needed in (last_path, split_path):
        if not needed.is_file():
            raise SuspectsError(f"missing {needed}; train the configuration first with "
                                f"implicit-augment.py -r {run_folder} and the same options")
    if not checkpoint_path.is_file():
        raise SuspectsError(f"missing {checkpoint_path}; "
                            f"{run_files.missing_checkpoint_advice(checkpoint_kind)}")
    out = run_files.suspects_base_path(Path(out_dir) if out_dir else folder, config.name,
                                       checkpoint_kind)
    data = load_data(settings, data_root)
    split = run_files.load_torch(split_path)
    checkpoint = run_files.load_torch(checkpoint_path)
    tables = run_files.load_torch(last_path).get("reweight_state_dict", {})
    report = build_report(data, settings, split, tables, checkpoint, config.los_model, config.model,
                          top_k, config.noise_ratio > 0, device, checkpoint_path=checkpoint_path,
                          text_wide_block="wrn-block" in config.paper_text, tables_path=last_path,
                          rank_by=rank_by)
    report.csv_path = out.parent / f"{out.name}.csv"
    report.figure_paths = tuple(figure_paths(out))
    title = (f"Top {min(report.top_k, GRID_MAX_IMAGES)} suspected labels (given → suggested, "
             f"{rank_by}): {settings.name} {run_folder} {config.los_model}")
    # drawn first: it reads images, and an error inside the block below is taken for a write's
    grid = plot_grid(report, data, title)
    # the CSV and its grid together or not at all (a disk that fills up between them)
    with run_files.atomic_paths((report.csv_path,) + report.figure_paths) as (csv_tmp, *figure_tmps):
        write_csv(report, csv_tmp)
        write_figure(grid, figure_tmps)
    return report
