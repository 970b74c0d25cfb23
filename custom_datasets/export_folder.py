"""Writes a seeded, class-balanced subset of a benchmark as PNG files in the folder layout
of `--dataset folder` (custom_datasets/folder.py): the worked example of docs/own-data.md.

    python -m custom_datasets.export_folder --dataset FashionMNIST --out /tmp/fashion \\
        --train-per-class 100 --valid-per-class 20 --test-per-class 50

train/ and valid/ are drawn from the official train set, test/ from the official test set;
files are named by their index in the official set (train/3/01234.png). Labels are left
clean: train on the folder with -nr to inject noise whose truth the report knows.
"""
import argparse
import shutil
import sys
from pathlib import Path

import torch

from custom_common.settings import DATASETS, get_settings
from custom_datasets.containers import DataUnavailable, InMemoryData
from custom_datasets.sources import load_data


def per_class_subset(targets: torch.Tensor, counts, generator: torch.Generator):
    """Disjoint index lists, one per entry of `counts`, each with counts[i] images per class."""
    chosen = [[] for _ in counts]
    for label in torch.unique(targets).tolist():
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, count in enumerate(counts):
            chosen[part] += members[start:start + count].tolist()
            start += count
    return [sorted(part) for part in chosen]


def write_images(images: torch.Tensor, targets: torch.Tensor, indices, folder: Path) -> int:
    from PIL import Image
    for index in indices:
        array = images[index].numpy()
        image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
        path = folder / str(int(targets[index])) / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return len(indices)


def export(data: InMemoryData, out: Path, train_per_class: int, valid_per_class: int,
           test_per_class: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    train, valid = per_class_subset(data.train_targets, (train_per_class, valid_per_class), generator)
    test, = per_class_subset(data.test_targets, (test_per_class,), generator)
    written = {"train": write_images(data.train_images, data.train_targets, train, out / "train"),
               "valid": write_images(data.train_images, data.train_targets, valid, out / "valid")}
    if test_per_class:
        written["test"] = write_images(data.test_images, data.test_targets, test, out / "test")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="FashionMNIST",
                        choices=[name for name, s in DATASETS.items() if s.in_memory],
                        help="benchmark to export (default: FashionMNIST)")
    parser.add_argument("--data", default="./local_data", help="its files (default: ./local_data)")
    parser.add_argument("--out", required=True, help="new folder to write (must not exist)")
    parser.add_argument("--train-per-class", type=int, default=100, help="(default: 100)")
    parser.add_argument("--valid-per-class", type=int, default=20, help="(default: 20)")
    parser.add_argument("--test-per-class", type=int, default=50, help="0: no test/ (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        parser.exit(2, f"export_folder: error: --out {out} exists; choose a new folder\n")
    if min(args.train_per_class, args.valid_per_class) < 1 or args.test_per_class < 0:
        parser.exit(2, "export_folder: error: --train/--valid-per-class must be >= 1, "
                       "--test-per-class >= 0\n")
    try:
        data = load_data(get_settings(args.dataset), args.data, download=False)
    except DataUnavailable as error:
        parser.exit(1, f"export_folder: error: {error}\n")
    tmp = out.with_name(f".{out.name}.partial")  # renamed into place once complete
    shutil.rmtree(tmp, ignore_errors=True)
    written = export(data, tmp, args.train_per_class, args.valid_per_class, args.test_per_class,
                     args.seed)
    tmp.rename(out)
    print(f"wrote {out}: " + ", ".join(f"{count} {part}" for part, count in written.items())
          + " images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
