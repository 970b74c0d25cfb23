"""Reading the official train and test sets (docs/design.md §5, §8).

Datasets that fit in device memory come back as uint8 tensors (N, C, H, W)
with int64 labels; the training loop moves them to the device once. ImageNet
comes back as two torchvision ImageFolder datasets read by DataLoader workers.

Files are looked for in torchvision's layout under `{data}` and downloaded
with torchvision's helpers where the network allows. The parsers are our own
(a few lines each) because torchvision's dataset classes insist on the
official checksums, and researchers keep converted or partial copies.

load_data reads a dataset with the reader that its settings' `loader` names (LOADERS):
the settings table says how a dataset's files are read, not a test of its name here.
"""
import gzip
import pickle
import struct
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from custom_common.settings import DatasetSettings
from custom_datasets.containers import DataUnavailable, FolderData, InMemoryData, UnreadableImage
from custom_transforms.base import imagenet_transforms

# where Debian's package dataset-fashion-mnist installs FashionMNIST's four files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- MNIST family

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), plain or gzip-compressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(shape)):
            raise ValueError(f"expected {int(np.prod(shape))} values, found {data.size} (truncated?)")
        return data.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as error:
        raise DataUnavailable(f"{path} is corrupt ({error}); delete it and place a fresh copy") from None


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx(folders: Sequence[Path], stem: str) -> Optional[Path]:
    for folder in folders:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def load_mnist_family(name: str, data_root: Path, download: bool,
                      package_copy: Optional[Tuple[Path, str]] = None) -> InMemoryData:
    """The IDX files of {data}/{name}/raw, downloaded with torchvision's dataset `name`;
    `package_copy`: (folder, package) where a system package installs the same files, read
    where {data} has none and named when neither has them."""
    raw = Path(data_root) / name / "raw"
    folders = [raw] + ([package_copy[0]] if package_copy else [])
    paths = [_find_idx(folders, stem) for stem in _IDX_FILES]
    if None in paths and download:
        import torchvision
        try:
            getattr(torchvision.datasets, name)(str(data_root), train=True, download=True)
            getattr(torchvision.datasets, name)(str(data_root), train=False, download=True)
        except Exception:
            pass  # reported below with the exact files that are still missing
        paths = [_find_idx(folders, stem) for stem in _IDX_FILES]
    if None in paths:
        missing = [stem for stem, path in zip(_IDX_FILES, paths) if path is None]
        hint = f" (or: apt-get install {package_copy[1]})" if package_copy else ""
        raise DataUnavailable(f"{name} not found and could not be downloaded: place "
                              f"{', '.join(m + '[.gz]' for m in missing)} in {raw}/{hint}")
    train_x, train_y, test_x, test_y = (read_idx(path) for path in paths)
    return InMemoryData(torch.from_numpy(train_x.copy()).unsqueeze(1),
                        torch.from_numpy(train_y.astype(np.int64)),
                        torch.from_numpy(test_x.copy()).unsqueeze(1),
                        torch.from_numpy(test_y.astype(np.int64)))


