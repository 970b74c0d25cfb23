"""Batched base transforms of docs/design.md §5 (custom_transforms.base): random crop with
zero padding, horizontal flip, random erasing, normalisation, and the train
transform of the MNIST family (normalise only)."""
import math

import pytest
import torch

from custom_common.settings import get_settings
from custom_transforms.base import (EvalTransform, TrainTransform, normalize, random_crop,
                                    random_erasing, random_flip)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(1234)


def binomial_band(n, p, sigmas=4.0):
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return mean - sigmas * sd, mean + sigmas * sd


# ----------------------------------------------------------------------------- crop

def crop_offsets(images, output, padding):
    """For each image, every (top, left) whose crop of the zero-padded image equals the output."""
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    height, width = images.shape[-2:]
    found = []
    for i in range(len(images)):
        found.append([(top, left) for top in range(2 * padding + 1) for left in range(2 * padding + 1)
                      if torch.equal(padded[i, :, top:top + height, left:left + width], output[i])])
    return found


def test_random_crop_is_a_crop_of_the_zero_padded_image_for_every_image():
    images = torch.rand(64, 3, 8, 8) + 0.5  # no zeros: the matching offset is unique
    output = random_crop(images, padding=4)
    assert output.shape == images.shape and output.dtype == images.dtype
    offsets = crop_offsets(images, output, padding=4)
    assert all(len(match) == 1 for match in offsets)
    distinct = {match[0] for match in offsets}
    assert len(distinct) >= 5
    # both axes move, and the full range 0..8 is reachable
    assert len({top for top, _ in distinct}) >= 3 and len({left for _, left in distinct}) >= 3


def test_random_crop_offsets_cover_the_range_uniformly():
    images = torch.rand(2000, 1, 6, 6) + 0.5
    output = random_crop(images, padding=2)
    offsets = [match[0] for match in crop_offsets(images, output, padding=2)]
    tops = torch.bincount(torch.tensor([top for top, _ in offsets]), minlength=5)
    low, high = binomial_band(2000, 1 / 5)
    assert len(tops) == 5 and all(low < int(count) < high for count in tops)


def test_random_crop_fills_the_border_with_zeros():
    images = torch.ones(200, 1, 8, 8)
    output = random_crop(images, padding=4)
    zero_fraction = (output == 0).float().mean(dim=(1, 2, 3))
    # some crop is shifted (zeros enter), none is all zeros (at least 4 of 8 rows/cols stay)
    assert float(zero_fraction.max()) > 0 and float(zero_fraction.max()) <= 1 - 0.25
    assert int((zero_fraction == 0).sum()) < 200


# ----------------------------------------------------------------------------- flip

def test_random_flip_flips_about_half_and_flipped_images_equal_x_flip():
    images = torch.rand(2000, 3, 5, 7)
    output = random_flip(images)
    same = torch.tensor([torch.equal(o, x) for o, x in zip(output, images)])
    flipped = torch.tensor([torch.equal(o, x.flip(-1)) for o, x in zip(output, images)])
    assert bool((same ^ flipped).all())  # each image is exactly one of the two
    low, high = binomial_band(2000, 0.5)
    assert low < int(flipped.sum()) < high


# ----------------------------------------------------------------------------- erasing

def erased_rectangles(output):
    """(image index, height, width) of the zero rectangle of each erased image; asserts shape."""
    zero = (output == 0)
    assert bool((zero.all(dim=1) == zero.any(dim=1)).all())  # every channel erased alike
    zero = zero.all(dim=1)
    rectangles = []
    for i in torch.nonzero(zero.flatten(1).any(1)).flatten().tolist():
        rows = torch.nonzero(zero[i].any(1)).flatten()
        cols = torch.nonzero(zero[i].any(0)).flatten()
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(zero[i].sum()) == height * width  # a solid rectangle
        rectangles.append((i, height, width))
    return rectangles


def test_random_erasing_erases_about_half_the_images_with_zero_rectangles():
    images = torch.rand(2000, 3, 32, 32) + 0.5
    output = random_erasing(images)
    rectangles = erased_rectangles(output)
    low, high = binomial_band(2000, 0.5)
    assert low < len(rectangles) < high
    erased = torch.zeros(2000, dtype=torch.bool)
    erased[[i for i, _, _ in rectangles]] = True
    assert torch.equal(output[~erased], images[~erased])
    # outside its rectangle an erased image is untouched
    kept = output[erased] != 0
    assert torch.equal(output[erased][kept], images[erased][kept])


def test_random_erasing_rectangles_cover_2_to_33_percent_up_to_pixel_rounding():
    """torchvision's rule: area fraction in [0.02, 0.33], aspect h/w in [0.3, 3.3], then each
    side rounded to whole pixels, so the realised fraction may exceed the bounds by the rounding."""
    side = 32
    area = side * side
    output = random_erasing(torch.ones(3000, 3, side, side))
    rectangles = erased_rectangles(output)
    assert len(rectangles) > 1000
    fractions = torch.tensor([h * w / area for _, h, w in rectangles])
    for _, h, w in rectangles:
        assert h < side and w < side
        assert (h + 0.5) * (w + 0.5) >= 0.02 * area and (h - 0.5) * (w - 0.5) <= 0.33 * area
        assert (h + 0.5) / (w - 0.5) >= 0.3 and (h - 0.5) / (w + 0.5) <= 3.3
    assert float(((fractions >= 0.02) & (fractions <= 0.33)).float().mean()) > 0.95
    assert 0.015 < float(fractions.min()) and float(fractions.max()) < 0.36
    # areas are spread over the range, not one size
    assert float(fractions.min()) < 0.05 and float(fractions.max()) > 0.28


