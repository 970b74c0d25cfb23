"""Fixed augmentation policies (custom_transforms.ops / .policies, docs/design.md §6)."""
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from custom_common.settings import DATASETS, get_settings
from custom_transforms import ops
from custom_transforms.augment_models import AUGMENT_MODELS
from custom_transforms.policies import (COLOUR_RANGES, OPERATION_NAMES, POLICY_FILES,
                                        POLICY_RANGES, RAND_RANGES, RandAugment, SubPolicyAugment,
                                        apply_step, load_policy, make_policy_augment)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]


def single_op_policy(operation, probability=1.0, level=1.0, bilinear_grey=False):
    return SubPolicyAugment([[(operation, probability, level)]], bilinear_grey=bilinear_grey)


def per_image(value, count):
    return torch.full((count,), float(value))


def centre_of_mass(weights):
    """(x, y) in pixels, origin at the top-left corner, of (B, H, W) weights."""
    height, width = weights.shape[-2:]
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    weights = weights.double()
    total = weights.sum(dim=(-2, -1))
    return ((weights.sum(dim=-2) * xs).sum(-1) / total, (weights.sum(dim=-1) * ys).sum(-1) / total)


def orientation_degrees(weights):
    """Angle of the principal axis of (B, H, W) weights, counter-clockwise on screen."""
    height, width = weights.shape[-2:]
    weights = weights.double()
    centre_x, centre_y = centre_of_mass(weights)
    dx = (torch.arange(width, dtype=torch.float64) + 0.5)[None, None, :] - centre_x[:, None, None]
    dy_up = -((torch.arange(height, dtype=torch.float64) + 0.5)[None, :, None] - centre_y[:, None, None])
    mu20 = (weights * dx * dx).sum(dim=(-2, -1))
    mu02 = (weights * dy_up * dy_up).sum(dim=(-2, -1))
    mu11 = (weights * dx * dy_up).sum(dim=(-2, -1))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))


def grey_background_with(shape, rows, cols, count):
    """Background 0.5 (the geometric fill) with a white rectangle: image - 0.5 is then a
    non-negative mass that bilinear resampling and the fill leave exactly linear."""
    images = torch.full((count, 1) + shape, 0.5)
    images[:, :, rows, cols] = 1.0
    return images


# ---- policy files and the factory -----------------------------------------------------

def test_policy_files_load_and_every_operation_in_them_is_implemented():
    for family, path in POLICY_FILES.items():
        raw = json.loads(path.read_text())
        for name, sub_policies in raw.items():
            loaded = load_policy(family, name)
            assert len(loaded) == len(sub_policies) > 0
            names = {operation for sub_policy in loaded for operation, _, _ in sub_policy}
            assert names <= set(ops.OPERATIONS) and names <= set(POLICY_RANGES)
            assert all(0.0 <= probability <= 1.0 for sub in loaded for _, probability, _ in sub)
            SubPolicyAugment(loaded, clip_levels=(family == "dada"))
    for name in set(RAND_RANGES) | set(POLICY_RANGES):
        assert name in OPERATION_NAMES


def test_make_policy_augment_builds_every_method_for_every_dataset():
    for dataset, settings in DATASETS.items():
        assert make_policy_augment("NONE", settings) is None
        rand = make_policy_augment("RAND", settings)
        assert (rand.num_ops, rand.magnitude) == (settings.rand_n, settings.rand_m)
        assert set(rand.operation_names) == set(RAND_RANGES)
        for colour_model in ("SHA", "SEP"):
            colour = make_policy_augment(colour_model, settings)
            assert (colour.num_ops, colour.magnitude) == (settings.colour_n, settings.colour_m)
            assert set(colour.operation_names) == {"Identity", "AutoContrast", "Equalize", "Invert",
                                                   "Color", "Sharpness"}
        assert make_policy_augment("AUTO", settings).name == f"fast_autoaugment/{settings.autoaugment_policy}"
        assert make_policy_augment("DADA", settings).name == f"dada/{settings.dada_policy}"
    with pytest.raises(ValueError):
        make_policy_augment("BOGUS", get_settings("SVHN"))


def test_borrowed_policy_prints_its_note_once_per_build(capsys):
    mnist = get_settings("MNIST")
    make_policy_augment("AUTO", mnist)
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count(mnist.policy_note) == 1
    make_policy_augment("RAND", mnist)
    make_policy_augment("DADA", get_settings("SVHN"))
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""


