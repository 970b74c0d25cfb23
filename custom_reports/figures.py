"""Figures of visualize-density.py (file names in custom_runs/run_files.py).

The paper's qualitative figure: t-SNE of the test-set features (encoder
output) of several configurations of one run side by side, coloured by class,
misclassified points drawn larger; or their row-normalised confusion matrices.

Beyond the paper: densities of what AutoDO learned, measured against the truth
the split file lets us know (which labels were flipped, which classes were made
rare): loss weights of clean vs noisy-labelled samples, the soft labels'
confidence in the official vs the given label, and the learned augmentation
probability and magnitude of the lower vs the upper classes.

The test features, their t-SNE and its cache are custom_reports/embeddings.py.
"""
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from custom_runs import run_files  # noqa: E402
from custom_runs.checkpoints import load_network  # noqa: E402
from custom_runs.identity import Configuration  # noqa: E402
from custom_reports.embeddings import (Embedding, FeatureSource, checkpoint_embedding,  # noqa: E402
                                       extract_test_features, iterate_test_images)
from custom_reports.learned import GroupedValues, learned_quantities  # noqa: E402

FIGURE_FORMATS = ("png", "pdf")
DPI = 150


# ----------------------------------------------------------------------------- file names
# Files of this module only; candidates for run_files, the one module that knows file names.

def figure_paths(base: Path) -> List[Path]:
    """base.png and base.pdf (not with_suffix: names contain "1.0")."""
    return [base.parent / f"{base.name}.{fmt}" for fmt in FIGURE_FORMATS]


def write_figure(fig, paths) -> None:
    """`fig` into figure_paths' files or their temporaries; the format is explicit because
    a temporary name ends in .tmp, from which matplotlib could not guess it."""
    try:
        for fmt, path in zip(FIGURE_FORMATS, paths):
            fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)


def save_figure(fig, base: Path) -> List[Path]:
    """Writes base.png and base.pdf atomically, both or neither."""
    paths = figure_paths(base)
    with run_files.atomic_paths(paths) as temporaries:
        write_figure(fig, temporaries)
    return paths


# ----------------------------------------------------------------------------- drawing helpers

def class_colours(num_classes: int) -> np.ndarray:
    """(C, 4) RGBA: qualitative palettes up to 20 classes, a continuous map beyond."""
    if num_classes <= 10:
        return plt.get_cmap("tab10")(np.arange(num_classes))
    if num_classes <= 20:
        return plt.get_cmap("tab20")(np.arange(num_classes))
    return plt.get_cmap("turbo")(np.linspace(0, 1, num_classes))


def class_name(label: int, upper_classes, imbalanced: bool) -> str:
    return f"{label} (rare)" if imbalanced and label in upper_classes else str(label)


@dataclass
class Panel:
    label: str  # paper name of the configuration (Baseline, FAA, A_W_S, ...)
    embedding: Embedding


