"""Throughput of the batched policy augmentations against a per-image PIL path.

    .venv/bin/python bench/augment_throughput.py [--batch 256] [--repeats 20] [--threads N] [--no-cuda]

The PIL path below exists only as the comparison point: it draws the same
operations, probabilities, signs and values per image with Python's `random`
and applies PIL.ImageOps / ImageEnhance / Image.transform image by image, the
way a DataLoader worker would. It is timed twice: on ready-made PIL images
(the PIL operations alone, which flatters PIL), and from the float tensor batch
the training loop holds to PIL images and back (what replacing the tensor path
with PIL would cost there).
"""
import argparse
import random
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from custom_common.settings import get_settings
from custom_transforms.policies import (
    COLOUR_RANGES, POLICY_RANGES, RAND_RANGES, RandAugment, SubPolicyAugment, load_policy)

GREY = (128, 128, 128)
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def _affine(image, data):
    return image.transform(image.size, Image.AFFINE, data, resample=Image.BILINEAR, fillcolor=GREY)


def _cutout(image, fraction):
    """The released code's rectangle (ops._released_cutout_patch), drawn by PIL."""
    width, height = image.size
    side = fraction * width
    if side <= 0:
        return image
    left = int(max(0, random.uniform(1, width) - side / 2))
    top = int(max(0, random.uniform(1, height) - side / 2))
    image = image.copy()
    ImageDraw.Draw(image).rectangle((left, top, min(width, left + side), min(height, top + side)), GREY)
    return image


PIL_OPERATIONS = {
    "Identity": lambda image, value: image,
    "AutoContrast": lambda image, value: ImageOps.autocontrast(image),
    "Equalize": lambda image, value: ImageOps.equalize(image),
    "Invert": lambda image, value: ImageOps.invert(image),
    "Posterize": lambda image, value: ImageOps.posterize(image, int(value)),
    "Solarize": lambda image, value: ImageOps.solarize(image, value),
    "Color": lambda image, value: ImageEnhance.Color(image).enhance(value),
    "Contrast": lambda image, value: ImageEnhance.Contrast(image).enhance(value),
    "Brightness": lambda image, value: ImageEnhance.Brightness(image).enhance(value),
    "Sharpness": lambda image, value: ImageEnhance.Sharpness(image).enhance(value),
    "Cutout": _cutout,
    "Rotate": lambda image, value: image.rotate(value, resample=Image.BILINEAR, fillcolor=GREY),
    "ShearX": lambda image, value: _affine(image, (1, value, 0, 0, 1, 0)),
    "ShearY": lambda image, value: _affine(image, (1, 0, 0, value, 1, 0)),
    "TranslateX": lambda image, value: _affine(image, (1, 0, value * image.size[0], 0, 1, 0)),
    "TranslateY": lambda image, value: _affine(image, (1, 0, 0, 0, 1, value * image.size[1])),
}


def _pil_value(name, fraction, ranges):
    low, high = ranges[name]
    value = low + fraction * (high - low)
    if name in GEOMETRIC and random.random() < 0.5:
        value = -value
    return value


def pil_rand_augment(images, num_ops, magnitude, ranges):
    names = list(ranges)
    out = []
    for image in images:
        for _ in range(num_ops):
            name = random.choice(names)
            image = PIL_OPERATIONS[name](image, _pil_value(name, random.random() * magnitude / 30.0, ranges))
        out.append(image)
    return out


def pil_sub_policy_augment(images, sub_policies):
    out = []
    for image in images:
        for name, probability, level in random.choice(sub_policies):
            if random.random() < probability:
                image = PIL_OPERATIONS[name](image, _pil_value(name, min(max(level, 0.0), 1.0), POLICY_RANGES))
        out.append(image)
    return out


def _seconds_per_call(function, repeats, synchronize=lambda: None):
    """Median time of one call: a shared 2-core machine has bursts of other work, and the
    median of single calls ignores them where a mean over all calls does not."""
    function()  # warm-up: lazily built tables, allocator, kernels
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _to_pil(images):
    return [Image.fromarray(image) for image in images.permute(0, 2, 3, 1).mul(255).round().byte().numpy()]


def _from_pil(pil_images):
    return torch.from_numpy(np.stack([np.asarray(image) for image in pil_images])).permute(0, 3, 1, 2).float() / 255


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = get_settings("SVHN")
    torch.manual_seed(0)
    random.seed(0)
    images = torch.rand(args.batch, 3, 32, 32)
    pil_images = _to_pil(images)
    autoaugment = load_policy("fast_autoaugment", settings.autoaugment_policy)
    dada = load_policy("dada", settings.dada_policy)
    methods = {
        f"RAND (N={settings.rand_n}, M={settings.rand_m})": (
            RandAugment(settings.rand_n, settings.rand_m, RAND_RANGES),
            lambda batch: pil_rand_augment(batch, settings.rand_n, settings.rand_m, RAND_RANGES)),
        f"AUTO (fast_autoaugment/{settings.autoaugment_policy})": (
            SubPolicyAugment(autoaugment), lambda batch: pil_sub_policy_augment(batch, autoaugment)),
        f"DADA (dada/{settings.dada_policy})": (
            SubPolicyAugment(dada, clip_levels=True), lambda batch: pil_sub_policy_augment(batch, dada)),
        f"colour (N={settings.colour_n}, M={settings.colour_m})": (
            RandAugment(settings.colour_n, settings.colour_m, COLOUR_RANGES),
            lambda batch: pil_rand_augment(batch, settings.colour_n, settings.colour_m, COLOUR_RANGES)),
    }
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    cuda_images = images.cuda() if use_cuda else None
    print(f"batch of {args.batch} x 3x32x32 (SVHN settings), {args.repeats} timed batches "
          f"({max(1, args.repeats // 4)} for PIL), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" + (f", {torch.cuda.get_device_name()}" if use_cuda else ""))
    print("images/s (median batch); 'PIL' = PIL ops on ready PIL images, 'PIL+conv' = float tensor -> PIL -> ops -> "
          "float tensor; ratios are tensor path / PIL path")
    header = f"{'method':36s} {'PIL':>8s} {'PIL+conv':>9s} {'CPU':>8s} {'/PIL':>6s} {'/+conv':>7s}"
    if use_cuda:
        header += f" {'CUDA':>9s} {'/PIL':>7s}"
    print(header)
    pil_repeats = max(1, args.repeats // 4)
    for name, (augment, pil_augment) in methods.items():
        pil_rate = args.batch / _seconds_per_call(lambda: pil_augment(pil_images), pil_repeats)
        converted_rate = args.batch / _seconds_per_call(
            lambda: _from_pil(pil_augment(_to_pil(images))), pil_repeats)
        cpu_rate = args.batch / _seconds_per_call(lambda: augment(images), args.repeats)
        line = (f"{name:36s} {pil_rate:8.0f} {converted_rate:9.0f} {cpu_rate:8.0f} "
                f"{cpu_rate / pil_rate:5.1f}x {cpu_rate / converted_rate:6.1f}x")
        if use_cuda:
            cuda_rate = args.batch / _seconds_per_call(lambda: augment(cuda_images), args.repeats,
                                                       torch.cuda.synchronize)
            line += f" {cuda_rate:9.0f} {cuda_rate / pil_rate:6.0f}x"
        print(line)


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="images per batch")
    parser.add_argument("--repeats", type=int, default=20, help="timed batches per method (PIL: a quarter)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-cuda", action="store_true", help="time the CPU path only")
    return parser.parse_args()


if __name__ == "__main__":
    main(get_args())
