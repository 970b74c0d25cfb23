"""Dataset readers (custom_datasets.sources) on small files written here in each
official format: images, labels and order must come back exactly; missing or
truncated files must raise DataUnavailable naming the file and folder."""
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from custom_common.settings import get_settings
from custom_datasets.containers import DataUnavailable
from custom_datasets.sources import (DEBIAN_FASHION_MNIST, load_cifar, load_data, load_digits,
                                     load_imagenet, load_mnist_family, load_svhn)

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def rng(seed):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- MNIST idx

def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_mnist(root: Path, name: str, compress: bool, train=7, test=3, seed=0):
    g = rng(seed)
    arrays = {"train-images-idx3-ubyte": g.integers(0, 256, (train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": g.integers(0, 10, train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": g.integers(0, 256, (test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": g.integers(0, 10, test, dtype=np.uint8)}
    paths = {stem: write_idx(root / name / "raw" / stem, array, compress)
             for stem, array in arrays.items()}
    return arrays, paths


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_mnist_idx_files_round_trip_images_labels_and_order(tmp_path, compress):
    arrays, _ = write_mnist(tmp_path, "MNIST", compress)
    data = load_mnist_family("MNIST", tmp_path, download=False)
    assert data.train_images.shape == (7, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (3, 1, 28, 28)
    assert data.train_targets.dtype == torch.int64
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.test_images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.train_targets.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.test_targets.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # a few pixels by hand: image 4, row 13, column 27 and image 0, row 0, column 0
    assert int(data.train_images[4, 0, 13, 27]) == int(arrays["train-images-idx3-ubyte"][4, 13, 27])
    assert int(data.train_images[0, 0, 0, 0]) == int(arrays["train-images-idx3-ubyte"][0, 0, 0])


def test_fashion_mnist_files_under_data_are_read_before_the_debian_copy(tmp_path):
    arrays, _ = write_mnist(tmp_path, "FashionMNIST", compress=True, train=5, test=2, seed=3)
    data = load_data(get_settings("FashionMNIST"), tmp_path, download=False)
    assert data.num_train == 5
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])


def test_missing_mnist_files_name_each_missing_file_and_the_folder(tmp_path):
    arrays, paths = write_mnist(tmp_path, "MNIST", compress=False)
    paths["t10k-images-idx3-ubyte"].unlink()
    paths["t10k-labels-idx1-ubyte"].unlink()
    with pytest.raises(DataUnavailable) as error:
        load_mnist_family("MNIST", tmp_path, download=False)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message
    assert str(tmp_path / "MNIST" / "raw") in message


def test_mnist_in_an_empty_folder_lists_all_four_files(tmp_path):
    with pytest.raises(DataUnavailable) as error:
        load_mnist_family("MNIST", tmp_path, download=False)
    assert all(stem in str(error.value) for stem in IDX_STEMS)
    assert not (tmp_path / "MNIST").exists()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_truncated_idx_file_is_reported_by_name(tmp_path, compress):
    _, paths = write_mnist(tmp_path, "MNIST", compress)
    damaged = paths["train-images-idx3-ubyte"]
    damaged.write_bytes(damaged.read_bytes()[:-300])
    with pytest.raises(DataUnavailable, match=damaged.name) as error:
        load_mnist_family("MNIST", tmp_path, download=False)
    assert str(damaged) in str(error.value)


def test_idx_file_cut_inside_its_header_is_reported_by_name(tmp_path):
    _, paths = write_mnist(tmp_path, "MNIST", compress=False)
    damaged = paths["t10k-labels-idx1-ubyte"]
    damaged.write_bytes(damaged.read_bytes()[:6])
    with pytest.raises(DataUnavailable, match=damaged.name):
        load_mnist_family("MNIST", tmp_path, download=False)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                    reason=f"real FashionMNIST not installed in {DEBIAN_FASHION_MNIST}")
def test_fashion_mnist_is_found_in_the_debian_folder_when_data_is_empty(tmp_path):
    data = load_data(get_settings("FashionMNIST"), tmp_path, download=False)
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_targets).tolist() == [6000] * 10
    assert torch.bincount(data.test_targets).tolist() == [1000] * 10
    assert int(data.train_images.max()) == 255 and int(data.train_images.min()) == 0
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CIFAR

def write_pickle(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def cifar_batch(g, n, label_key, classes):
    batch = {"data": g.integers(0, 256, (n, 3072), dtype=np.uint8),
             label_key: g.integers(0, classes, n).tolist(), "batch_label": "test"}
    if label_key == "fine_labels":
        batch["coarse_labels"] = g.integers(0, 20, n).tolist()
    return batch


def write_cifar10(root: Path, per_batch=(3, 2, 4, 1, 2), test=3, seed=0):
    g = rng(seed)
    folder = root / "cifar-10-batches-py"
    train = [cifar_batch(g, n, "labels", 10) for n in per_batch]
    for i, batch in enumerate(train, start=1):
        write_pickle(folder / f"data_batch_{i}", batch)
    test_batch = cifar_batch(g, test, "labels", 10)
    write_pickle(folder / "test_batch", test_batch)
    return folder, train, test_batch


def cifar_pixel(batch, n, channel, row, col):
    """The official layout: each row of 'data' is 1024 red, 1024 green, 1024 blue values, row-major."""
    return int(batch["data"][n, channel * 1024 + row * 32 + col])


def test_cifar10_batches_round_trip_in_batch_order_with_channel_major_layout(tmp_path):
    _, train, test_batch = write_cifar10(tmp_path)
    data = load_cifar("CIFAR10", tmp_path, download=False)
    assert data.train_images.shape == (12, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (3, 3, 32, 32)
    assert data.train_targets.tolist() == sum((b["labels"] for b in train), [])
    assert data.test_targets.tolist() == test_batch["labels"]
    assert data.train_targets.dtype == torch.int64
    # image 5 is the first image of data_batch_3 (batch sizes 3, 2, 4, ...)
    for channel, row, col in [(0, 0, 0), (1, 5, 31), (2, 31, 7), (0, 17, 3)]:
        assert int(data.train_images[5, channel, row, col]) == cifar_pixel(train[2], 0, channel, row, col)
        assert int(data.test_images[2, channel, row, col]) == cifar_pixel(test_batch, 2, channel, row, col)
    expected = np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32)
    assert np.array_equal(data.train_images.numpy(), expected)


def test_cifar100_reads_fine_labels(tmp_path):
    g = rng(1)
    folder = tmp_path / "cifar-100-python"
    train, test = cifar_batch(g, 6, "fine_labels", 100), cifar_batch(g, 4, "fine_labels", 100)
    write_pickle(folder / "train", train)
    write_pickle(folder / "test", test)
    data = load_cifar("CIFAR100", tmp_path, download=False)
    assert data.train_targets.tolist() == train["fine_labels"]
    assert data.test_targets.tolist() == test["fine_labels"]
    assert data.train_targets.tolist() != train["coarse_labels"]
    assert int(data.train_images[4, 2, 9, 30]) == cifar_pixel(train, 4, 2, 9, 30)
    assert int(data.test_images[3, 1, 31, 31]) == cifar_pixel(test, 3, 1, 31, 31)


def test_missing_cifar_batches_are_named_with_the_folder(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    (folder / "data_batch_4").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(DataUnavailable) as error:
        load_cifar("CIFAR10", tmp_path, download=False)
    message = str(error.value)
    assert "data_batch_4" in message and "test_batch" in message
    assert "data_batch_1" not in message
    assert str(folder) in message


def test_truncated_cifar_pickle_is_reported_by_name(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    damaged = folder / "data_batch_3"
    damaged.write_bytes(damaged.read_bytes()[:-500])
    with pytest.raises(DataUnavailable, match="data_batch_3"):
        load_cifar("CIFAR10", tmp_path, download=False)


# ----------------------------------------------------------------------------- SVHN

def svhn_arrays(g, n):
    x = g.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    digits = np.arange(n) % 10  # every digit, 0 included
    y = np.where(digits == 0, 10, digits).reshape(n, 1).astype(np.uint8)
    return x, y, digits


def write_svhn(root: Path, sizes=None, seed=0):
    import scipy.io
    sizes = sizes or {"train": 12, "test": 5}
    g = rng(seed)
    folder = root / "SVHN"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in sizes.items():
        x, y, digits = svhn_arrays(g, n)
        scipy.io.savemat(str(folder / f"{split}_32x32.mat"), {"X": x, "y": y})
        written[split] = (x, digits)
    return folder, written


def test_svhn_mat_files_round_trip_with_label_10_read_as_0(tmp_path):
    _, written = write_svhn(tmp_path)
    data = load_svhn("SVHN", tmp_path, download=False)
    x, digits = written["train"]
    assert data.train_images.shape == (12, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.train_targets.tolist() == digits.tolist()
    assert data.train_targets.tolist()[:3] == [0, 1, 2]
    assert data.test_targets.tolist() == written["test"][1].tolist()
    # X is (row, column, channel, image)
    for n, channel, row, col in [(0, 0, 0, 0), (3, 2, 31, 4), (11, 1, 8, 30)]:
        assert int(data.train_images[n, channel, row, col]) == int(x[row, col, channel, n])
    assert np.array_equal(data.test_images.numpy(), np.transpose(written["test"][0], (3, 2, 0, 1)))


def test_svhn_extra_is_train_followed_by_extra(tmp_path):
    _, written = write_svhn(tmp_path, {"train": 4, "test": 3, "extra": 6}, seed=2)
    data = load_data(get_settings("SVHN_extra"), tmp_path, download=False)
    assert data.train_images.shape == (10, 3, 32, 32)
    assert data.train_targets.tolist() == written["train"][1].tolist() + written["extra"][1].tolist()
    assert int(data.train_images[4, 1, 2, 3]) == int(written["extra"][0][2, 3, 1, 0])
    assert int(data.train_images[3, 0, 31, 31]) == int(written["train"][0][31, 31, 0, 3])
    assert data.test_images.shape == (3, 3, 32, 32)


def test_missing_svhn_extra_file_is_named_with_the_folder(tmp_path):
    folder, _ = write_svhn(tmp_path)
    with pytest.raises(DataUnavailable) as error:
        load_data(get_settings("SVHN_extra"), tmp_path, download=False)
    message = str(error.value)
    assert "extra_32x32.mat" in message and "train_32x32.mat" not in message
    assert str(folder) in message


def test_truncated_svhn_mat_is_reported_by_name(tmp_path):
    folder, _ = write_svhn(tmp_path)
    damaged = folder / "train_32x32.mat"
    damaged.write_bytes(damaged.read_bytes()[:-2000])
    with pytest.raises(DataUnavailable, match="train_32x32.mat"):
        load_svhn("SVHN", tmp_path, download=False)


# ----------------------------------------------------------------------------- ImageNet

IMAGENET_CLASSES = {"n02": [(200, 10, 10), (20, 220, 20)], "n01": [(5, 6, 7)],
                    "n03": [(90, 91, 92), (30, 60, 90), (250, 1, 128)]}


def write_imagenet(root: Path):
    """Solid-colour PNGs of odd sizes: any resize or crop of one keeps its colour exactly."""
    from PIL import Image
    for split in ("train", "val"):
        for cls, colours in IMAGENET_CLASSES.items():
            folder = root / "ImageNet" / split / cls
            folder.mkdir(parents=True)
            for i, colour in enumerate(colours):
                Image.new("RGB", (37 + 11 * i, 29 + 5 * i), colour).save(folder / f"img_{i}.png")


def test_imagenet_items_are_uint8_224_images_with_label_and_index(tmp_path):
    write_imagenet(tmp_path)
    data = load_imagenet(tmp_path)
    # ImageFolder order: classes sorted (n01, n02, n03), files sorted within a class
    expected = [(0, (5, 6, 7)), (1, (200, 10, 10)), (1, (20, 220, 20)),
                (2, (90, 91, 92)), (2, (30, 60, 90)), (2, (250, 1, 128))]
    assert len(data.train) == 6 and data.num_train == 6
    assert data.train_targets.tolist() == [label for label, _ in expected]
    assert data.test_targets.tolist() == [label for label, _ in expected]
    torch.manual_seed(0)
    for index in (0, 2, 5):
        image, label, item_index = data.train[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 224, 224)
        assert (label, item_index) == (expected[index][0], index)
        colour = torch.tensor(expected[index][1], dtype=torch.uint8).view(3, 1, 1)
        assert torch.equal(image, colour.expand(3, 224, 224))
    image, label, item_index = data.test[4]
    assert image.shape == (3, 224, 224) and (label, item_index) == (2, 4)
    assert torch.equal(image, torch.tensor([30, 60, 90], dtype=torch.uint8).view(3, 1, 1).expand(3, 224, 224))


def test_imagenet_without_val_folder_names_the_expected_layout(tmp_path):
    (tmp_path / "ImageNet" / "train" / "n01").mkdir(parents=True)
    with pytest.raises(DataUnavailable) as error:
        load_imagenet(tmp_path)
    assert str(tmp_path / "ImageNet") + "/val/" in str(error.value)


# ----------------------------------------------------------------------------- DIGITS

def test_digits_split_is_1437_train_360_test_stratified_uint8():
    data = load_digits()
    assert data.train_images.shape == (1437, 1, 8, 8) and data.test_images.shape == (360, 1, 8, 8)
    assert data.train_images.dtype == torch.uint8
    assert int(data.train_images.min()) == 0 and int(data.train_images.max()) == 255
    # pixel values are sklearn's 0..16 scaled to 0..255
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(torch.unique(torch.cat([data.train_images.flatten(),
                                       data.test_images.flatten()])).tolist()) <= allowed
    from sklearn.datasets import load_digits as sklearn_digits
    totals = np.bincount(sklearn_digits().target, minlength=10)
    test_counts = torch.bincount(data.test_targets, minlength=10).numpy()
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1)
    assert np.array_equal(test_counts + torch.bincount(data.train_targets, minlength=10).numpy(), totals)


def test_digits_split_is_the_same_on_every_call():
    first, second = load_digits(), load_digits()
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.train_targets, second.train_targets)
    assert torch.equal(first.test_images, second.test_images)
    assert torch.equal(first.test_targets, second.test_targets)


def test_digits_images_are_sklearn_images_scaled_to_255():
    from sklearn.datasets import load_digits as sklearn_digits
    digits = sklearn_digits()
    scaled = np.round(digits.images * 255 / 16).astype(np.uint8)
    data = load_digits()
    # every train and test image is one of sklearn's images, with its label
    lookup = {image.tobytes(): label for image, label in zip(scaled, digits.target)}
    for images, labels in ((data.train_images, data.train_targets), (data.test_images, data.test_targets)):
        found = [lookup.get(image[0].numpy().tobytes()) for image in images]
        assert found == labels.tolist()


def test_load_data_refuses_images_with_another_channel_count(tmp_path):
    import dataclasses
    write_mnist(tmp_path, "MNIST", compress=False)
    three_channel = dataclasses.replace(get_settings("MNIST"), channels=3)
    with pytest.raises(DataUnavailable, match="expected 3-channel images, found shape \\(7, 1, 28, 28\\)"):
        load_data(three_channel, tmp_path, download=False)


def test_load_data_notes_a_non_official_train_size(tmp_path, capsys):
    write_mnist(tmp_path, "MNIST", compress=False)
    data = load_data(get_settings("MNIST"), tmp_path, download=False)
    assert data.num_train == 7
    assert "MNIST train set has 7 images, not the official 60000" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the loader table

def test_every_dataset_names_a_loader_that_sources_knows_and_every_loader_is_named():
    from custom_common.settings import DATASETS
    from custom_datasets.folder import FOLDER_LOADER
    from custom_datasets.sources import LOADERS
    kinds = {name: settings.loader for name, settings in DATASETS.items()}
    assert kinds == {"MNIST": "mnist-idx", "FashionMNIST": "fashion-mnist-idx",
                     "DIGITS": "sklearn-digits", "SVHN": "svhn-mat", "SVHN_extra": "svhn-mat-extra",
                     "CIFAR10": "cifar-pickle", "CIFAR100": "cifar-pickle",
                     "ImageNet": "imagenet-folders"}
    assert set(LOADERS) == set(kinds.values()) | {FOLDER_LOADER}


def test_load_data_reads_a_made_up_dataset_with_the_reader_its_loader_names(tmp_path, monkeypatch, capsys):
    import dataclasses
    from custom_datasets import sources
    from custom_datasets.containers import InMemoryData
    calls = []

    def reader(settings, data_root, download):
        calls.append((settings.name, data_root, download))
        return InMemoryData(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), torch.arange(5),
                            torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.arange(2))
    monkeypatch.setitem(sources.LOADERS, "cifar-pickle", reader)
    made_up = dataclasses.replace(get_settings("CIFAR10"), name="CIFAR10_copy")
    data = load_data(made_up, tmp_path, download=False)
    assert calls == [("CIFAR10_copy", tmp_path, False)] and data.num_train == 5
    assert "CIFAR10_copy train set has 5 images, not the official 50000" in capsys.readouterr().err
    # the reader goes by the loader, not by the name
    load_data(dataclasses.replace(get_settings("MNIST"), loader="cifar-pickle", channels=3), tmp_path)
    assert calls[-1] == ("MNIST", tmp_path, True)
    with pytest.raises(DataUnavailable, match="^no loader for dataset 'CIFAR10_copy'$"):
        load_data(dataclasses.replace(made_up, loader="tiff-stack"), tmp_path)


def test_missing_fashion_mnist_names_the_debian_package_and_missing_mnist_does_not(tmp_path, monkeypatch):
    from custom_datasets import sources
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "not_installed")
    with pytest.raises(DataUnavailable) as fashion:
        load_data(get_settings("FashionMNIST"), tmp_path, download=False)
    assert str(fashion.value).endswith(f"in {tmp_path / 'FashionMNIST' / 'raw'}/ "
                                       f"(or: apt-get install dataset-fashion-mnist)")
    with pytest.raises(DataUnavailable) as mnist:
        load_data(get_settings("MNIST"), tmp_path, download=False)
    assert str(mnist.value).endswith(f"in {tmp_path / 'MNIST' / 'raw'}/")


def test_the_svhn_reader_adds_the_extra_set_when_asked_not_by_the_name(tmp_path):
    _, written = write_svhn(tmp_path, {"train": 4, "test": 3, "extra": 6}, seed=2)
    assert load_svhn("SVHN_extra", tmp_path, download=False).num_train == 4
    assert load_svhn("SVHN_extra", tmp_path, download=False, extra=True).num_train == 10