# ----------------------------------------------------------------------------- DIGITS

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def load_digits() -> InMemoryData:
    """scikit-learn's 8x8 digits with a fixed, seeded, stratified 20 % test split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split
    digits = sklearn_digits()
    # pixel values are 0..16; scale to the 0..255 of every other dataset
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    targets = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, targets, test_size=DIGITS_TEST_FRACTION, stratify=targets,
        random_state=DIGITS_SPLIT_SEED)
    return InMemoryData(torch.from_numpy(train_x), torch.from_numpy(train_y),
                        torch.from_numpy(test_x), torch.from_numpy(test_y))


# ----------------------------------------------------------------------------- CIFAR

_CIFAR = {
    "CIFAR10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "CIFAR10"),
    "CIFAR100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "CIFAR100"),
}


def _read_cifar_batches(folder: Path, names: List[str], label_key: str):
    images, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="latin1")
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
            raise DataUnavailable(f"{path} is corrupt ({type(error).__name__}: {error}); "
                                  f"delete it and place a fresh copy") from None
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_cifar(name: str, data_root: Path, download: bool) -> InMemoryData:
    folder_name, train_names, test_names, label_key, tv_name = _CIFAR[name]
    folder = Path(data_root) / folder_name
    needed = train_names + test_names
    if download and not all((folder / n).is_file() for n in needed):
        import torchvision
        try:
            getattr(torchvision.datasets, tv_name)(str(data_root), train=True, download=True)
        except Exception:
            pass  # reported below with the exact files that are still missing
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise DataUnavailable(f"{name} not found and could not be downloaded: extract the official "
                              f"python archive so that {', '.join(missing)} are in {folder}/")
    train_x, train_y = _read_cifar_batches(folder, train_names, label_key)
    test_x, test_y = _read_cifar_batches(folder, test_names, label_key)
    return InMemoryData(train_x, train_y, test_x, test_y)


# ----------------------------------------------------------------------------- SVHN

def _read_svhn(path: Path):
    import scipy.io
    try:
        mat = scipy.io.loadmat(str(path))
        images = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8)  # (32,32,3,N) -> (N,3,32,32)
        labels = mat["y"].astype(np.int64).reshape(-1) % 10  # the files store digit 0 as label 10
    except Exception as error:
        raise DataUnavailable(f"{path} is corrupt ({type(error).__name__}: {error}); "
                              f"delete it and place a fresh copy") from None
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def load_svhn(name: str, data_root: Path, download: bool, extra: bool = False) -> InMemoryData:
    """SVHN's train and test files; with `extra`, the extra set follows the train set."""
    # SVHN_extra shares SVHN's raw files: the extra set is 1.3 GB and need not be stored twice
    folder = Path(data_root) / "SVHN"
    splits = ["train", "test"] + (["extra"] if extra else [])
    files = {split: folder / f"{split}_32x32.mat" for split in splits}
    if download:
        import torchvision
        for split, path in files.items():
            if not path.is_file():
                try:
                    torchvision.datasets.SVHN(str(folder), split=split, download=True)
                except Exception:
                    pass  # reported below with the exact files that are still missing
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise DataUnavailable(f"{name} not found and could not be downloaded: place "
                              f"{', '.join(missing)} in {folder}/")
    train_x, train_y = _read_svhn(files["train"])
    if extra:
        extra_x, extra_y = _read_svhn(files["extra"])
        train_x, train_y = torch.cat([train_x, extra_x]), torch.cat([train_y, extra_y])
    test_x, test_y = _read_svhn(files["test"])
    return InMemoryData(train_x, train_y, test_x, test_y)


# ----------------------------------------------------------------------------- ImageNet

IMAGE_FOLDER_LAYOUT = "one subfolder per class holding .JPEG/.jpg/.png images"


def _folders_without_images(folder: Path) -> str:
    """Which part of `folder` torchvision found no images in (only called once it failed)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS
    classes = sorted(entry for entry in folder.iterdir() if entry.is_dir())
    if not classes:
        return f"{folder} has no class subfolders"
    empty = [c.name for c in classes
             if not any(path.name.lower().endswith(IMG_EXTENSIONS) for path in c.rglob("*"))]
    return f"{folder}: {len(empty)} of {len(classes)} class folders hold no images ({_first_few(empty)})"


def _first_few(names: Sequence[str], count: int = 3) -> str:
    return ", ".join(names[:count]) + (f", ... ({len(names) - count} more)" if len(names) > count else "")


class IndexedFolder(torch.utils.data.Dataset):
    """An ImageFolder whose items are (uint8 image tensor, label, index)."""

    def __init__(self, folder, transform: Callable):
        import torchvision
        folder = Path(folder)
        try:
            self.folder = torchvision.datasets.ImageFolder(str(folder))
        except FileNotFoundError:
            # torchvision's "Couldn't find any class folder" / "Found no valid file for the classes"
            raise DataUnavailable(f"{_folders_without_images(folder)}; expected "
                                  f"{IMAGE_FOLDER_LAYOUT}") from None
        except Exception as error:  # unreadable folder, a file where a folder should be, ...
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            raise DataUnavailable(f"{folder} cannot be indexed ({reason}); expected "
                                  f"{IMAGE_FOLDER_LAYOUT}") from None
        self.transform = transform
        self.targets = torch.tensor(self.folder.targets, dtype=torch.int64)

    def with_transform(self, transform: Callable) -> "IndexedFolder":
        """The same images (no second scan of the folder) through another transform."""
        view = object.__new__(IndexedFolder)
        view.folder, view.targets, view.transform = self.folder, self.targets, transform
        return view

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, index):
        path, target = self.folder.samples[index]
        try:
            image = self.folder.loader(path)
        except Exception as error:  # PIL: truncated or corrupt file, not an image at all, ...
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            raise UnreadableImage(f"{path} cannot be read as an image ({reason}); replace or "
                                  f"delete the file") from None
        return self.transform(image), target, index


def load_imagenet(data_root: Path) -> FolderData:
    folder = Path(data_root) / "ImageNet"
    for split in ("train", "val"):
        if (folder / split).exists() and not (folder / split).is_dir():
            raise DataUnavailable(f"{folder / split} is a file, not a folder; place the images as "
                                  f"{folder}/{split}/<class>/*.JPEG ({IMAGE_FOLDER_LAYOUT})")
        if not (folder / split).is_dir():
            raise DataUnavailable(f"ImageNet not found (it cannot be downloaded): place the images "
                                  f"as {folder}/train/<class>/*.JPEG and {folder}/val/<class>/*.JPEG")
    train = IndexedFolder(folder / "train", imagenet_transforms(train=True))
    test = IndexedFolder(folder / "val", imagenet_transforms(train=False))
    # ImageFolder numbers the classes of each folder on its own: a class missing on one
    # side would shift every later label, and disjoint sets would all be label 0
    classes = train.folder.classes
    if test.folder.classes != classes:
        only_train = sorted(set(classes) - set(test.folder.classes))
        only_val = sorted(set(test.folder.classes) - set(classes))
        raise DataUnavailable(f"the class folders of {folder}/train and {folder}/val differ: "
                              f"{len(only_train)} only in train/ ({_first_few(only_train) or '-'}), "
                              f"{len(only_val)} only in val/ ({_first_few(only_val) or '-'}); "
                              f"both must hold the same classes")
    return FolderData(train, train.with_transform(imagenet_transforms(train=False)), test,
                      train.targets, test.targets, classes)


def _remove_new_empty_folders(before: set, root: Path) -> None:
    """A failed download must not leave empty folders behind."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if folder not in before and not any(folder.iterdir()):
            folder.rmdir()
    if root not in before and root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def load_data(settings: DatasetSettings, data_root, download: bool = True):
    """The official train and test sets of a dataset (InMemoryData, or FolderData for ImageNet)."""
    data_root = Path(data_root)
    before = {data_root} if data_root.is_dir() else set()
    before |= {p for p in data_root.rglob("*") if p.is_dir()} if data_root.is_dir() else set()
    try:
        return _load_data(settings, data_root, download)
    except DataUnavailable:
        _remove_new_empty_folders(before, data_root)
        raise


