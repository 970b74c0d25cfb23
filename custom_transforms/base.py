"""Base transforms of docs/design.md §5 as batched tensor work on the training device.

Every function takes a batch (B, C, H, W) and draws an independent random
choice per image from torch's RNG on the batch's device; no per-image loop.
"""
import functools
import math

import torch

from custom_common.settings import DatasetSettings


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1."""
    return images.float().div_(255.0)


@functools.lru_cache(maxsize=None)
def statistics(settings: DatasetSettings, device: torch.device):
    """The dataset's (mean, std) as (1, C, 1, 1) tensors on `device`, made once: building
    them per batch would be two host-to-device copies on every batch."""
    shape = (1, -1, 1, 1)
    return (torch.tensor(settings.mean, device=device).view(shape),
            torch.tensor(settings.std, device=device).view(shape))


def normalize(images: torch.Tensor, settings: DatasetSettings) -> torch.Tensor:
    """uint8 or unit-float images -> normalised float32 with the dataset's mean/std."""
    if images.dtype == torch.uint8:
        images = to_unit_float(images)
    mean, std = statistics(settings, images.device)
    return (images - mean) / std


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) with zero fill, one offset per image."""
    batch, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    device = images.device
    top = torch.randint(0, 2 * padding + 1, (batch,), device=device)
    left = torch.randint(0, 2 * padding + 1, (batch,), device=device)
    rows = (top[:, None] + torch.arange(height, device=device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=device))[:, None, None, :]
    batch_index = torch.arange(batch, device=device)[:, None, None, None]
    channel_index = torch.arange(channels, device=device)[None, :, None, None]
    return padded[batch_index, channel_index, rows, cols]


def random_flip(images: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_erasing(images: torch.Tensor, probability: float = 0.5, scale=(0.02, 0.33),
                   ratio=(0.3, 3.3), value: float = 0.0, attempts: int = 10) -> torch.Tensor:
    """torchvision's RandomErasing (defaults), batched: each image tries up to `attempts`
    (area, aspect) draws and erases with the first that fits, or is left as is."""
    batch, _, height, width = images.shape
    device = images.device
    area = height * width * torch.empty(batch, attempts, device=device).uniform_(*scale)
    log_ratio = torch.empty(batch, attempts, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    erase_h = torch.sqrt(area * aspect).round().long()
    erase_w = torch.sqrt(area / aspect).round().long()
    fits = (erase_h < height) & (erase_w < width)
    first = torch.argmax(fits.int(), dim=1)  # first attempt that fits (0 if none, masked below)
    chosen = torch.arange(batch, device=device)
    erase_h, erase_w = erase_h[chosen, first], erase_w[chosen, first]
    apply = fits.any(dim=1) & (torch.rand(batch, device=device) < probability)
    top = (torch.rand(batch, device=device) * (height - erase_h + 1).clamp(min=1)).long()
    left = (torch.rand(batch, device=device) * (width - erase_w + 1).clamp(min=1)).long()
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + erase_h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + erase_w)[:, None, None]))
    mask = (inside & apply[:, None, None])[:, None]
    return torch.where(mask, torch.full_like(images, value), images)


class TrainTransform:
    """uint8 batch -> normalised float batch, as the released code orders its transforms
    (docs/design.md §6): the fixed policy or colour sub-policy first, on the raw image (as unit
    floats), then the geometric base transform (so the crop's zero padding comes after the
    policy), normalisation, random erasing. `policy_after_crop` (`--policy-variant
    after-crop`, this project's earlier order) runs the policy after crop and flip instead.

    On the ImageNet path the random-resized crop and flip happen per image in the loader
    workers, before this batch transform, so there the policy sees the 224 px crop in
    either order (the released code applies it to the full image; images of different
    sizes cannot share one batched pass on the device)."""

    def __init__(self, settings: DatasetSettings, policy=None, policy_after_crop: bool = False):
        self.settings = settings
        self.policy = policy
        self.policy_after_crop = policy_after_crop

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        kind = self.settings.base_transform
        images = to_unit_float(images)
        if self.policy is not None and not self.policy_after_crop:
            images = self.policy(images)
        if kind in ("crop_erase", "crop_flip_erase"):
            images = random_crop(images, padding=4)
        if kind == "crop_flip_erase":
            images = random_flip(images)
        if self.policy is not None and self.policy_after_crop:
            images = self.policy(images)
        images = normalize(images, self.settings)
        if kind in ("crop_erase", "crop_flip_erase"):
            images = random_erasing(images)
        return images


class EvalTransform:
    def __init__(self, settings: DatasetSettings):
        self.settings = settings

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.settings)


def imagenet_transforms(train: bool):
    """Base transforms of docs/design.md §5 for ImageNet, done by the workers; they return
    uint8 tensors so that policies and normalisation run batched on the device."""
    import torchvision.transforms as T
    if train:
        return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])