def plot_tsne(panels: Sequence[Panel], num_classes: int, upper_classes, imbalanced: bool,
              title: str):
    colours = class_colours(num_classes)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 5.2),
                             layout="constrained", squeeze=False)
    for ax, panel in zip(axes[0], panels):
        emb = panel.embedding
        labels, predictions = emb.labels[emb.indices], emb.predictions[emb.indices]
        wrong = predictions != labels
        ax.scatter(*emb.points[~wrong].T, c=colours[labels[~wrong]], s=5, alpha=0.6, linewidths=0,
                   rasterized=True)
        # misclassified points on top, larger, outlined, so that they stay visible in dense clusters
        ax.scatter(*emb.points[wrong].T, c=colours[labels[wrong]], s=28, edgecolors="black",
                   linewidths=0.6, rasterized=True)
        ax.set_title(f"{panel.label}: test error {emb.error:.2f} %\n"
                     f"{int(wrong.sum())} of {len(wrong)} shown points misclassified", fontsize=10)
        ax.set_xlabel("t-SNE dimension 1")
        ax.set_ylabel("t-SNE dimension 2")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = []
    if num_classes <= 20:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[c], markersize=6,
                              label=class_name(c, upper_classes, imbalanced))
                   for c in range(num_classes)]
    else:
        mappable = plt.cm.ScalarMappable(cmap="turbo", norm=plt.Normalize(0, num_classes - 1))
        fig.colorbar(mappable, ax=axes[0].tolist(), label="true class", shrink=0.8)
    # size keys in black and white, so that they are not read as one more class colour
    handles += [plt.Line2D([], [], marker="o", linestyle="", color="black", markersize=3,
                           label="correctly classified"),
                plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markersize=7,
                           markeredgecolor="black", label="misclassified")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 12),
               title="true class" if num_classes <= 20 else None, fontsize=9, frameon=False)
    fig.suptitle(title)
    return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised: entry (t, p) is the fraction of class t's test images predicted as p
    (a row of zeros for a class with no test images)."""
    if len(labels) == 0:  # sklearn raises on no samples
        return np.zeros((num_classes, num_classes))
    from sklearn import metrics
    counts = metrics.confusion_matrix(labels, predictions, labels=np.arange(num_classes)).astype(np.float64)
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_confusion(panels: Sequence[Panel], num_classes: int, imbalanced: bool, title: str):
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.2, 4.8),
                             layout="constrained", squeeze=False)
    ticks = np.arange(num_classes) if num_classes <= 20 else np.arange(0, num_classes, num_classes // 10)
    image = None
    for index, (ax, panel) in enumerate(zip(axes[0], panels)):
        emb = panel.embedding
        matrix = confusion_matrix(emb.labels, emb.predictions, num_classes)
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        if num_classes <= 12:
            for true in range(num_classes):
                for predicted in range(num_classes):
                    value = matrix[true, predicted]
                    if value >= 0.005:
                        text = f"{value:.2f}"
                        ax.text(predicted, true, "1" if text == "1.00" else text[1:],  # ".93"
                                ha="center", va="center", fontsize=7,
                                color="white" if value > 0.6 else "black")
        if imbalanced:  # the classes imbalance made rare start at C/2
            for line in (ax.axhline, ax.axvline):
                line(num_classes // 2 - 0.5, color="tab:red", linewidth=1, linestyle="--")
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("predicted class")
        if index == 0:
            ax.set_ylabel("true class")
        ax.set_title(f"{panel.label}: test error {emb.error:.2f} %", fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="fraction of the true class", shrink=0.85)
    if imbalanced:
        title += (f"\nrare classes {num_classes // 2}-{num_classes - 1} below / right of the "
                  f"dashed red lines")
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- what AutoDO learned

def draw_density(ax, quantity: GroupedValues) -> None:
    """Histogram (density) of each group, with a Gaussian KDE line where the values spread over
    several bins (a KDE of a near-constant group is a spike that flattens everything else)."""
    from scipy.stats import gaussian_kde
    present = [values for values in quantity.groups.values() if len(values)]
    everything = np.concatenate(present) if present else np.zeros(1)
    bins = np.histogram_bin_edges(everything, bins=40)
    grid = np.linspace(bins[0], bins[-1], 300)
    for (name, values), colour in zip(quantity.groups.items(), quantity.colours):
        if not len(values):
            continue
        label = f"{name} (n={len(values)}, mean {np.mean(values):.3f})"
        ax.hist(values, bins=bins, density=True, alpha=0.35, color=colour, label=label)
        if len(values) > 2 and np.std(values) > 2 * (bins[1] - bins[0]):
            try:
                ax.plot(grid, gaussian_kde(values)(grid), color=colour, linewidth=1.5)
            except np.linalg.LinAlgError:
                pass  # (nearly) constant values: the histogram says it all
    if quantity.initial is not None:
        ax.axvline(quantity.initial, color="black", linestyle=":", linewidth=1,
                   label=f"initial value {quantity.initial:g}")
    title = quantity.title
    if quantity.auroc is not None:
        names = list(quantity.groups)
        title += f"\nAUROC {quantity.auroc:.3f} (P[{names[0].split(' (')[0]} > {names[1].split(' (')[0]}])"
    if "correction_rate" in quantity.extra:
        title += f"; argmax = official label: {100 * quantity.extra['correction_rate']:.1f} %"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(quantity.xlabel)
    ax.set_ylabel("density")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # headroom, so that the legend covers no bar
    ax.legend(fontsize=7, loc="upper right")


def plot_learned(quantities: Sequence[GroupedValues], shared: Optional[Dict[str, Tuple[float, float]]],
                 title: str):
    panels = len(quantities) + (shared is not None)
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 4.0 * rows),
                             layout="constrained", squeeze=False)
    flat = axes.reshape(-1)
    for ax, quantity in zip(flat, quantities):
        draw_density(ax, quantity)
    if shared is not None:
        ax = flat[len(quantities)]
        names = list(shared)
        positions = np.arange(len(names))
        ax.bar(positions - 0.2, [shared[n][0] for n in names], 0.4, label="probability")
        ax.bar(positions + 0.2, [shared[n][1] for n in names], 0.4, label="magnitude")
        ax.set_xticks(positions, [n.replace("_", "-") for n in names], rotation=30, ha="right")
        from custom_models.hyper_models import INITIAL_MAGNITUDE, INITIAL_PROBABILITY
        ax.axhline(INITIAL_PROBABILITY, color="tab:blue", linestyle=":", linewidth=1,
                   label=f"initial probability {INITIAL_PROBABILITY:g}")
        ax.axhline(INITIAL_MAGNITUDE, color="tab:orange", linestyle=":", linewidth=1,
                   label=f"initial magnitude {INITIAL_MAGNITUDE:g}")
        ax.set_ylim(0, 1)
        ax.set_ylabel("sigmoid(logit)")
        ax.set_title("Shared augmentation (SHA)", fontsize=9)
        ax.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- one run's figures

class FigureError(RuntimeError):
    """A figure cannot be drawn (missing checkpoint or split file); the message says what to do."""


class RunFigures:
    """The figures of several configurations of one run folder, written to `out_dir`."""

    def __init__(self, data_root, settings, run_folder: str, configs: Dict[str, Configuration],
                 checkpoint: str = "valid", out_dir="./visualizations", device=torch.device("cpu"),
                 batch_size: int = 500, workers: int = 4, log: Callable[[str], None] = print):
        self.data_root, self.settings, self.run_folder = data_root, settings, run_folder
        self.configs, self.out_dir, self.device = configs, Path(out_dir), device
        self.batch_size, self.workers, self.log = batch_size, workers, log
        self.folder = run_files.run_dir(data_root, settings.name, run_folder)
        self.checkpoint_kind = checkpoint
        self.checkpoints = {label: run_files.checkpoint_path(self.folder, config.name, checkpoint)
                            for label, config in configs.items()}
        # the learned tables always come from last_ (the latest hyper step; best_ may predate
        # it), as in get-results.py --suspects: one run shows the same tables in both
        self.tables = {label: run_files.last_checkpoint_path(self.folder, config.name)
                       for label, config in configs.items()}
        self._data = None
        first = next(iter(configs.values()))
        self.setting = first  # every configuration of a figure shares IR, SR, NR and the network
        # --policy-variant: the configurations with a fixed policy carry it (none without one)
        self.policy_variant = next((c.policy_variant for c in configs.values() if c.policy_variant), ())

    def check_out_dir(self, with_cache: bool = True) -> None:
        """Fails before any work, and before anything is written, if --out (or its cache
        folder) cannot be created or written: a file in the way, no permission, read-only."""
        cache = run_files.embedding_cache_path(self.out_dir, self.settings.name, self.run_folder,
                                               next(iter(self.checkpoints.values()))).parent
        for folder in [self.out_dir] + ([cache] if with_cache else []):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as error:
                reason = "a file, not a folder" if folder.is_file() else error.strerror or error
                where = "" if folder == self.out_dir else f" (its {folder.name}/ folder)"
                raise FigureError(f"--out {self.out_dir}{where}: cannot write files there "
                                  f"({reason}); choose another folder with --out") from None

    def check_checkpoints(self, networks: bool = True, tables: bool = False) -> None:
        """The checkpoints the figures asked for exist: the networks' (--checkpoint) for
        t-SNE and confusion matrices, last_ of the learning configurations for densities."""
        needed = list(self.checkpoints.values()) if networks else []
        if tables:
            needed += [self.tables[label] for label in self.learning_configs()]
        missing = [str(path) for path in dict.fromkeys(needed) if not path.is_file()]
        predating = [str(path) for label, path in self.checkpoints.items() if networks
                     and not path.is_file() and self.tables[label].is_file()]
        if predating and self.checkpoint_kind == "valid":  # trained, before validation selection
            raise FigureError(f"missing {', '.join(predating)}; "
                              f"{run_files.missing_checkpoint_advice(self.checkpoint_kind)}")
        if missing:
            raise FigureError(f"missing checkpoint{'s' * (len(missing) > 1)}: {', '.join(missing)}; "
                              f"train {'them' if len(missing) > 1 else 'it'} with implicit-augment.py "
                              f"-r {self.run_folder} (same -ir/-sr/-nr/--model) or leave "
                              f"{'them' if len(missing) > 1 else 'it'} out of --configs")

    @property
    def data(self):
        if self._data is None:
            from custom_datasets.sources import load_data
            self._data = load_data(self.settings, self.data_root)
        return self._data

    @property
    def imbalanced(self) -> bool:
        return self.setting.imbalance_ratio > 1

    def title(self, what: str) -> str:
        c = self.setting
        sr = f", SR {run_files.number_text(c.subsample_ratio)}" if c.subsample_ratio != 1 else ""
        ablation = f", {c.ablation}" if c.ablation else ""
        text = f", text: {', '.join(c.paper_text)}" if c.paper_text else ""
        text += f", policy: {', '.join(self.policy_variant)}" if self.policy_variant else ""
        return (f"{what}: {self.settings.name} {self.run_folder}, IR {c.imbalance_ratio}, "
                f"NR {run_files.number_text(c.noise_ratio)}{sr}, {c.model}{ablation}{text}")

    def base_path(self, kind: str, labels: Sequence[str], of_networks: bool = True) -> Path:
        c = self.setting
        model = f"{c.ablation}_{c.model}" if c.ablation else c.model
        # figures of bestvalid_ and last_ networks must not overwrite those of best_ ones
        # (densities are always of last_'s tables)
        suffix = run_files.CHECKPOINT_SUFFIXES[self.checkpoint_kind].lstrip("_")
        labels = list(labels) + ([suffix] if suffix and of_networks else [])
        # nor those of runs that follow the paper's text the released path's
        labels += [f"text_{'-'.join(c.paper_text)}"] if c.paper_text else []
        labels += [f"policy_{'-'.join(self.policy_variant)}"] if self.policy_variant else []
        return run_files.figure_base_path(self.out_dir, kind, self.settings.name, model, self.run_folder,
                                c.imbalance_ratio, c.subsample_ratio, c.noise_ratio, labels)

    def _feature_source(self, path: Path) -> FeatureSource:
        def compute():
            checkpoint = run_files.load_torch(path)
            encoder, decoder = load_network(checkpoint, self.setting.model, self.settings, self.device, path,
                                            "wrn-block" in self.setting.paper_text)
            batches = iterate_test_images(self.data, self.batch_size, self.workers)
            features, predictions = extract_test_features(encoder, decoder, batches, self.settings,
                                                          self.device)
            return features, self.data.test_targets.numpy(), predictions
        return compute

    def embeddings(self, with_tsne: bool, perplexity: float, max_points: int, seed: int,
                   progress: bool = True, threads: int = 0) -> List[Panel]:
        from tqdm import tqdm
        panels = []
        # the bar is for terminals; in a log file the per-checkpoint lines are the progress
        labels = tqdm(list(self.checkpoints), desc="t-SNE" if with_tsne else "predictions",
                      unit="config", disable=not (progress and sys.stderr.isatty()))
        for label in labels:
            path = self.checkpoints[label]
            cache = run_files.embedding_cache_path(self.out_dir, self.settings.name, self.run_folder, path)
            embedding = checkpoint_embedding(path, cache, self._feature_source(path), with_tsne,
                                             perplexity, max_points, seed, log=tqdm.write,
                                             threads=threads)
            panels.append(Panel(label, embedding))
        return panels

    def tsne_figure(self, perplexity: float = 30.0, max_points: int = 5000, seed: int = 0,
                    progress: bool = True, threads: int = 0) -> List[Path]:
        panels = self.embeddings(True, perplexity, max_points, seed, progress, threads)
        fig = plot_tsne(panels, self.settings.num_classes, self.settings.upper_classes,
                        self.imbalanced, self.title("t-SNE of test-set features"))
        return save_figure(fig, self.base_path("tsne", list(self.checkpoints)))

    def confusion_figure(self, progress: bool = True) -> List[Path]:
        panels = self.embeddings(False, 0, 0, 0, progress)
        fig = plot_confusion(panels, self.settings.num_classes, self.imbalanced,
                             self.title("Row-normalised confusion matrices"))
        return save_figure(fig, self.base_path("confusion", list(self.checkpoints)))

    def learning_configs(self) -> List[str]:
        return [label for label, c in self.configs.items()
                if c.los_model != "NONE" or c.aug_model in ("SHA", "SEP")]

    def load_split(self):
        """(valid, train, stored targets) of the run, checked against the official train labels."""
        c = self.setting
        path = self.folder / run_files.split_file_name(c.imbalance_ratio, c.subsample_ratio, c.noise_ratio)
        if not path.is_file():
            raise FigureError(f"missing split file {path}; it is written by implicit-augment.py "
                              f"-r {self.run_folder} with the same -ir/-sr/-nr")
        split = run_files.load_torch(path)
        official = self.data.train_targets
        if not isinstance(split, (tuple, list)) or len(split) != 3 or len(split[2]) != len(official):
            raise run_files.UnreadableFile(f"{path} is not a split file of {self.settings.name} "
                                           f"({len(official)} train images)")
        return split

    def density_figures(self) -> Tuple[List[Path], Dict[str, List[GroupedValues]]]:
        """One figure per configuration that learns hyperparameters; also returns the numbers."""
        learning = self.learning_configs()
        if not learning:
            raise FigureError(f"none of --configs {' '.join(self.configs)} learns hyperparameters; "
                              f"add A_W or A_W_S (or A, A_SHA) to --configs")
        split = self.load_split()
        official = self.data.train_targets.numpy()
        written, numbers = [], {}
        for label in learning:
            path, config = self.tables[label], self.configs[label]
            checkpoint = run_files.load_torch(path)
            weights = checkpoint.get("reweight_state_dict", {}).get("weight_logits")
            if weights is not None and len(weights) != len(official):
                raise run_files.UnreadableFile(f"{path}: its tables have {len(weights)} rows, "
                                               f"{self.settings.name} has {len(official)} train images")
            quantities, shared = learned_quantities(checkpoint, config.los_model, config.aug_model,
                                                    split, official, self.settings.upper_classes,
                                                    self.imbalanced)
            if not quantities and shared is None:
                self.log(f"{label}: nothing learned to draw at this setting (no noisy labels?)")
                continue
            for quantity in quantities:
                means = ", ".join(f"{name} {mean:.3f}" for name, mean in quantity.means().items())
                auroc = "" if quantity.auroc is None else f", AUROC {quantity.auroc:.3f}"
                self.log(f"{label}: {quantity.title}: mean {means}{auroc}")
            fig = plot_learned(quantities, shared,
                               self.title(f"What {label} learned (tables of the last_ "
                                          f"checkpoint, as in get-results.py --suspects)"))
            written += save_figure(fig, self.base_path("densities", [label], of_networks=False))
            numbers[label] = quantities
        return written, numbers
