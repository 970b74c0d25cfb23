"""A user's own image folders as a dataset (`--dataset folder --data-dir DIR`).

    DIR/train/<class>/*   the user's labels (possibly noisy and imbalanced)
    DIR/valid/<class>/*   a small, hand-checked set: the clean valid set of docs/design.md §2
    DIR/test/<class>/*    optional; without it the test pass runs on valid/

Class names are the folder names of train/, sorted; label i is classes[i]. The
"official train set" of the per-sample tables (docs/design.md §3) is the train images
followed by the valid images (each block sorted by class, then file name); the
split's valid indices are the valid block, so the split file keeps its format.

Settings come from the data: channels (1 if every image is greyscale), image size
(the most common one; other sizes are resized to it), mean and std of the train
images. 16-bit greyscale images are read as their high byte (as an 8-bit copy of them). They are computed once and cached in DIR/.autodo_stats.json with a stamp
of the files (names, sizes, modification times), so a changed folder recomputes.
Images under 64 px are held in memory as uint8 with the MNIST (1 channel) or CIFAR
(3 channels) settings; larger ones are read from disk with the ImageNet path.
"""
import dataclasses
import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from custom_common.settings import DATASETS, DatasetSettings, small_image_settings
from custom_datasets.containers import DataUnavailable, FolderData, InMemoryData
from custom_transforms.base import imagenet_transforms

FOLDER_DATASET = "folder"
FOLDER_LOADER = "folder"  # its settings' loader: custom_datasets.sources reads it with load_folder
STATS_FILE_NAME = ".autodo_stats.json"
STATS_FORMAT_VERSION = 1
LARGE_IMAGE_SIDE = 64  # from this side on, images are read from disk (the ImageNet path)
LARGE_STATS_IMAGES = 1000  # mean/std of large images from a seeded sample of this many
# torchvision's list (ImageFolder's) and two more formats PIL reads
IMAGE_EXTENSIONS = IMG_EXTENSIONS + (".gif", ".pbm")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
LAYOUT = "DIR/train/<class>/*.png|jpg, DIR/valid/<class>/*, optional DIR/test/<class>/*"


@dataclass(frozen=True)
class FolderLayout:
    root: Path
    classes: Tuple[str, ...]
    # (path, label) per image of each part, sorted by class then file name
    train: Tuple[Tuple[Path, int], ...]
    valid: Tuple[Tuple[Path, int], ...]
    test: Tuple[Tuple[Path, int], ...]  # empty: no test/ folder

    @property
    def stamp(self) -> str:
        digest = hashlib.sha1()
        for path, label in self.train + self.valid + self.test:
            stat = path.stat()
            # the name's bytes as the file system holds them: a name that is not UTF-8
            # (Latin-1 bytes, say) has no .encode(); for a UTF-8 name they are the same
            digest.update(os.fsencode(path.relative_to(self.root)) +
                          f"\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def _images_of(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(part: Path) -> List[str]:
    return sorted(p.name for p in part.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(root) -> FolderLayout:
    """The files of DIR, checked for the layout; raises DataUnavailable naming the problem."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataUnavailable(f"--data-dir {root} is not a folder; expected {LAYOUT}")
    for part in ("train", "valid"):
        if not (root / part).is_dir():
            raise DataUnavailable(f"{root} has no {part}/ folder; expected {LAYOUT}")
    classes = _class_folders(root / "train")
    if not classes:
        raise DataUnavailable(f"{root / 'train'} has no class subfolders; expected {LAYOUT}")
    if len(classes) < 2:
        raise DataUnavailable(f"{root / 'train'} has one class folder ({classes[0]}); "
                              f"a classifier needs at least two")
    parts = {}
    for part in ("train", "valid", "test"):
        folder = root / part
        if part == "test" and not folder.is_dir():
            parts[part] = ()
            continue
        present = _class_folders(folder)
        extra = sorted(set(present) - set(classes))
        if extra:
            raise DataUnavailable(f"class folder {folder / extra[0]} has no counterpart in "
                                  f"{root / 'train'}; every class of {part}/ needs train images")
        samples = []
        for label, name in enumerate(classes):
            images = _images_of(folder / name) if (folder / name).is_dir() else []
            if not images and part != "test":
                what = "is missing" if not (folder / name).is_dir() else "holds no images"
                raise DataUnavailable(f"class '{name}': {folder / name} {what}; every class needs "
                                      f"images in train/ and valid/ ({', '.join(IMAGE_EXTENSIONS)})")
            samples += [(path, label) for path in images]
        parts[part] = tuple(samples)
    if len(parts["valid"]) > len(parts["train"]):
        raise DataUnavailable(f"{root / 'valid'} holds {len(parts['valid'])} images, more than the "
                              f"{len(parts['train'])} of {root / 'train'}; valid/ is the small "
                              f"hand-checked set: move images to train/")
    return FolderLayout(root, tuple(classes), parts["train"], parts["valid"], parts["test"])


# ----------------------------------------------------------------------------- decoding

def _open(path: Path):
    """The image at `path` in a mode that Pillow's convert("L"/"RGB") maps to 8 bits faithfully."""
    from PIL import Image
    try:
        image = Image.open(path)
        image.load()
    except Exception as error:
        raise DataUnavailable(f"{path} cannot be read as an image ({type(error).__name__}: "
                              f"{error}); delete or replace it") from None
    return _eight_bit(image, path)


def _eight_bit(image, path: Path):
    """Pillow's convert clips wider greyscale at 255 instead of scaling it (I;16 -> L keeps
    min(v, 255) in Pillow 13), which leaves a 16-bit image two levels, black and white.
    A 16-bit image keeps its high byte (v >> 8), as an 8-bit copy of it would; 32-bit
    integer or float images are kept where their values are 0-255, refused otherwise."""
    from PIL import Image
    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8))
    if image.mode in ("I", "F"):
        values = np.asarray(image)
        low, high = values.min(), values.max()
        if low < 0 or high > 255:
            raise DataUnavailable(f"{path} holds values from {low} to {high} ({image.mode}: "
                                  f"{'32-bit integers' if image.mode == 'I' else 'floats'}), "
                                  f"outside 0-255; save it as an 8- or 16-bit image")
    return image


