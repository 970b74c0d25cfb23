"""--plot-debug: what the augmentation of a configuration does to real images."""
from pathlib import Path

import torch

from custom_models import training
from custom_runs import run_files
from custom_runs.run_values import PreparedData, RunParts, RunPlan
from custom_transforms.base import normalize, statistics

GRID_IMAGES = 32


@torch.no_grad()
def save_augmentation_grid(plan: RunPlan, prepared: PreparedData, parts: RunParts,
                           path: Path) -> None:
    """Top half: the first train images as the test transform shows them; bottom
    half: the same images as training sees them: the train transform (base + policy),
    then, for SHA/SEP, the learned affine augmentation at its current state (for the
    other methods the identity resample, unless `--paper-text baselines`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    settings, device, data = plan.settings, plan.device, prepared.data
    indices = prepared.split.train_indices[:GRID_IMAGES]
    if hasattr(data, "train_images"):
        raw = data.train_images[indices].to(device)
    else:
        raw = torch.stack([data.train[int(i)][0] for i in indices]).to(device)
    augmented, _ = training.augmented(parts.batches.train_transform(raw), indices.to(device),
                                      parts.models.hyper)
    mean, std = statistics(settings, raw.device)
    shown = [(normalize(raw, settings) * std + mean), augmented * std + mean]
    grids = [make_grid(images.clamp(0, 1).cpu(), nrow=8, padding=1) for images in shown]
    figure, axes = plt.subplots(2, 1, figsize=(8, 8.5))
    for axis, grid, title in zip(axes, grids, ("original", f"augmented ({plan.args.aug_model})")):
        axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    with run_files.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