# ---- per-image randomness --------------------------------------------------------------

def test_fraction_of_images_changed_matches_the_application_probability():
    torch.manual_seed(0)
    images = torch.rand(2000, 1, 4, 4)
    for probability in (0.3, 0.8):
        out = single_op_policy("Invert", probability, 0.0)(images)
        inverted = torch.isclose(out, 1.0 - images).all(dim=(1, 2, 3))
        unchanged = torch.equal(out[~inverted], images[~inverted])
        assert unchanged
        assert abs(inverted.float().mean().item() - probability) < 0.04  # 4 standard deviations


def test_images_in_one_batch_draw_different_sub_policies():
    torch.manual_seed(1)
    images = torch.full((2000, 3, 4, 4), 0.8)
    # Invert gives 0.2; Brightness at level 0 (factor 0.1) gives PIL's int(0.1 * 204) = 20 levels.
    policy = SubPolicyAugment([[("Invert", 1.0, 0.0)], [("Brightness", 1.0, 0.0)]])
    out = policy(images)[:, 0, 0, 0]
    inverted = torch.isclose(out, torch.tensor(0.2)).float().mean().item()
    darkened = torch.isclose(out, torch.tensor(20 / 255)).float().mean().item()
    assert inverted + darkened == pytest.approx(1.0)
    assert abs(inverted - 0.5) < 0.05


def test_rand_draws_an_operation_and_a_value_per_image():
    torch.manual_seed(2)
    image = torch.rand(1, 3, 8, 8)
    # --policy-variant bilinear-grey: continuous resampling gives every value its own image
    out = RandAugment(1, 30, bilinear_grey=True)(image.expand(2000, -1, -1, -1))
    distinct = torch.unique(out.reshape(2000, -1), dim=0)
    assert distinct.shape[0] > 1000
    unchanged = (out == image).all(dim=(1, 2, 3)).float().mean().item()
    assert abs(unchanged - 1 / len(RAND_RANGES)) < 0.03  # Identity drawn 1 time in 11


def test_rand_value_is_min_plus_uniform_times_magnitude_over_30():
    torch.manual_seed(3)
    images = torch.ones(4000, 1, 2, 2)
    factors = RandAugment(1, 15, {"Brightness": (0.1, 1.9)})(images)[:, 0, 0, 0]
    # 0.1 + U(0, 1) * (15 / 30) * 1.8 is uniform on [0.1, 1.0]; PIL truncates 255 * factor
    # to a level, half a level below on average.
    assert factors.min().item() >= 0.1 - 1 / 255 and factors.max().item() <= 1.0 + 1e-6
    assert factors.mean().item() == pytest.approx(0.55 - 0.5 / 255, abs=0.015)
    assert factors.std().item() == pytest.approx(0.9 / math.sqrt(12), abs=0.01)


def test_colour_sub_policy_leaves_geometry_alone():
    torch.manual_seed(4)
    images = grey_background_with((16, 16), slice(4, 6), slice(3, 9), 500)
    out = RandAugment(3, 30, COLOUR_RANGES)(images)
    # colour operations map equal pixels far from the bar to equal values (Sharpness reaches
    # one pixel per step, so three steps reach rows 6-8 below the bar in rows 4-5; float
    # rounding of its 3x3 mean leaves ~1e-5): nothing from the bar moved further
    moved = ((out[:, 0, 9:, :] - out[:, 0, 9:10, 0:1]).abs() > 1e-3).any(dim=(1, 2))
    assert not moved.any()


# ---- operation semantics -----------------------------------------------------------------

def test_identity_and_invert_are_exact():
    torch.manual_seed(5)
    images = torch.rand(64, 3, 10, 10)
    assert torch.equal(ops.identity(images, per_image(0, 64)), images)
    assert torch.equal(single_op_policy("Invert")(images), 1.0 - images)
    assert torch.equal(RandAugment(2, 10, {"Identity": (0.0, 0.0)})(images), images)


def test_posterize_keeps_the_stated_number_of_bits():
    levels = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16) / 255.0
    for level, bits in ((0.0, 4), (0.26, 5), (0.5, 6), (0.99, 7), (1.0, 8)):
        out = single_op_policy("Posterize", 1.0, level)(levels.expand(3, -1, -1, -1))
        in_levels = out * 255.0
        assert torch.allclose(in_levels, torch.round(in_levels), atol=1e-3)
        bucket = 2 ** (8 - bits)
        assert (torch.round(in_levels) % bucket == 0).all()
        assert torch.unique(torch.round(in_levels)).numel() == 2 ** bits