def _probe(layout: FolderLayout) -> Tuple[int, Tuple[int, int], int]:
    """(channels, most common (width, height), images of another size), from the headers."""
    from PIL import Image
    sizes, grey = Counter(), True
    for path, _ in layout.train + layout.valid + layout.test:
        try:
            with Image.open(path) as image:
                sizes[image.size] += 1
                grey = grey and image.mode in GREY_MODES
        except Exception as error:
            raise DataUnavailable(f"{path} cannot be read as an image ({type(error).__name__}: "
                                  f"{error}); delete or replace it") from None
    (size, count), = sizes.most_common(1)
    if size[0] != size[1]:
        raise DataUnavailable(f"{layout.root}: the most common image size is {size[0]}x{size[1]}, "
                              f"not square; the networks take square images: crop or pad them")
    return (1 if grey else 3), size, sum(sizes.values()) - count


def decode(path: Path, channels: int, side: int) -> np.ndarray:
    """uint8 (C, side, side); other sizes resized (bilinear)."""
    from PIL import Image
    image = _open(path).convert("L" if channels == 1 else "RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def decode_all(samples, channels: int, side: int) -> torch.Tensor:
    if not samples:
        return torch.zeros((0, channels, side, side), dtype=torch.uint8)
    return torch.from_numpy(np.stack([decode(path, channels, side) for path, _ in samples]))


def labels_of(samples) -> torch.Tensor:
    return torch.tensor([label for _, label in samples], dtype=torch.int64)


def _mean_std(images: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    values = images.double().div(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    std = values.std(1).clamp_min(1e-3)  # a constant channel must not divide by zero
    return tuple(round(float(v), 6) for v in values.mean(1)), tuple(round(float(v), 6) for v in std)


# ----------------------------------------------------------------------------- settings

def stats_path(root) -> Path:
    return Path(root) / STATS_FILE_NAME


def _read_cached_stats(root: Path, stamp: str) -> Optional[dict]:
    try:
        stats = json.loads(stats_path(root).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stats, dict) or stats.get("format") != STATS_FORMAT_VERSION \
            or stats.get("stamp") != stamp:
        return None
    return stats


def _write_stats(root: Path, stats: dict) -> None:
    from custom_common import atomic_files
    try:
        atomic_files.save_json(stats, stats_path(root))
    except OSError as error:  # a read-only data folder: recompute next time
        print(f"note: cannot cache the folder statistics in {stats_path(root)} "
              f"({error.strerror or error}); they are recomputed on every start", file=sys.stderr)


def compute_stats(layout: FolderLayout) -> dict:
    """Everything the settings need from the images; decodes every image once (small images)
    or a seeded sample of the train images (large ones), after checking every header."""
    channels, (side, _), resized = _probe(layout)
    if resized:
        print(f"note: {resized} image{'s are' if resized > 1 else ' is'} not {side}x{side}, the most "
              f"common size in {layout.root}; resized to it (bilinear)", file=sys.stderr)
    train = list(layout.train)
    if side >= LARGE_IMAGE_SIDE:
        channels = 3  # the ImageNet path reads RGB
        if len(train) > LARGE_STATS_IMAGES:
            chosen = np.random.default_rng(0).choice(len(train), LARGE_STATS_IMAGES, replace=False)
            train = [train[i] for i in sorted(chosen)]
    mean, std = _mean_std(decode_all(train, channels, min(side, LARGE_IMAGE_SIDE * 4)))
    return {"format": STATS_FORMAT_VERSION, "stamp": layout.stamp, "classes": list(layout.classes),
            "channels": channels, "image_size": side, "resized_images": resized,
            "mean": list(mean), "std": list(std), "train_images": len(layout.train),
            "valid_images": len(layout.valid), "test_images": len(layout.test)}


def dataset_name(root) -> str:
    """Run folders of DIR go to {data}/folder_{DIR's name}_{8 hex digits}/runN: the name to
    read, the digits (of DIR's absolute path, links resolved) to keep /a/data and /b/data
    apart, and to give DIR the same folder however it is written on the command line."""
    path = Path(root).expanduser().resolve()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.name) or "data"
    digest = hashlib.sha1(os.fsencode(path)).hexdigest()[:8]
    return f"{FOLDER_DATASET}_{safe}_{digest}"


def folder_settings(root) -> DatasetSettings:
    """DatasetSettings of DIR (statistics cached beside the data); raises DataUnavailable."""
    layout = scan_folder(root)
    stamp = layout.stamp
    stats = _read_cached_stats(layout.root, stamp)
    if stats is None:
        stats = compute_stats(layout)
        _write_stats(layout.root, stats)
    num_classes, side = len(stats["classes"]), stats["image_size"]
    num_train, num_valid = stats["train_images"], stats["valid_images"]
    common = dict(name=dataset_name(layout.root), train_size=num_train + num_valid,
                  valid_size=num_valid, num_classes=num_classes, mean=tuple(stats["mean"]),
                  std=tuple(stats["std"]), folder=str(layout.root.resolve()),
                  classes=tuple(stats["classes"]), loader=FOLDER_LOADER)
    if side >= LARGE_IMAGE_SIDE:
        return dataclasses.replace(DATASETS["ImageNet"], **common,
                                   batch_size=min(256, max(8, num_train // 10)),
                                   hyper_batch_size=min(128, max(8, num_valid)))
    return small_image_settings(stats["channels"], side, num_train, num_valid, **common)


def load_folder(settings: DatasetSettings) -> "InMemoryData | FolderData":
    """The images of settings.folder: train block then valid block as the official train set."""
    layout = scan_folder(settings.folder)
    if tuple(layout.classes) != settings.classes or \
            len(layout.train) + len(layout.valid) != settings.train_size:
        raise DataUnavailable(f"{layout.root} changed since its settings were read; start again")
    official = layout.train + layout.valid
    valid_indices = torch.arange(len(layout.train), len(official))
    test = layout.test or layout.valid
    test_is_valid = not layout.test
    paths = [str(path) for path, _ in official]
    if not settings.in_memory:
        train = SampleList(official, imagenet_transforms(train=True))
        return FolderData(train, train.with_transform(imagenet_transforms(train=False)),
                          SampleList(test, imagenet_transforms(train=False)), labels_of(official),
                          labels_of(test), list(layout.classes), valid_indices=valid_indices,
                          train_paths=paths, test_is_valid=test_is_valid)
    side = settings.image_size
    return InMemoryData(decode_all(official, settings.channels, side), labels_of(official),
                        decode_all(test, settings.channels, side), labels_of(test),
                        valid_indices=valid_indices, train_paths=paths, test_is_valid=test_is_valid)


class SampleList(torch.utils.data.Dataset):
    """(transform(image), label, index) of a list of (path, label): the ImageNet path's
    item format for images that are not in one ImageFolder."""

    def __init__(self, samples, transform):
        self.samples, self.transform = list(samples), transform

    def with_transform(self, transform) -> "SampleList":
        return SampleList(self.samples, transform)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return self.transform(_open(path).convert("RGB")), label, index


def is_folder_dataset(name: str) -> bool:
    return name == FOLDER_DATASET


def describe(settings: DatasetSettings) -> str:
    """One line for the log: what was found in the folder."""
    where = "in memory" if settings.in_memory else "read from disk"
    return (f"{settings.folder}: {settings.num_classes} classes, "
            f"{settings.train_size - settings.valid_size} train and {settings.valid_size} valid "
            f"images, {settings.channels} channel{'s' * (settings.channels > 1)}, "
            f"{settings.image_size} px ({where}), model {settings.model}")

