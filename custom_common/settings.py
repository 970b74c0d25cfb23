"""One table of per-dataset settings (docs/design.md §5, §6), read by every script.

Nothing else in the project branches on a dataset's name to pick a size, a
network, a learning rate, a batch size, a normalisation, a policy or the reader of
its files: it looks the name up here.
"""
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class DatasetSettings:
    name: str
    train_size: int  # T: size of the official train set (rows of every per-sample table)
    valid_size: int  # V: clean, stratified validation split taken from it
    num_classes: int
    channels: int
    image_size: int  # side of the images the network sees
    model: str  # default network (custom_models.networks registry)
    lr: float
    batch_size: int
    hyper_batch_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    base_transform: str  # 'none' | 'crop_erase' | 'crop_flip_erase' | 'imagenet'
    rand_n: int  # RandAugment baseline (N, M)
    rand_m: int
    colour_n: int  # colour sub-policy used with SHA/SEP (N, M)
    colour_m: int
    autoaugment_policy: str  # policy name in custom_transforms/policies/fast_autoaugment.json
    dada_policy: str  # policy name in custom_transforms/policies/dada.json
    loader: str  # how its files are read: a key of custom_datasets.sources.LOADERS
    policy_note: Optional[str] = None  # printed when a policy searched elsewhere is borrowed
    hyper_lr: float = 0.05
    hyper_start_fraction: float = 0.25  # 50 of 200 epochs (ImageNet: 100 of 200)
    in_memory: bool = True  # fits on the training device as uint8
    folder: Optional[str] = None  # --dataset folder: the user's DIR (custom_datasets/folder.py)
    classes: Tuple[str, ...] = ()  # class names where the data has them (folder datasets)

    @property
    def upper_classes(self) -> range:
        """The classes that imbalance makes rare (docs/design.md §2: C/2 .. C-1)."""
        return range(self.num_classes // 2, self.num_classes)


_MNIST_FAMILY = dict(
    num_classes=10, channels=1, image_size=28, model="resnet18", lr=0.05,
    batch_size=32, hyper_batch_size=256, base_transform="none",
    rand_n=3, rand_m=5, colour_n=3, colour_m=5,
    autoaugment_policy="svhn", dada_policy="svhn",
    policy_note="no policy was searched for this dataset; using the SVHN policy",
)
_CIFAR = dict(
    channels=3, image_size=32, model="wresnet28_10", lr=0.1, batch_size=256,
    hyper_batch_size=256, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    base_transform="crop_flip_erase", rand_n=3, rand_m=15, colour_n=1, colour_m=15,
    autoaugment_policy="cifar10",
)
_SVHN = dict(
    num_classes=10, channels=3, image_size=32, model="wresnet28_10", lr=0.005,
    batch_size=256, hyper_batch_size=256, mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970), base_transform="crop_erase", rand_n=3, rand_m=7,
    colour_n=3, colour_m=7, autoaugment_policy="svhn", dada_policy="svhn",
)

DATASETS = {
    "MNIST": DatasetSettings(name="MNIST", train_size=60000, valid_size=10000,
                             loader="mnist-idx",
                             mean=(0.1307,), std=(0.3081,), **_MNIST_FAMILY),
    "FashionMNIST": DatasetSettings(name="FashionMNIST", train_size=60000, valid_size=10000,
                                    loader="fashion-mnist-idx",
                                    mean=(0.2860,), std=(0.3530,), **_MNIST_FAMILY),
    # scikit-learn's 8x8 digits: 1797 images, a fixed stratified 20 % test split,
    # so 1437 "official" train images, 20 % of which (287) form the valid split.
    "DIGITS": DatasetSettings(name="DIGITS", train_size=1437, valid_size=287,
                              loader="sklearn-digits",
                              mean=(0.3054,), std=(0.3760,),
                              **{**_MNIST_FAMILY, "image_size": 8, "hyper_batch_size": 128}),
    "SVHN": DatasetSettings(name="SVHN", train_size=73257, valid_size=23257, loader="svhn-mat", **_SVHN),
    "SVHN_extra": DatasetSettings(name="SVHN_extra", train_size=604388, valid_size=104388,
                                 loader="svhn-mat-extra", **_SVHN),
    "CIFAR10": DatasetSettings(name="CIFAR10", train_size=50000, valid_size=10000, num_classes=10,
                               dada_policy="cifar10", loader="cifar-pickle", **_CIFAR),
    "CIFAR100": DatasetSettings(name="CIFAR100", train_size=50000, valid_size=10000, num_classes=100,
                                dada_policy="cifar100", loader="cifar-pickle", **_CIFAR),
    "ImageNet": DatasetSettings(
        name="ImageNet", train_size=1281167, valid_size=256233, num_classes=1000, channels=3,
        image_size=224, model="resnet18", lr=0.1, batch_size=256, hyper_batch_size=128,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), base_transform="imagenet",
        rand_n=2, rand_m=9, colour_n=2, colour_m=9, autoaugment_policy="imagenet",
        dada_policy="imagenet", hyper_lr=0.01, hyper_start_fraction=0.5, in_memory=False,
        loader="imagenet-folders"),
}


def small_image_settings(channels: int, side: int, num_train: int, num_valid: int,
                         **data) -> DatasetSettings:
    """Settings of a user's folder of images under 64 px: the MNIST family's (1 channel) or
    CIFAR's (3 channels), with batch sizes capped for small sets (about 10 batches an epoch).
    `data` holds what the folder decides: name, sizes, classes, mean, std, folder, loader."""
    family = dict(_MNIST_FAMILY) if channels == 1 else \
        dict(_CIFAR, num_classes=0, dada_policy="cifar10",
             policy_note="no policy was searched for this dataset; using the CIFAR-10 policy")
    family.update(channels=channels, image_size=side,
                  batch_size=min(family["batch_size"], max(8, num_train // 10)),
                  hyper_batch_size=min(family["hyper_batch_size"], max(8, num_valid)))
    family.pop("mean", None), family.pop("std", None)
    return DatasetSettings(**{**family, **data})


def get_settings(name: str) -> DatasetSettings:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}") from None
