"""The image operations of the fixed augmentation policies (docs/design.md §6), batched.

Every operation takes a float32 batch (n, C, H, W) with values in [0, 1] and a
tensor `values` of shape (n,) holding each image's own value (degrees, a
fraction of the side, an enhancement factor, a threshold, a number of bits;
operations without a value ignore it), and returns a new batch of the same
shape, still in [0, 1]. Nothing loops over images, so a batch costs a handful
of kernel launches on whichever device it lives on.

Each operation stands for the PIL operation that Fast AutoAugment, DADA and
RandAugment were searched with, and follows PIL's definition on 8-bit images:

- the colour operations take each pixel to its 8-bit level (the policy runs
  first, on the raw 8-bit image, docs/design.md §6, so the batch holds levels) and
  compute what PIL computes on the 8-bit image, integer for integer, in float32
  that holds the integers exactly (float64 where PIL uses doubles): Equalize's,
  Posterize's, Solarize's and AutoContrast's look-up tables with PIL's
  truncations; ImageEnhance's Image.blend in float32 with its truncation to a
  level; the degenerate images of Color (convert('L') in 16.16 fixed point,
  rounded), Contrast (the rounded mean of that luma) and Sharpness (the SMOOTH
  filter, rounded, border left alone). They match PIL exactly on 8-bit images,
  alone and chained (tests/test_policies.py); the result is level / 255;
- the geometric operations use PIL's affine conventions (pixel centres at
  half-integers, shear about the top-left corner, rotation about the image
  centre, counter-clockwise on screen for a positive angle, a positive
  translation moving the content left/up). By default they sample as PIL's
  Image.transform / rotate do with their defaults, which the released code
  used (docs/design.md §6): nearest neighbour, with PIL's own 16.16 fixed-point source
  coordinates, and a black (0) fill of what comes from outside the image; they
  then match PIL exactly on 8-bit images, edge included (warp_nearest). With
  `--policy-variant bilinear-grey` (this project's earlier choice) they sample
  bilinearly and fill with the constant grey GEOMETRIC_FILL = 0.5
  (AutoAugment's grey 128): inside the image that matches PIL's bilinear
  Image.transform; in the one-pixel band along the edge of the valid region
  the image blends into the grey, where PIL cuts hard (warp);
- Cutout draws the released code's rectangle (PIL's inclusive ImageDraw.rectangle
  with truncated corners, side floor(v W) + 1, cut by the right and bottom edges
  only) and fills it with its grey (125, 123, 114) (on a grayscale batch its luma,
  123); under `bilinear-grey` it draws this project's earlier square, of side
  round(v min(H, W)) and clipped on all sides, filled with 0.5;
- grayscale batches (C = 1): Color is the identity, because the grey image of
  a grey image is itself, as with PIL's ImageEnhance.Color on an 'L' image;
  every other operation acts on the single channel (Contrast's degenerate
  image is then that channel's rounded mean).

The code avoids torch.where, boolean masks and pooling on image-sized tensors:
on a CPU (torch 2.14, measured on 20 images of 3x32x32) where/masked_fill cost
about 40 times an arithmetic kernel and avg_pool2d/conv2d 8 to 15 times a sum of
shifted slices, so masks are written as 0/1 float factors and the smoothing
filter as slice sums. On tiny per-image or per-channel tensors where is fine.

kornia is not used, because several of its functions mean something else
than the PIL operation of the same name: adjust_contrast and
adjust_brightness scale or shift raw values instead of blending with PIL's
degenerate image, adjust_saturation desaturates towards max(R, G, B) rather
than the luma, its shear is the forward map (the inverse of PIL's data), and
its warps pad only with zeros, border or reflection, not a grey constant.
Writing the maps ourselves also lets a policy resample all geometric
operations of one step in a single warp (affine_maps).
tests/test_policies.py checks these operations against PIL on 8-bit images.
"""
import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict

import torch
import torch.nn.functional as F

