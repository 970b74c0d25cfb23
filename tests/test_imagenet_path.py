"""The ImageNet path (images on disk, DataLoader workers, device-side policies) end to
end, on a tiny ImageFolder of random pictures; folders it cannot use are refused in one line."""
import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from custom_common.settings import get_settings
from custom_datasets.containers import DataUnavailable
from custom_datasets.sources import load_data, load_imagenet
from custom_runs import run_files

IMAGENET = get_settings("ImageNet")


def write_folder(root: Path, per_class: int = 12, classes=("n01", "n02"), val_classes=None):
    """`per_class` random pictures per train class, 3 per val class (val: the same classes
    unless `val_classes` says otherwise)."""
    from PIL import Image
    generator = np.random.default_rng(0)
    for split, names in (("train", classes), ("val", classes if val_classes is None else val_classes)):
        for name in names:
            folder = root / "ImageNet" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 3):
                pixels = generator.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_the_valid_view_of_the_train_set_is_the_plain_centre_crop(tmp_path):
    write_folder(tmp_path)
    data = load_imagenet(tmp_path)
    image, label, index = data.train_plain[5]
    again, _, _ = data.train_plain[5]
    assert (label, index) == (0, 5) and image.shape == (3, 224, 224)
    assert torch.equal(image, again)  # no random crop or flip in the valid view
    assert data.train_plain.folder is data.train.folder  # one scan of the folder


def run_imagenet(run_script, data: Path) -> subprocess.CompletedProcess:
    """implicit-augment.py on the ImageNet configuration: two epochs, both with hyper steps."""
    return run_script("implicit-augment.py", "--dataset", "ImageNet", "--epochs", "2", "--hyper-start", "0",
                      "--workers", "0", "--no-cuda", "--aug-model", "SEP", "--los-model", "BOTH",
                      "--hyper-opt", "HES", "--data", data, env={"OMP_NUM_THREADS": "2"}, timeout=600)


def files_under(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in sorted(folder.rglob("*"))}


def test_imagenet_configuration_trains_end_to_end_from_an_image_folder(tmp_path, run_script):
    write_folder(tmp_path)
    result = run_imagenet(run_script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "note: ImageNet has 2 class folders, not the official 1000" in result.stderr
    folder = run_files.run_dir(tmp_path, "ImageNet", "run0")
    name = run_files.run_name("resnet18", "HES", "SEP", "BOTH", 1, 1.0, 0.0)
    results = run_files.load_results(run_files.results_path(folder, name))
    assert results["split"]["train_size"] + results["split"]["valid_size"] == 24
    assert results["split"]["valid_size"] == round(24 * 256233 / 1281167)
    assert len(results["final"]["per_class_acc"]) == 1000
    assert len(results["hyper_diagnostics"]) == 1  # one hyper epoch (epoch 2)
    checkpoint = run_files.load_torch(run_files.best_checkpoint_path(folder, name))
    assert checkpoint["reweight_state_dict"]["soft_logits"].shape == (24, 1000)
    assert checkpoint["augment_state_dict"]["probability_logits"].shape == (24, 7)
    # the hyper epoch moved the rows of the train images, and only those
    split = run_files.load_torch(folder / run_files.split_file_name(1, 1.0, 0.0))
    last = run_files.load_torch(run_files.last_checkpoint_path(folder, name))
    weights = last["reweight_state_dict"]["weight_logits"]
    assert bool((weights[split[1]] != 0).all()) and bool((weights[split[0]] == 0).all())


# ----------------------------------------------------------------------------- unusable folders

def write_empty_class_folders(root: Path, classes=("n01",)) -> None:
    for split in ("train", "val"):
        for name in classes:
            (root / "ImageNet" / split / name).mkdir(parents=True)


def test_class_folders_without_images_are_named_with_the_expected_layout(tmp_path):
    write_empty_class_folders(tmp_path, classes=("n01", "n02", "n03", "n04"))
    with pytest.raises(DataUnavailable) as error:
        load_imagenet(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'ImageNet' / 'train'}: 4 of 4 class folders hold no images "
                              f"(n01, n02, n03, ... (1 more))")
    assert "one subfolder per class holding .JPEG/.jpg/.png images" in message
    assert "\n" not in message


def test_one_empty_class_folder_among_full_ones_is_named(tmp_path):
    write_folder(tmp_path, per_class=1, classes=("n01", "n02", "n03"))
    for image in (tmp_path / "ImageNet" / "val" / "n02").iterdir():
        image.unlink()
    with pytest.raises(DataUnavailable, match="1 of 3 class folders hold no images \\(n02\\)") as error:
        load_imagenet(tmp_path)
    assert str(error.value).startswith(str(tmp_path / "ImageNet" / "val"))


def test_a_split_folder_without_class_subfolders_is_named(tmp_path):
    write_folder(tmp_path, per_class=1, val_classes=())
    (tmp_path / "ImageNet" / "val").mkdir()
    (tmp_path / "ImageNet" / "val" / "stray.JPEG").write_bytes(b"")
    with pytest.raises(DataUnavailable, match="val has no class subfolders; expected one subfolder per class"):
        load_imagenet(tmp_path)