def test_solarize_inverts_exactly_the_levels_at_or_above_the_threshold():
    levels = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16) / 255.0
    for level in (0.0, 0.25, 0.5, 0.7, 1.0):
        threshold = 256 * level
        out = single_op_policy("Solarize", 1.0, level)(levels)
        above = (torch.arange(256) >= threshold).reshape(1, 1, 16, 16)
        expected = torch.where(above, 1.0 - levels, levels)
        assert torch.allclose(out, expected, atol=1e-6)


def test_rotate_at_level_one_turns_a_bar_by_30_degrees_either_way():
    torch.manual_seed(6)
    bars = grey_background_with((64, 64), slice(31, 33), slice(12, 52), 200)
    assert orientation_degrees(bars[:, 0] - 0.5).abs().max().item() < 1e-6
    counter_clockwise = ops.OPERATIONS["Rotate"].apply(bars[:1], per_image(30, 1))
    assert orientation_degrees(counter_clockwise[:, 0] - 0.5).item() == pytest.approx(30.0, abs=3.0)
    angles = orientation_degrees(single_op_policy("Rotate", 1.0, 1.0)(bars)[:, 0] - 0.5)
    assert ((angles.abs() - 30.0).abs() < 3.0).all()
    assert 0.35 < (angles > 0).float().mean().item() < 0.65  # random sign


@pytest.mark.parametrize("bilinear_grey", [False, True])
def test_translate_moves_the_centre_of_mass_by_the_stated_fraction_of_the_side(bilinear_grey):
    torch.manual_seed(7)
    # on the grey fill's background (bilinear-grey) or black (the default's fill)
    background = 0.5 if bilinear_grey else 0.0
    blobs = grey_background_with((64, 64), slice(29, 35), slice(29, 35), 200) - 0.5 + background
    operations = ops.BILINEAR_GREY_OPERATIONS if bilinear_grey else ops.OPERATIONS
    # nearest sampling moves by whole pixels: 0.2 * 64 = 12.8 px becomes 13, 0.45 * 64 = 28.8 becomes 29
    tolerance = 0.05 if bilinear_grey else 0.5
    centre_x, centre_y = centre_of_mass(blobs[:, 0] - background)
    moved = operations["TranslateX"].apply(blobs[:1], per_image(0.2, 1))
    moved_x, moved_y = centre_of_mass(moved[:, 0] - background)
    assert (moved_x - centre_x[0]).item() == pytest.approx(-0.2 * 64, abs=tolerance)  # PIL: positive = left
    assert (moved_y - centre_y[0]).item() == pytest.approx(0.0, abs=0.05)
    out_x, out_y = centre_of_mass(single_op_policy("TranslateY", 1.0, 1.0, bilinear_grey)(blobs)[:, 0]
                                  - background)
    shifts = out_y - centre_y
    assert ((shifts.abs() - 0.45 * 64).abs() < tolerance).all()
    assert (out_x - centre_x).abs().max().item() < 0.05
    assert 0.35 < (shifts > 0).float().mean().item() < 0.65  # random sign


@pytest.mark.parametrize("bilinear_grey, fill_levels, sides", [
    (False, (125, 123, 114), {1.0: 9, 0.5: 5}),  # floor(v W) + 1: PIL fills both corners
    (True, (127.5,) * 3, {1.0: 8, 0.5: 4})])  # round(v W)
def test_cutout_blanks_a_square_of_the_stated_fraction_of_the_side(bilinear_grey, fill_levels, sides):
    """The released code's (125, 123, 114) by default, 0.5 under --policy-variant bilinear-grey."""
    torch.manual_seed(8)
    images = torch.full((400, 3, 40, 40), 0.1)
    fill = (torch.tensor(fill_levels) / 255.0).view(1, 3, 1, 1)
    for level, side in sides.items():  # v = level * 0.2, times 40 pixels
        out = single_op_policy("Cutout", 1.0, level, bilinear_grey)(images)
        blank = torch.isclose(out, fill, rtol=0, atol=1e-6).all(dim=1)
        rows = blank.any(dim=2).sum(dim=1)
        cols = blank.any(dim=1).sum(dim=1)
        assert torch.equal(blank.sum(dim=(1, 2)), rows * cols)  # one axis-aligned rectangle
        assert rows.max().item() == side and cols.max().item() == side
        assert (rows >= 1).all() and (cols >= 1).all()  # centred inside the image
        assert ((rows == side) & (cols == side)).float().mean().item() > 0.5  # clipped only near edges


