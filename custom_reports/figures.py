"""Figures of visualize-density.py for one run folder (file names in custom_runs/run_files.py).

The paper's qualitative figure: t-SNE of the test-set features (encoder
output) of several configurations of one run side by side, coloured by class,
misclassified points drawn larger; or their row-normalised confusion matrices.

Beyond the paper: densities of what AutoDO learned, measured against the truth
the split file lets us know (which labels were flipped, which classes were made
rare): loss weights of clean vs noisy-labelled samples, the soft labels'
confidence in the official vs the given label, and the learned augmentation
probability and magnitude of the lower vs the upper classes.

The test features, their t-SNE and its cache are custom_reports/embeddings.py; the
learned quantities custom_reports/learned.py; the drawing custom_reports/drawing.py.
"""
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from custom_runs import run_files
from custom_runs.checkpoints import load_network
from custom_runs.identity import Configuration
from custom_reports.drawing import Panel, plot_confusion, plot_learned, plot_tsne, save_figure
from custom_reports.embeddings import (FeatureSource, checkpoint_embedding, extract_test_features,
                                       iterate_test_images)
from custom_reports.learned import GroupedValues, learned_quantities


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
        fig = plot_confusion(panels, self.settings.num_classes, self.settings.upper_classes,
                             self.imbalanced, self.title("Row-normalised confusion matrices"))
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