def test_a_file_in_place_of_the_train_folder_is_named(tmp_path):
    write_folder(tmp_path, classes=(), val_classes=("n01",))
    train = tmp_path / "ImageNet" / "train"
    train.write_bytes(b"not a folder")
    with pytest.raises(DataUnavailable, match=f"^{train} is a file, not a folder; place the images as {train}/"):
        load_imagenet(tmp_path)


def test_any_other_indexing_error_becomes_one_line_naming_the_folder(tmp_path, monkeypatch):
    import torchvision
    write_folder(tmp_path, per_class=1)
    train = tmp_path / "ImageNet" / "train"

    def unreadable(root, *args, **kwargs):
        raise PermissionError(13, "Permission denied", root)
    # running as root, chmod 000 would not stop the scan
    monkeypatch.setattr(torchvision.datasets, "ImageFolder", unreadable)
    with pytest.raises(DataUnavailable) as error:
        load_imagenet(tmp_path)
    assert str(error.value) == (f"{train} cannot be indexed (PermissionError: [Errno 13] Permission denied: "
                                f"'{train}'); expected one subfolder per class holding .JPEG/.jpg/.png images")


def test_train_and_val_with_different_class_folders_are_refused(tmp_path):
    write_folder(tmp_path, per_class=1, classes=("n01", "n02", "n03", "n04", "n05"),
                 val_classes=("n01", "n02", "n06", "n07", "n08", "n09"))
    with pytest.raises(DataUnavailable) as error:
        load_imagenet(tmp_path)
    folder = tmp_path / "ImageNet"
    assert str(error.value) == (f"the class folders of {folder}/train and {folder}/val differ: "
                                f"3 only in train/ (n03, n04, n05), "
                                f"4 only in val/ (n06, n07, n08, ... (1 more)); both must hold the same classes")


def test_disjoint_class_folders_train_nothing_and_write_nothing(tmp_path, run_script):
    # one class each side: before the check both were label 0 and the run scored 100 %
    write_folder(tmp_path, per_class=2, classes=("n01",), val_classes=("n02",))
    before = files_under(tmp_path)
    result = run_imagenet(run_script, tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (f"implicit-augment.py: error: the class folders of {tmp_path}/ImageNet/train "
                                     f"and {tmp_path}/ImageNet/val differ: 1 only in train/ (n01), "
                                     f"1 only in val/ (n02); both must hold the same classes")
    assert files_under(tmp_path) == before
    assert not run_files.run_dir(tmp_path, "ImageNet", "run0").exists()


def test_empty_class_folders_stop_the_script_with_one_line_and_exit_code_1(tmp_path, run_script):
    write_empty_class_folders(tmp_path)
    result = run_imagenet(run_script, tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"implicit-augment.py: error: {tmp_path}/ImageNet/train: 1 of 1 class folders hold no "
                     f"images (n01); expected one subfolder per class holding .JPEG/.jpg/.png images"]


def test_more_class_folders_than_the_dataset_has_classes_are_refused(tmp_path):
    write_folder(tmp_path, per_class=1, classes=("n01", "n02", "n03"))
    two_classes = dataclasses.replace(IMAGENET, num_classes=2)
    with pytest.raises(DataUnavailable, match=f"^{tmp_path}/ImageNet/train has 3 class folders, "
                                              f"more than the 2 classes of ImageNet$"):
        load_data(two_classes, tmp_path)


def test_fewer_class_folders_load_as_a_partial_copy_with_a_note(tmp_path, capsys):
    write_folder(tmp_path, per_class=1, classes=("n01", "n02", "n03"))
    data = load_data(IMAGENET, tmp_path)
    assert data.classes == ["n01", "n02", "n03"] and data.test_targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "note: ImageNet has 3 class folders, not the official 1000" in capsys.readouterr().err
    load_data(dataclasses.replace(IMAGENET, num_classes=3), tmp_path)
    assert "note" not in capsys.readouterr().err


def test_a_corrupt_image_is_one_line_naming_the_file_even_from_a_dataloader_worker(tmp_path):
    from custom_datasets.batches import FolderBatches
    from custom_datasets.containers import UnreadableImage
    write_folder(tmp_path, per_class=2)
    corrupt = tmp_path / "ImageNet" / "train" / "n02" / "1.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG header, then nothing valid
    data = load_imagenet(tmp_path)
    for workers in (0, 1):
        batches = FolderBatches(data.train, data.train_targets, torch.arange(4), 4, False,
                                lambda images: images, torch.device("cpu"), workers)
        with pytest.raises(UnreadableImage) as caught:
            next(iter(batches))
        message = str(caught.value)
        assert "\n" not in message and "Traceback" not in message, message
        assert message.startswith(f"{corrupt} cannot be read as an image (UnidentifiedImageError")
        assert message.endswith("; replace or delete the file")