# --policy-variant bilinear-grey (this project's earlier choice): grey fill of the geometric
# operations and of Cutout.
GEOMETRIC_FILL = 0.5
CUTOUT_FILL = 0.5
# The released code's Cutout colour (8-bit RGB), and PIL's convert('L') of it for grayscale.
RELEASED_CUTOUT_RGB = (125, 123, 114)
RELEASED_CUTOUT_GREY = 123
# PIL's convert('L') of RGB: ITU-R 601-2 luma in 16.16 fixed point, rounded,
# (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
_LUMA_FIXED_POINT = (19595.0, 38470.0, 7471.0)


def _per_image(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.dtype).reshape(-1, 1, 1, 1)


def _grey_levels(images: torch.Tensor) -> torch.Tensor:
    """Nearest 8-bit level (as float) of every pixel: the grid PIL works on."""
    return torch.round(images * 255.0).clamp_(0.0, 255.0)


def _luma_levels(levels: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) levels of PIL's convert('L'): the channel itself for a grayscale batch.
    The fixed-point sums stay below 2^24, so float32 holds them exactly."""
    if levels.shape[1] == 1:
        return levels
    # Python-number weights: a weight tensor would be a host-to-device copy on every call.
    red, green, blue = _LUMA_FIXED_POINT
    luma = levels[:, 0:1] * red
    luma.add_(levels[:, 1:2], alpha=green).add_(levels[:, 2:3], alpha=blue)
    return luma.add_(32768.0).div_(65536.0).floor_()


def _pil_blend(degenerate: torch.Tensor, levels: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's Image.blend(degenerate, image, factor), which ImageEnhance.enhance is, on 8-bit
    levels, returned in [0, 1]. PIL computes degenerate + factor * (image - degenerate) in
    float32 (the factor cast to float), one rounding per operation as here, then truncates
    to a level (clipping to 0..255 first when the factor is outside [0, 1])."""
    return (levels - degenerate).mul_(_per_image(factors, levels)).add_(degenerate).clamp_(0.0, 255.0) \
        .floor_().div_(255.0)


# ---- pixel operations ---------------------------------------------------------------

