"""Drawing with matplotlib (files only): the t-SNE panels, the confusion matrices and the
densities of what the tables learned, and writing a figure as PNG and PDF atomically."""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from custom_runs import run_files  # noqa: E402
from custom_reports.embeddings import Embedding  # noqa: E402
from custom_reports.learned import GroupedValues  # noqa: E402

FIGURE_FORMATS = ("png", "pdf")
DPI = 150


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


def plot_confusion(panels: Sequence[Panel], num_classes: int, upper_classes, imbalanced: bool,
                   title: str):
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
        if imbalanced:  # the classes imbalance made rare begin here
            for line in (ax.axhline, ax.axvline):
                line(upper_classes[0] - 0.5, color="tab:red", linewidth=1, linestyle="--")
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("predicted class")
        if index == 0:
            ax.set_ylabel("true class")
        ax.set_title(f"{panel.label}: test error {emb.error:.2f} %", fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="fraction of the true class", shrink=0.85)
    if imbalanced:
        title += (f"\nrare classes {upper_classes[0]}-{upper_classes[-1]} below / right of the "
                  f"dashed red lines")
    fig.suptitle(title)
    return fig


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