def test_random_erasing_with_probability_zero_changes_nothing():
    images = torch.rand(100, 3, 16, 16) + 0.5
    assert torch.equal(random_erasing(images, probability=0.0), images)


# ----------------------------------------------------------------------------- normalise

@pytest.mark.parametrize("dataset", ["CIFAR10", "SVHN", "MNIST", "ImageNet"])
def test_normalize_matches_x_over_255_minus_mean_over_std(dataset):
    settings = get_settings(dataset)
    images = torch.randint(0, 256, (4, settings.channels, 5, 6), dtype=torch.uint8)
    mean = torch.tensor(settings.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(settings.std, dtype=torch.float64).view(1, -1, 1, 1)
    expected = (images.double() / 255 - mean) / std
    output = normalize(images, settings)
    assert output.dtype == torch.float32
    assert torch.allclose(output.double(), expected, atol=1e-5, rtol=0)
    # unit floats give the same result as the uint8 they came from
    assert torch.allclose(normalize(images.float() / 255, settings), output, atol=1e-6, rtol=0)


def test_normalize_uses_the_cifar_constants_per_channel():
    settings = get_settings("CIFAR10")
    images = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    values = normalize(images, settings).flatten().tolist()
    expected = [(1 - m) / s for m, s in zip((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))]
    assert values == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("dataset", ["MNIST", "FashionMNIST", "DIGITS"])
def test_train_transform_with_base_none_equals_normalize(dataset):
    settings = get_settings(dataset)
    assert settings.base_transform == "none"
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    expected = normalize(images, settings)
    assert torch.equal(TrainTransform(settings)(images), expected)
    assert torch.equal(EvalTransform(settings)(images), expected)


def test_cifar_train_transform_crops_flips_and_erases_but_keeps_shape():
    settings = get_settings("CIFAR10")
    assert settings.base_transform == "crop_flip_erase"
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    output = TrainTransform(settings)(images)
    assert output.shape == (64, 3, 32, 32) and output.dtype == torch.float32
    plain = normalize(images, settings)
    unchanged = sum(torch.equal(o, p) for o, p in zip(output, plain))
    assert unchanged < 16  # 1/81 are uncropped, half of those unflipped, half of those unerased


# ----------------------------------------------------------------- where the policy runs

def _composed(images, settings, policy, policy_after_crop):
    """The train transform written out step by step, policy first (the released code's
    order) or after crop and flip (--policy-variant after-crop)."""
    images = images.float() / 255.0
    if not policy_after_crop:
        images = policy(images)
    images = random_crop(images, padding=4)
    if settings.base_transform == "crop_flip_erase":
        images = random_flip(images)
    if policy_after_crop:
        images = policy(images)
    return random_erasing(normalize(images, settings))


@pytest.mark.parametrize("policy_after_crop", [False, True])
@pytest.mark.parametrize("dataset, aug_model", [("CIFAR10", "AUTO"), ("SVHN", "RAND"), ("CIFAR100", "SHA")])
def test_train_transform_applies_the_policy_before_or_after_the_crop_on_the_same_draws(
        dataset, aug_model, policy_after_crop):
    from custom_transforms.policies import make_policy_augment
    settings = get_settings(dataset)
    policy = make_policy_augment(aug_model, settings, bilinear_grey=policy_after_crop)
    images = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(5)
    output = TrainTransform(settings, policy, policy_after_crop)(images)
    torch.manual_seed(5)
    assert torch.equal(output, _composed(images, settings, policy, policy_after_crop))
    torch.manual_seed(5)
    assert not torch.equal(output, _composed(images, settings, policy, not policy_after_crop))


def test_policy_first_leaves_the_crop_padding_black_and_after_crop_inverts_it():
    """Invert on black images: run first (the default) it whitens the image and the crop then
    pads with black, 1 - (1 - 2.22/32)^2 = 13.4 % of the pixels on average; run after the
    crop (--policy-variant after-crop) it whitens the padding too."""
    from custom_transforms.policies import SubPolicyAugment
    settings = get_settings("SVHN")  # crop and erase, no flip
    invert = SubPolicyAugment([[("Invert", 1.0, 0.0)]])
    images = torch.zeros(2000, 3, 32, 32, dtype=torch.uint8)
    black = normalize(torch.zeros(1, 3, 1, 1), settings)
    for policy_after_crop, low, high in ((False, 0.12, 0.15), (True, 0.0, 0.0)):
        output = TrainTransform(settings, invert, policy_after_crop)(images)
        padding = torch.isclose(output, black, rtol=0, atol=1e-6).all(dim=1).float().mean().item()
        assert low <= padding <= high