def identity(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return images.clone()


def invert(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return 1.0 - images


def auto_contrast(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.autocontrast, per channel of each image: with lo and hi the darkest and
    brightest levels present, scale = 255 / (hi - lo) and offset = -lo * scale in double
    precision, level i -> int(i * scale + offset) (truncated, as PIL's look-up table does);
    a channel with hi <= lo is left unchanged. Applied as a (256-entry) table per channel."""
    batch, channels, height, width = images.shape
    levels = _grey_levels(images).reshape(batch * channels, height * width)
    low = levels.amin(dim=1, keepdim=True).double()
    spread = levels.amax(dim=1, keepdim=True).double() - low
    scale = 255.0 / spread.clamp(min=1.0)
    offset = -low * scale
    grid = torch.arange(256, device=images.device, dtype=torch.float64)
    lut = (grid * scale).add_(offset).clamp_(0.0, 255.0).floor_()
    lut = torch.where(spread > 0, lut, grid).to(images.dtype)
    return lut.div_(255.0).gather(1, levels.long()).reshape(batch, channels, height, width)


def equalize(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize, per channel of each image, one scatter for all histograms.

    PIL's look-up table: step = (pixels - count of the brightest level present) // 255 and
    level i -> (step // 2 + pixels below level i) // step; a channel with step 0 (a single
    level, or almost all pixels at the brightest one) is left unchanged.

    The counts are kept as float: they are integers below 2^24, so sums are exact and
    floor(a / b) of a correctly rounded quotient is the integer division, while integer
    division is several times slower on a CPU.
    """
    batch, channels, height, width = images.shape
    levels = _grey_levels(images).reshape(batch * channels, height * width)
    indices = levels.long()
    histogram = images.new_zeros(batch * channels, 256)
    histogram.scatter_add_(1, indices, images.new_ones(1, 1).expand_as(levels))
    brightest_count = histogram.gather(1, levels.amax(dim=1, keepdim=True).long())
    step = torch.floor_divide(height * width - brightest_count, 255.0)
    below = histogram.cumsum(dim=1).sub_(histogram)
    lut = below.add_(torch.floor_divide(step, 2.0)).div_(step.clamp(min=1.0)).floor_().clamp_(max=255.0)
    lut = torch.where(step > 0, lut, torch.arange(256, device=images.device, dtype=images.dtype))
    return lut.div_(255.0).gather(1, indices).reshape(batch, channels, height, width)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` bits of each 8-bit level. Non-integer bits are truncated, as
    Fast AutoAugment's int(v) does: policy level l gives int(4 + 4 l) bits."""
    bucket = _per_image(torch.pow(2.0, 8.0 - torch.floor(bits).clamp(1.0, 8.0)), images)
    return _grey_levels(images).div_(bucket).floor_().mul_(bucket / 255.0)


def solarize(images: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Invert the pixels whose 8-bit level is >= threshold, PIL's rule, with the threshold on
    the 0..256 scale (256 leaves the image alone, 0 inverts it all).

    For integer levels, level >= t exactly when clamp(level - ceil(t) + 1, 0, 1) is 1.
    """
    first_inverted = _per_image(torch.ceil(thresholds), images)
    inverted = _grey_levels(images).sub_(first_inverted - 1.0).clamp_(0.0, 1.0)
    return images.mul(-2.0).add_(1.0).mul_(inverted).add_(images)


def color(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Color: blend with convert('L') of the image, back as RGB. On a
    grayscale batch this is the identity, as PIL's is on an 'L' image."""
    if images.shape[1] == 1:
        return images.clone()
    levels = _grey_levels(images)
    return _pil_blend(_luma_levels(levels), levels, factors)


def contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Contrast: blend with a flat image at the mean of the luma levels
    (ImageStat's mean of convert('L'), in double precision), rounded: int(mean + 0.5)."""
    levels = _grey_levels(images)
    luma = _luma_levels(levels)
    mean = luma.sum(dim=(1, 2, 3), keepdim=True, dtype=torch.float64) / luma[0].numel()
    return _pil_blend(mean.add_(0.5).floor_().to(images.dtype), levels, factors)


def brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Brightness: blend with black."""
    black = torch.zeros((), device=images.device, dtype=images.dtype)
    return _pil_blend(black, _grey_levels(images), factors)


def sharpness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: blend with image.filter(SMOOTH), whose 3x3 weights 1,
    centre 5, over 13, give round(S / 13) for the integer weighted sum S (PIL adds 0.5 and
    truncates; S / 13 is never half-way, so its float32 sums land on the same level). PIL
    leaves the one-pixel border unfiltered, which makes the border unchanged by the blend."""
    height, width = images.shape[2:]
    if height < 3 or width < 3:
        return images.clone()
    levels = _grey_levels(images)
    rows = levels[:, :, :-2] + levels[:, :, 1:-1]
    rows += levels[:, :, 2:]
    smoothed = rows[:, :, :, :-2] + rows[:, :, :, 1:-1]
    smoothed += rows[:, :, :, 2:]
    smoothed.add_(levels[:, :, 1:-1, 1:-1], alpha=4.0).add_(6.5).div_(13.0).floor_()
    degenerate = levels.clone()
    degenerate[:, :, 1:-1, 1:-1] = smoothed
    return _pil_blend(degenerate, levels, factors)


@functools.lru_cache(maxsize=16)
def _released_cutout_fill(channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    levels = RELEASED_CUTOUT_RGB if channels == 3 else (RELEASED_CUTOUT_GREY,) * channels
    return torch.tensor(levels, device=device, dtype=dtype).div_(255.0).view(1, channels, 1, 1)


def _released_cutout_patch(images: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) 0/1: the rectangle that the released code's CutoutAbs draws.

    There v = fraction * W (the width, for both axes), the centre c = W + (1 - W) U with U
    uniform in [0, 1) (numpy's uniform(W) is uniform(low=W, high=1): c in (1, W]),
    x0 = int(max(0, c - v/2)), x1 = min(W, x0 + v), and PIL's ImageDraw.rectangle truncates
    the corners to integers and fills both: columns x0 .. int(x1), floor(v) + 1 of them,
    cut by the right edge only (a patch at the left edge keeps its size); rows likewise with
    H. v = 0 draws nothing (CutoutAbs is never called). The few per-image numbers are
    float64, as the released code's Python floats are.
    """
    batch, _, height, width = images.shape
    side = fractions.to(torch.float64)[:, None] * width
    sizes = torch.tensor([width, height], device=images.device, dtype=torch.float64)
    centres = sizes - (sizes - 1.0) * torch.rand(batch, 2, device=images.device, dtype=torch.float64)
    first = (centres - side / 2.0).clamp_(min=0.0).floor_()
    last = torch.minimum(first + side, sizes).floor_()
    # pixel j is in when first <= j <= last: two 0/1 factors, (n, W) and (n, H), then their product
    first, last = first.to(images.dtype), last.to(images.dtype)
    cols = torch.arange(width, device=images.device, dtype=images.dtype)
    rows = torch.arange(height, device=images.device, dtype=images.dtype)
    in_cols = (cols - first[:, :1] + 1.0).clamp_(0.0, 1.0).mul_((last[:, :1] - cols + 1.0).clamp_(0.0, 1.0))
    in_rows = (rows - first[:, 1:] + 1.0).clamp_(0.0, 1.0).mul_((last[:, 1:] - rows + 1.0).clamp_(0.0, 1.0))
    drawn = (side > 0).to(images.dtype)
    return (in_rows[:, :, None] * (in_cols * drawn)[:, None, :])[:, None]


def _earlier_cutout_patch(images: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) 0/1: this project's earlier square (`--policy-variant bilinear-grey`), of
    side round(fraction * shorter side), centred at a uniform random point of the image and
    clipped on all sides. Along each axis it covers pixels start .. start + side - 1, with
    start the rounded left/top edge; pixel j is in it when |j + 1/2 - (start + side/2)| <
    side/2."""
    batch, _, height, width = images.shape
    side = torch.round(fractions.to(images.dtype) * min(height, width))[:, None]
    centres = torch.rand(batch, 2, device=images.device, dtype=images.dtype)
    centres[:, 0] *= width
    centres[:, 1] *= height
    middle = torch.floor(centres - side / 2 + 0.5) + side / 2
    cols = torch.arange(width, device=images.device, dtype=images.dtype) + 0.5
    rows = torch.arange(height, device=images.device, dtype=images.dtype) + 0.5
    in_cols = ((cols - middle[:, :1]).abs_() < side / 2).to(images.dtype)
    in_rows = ((rows - middle[:, 1:]).abs_() < side / 2).to(images.dtype)
    return (in_rows[:, :, None] * in_cols[:, None, :])[:, None]


def cutout(images: torch.Tensor, fractions: torch.Tensor, grey: bool = False) -> torch.Tensor:
    """A rectangle drawn as the released code's CutoutAbs draws it (_released_cutout_patch),
    filled with its (125, 123, 114); `grey`: this project's earlier square filled with
    CUTOUT_FILL (0.5) (_earlier_cutout_patch)."""
    if grey:
        return images.neg().add_(CUTOUT_FILL).mul_(_earlier_cutout_patch(images, fractions)).add_(images)
    fill = _released_cutout_fill(images.shape[1], images.device, images.dtype)
    return images.neg().add_(fill).mul_(_released_cutout_patch(images, fractions)).add_(images)


# ---- geometric operations -------------------------------------------------------------

GEOMETRIC_OPERATIONS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def affine_maps(kinds: torch.Tensor, values: torch.Tensor, height: int, width: int,
                pil_rounding: bool = False) -> torch.Tensor:
    """Per image, PIL's Image.transform(AFFINE) data as a 3x3 matrix for the geometric
    operation GEOMETRIC_OPERATIONS[kinds[i]] at values[i]: the map from an output pixel
    position to the input position it samples, in pixels, origin at the top-left corner of
    the image (pixel centres at i + 0.5).

    - Rotate: degrees, counter-clockwise on screen about the image centre (PIL's rotate);
    - ShearX/ShearY: output (x, y) samples (x + v y, y) / (x, y + v x), i.e. about the
      top-left corner;
    - TranslateX/TranslateY: a fraction of the width/height; output x samples x + v W, so a
      positive value moves the content left (up).

    All five are written as one matrix in which only the entries of the image's own kind
    are non-zero, so that a batch mixing the five needs no branch per operation.
    `pil_rounding` rounds the cosine and sine to 15 decimals, as PIL's rotate does (for
    float64 values and nearest sampling, where a last bit can move a pixel).
    """
    kind_columns = torch.arange(len(GEOMETRIC_OPERATIONS), device=kinds.device)
    amounts = (kinds[:, None] == kind_columns).to(values.dtype) * values[:, None]
    degrees, shear_x, shear_y, shift_x, shift_y = amounts.unbind(dim=1)
    radians = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    if pil_rounding:
        cos, sin = torch.round(cos, decimals=15), torch.round(sin, decimals=15)
    centre_x, centre_y = width / 2.0, height / 2.0
    offset_x = centre_x - cos * centre_x + sin * centre_y + shift_x * width
    offset_y = centre_y - sin * centre_x - cos * centre_y + shift_y * height
    zeros = torch.zeros_like(cos)
    return torch.stack([cos, shear_x - sin, offset_x,
                        sin + shear_y, cos, offset_y,
                        zeros, zeros, torch.ones_like(cos)], dim=1).reshape(-1, 3, 3)


@functools.lru_cache(maxsize=16)
def _sampling_frame(height: int, width: int, device: torch.device, dtype: torch.dtype):
    """Output pixel centres as homogeneous pixel coordinates (3, H*W), and the per-row
    scale and offset that take pixel coordinates to grid_sample's (align_corners=False:
    -1 and 1 are the outer edges of the border pixels): normalised = scale * pixel - 1."""
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    centres = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                           torch.ones(height, width, device=device, dtype=dtype)])
    scale = torch.tensor([[2.0 / width], [2.0 / height]], device=device, dtype=dtype)
    offset = torch.tensor([0.0, 0.0, 1.0], device=device, dtype=dtype)
    return centres.reshape(3, height * width), scale, offset


def warp(images: torch.Tensor, pixel_maps: torch.Tensor, fill: float = GEOMETRIC_FILL) -> torch.Tensor:
    """Resample each image through its own output-to-input pixel map (n, 3, 3), bilinear.

    The grid is the maps' first two rows, taken to grid_sample's coordinates, times the
    output pixel centres: one (2n, 3) x (3, H*W) product, which costs a quarter of
    F.affine_grid or of a batched matmul on a CPU. Sampling (image - fill) with zero
    padding and adding fill back gives a constant fill that also blends correctly at the
    edge, which grid_sample has no padding mode for.
    """
    batch, _, height, width = images.shape
    centres, scale, offset = _sampling_frame(height, width, images.device, images.dtype)
    # The last row of an affine map is (0, 0, 1), so scale * map[:2] - offset is the
    # normalised map: scale * x - 1 for either coordinate.
    sample_maps = pixel_maps[:, :2].to(images.dtype) * scale - offset
    grid = torch.matmul(sample_maps, centres).view(batch, 2, height, width).permute(0, 2, 3, 1)
    shifted = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    return shifted.add_(fill).clamp_(0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _pixel_indices(height: int, width: int, device: torch.device):
    return (torch.arange(width, device=device, dtype=torch.float64),
            torch.arange(height, device=device, dtype=torch.float64))


def _fixed_point(values: torch.Tensor) -> torch.Tensor:
    """PIL's FIX: a 16.16 fixed-point number, floor(v * 65536 + 0.5)."""
    return torch.floor(values * 65536.0 + 0.5)


def warp_nearest(images: torch.Tensor, pixel_maps: torch.Tensor) -> torch.Tensor:
    """Resample each image through its own output-to-input pixel map (n, 3, 3) as PIL's
    Image.transform(AFFINE, NEAREST) does on 8-bit images, black (0) outside.

    PIL takes a map without rotation or shear (a translation) in double precision: source
    x = floor(a2 + a0 / 2 + a0 x); any other map in 16.16 fixed point: source x =
    (FIX(a2 + a0 / 2 + a1 / 2) + x FIX(a0) + y FIX(a1)) >> 16, and y likewise. Both are
    computed here the same way (the fixed-point sums are integers below 2^40, exact in
    float64), then one gather per batch picks the pixels and a 0/1 factor blacks out
    those whose source lies outside the image.
    """
    batch, channels, height, width = images.shape
    maps = pixel_maps.to(torch.float64)
    xs, ys = _pixel_indices(height, width, images.device)
    a0, a1, a2 = (maps[:, 0, column, None, None] for column in range(3))
    a3, a4, a5 = (maps[:, 1, column, None, None] for column in range(3))
    fixed_x = (_fixed_point(a2 + 0.5 * a0 + 0.5 * a1) + _fixed_point(a0) * xs
               + _fixed_point(a1) * ys[:, None]).div_(65536.0).floor_()
    fixed_y = (_fixed_point(a5 + 0.5 * a3 + 0.5 * a4) + _fixed_point(a3) * xs
               + _fixed_point(a4) * ys[:, None]).div_(65536.0).floor_()
    translation = ((a1 == 0) & (a3 == 0))
    source_x = torch.where(translation, torch.floor(a2 + 0.5 * a0 + a0 * xs), fixed_x)
    source_y = torch.where(translation, torch.floor(a5 + 0.5 * a4 + a4 * ys[:, None]), fixed_y)
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    index = (source_y.clamp(0, height - 1) * width + source_x.clamp(0, width - 1)).long()
    index = index.view(batch, 1, height * width).expand(batch, channels, height * width)
    picked = images.reshape(batch, channels, height * width).gather(2, index)
    return picked.mul_(inside.view(batch, 1, height * width).to(images.dtype)).view(images.shape)


def resample_geometric(images: torch.Tensor, kinds: torch.Tensor, values: torch.Tensor,
                       bilinear_grey: bool = False) -> torch.Tensor:
    """Image i through geometric operation GEOMETRIC_OPERATIONS[kinds[i]] at values[i]:
    nearest and black as PIL's defaults (the released code), or bilinear and grey."""
    height, width = images.shape[2:]
    if bilinear_grey:
        return warp(images, affine_maps(kinds, values.to(images.dtype), height, width))
    return warp_nearest(images, affine_maps(kinds, values.to(torch.float64), height, width,
                                            pil_rounding=True))


def _geometric(name: str, bilinear_grey: bool) -> Callable:
    kind = GEOMETRIC_OPERATIONS.index(name)

    def operation(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        kinds = torch.full(values.shape, kind, dtype=torch.long, device=values.device)
        return resample_geometric(images, kinds, values, bilinear_grey)
    operation.__doc__ = f"{name}; see affine_maps for the convention."
    return operation


@dataclass(frozen=True)
class Operation:
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # Geometric operations take a random sign (docs/design.md §6) and their whole effect is a pixel
    # map (affine_maps), so a policy can resample all of them in one warp.
    geometric: bool = False


def _operations(bilinear_grey: bool) -> Dict[str, Operation]:
    return {
        "Identity": Operation(identity),
        "AutoContrast": Operation(auto_contrast),
        "Equalize": Operation(equalize),
        "Invert": Operation(invert),
        "Posterize": Operation(posterize),
        "Solarize": Operation(solarize),
        "Color": Operation(color),
        "Contrast": Operation(contrast),
        "Brightness": Operation(brightness),
        "Sharpness": Operation(sharpness),
        "Cutout": Operation(functools.partial(cutout, grey=bilinear_grey)),
        **{name: Operation(_geometric(name, bilinear_grey), geometric=True) for name in GEOMETRIC_OPERATIONS},
    }


# Names as they appear in the policy files and in RandAugment's list: the released code's
# sampling and fills (the default), and `--policy-variant bilinear-grey`'s.
OPERATIONS: Dict[str, Operation] = _operations(bilinear_grey=False)
BILINEAR_GREY_OPERATIONS: Dict[str, Operation] = _operations(bilinear_grey=True)
