"""The per-dataset tables of docs/design.md (§5's settings, §6's policies) state what
custom_common/settings.py holds, cell for cell, so the page cannot drift from the code."""
from pathlib import Path

from custom_common.settings import DATASETS

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"
BASE_TRANSFORMS = {"none": "normalise", "crop_erase": "crop, erase",
                   "crop_flip_erase": "crop, flip, erase", "imagenet": "random resized crop, flip"}
POLICY_NAMES = {"svhn": "SVHN", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}


def section(number):
    """The text of '## §N ...' up to the next '## ' heading."""
    text = DESIGN.read_text(encoding="utf-8")
    return text.split(f"\n## §{number} ", 1)[1].split("\n## ", 1)[0]


def table_rows(text):
    """{first cell: [the other cells]} of the Markdown table rows of a text (header and rule
    left out); a first cell naming several datasets ("MNIST, FashionMNIST") gives each."""
    rows = {}
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| dataset") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name in cells[0].split(", "):
            rows[name] = cells[1:]
    return rows


def test_the_settings_table_of_section_5_is_the_codes():
    rows = table_rows(section(5))
    assert set(rows) == set(DATASETS)
    for name, settings in DATASETS.items():
        network = settings.model + (" (small)" if settings.model == "resnet18" and settings.image_size < 64 else "")
        expected = [f"{settings.train_size} / {settings.valid_size}", str(settings.num_classes),
                    str(settings.image_size), network, f"{settings.lr:g}",
                    f"{settings.batch_size} / {settings.hyper_batch_size}", f"{settings.hyper_lr:g}",
                    f"{settings.hyper_start_fraction:g}", BASE_TRANSFORMS[settings.base_transform]]
        assert rows[name] == expected, name


def test_the_policy_table_of_section_6_is_the_codes():
    rows = table_rows(section(6))
    assert set(rows) == set(DATASETS)
    for name, settings in DATASETS.items():
        borrowed = settings.policy_note is not None
        expected = [f"({settings.rand_n}, {settings.rand_m})", f"({settings.colour_n}, {settings.colour_m})",
                    POLICY_NAMES[settings.autoaugment_policy] + ("'s" if borrowed else ""),
                    POLICY_NAMES[settings.dada_policy] + ("'s" if borrowed else "")]
        assert rows[name] == expected, name