def _load_data(settings: DatasetSettings, data_root: Path, download: bool):
    if settings.loader not in LOADERS:
        raise DataUnavailable(f"no loader for dataset '{settings.name}'")
    data = LOADERS[settings.loader](settings, data_root, download)
    if isinstance(data, InMemoryData):
        name = settings.name
        if data.train_images.shape[1] != settings.channels:
            raise DataUnavailable(f"{name}: expected {settings.channels}-channel images, "
                                  f"found shape {tuple(data.train_images.shape)}")
        if data.num_train != settings.train_size:
            print(f"note: {name} train set has {data.num_train} images, not the official "
                  f"{settings.train_size}", file=sys.stderr)
    return data


def _load_imagenet_classes(settings: DatasetSettings, data_root: Path) -> FolderData:
    """load_imagenet, its class folders counted against the settings' classes."""
    data = load_imagenet(data_root)
    # fewer classes is a partial copy (labels still index the network's outputs);
    # more would be labels the network has no output for
    if len(data.classes) > settings.num_classes:
        raise DataUnavailable(f"{data_root}/ImageNet/train has {len(data.classes)} class folders, "
                              f"more than the {settings.num_classes} classes of {settings.name}")
    if len(data.classes) != settings.num_classes:
        print(f"note: {settings.name} has {len(data.classes)} class folders, not the official "
              f"{settings.num_classes}", file=sys.stderr)
    return data


def _load_folder(settings: DatasetSettings):
    from custom_datasets.folder import load_folder
    return load_folder(settings)


# the reader of each loader kind that a settings entry names (custom_common.settings,
# `loader`), called as reader(settings, data_root, download)
LOADERS: Dict[str, Callable[[DatasetSettings, Path, bool], "InMemoryData | FolderData"]] = {
    "mnist-idx": lambda settings, root, download: load_mnist_family(settings.name, root, download),
    "fashion-mnist-idx": lambda settings, root, download: load_mnist_family(
        settings.name, root, download, package_copy=(DEBIAN_FASHION_MNIST, "dataset-fashion-mnist")),
    "sklearn-digits": lambda settings, root, download: load_digits(),
    "cifar-pickle": lambda settings, root, download: load_cifar(settings.name, root, download),
    "svhn-mat": lambda settings, root, download: load_svhn(settings.name, root, download),
    "svhn-mat-extra": lambda settings, root, download: load_svhn(settings.name, root, download, extra=True),
    "imagenet-folders": lambda settings, root, download: _load_imagenet_classes(settings, root),
    "folder": lambda settings, root, download: _load_folder(settings),
}