def released_cutout_counts(fraction, size, width):
    """Exact distribution of the pixels the released CutoutAbs covers along an axis of `size`
    pixels: v = fraction * width, centre c uniform on (1, size] (numpy's uniform(size)),
    x0 = int(max(0, c - v/2)), x1 = min(size, x0 + v), PIL filling x0 .. int(x1) inside the
    image. Returns {pixels: probability}, from the lengths of the intervals of c."""
    from fractions import Fraction
    side = Fraction(fraction).limit_denominator(10 ** 6) * width
    half = side / 2
    cuts = sorted({Fraction(1), Fraction(size)} | {k + half for k in range(size + 1) if 1 < k + half < size})
    counts = {}
    for low, high in zip(cuts, cuts[1:]):
        centre = (low + high) / 2  # the count is constant between cuts
        first = math.floor(max(Fraction(0), centre - half))
        last = min(math.floor(min(Fraction(size), first + side)), size - 1)
        counts[last - first + 1] = counts.get(last - first + 1, 0) + (high - low) / (size - 1)
    return counts


@pytest.mark.parametrize("fraction", [0.2, 0.1])
def test_cutout_mean_area_is_the_released_rectangles_expectation(fraction):
    """Mean blanked area over many draws on 32 x 32 against the exact expectation of the
    released draw ((7 - 5.4/31)^2 = 46.59 px at v = 0.2, (4 - 1.8/31)^2 = 15.54 at v = 0.1;
    the earlier square: 32.8, 8.6), within 4 standard errors."""
    torch.manual_seed(11)
    draws = 8000
    counts = released_cutout_counts(fraction, 32, 32)
    mean = float(sum(pixels * p for pixels, p in counts.items()))
    mean_square = float(sum(pixels ** 2 * p for pixels, p in counts.items()))
    expected_area, area_variance = mean ** 2, mean_square ** 2 - mean ** 4  # x and y independent
    out = ops.cutout(torch.zeros(draws, 1, 32, 32), per_image(fraction, draws))
    areas = (out[:, 0] > 0).sum(dim=(1, 2)).double()
    assert expected_area == pytest.approx({0.2: 46.592, 0.1: 15.539}[fraction], abs=1e-3)
    assert abs(areas.mean().item() - expected_area) < 4 * math.sqrt(area_variance / draws)
    assert set(areas.tolist()) <= {float(x * y) for x in counts for y in counts}


def test_cutout_draws_pil_s_rectangle_of_the_released_draw():
    """Given the centre draw (the uniform numbers it takes from torch's RNG, in the order
    cutout takes them), every patch equals PIL's ImageDraw.rectangle of the released
    CutoutAbs on a 'L' image, non-square included (v = fraction * width for both axes)."""
    from PIL import ImageDraw
    count, height, width = 300, 20, 32
    fractions = torch.rand(count, generator=torch.Generator().manual_seed(12)) * 0.2
    fractions[:3] = torch.tensor([0.0, 0.2, 0.1])
    torch.manual_seed(13)
    out = ops.cutout(torch.zeros(count, 1, height, width), fractions)
    torch.manual_seed(13)
    uniform = torch.rand(count, 2, dtype=torch.float64)
    for image, fraction, (u_x, u_y) in zip(out[:, 0], fractions.double().tolist(), uniform.tolist()):
        side = fraction * width
        centre_x, centre_y = width + (1 - width) * u_x, height + (1 - height) * u_y
        x0, y0 = int(max(0, centre_x - side / 2.)), int(max(0, centre_y - side / 2.))
        expected = Image.new("L", (width, height))
        if side > 0:
            ImageDraw.Draw(expected).rectangle((x0, y0, min(width, x0 + side), min(height, y0 + side)), 123)
        assert np.array_equal(np.asarray(expected), image.mul(255).round().byte().numpy())


def test_color_is_identity_on_grayscale_and_desaturates_rgb():
    torch.manual_seed(9)
    grey = torch.rand(8, 1, 6, 6)
    assert torch.equal(ops.color(grey, per_image(0.1, 8)), grey)
    rgb = torch.rand(8, 3, 6, 6)
    washed = ops.color(rgb, per_image(0.0, 8))
    assert torch.allclose(washed[:, 0], washed[:, 1]) and torch.allclose(washed[:, 1], washed[:, 2])


