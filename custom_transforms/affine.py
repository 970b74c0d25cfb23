"""The learned affine augmentation of docs/design.md §3.2, differentiable in its logits.

Seven parameters, each with an application probability and a signed magnitude:
rotation, translate-x/y, shear-x/y, scale-x/y. The apply-mask is a
straight-through Gumbel-softmax sample, the magnitude is reparameterised,
so the warped images carry gradients to both logits.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

PARAMETERS = ("rotate", "translate_x", "translate_y", "shear_x", "shear_y", "scale_x", "scale_y")
NUM_PARAMETERS = len(PARAMETERS)
ROTATE_DEGREES = 30.0
TRANSLATE_FRACTION = 0.45
SHEAR = 0.30
SCALE = 0.50
UPSAMPLE_BELOW = 64  # images smaller than this are warped at x4 resolution
UPSAMPLE_FACTOR = 4


@dataclass(frozen=True)
class Resampling:
    """Three choices of the warp path where the paper's text and its released code differ.
    The defaults are the code's, which produced the paper's numbers; True is the text's
    (`--paper-text geometry` for the first two, `downsample` for the third).

    matrix_at_warp_size: build the matrix for the size it is applied at (rotation about
        the x4 image's centre, translations of the full 0.45 range) instead of for the
        original size (rotation about (W/2, H/2) of the original frame, a quarter of the
        way into the x4 image; translations a quarter of the range).
    consistent_grid: sample the x4 image where the matrix says, and leave it alone for the
        identity, instead of on the released code's grid (kornia 0.4.1's warp_perspective:
        output pixel i of N at normalised -1 + 2i/(N - 1), the align_corners=True grid,
        read by grid_sample with align_corners=False, so pixel i samples i N/(N - 1) - 1/2,
        a (N - 1)/N shrink about the centre with border padding; the identity too).
    average_pool_back: resize the x4 image back with avg_pool2d (identity kernel per axis
        [1/8, 3/4, 1/8]) instead of bilinear interpolation ([1/16, 7/8, 1/16])."""
    matrix_at_warp_size: bool = False
    consistent_grid: bool = False
    average_pool_back: bool = False


RELEASED = Resampling()


def sample_values(probability_logits: torch.Tensor, magnitude_logits: torch.Tensor,
                  batch: int) -> torch.Tensor:
    """Per-image signed values a_k * m_k in [-inf, inf], shape (batch, 7).

    The logits are (batch, 7) for per-sample tables or (1, 7) for the shared one."""
    probability_logits = probability_logits.expand(batch, NUM_PARAMETERS)
    magnitude_logits = magnitude_logits.expand(batch, NUM_PARAMETERS)
    # two-class Gumbel-softmax over [log p, log(1 - p)], hard, tau = 1
    two_class = torch.stack([F.logsigmoid(probability_logits), F.logsigmoid(-probability_logits)], -1)
    apply = F.gumbel_softmax(two_class, tau=1.0, hard=True)[..., 0]
    noise = torch.randn_like(magnitude_logits)
    return apply * torch.sigmoid(magnitude_logits) * noise


def affine_matrices(values: torch.Tensor, height: int, width: int,
                    centre: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """(B, 7) values -> (B, 2, 3) matrices Shear . Translate . RotateScale(centre) for an
    image of `height` x `width` pixels: translations are fractions of that size, and the
    centre (x, y) defaults to the middle of its pixel grid."""
    batch = values.shape[0]
    angle = values[:, 0] * (ROTATE_DEGREES * math.pi / 180.0)
    shift_x = values[:, 1] * TRANSLATE_FRACTION * width
    shift_y = values[:, 2] * TRANSLATE_FRACTION * height
    shear_x, shear_y = values[:, 3] * SHEAR, values[:, 4] * SHEAR
    scale_x, scale_y = 1.0 + values[:, 5] * SCALE, 1.0 + values[:, 6] * SCALE

    ones, zeros = torch.ones_like(angle), torch.zeros_like(angle)
    centre_x, centre_y = centre if centre is not None else ((width - 1) / 2.0, (height - 1) / 2.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotate and scale about the centre: T(c) R S T(-c)
    a, b = cos * scale_x, -sin * scale_y
    c, d = sin * scale_x, cos * scale_y
    rotate_scale = torch.stack([
        torch.stack([a, b, centre_x - a * centre_x - b * centre_y], -1),
        torch.stack([c, d, centre_y - c * centre_x - d * centre_y], -1),
        torch.stack([zeros, zeros, ones], -1)], 1)
    translate = torch.stack([
        torch.stack([ones, zeros, shift_x], -1),
        torch.stack([zeros, ones, shift_y], -1),
        torch.stack([zeros, zeros, ones], -1)], 1)
    shear = torch.stack([
        torch.stack([ones, shear_x, zeros], -1),
        torch.stack([shear_y, ones, zeros], -1),
        torch.stack([zeros, zeros, ones], -1)], 1)
    return (shear @ translate @ rotate_scale)[:, :2].reshape(batch, 2, 3)


def _released_warp(images: torch.Tensor, matrices=None) -> torch.Tensor:
    """kornia 0.4.1's warp_perspective(images, M, dsize=its own size, border_mode='border'),
    what the released code warped with (see Resampling.consistent_grid); None: the identity."""
    batch, channels, height, width = images.shape
    if matrices is None:
        unit_to_source = torch.eye(2, 3, device=images.device, dtype=images.dtype)[None]
    else:
        # pixels -> [-1, 1] with -1 and 1 at the centres of the border pixels, as kornia
        # 0.4.1 normalised the matrix whatever grid_sample was told afterwards
        to_unit = torch.tensor([[2.0 / (width - 1), 0.0, -1.0], [0.0, 2.0 / (height - 1), -1.0],
                                [0.0, 0.0, 1.0]], device=images.device, dtype=images.dtype)
        last_row = to_unit[2:].expand(matrices.shape[0], 1, 3)
        full = torch.cat([matrices.to(images.dtype), last_row], dim=1)
        unit_to_source = (to_unit @ torch.linalg.inv(full) @ torch.linalg.inv(to_unit))[:, :2]
    grid = F.affine_grid(unit_to_source, [unit_to_source.shape[0], channels, height, width],
                         align_corners=True)
    return F.grid_sample(images, grid.expand(batch, -1, -1, -1), mode="bilinear",
                         padding_mode="border", align_corners=False)


def resample(images: torch.Tensor, matrices=None, resampling: Resampling = RELEASED) -> torch.Tensor:
    """Warps images by `matrices` (None: identity) with border padding; images under
    64 px are upsampled x4 first and resized back, to limit interpolation artefacts.
    Validation images (and, in the released code, every configuration's train images)
    go through the same path with the identity, so they carry the same artefacts."""
    height, width = images.shape[-2:]
    upsample = min(height, width) < UPSAMPLE_BELOW
    if matrices is None and not upsample:
        return images
    if upsample:
        images = F.interpolate(images, scale_factor=UPSAMPLE_FACTOR, mode="bilinear",
                               align_corners=False)
    if not resampling.consistent_grid:
        images = _released_warp(images, matrices)
    elif matrices is not None:
        images = warp_affine(images, matrices.to(images.dtype), dsize=images.shape[-2:],
                             mode="bilinear", padding_mode="border", align_corners=True)
    if upsample and resampling.average_pool_back:
        images = F.avg_pool2d(images, UPSAMPLE_FACTOR)
    elif upsample:
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False,
                               antialias=False)
    return images


def warp_matrices(values: torch.Tensor, height: int, width: int,
                  resampling: Resampling = RELEASED) -> torch.Tensor:
    """The matrices that resample() applies to images of `height` x `width` (before its x4
    upsample) for (B, 7) values."""
    if resampling.matrix_at_warp_size:
        factor = UPSAMPLE_FACTOR if min(height, width) < UPSAMPLE_BELOW else 1
        return affine_matrices(values, height * factor, width * factor)
    # the released code's matrix: built for the original frame, applied to the x4 image
    return affine_matrices(values, height, width, centre=(width / 2.0, height / 2.0))


def augment(images: torch.Tensor, probability_logits: torch.Tensor,
            magnitude_logits: torch.Tensor, resampling: Resampling = RELEASED) -> torch.Tensor:
    """Applies the learned augmentation to a normalised batch."""
    values = sample_values(probability_logits, magnitude_logits, images.shape[0]).float()
    return resample(images, warp_matrices(values, *images.shape[-2:], resampling), resampling)