def _pil_reference(batch_uint8, function):
    return torch.stack([torch.from_numpy(np.array(function(Image.fromarray(image)))).permute(2, 0, 1)
                        for image in batch_uint8]).float() / 255.0


def _source_inside(pixel_maps, height, width):
    """Output pixels whose source point has its whole bilinear 2x2 neighbourhood inside."""
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    maps = pixel_maps.double()
    source_x = maps[:, 0, 0, None, None] * xs + maps[:, 0, 1, None, None] * ys[:, None] + maps[:, 0, 2, None, None]
    source_y = maps[:, 1, 0, None, None] * xs + maps[:, 1, 1, None, None] * ys[:, None] + maps[:, 1, 2, None, None]
    inside = (source_x > 0.51) & (source_x < width - 0.51) & (source_y > 0.51) & (source_y < height - 0.51)
    outside = (source_x < -1) | (source_x > width + 1) | (source_y < -1) | (source_y > height + 1)
    return inside[:, None], outside[:, None]


PIL_COLOUR_CASES = [
    ("AutoContrast", 0, lambda image, value: ImageOps.autocontrast(image)),
    ("Equalize", 0, lambda image, value: ImageOps.equalize(image)),
    ("Invert", 0, lambda image, value: ImageOps.invert(image)),
    ("Posterize", 5, lambda image, value: ImageOps.posterize(image, value)),
    ("Solarize", 77.5, lambda image, value: ImageOps.solarize(image, value)),
    ("Color", 0.3, lambda image, value: ImageEnhance.Color(image).enhance(value)),
    ("Color", 1.7, lambda image, value: ImageEnhance.Color(image).enhance(value)),
    ("Contrast", 0.4, lambda image, value: ImageEnhance.Contrast(image).enhance(value)),
    ("Contrast", 1.9, lambda image, value: ImageEnhance.Contrast(image).enhance(value)),
    ("Brightness", 1.6, lambda image, value: ImageEnhance.Brightness(image).enhance(value)),
    ("Sharpness", 0.1, lambda image, value: ImageEnhance.Sharpness(image).enhance(value)),
    ("Sharpness", 1.9, lambda image, value: ImageEnhance.Sharpness(image).enhance(value)),
]
GREY = (128, 128, 128)
PIL_GEOMETRIC_CASES = [
    ("Rotate", 23.0, lambda image, value: image.rotate(value, resample=Image.BILINEAR, fillcolor=GREY)),
    ("ShearX", -0.3, lambda image, value: image.transform(image.size, Image.AFFINE, (1, value, 0, 0, 1, 0),
                                                           resample=Image.BILINEAR, fillcolor=GREY)),
    ("ShearY", 0.25, lambda image, value: image.transform(image.size, Image.AFFINE, (1, 0, 0, value, 1, 0),
                                                           resample=Image.BILINEAR, fillcolor=GREY)),
    ("TranslateX", 0.3, lambda image, value: image.transform(
        image.size, Image.AFFINE, (1, 0, value * image.size[0], 0, 1, 0), resample=Image.BILINEAR, fillcolor=GREY)),
    ("TranslateY", -0.15, lambda image, value: image.transform(
        image.size, Image.AFFINE, (1, 0, 0, 0, 1, value * image.size[1]), resample=Image.BILINEAR, fillcolor=GREY)),
]


@pytest.fixture(scope="module")
def eight_bit_images():
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (6, 20, 24, 3), dtype=np.uint8)
    images[1] = images[1] // 4 + 60  # low contrast, for AutoContrast/Equalize
    images[2, :, :, 0] = 7  # a constant channel
    images[3] = np.sort(images[3], axis=1)  # smooth-ish gradients
    return images


@pytest.mark.parametrize("name,value,pil_operation", PIL_COLOUR_CASES)
def test_colour_operation_matches_pil_on_8bit_images(eight_bit_images, name, value, pil_operation):
    images = torch.from_numpy(eight_bit_images).permute(0, 3, 1, 2).float() / 255.0
    ours = ops.OPERATIONS[name].apply(images, per_image(value, len(images)))
    pil = _pil_reference(eight_bit_images, lambda image: pil_operation(image, value))
    assert (ours - pil).abs().max().item() * 255.0 < 1e-3


# ---- the colour operations against Pillow, level for level ------------------------------

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
             "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
FACTORS = (0.1, 0.25, 0.5, 0.9, 1.0, 1.3, 1.9)


def _uint8_images(kind):
    """(n, H, W, C) uint8 test images: random RGB and grey 32 x 32 (half of them low
    contrast), DIGITS scaled to 0..255 as the project loads it, FashionMNIST test images."""
    rng = np.random.default_rng(21)
    if kind in ("random RGB", "random grey"):
        images = rng.integers(0, 256, (24, 32, 32, 3 if kind == "random RGB" else 1), dtype=np.uint8)
        images[12:] = images[12:] // 6 + 90  # 43 levels: 255 / 42 is no whole number
        return images
    if kind == "DIGITS":
        from sklearn.datasets import load_digits
        return np.round(load_digits().images[:48] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    if not FASHION_MNIST.exists():
        pytest.skip(f"no FashionMNIST at {FASHION_MNIST}")
    with gzip.open(FASHION_MNIST) as images_file:
        return np.frombuffer(images_file.read(), np.uint8, offset=16)[:48 * 784].reshape(48, 28, 28, 1).copy()


IMAGE_KINDS = ("random RGB", "random grey", "DIGITS", "FashionMNIST")


def _pil_levels(images, function):
    """function applied by Pillow to every (H, W, C) uint8 image ('L' for one channel):
    (n, C, H, W) levels as float."""
    out = []
    for image in images:
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out.append(np.asarray(function(pil)).reshape(image.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


def _our_levels(images_in_unit_range):
    """Our output as levels, after checking that it holds 8-bit levels (in [0, 1])."""
    levels = images_in_unit_range * 255.0
    assert (levels - levels.round()).abs().max().item() < 1e-3
    return levels.round()


@pytest.mark.parametrize("kind", IMAGE_KINDS)
@pytest.mark.parametrize("name", sorted(ENHANCERS))
def test_enhance_operation_is_pil_s_level_for_level(kind, name):
    """Color, Contrast, Brightness and Sharpness at factors from 0.1 to 1.9: no level of
    difference, grey and RGB, random and natural images."""
    images = _uint8_images(kind)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    for factor in FACTORS:
        ours = _our_levels(ops.OPERATIONS[name].apply(batch, per_image(factor, len(batch))))
        pil = _pil_levels(images, lambda image: ENHANCERS[name](image).enhance(factor))
        assert torch.equal(ours, pil), (name, factor, (ours - pil).abs().max().item())


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_auto_contrast_is_pil_s_level_for_level(kind):
    images = _uint8_images(kind)
    images[0] = 77  # a constant image, which PIL leaves alone
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    ours = _our_levels(ops.auto_contrast(batch, per_image(0, len(batch))))
    assert torch.equal(ours, _pil_levels(images, ImageOps.autocontrast))


CHAINS = {
    "Sharpness(0.25), Equalize": (
        lambda x, n: ops.equalize(ops.sharpness(x, per_image(0.25, n)), per_image(0, n)),
        lambda image: ImageOps.equalize(ImageEnhance.Sharpness(image).enhance(0.25))),
    "Color(1.7), Contrast(0.4), Equalize": (
        lambda x, n: ops.equalize(ops.contrast(ops.color(x, per_image(1.7, n)), per_image(0.4, n)),
                                  per_image(0, n)),
        lambda image: ImageOps.equalize(ImageEnhance.Contrast(ImageEnhance.Color(image).enhance(1.7))
                                        .enhance(0.4))),
    "AutoContrast, Brightness(1.6), Equalize": (
        lambda x, n: ops.equalize(ops.brightness(ops.auto_contrast(x, per_image(0, n)), per_image(1.6, n)),
                                  per_image(0, n)),
        lambda image: ImageOps.equalize(ImageEnhance.Brightness(ImageOps.autocontrast(image)).enhance(1.6))),
}


@pytest.mark.parametrize("kind", IMAGE_KINDS)
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_chains_ending_in_equalize_are_pil_s_level_for_level(kind, chain):
    """Equalize turns one level of difference before it into another histogram bin, so a
    chain checks that every step lands on PIL's level."""
    ours_chain, pil_chain = CHAINS[chain]
    images = _uint8_images(kind)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(_our_levels(ours_chain(batch, len(batch))), _pil_levels(images, pil_chain))


@pytest.mark.parametrize("name,value,pil_operation", PIL_GEOMETRIC_CASES)
def test_geometric_operation_matches_pil_inside_and_fills_grey_outside(eight_bit_images, name, value,
                                                                      pil_operation):
    """--policy-variant bilinear-grey's geometric operations against PIL's bilinear ones."""
    images = torch.from_numpy(eight_bit_images).permute(0, 3, 1, 2).float() / 255.0
    height, width = images.shape[2:]
    values = per_image(value, len(images))
    ours = ops.BILINEAR_GREY_OPERATIONS[name].apply(images, values)
    pil = _pil_reference(eight_bit_images, lambda image: pil_operation(image, value))
    kinds = torch.full((len(images),), ops.GEOMETRIC_OPERATIONS.index(name))
    inside, outside = _source_inside(ops.affine_maps(kinds, values, height, width), height, width)
    inside, outside = inside.expand_as(ours), outside.expand_as(ours)
    assert inside.float().mean().item() > 0.4
    assert ((ours - pil).abs()[inside] * 255.0).max().item() <= 1.0 + 1e-3
    assert (ours[outside] == ops.GEOMETRIC_FILL).all() and (pil[outside] == 128 / 255.0).all()


def _pil_default_geometric(name, value, image):
    """The released code's calls: PIL's defaults, nearest sampling and a black fill."""
    width, height = image.size
    data = {"ShearX": (1, value, 0, 0, 1, 0), "ShearY": (1, 0, 0, value, 1, 0),
            "TranslateX": (1, 0, value * width, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, value * height)}
    return image.rotate(value) if name == "Rotate" else image.transform(image.size, Image.AFFINE, data[name])


PIL_NEAREST_CASES = [("Rotate", value) for value in (23.0, -7.5, 30.0, -30.0, 0.7, 13.37)] + \
    [("ShearX", value) for value in (-0.3, 0.25, 0.07)] + [("ShearY", value) for value in (0.3, -0.25, 0.13)] + \
    [("TranslateX", value) for value in (0.45, -0.3, 0.125, 0.01)] + \
    [("TranslateY", value) for value in (-0.45, 0.15, 0.33)]


@pytest.mark.parametrize("name,value", PIL_NEAREST_CASES)
def test_geometric_operation_is_pil_s_nearest_with_black_fill_exactly(eight_bit_images, name, value):
    """The default: every pixel equals PIL's (nearest, black fill) on 8-bit images, inside
    the image, along the edge of the valid region and in the fill, RGB and grayscale."""
    value = float(torch.tensor(value))  # the float32 value a policy hands over
    grey = np.stack([np.array(Image.fromarray(image).convert("L")) for image in eight_bit_images])
    for batch in (eight_bit_images, grey[..., None]):
        images = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
        ours = ops.OPERATIONS[name].apply(images, per_image(value, len(images)))
        pil_images = [Image.fromarray(image if image.shape[-1] == 3 else image[..., 0]) for image in batch]
        pil = torch.stack([torch.from_numpy(np.array(_pil_default_geometric(name, value, image))).reshape(
            batch.shape[1:]).permute(2, 0, 1) for image in pil_images]).float() / 255.0
        assert torch.equal(ours, pil)
    filled = (pil == 0).all(dim=1).float().mean().item()
    expected_fill = {"TranslateX": abs(value), "TranslateY": abs(value)}.get(name)
    if expected_fill is not None:  # a whole number of columns/rows, as PIL cuts them
        assert abs(filled - expected_fill) <= 1.0 / 20 + 1e-6
    elif abs(value) > 1:
        assert filled > 0.01  # the rotations leave black corners


def test_one_step_gives_each_image_its_own_operation_as_if_applied_alone():
    torch.manual_seed(14)
    names = [name for name in OPERATION_NAMES if name != "Cutout"]  # Cutout draws its own centre
    operation_ids = torch.tensor([OPERATION_NAMES.index(name) for name in names] * 6)
    values = torch.rand(len(operation_ids)) * 0.3 + 0.1
    values[operation_ids == OPERATION_NAMES.index("Posterize")] += 5.0
    values[operation_ids == OPERATION_NAMES.index("Solarize")] *= 500.0
    values[operation_ids == OPERATION_NAMES.index("Rotate")] *= 60.0
    applied = torch.rand(len(operation_ids)) < 0.8
    images = torch.rand(len(operation_ids), 3, 12, 12)
    out = apply_step(images.clone(), operation_ids, values, applied)
    for index in range(len(operation_ids)):
        alone = ops.OPERATIONS[OPERATION_NAMES[operation_ids[index]]].apply(images[index:index + 1],
                                                                           values[index:index + 1])
        expected = alone[0] if applied[index] else images[index]
        assert torch.allclose(out[index], expected, atol=1e-5), OPERATION_NAMES[operation_ids[index]]


# ---- contract with the training loop -------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("aug_model", [model for model in AUGMENT_MODELS if model != "NONE"])
def test_output_keeps_dtype_shape_device_and_unit_range(aug_model, channels, device):
    settings = get_settings("MNIST" if channels == 1 else "CIFAR100")
    augment = make_policy_augment(aug_model, settings)
    torch.manual_seed(11)
    images = torch.rand(128, channels, 12, 12, device=device)
    images[:8] = images[:8].round()  # extremes
    before = images.clone()
    out = augment(images)
    assert out.dtype == torch.float32 and out.shape == images.shape and out.device == images.device
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert torch.equal(images, before)  # a new tensor; the input is left alone
    assert (out != images).any(dim=(1, 2, 3)).float().mean().item() > 0.3


@pytest.mark.parametrize("device", DEVICES)
def test_the_same_seed_reproduces_the_same_output(device):
    images = torch.rand(64, 3, 16, 16, device=device)
    for aug_model in ("RAND", "AUTO", "DADA", "SEP"):
        augment = make_policy_augment(aug_model, get_settings("SVHN"))
        torch.manual_seed(12)
        first = augment(images)
        torch.manual_seed(12)
        second = augment(images)
        torch.manual_seed(13)
        other = augment(images)
        assert torch.equal(first, second)
        assert not torch.equal(first, other)


@pytest.mark.parametrize("family, name", [("fast_autoaugment", "svhn"), ("dada", "cifar10")])
def test_the_sync_free_gpu_path_gives_the_grouped_path_s_images(family, name):
    """CUDA runs every operation on the whole batch and keeps each image's own result
    (apply_step_dense); it must give exactly what the grouped CPU path gives."""
    from custom_transforms.policies import (POLICY_RANGES, _OPERATION_ID, _range_tables,
                                            apply_step, apply_step_dense, load_policy)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(300, 3, 16, 16, generator=generator)
    # Cutout draws its patch position per image from the RNG, so the two paths place it
    # differently; its semantics are tested on their own above
    names = sorted({op for sub in load_policy(family, name) for op, _, _ in sub} - {"Cutout"})
    ids = torch.tensor([_OPERATION_ID[n] for n in names])
    operation_ids = ids[torch.randint(len(ids), (300,), generator=generator)]
    tables = _range_tables(POLICY_RANGES)
    values = tables["low"][operation_ids] + torch.rand(300, generator=generator) * tables["span"][operation_ids]
    applied = torch.rand(300, generator=generator) < 0.7
    grouped = apply_step(images.clone(), operation_ids, values, applied)
    dense = apply_step_dense(images.clone(), operation_ids, values, applied,
                             sorted(ids.tolist()), tables["low"])
    assert torch.allclose(grouped, dense, atol=1e-6)
    assert not torch.equal(grouped, images)


def test_policy_enhancement_factors_are_the_released_code_s_double_precision_values():
    """A searched policy's level l gives the factor l * (1.9 - 0.1) + 0.1 in double precision,
    as the released code computes it before PIL casts it to float. The same sum in float32
    is off by a last bit for a quarter of the levels, and for these three (found among
    100 000 random levels, 17 of which do it) that moves Brightness's truncated result by
    one level at some pixel level."""
    every_level = np.tile(np.arange(256, dtype=np.uint8), (4, 1))[..., None]  # a 4 x 256 'L' image
    batch = torch.from_numpy(every_level).permute(2, 0, 1)[None].float() / 255.0
    for level in (0.6243201128366018, 0.5144927198794945, 0.21176197365256777):
        factor = level * (1.9 - 0.1) + 0.1
        pil = _pil_levels(every_level[None], lambda image: ImageEnhance.Brightness(image).enhance(factor))
        assert torch.equal(_our_levels(single_op_policy("Brightness", 1.0, level)(batch)), pil), level
        single = torch.tensor(0.1, dtype=torch.float32) + torch.tensor(level, dtype=torch.float32) * 1.8
        assert not torch.equal(_our_levels(ops.brightness(batch, single.reshape(1))), pil), level
