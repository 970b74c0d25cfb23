"""--dataset folder (custom_datasets/folder.py) and get-results.py --suspects
(custom_reports/suspects.py): settings and statistics from a generated folder of 12x12
shapes, an end-to-end run, one-line errors for bad layouts, and the suspected-label
report against the truth of injected noise (here and on DIGITS)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from custom_datasets import folder as folder_dataset
from custom_datasets.containers import DataUnavailable, FolderData, InMemoryData
from custom_datasets.sources import load_data
from custom_runs import run_files
from custom_reports.suspects import rank_suspects

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.is_file() else sys.executable
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
CLASSES = ("box", "hbar", "vbar")  # sorted: labels 0, 1, 2
SIDE = 12
COUNTS = {"train": 40, "valid": 8, "test": 8}  # per class
RUN = "resnet18_opt_HES_est_True_aug_model_NONE_los_model_BOTH_ir_1_sr_1.0_nr_0.3"


def shape_image(kind: str, rng: np.random.Generator, side: int = SIDE) -> np.ndarray:
    image = rng.integers(0, 40, (side, side)).astype(np.uint8)
    at = rng.integers(2, side - 5)
    if kind == "box":
        image[at:at + 4, at:at + 4] = 230
    elif kind == "hbar":
        image[at:at + 2, 1:-1] = 230
    else:
        image[1:-1, at:at + 2] = 230
    return image


def make_folder(root: Path, counts=COUNTS, classes=CLASSES, seed: int = 0, side: int = SIDE,
                colour: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    for part, count in counts.items():
        for name in classes:
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                array = shape_image(name, rng, side)
                if colour:
                    array = np.stack([array, array // 2, 255 - array], -1)
                Image.fromarray(array).save(root / part / name / f"{i:03d}.png")
    return root


def run_script(script: str, *args, timeout=600):
    return subprocess.run([PYTHON, str(REPO / script), *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def error_line(stderr: str, script: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"{script}: error: ") if script else ": error: " in errors[0]
    return errors[0]


def all_files(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ----------------------------------------------------------------------------- settings

def test_settings_class_names_and_statistics_come_from_the_folders(tmp_path):
    root = make_folder(tmp_path / "shapes")
    settings = folder_dataset.folder_settings(root)
    train_pixels = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "train").rglob("*.png"))])
    assert settings.classes == CLASSES and settings.num_classes == 3
    assert (settings.channels, settings.image_size, settings.in_memory) == (1, SIDE, True)
    assert settings.train_size == 3 * (40 + 8) and settings.valid_size == 3 * 8
    assert settings.name == "folder_shapes" and settings.model == "resnet18"
    assert settings.mean[0] == pytest.approx(train_pixels.mean() / 255, abs=1e-5)
    assert settings.std[0] == pytest.approx(train_pixels.std(ddof=1) / 255, abs=1e-5)
    # batch sizes capped for a small set: about ten batches an epoch
    assert settings.batch_size == 12 and settings.hyper_batch_size == 24
    cache = json.loads((root / ".autodo_stats.json").read_text())
    assert cache["classes"] == list(CLASSES) and cache["train_images"] == 120


def test_cached_statistics_are_reused_and_recomputed_when_a_file_changes(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "shapes")
    first = folder_dataset.folder_settings(root)
    stamp = json.loads((root / ".autodo_stats.json").read_text())["stamp"]

    def no_decoding(layout):
        raise AssertionError("statistics were recomputed although no file changed")
    with monkeypatch.context() as patch:
        patch.setattr(folder_dataset, "compute_stats", no_decoding)
        assert folder_dataset.folder_settings(root) == first
    Image.fromarray(np.full((SIDE, SIDE), 255, np.uint8)).save(root / "train" / "box" / "000.png")
    second = folder_dataset.folder_settings(root)
    assert json.loads((root / ".autodo_stats.json").read_text())["stamp"] != stamp
    assert second.mean[0] > first.mean[0]


def test_colour_images_take_the_cifar_settings_and_other_sizes_are_resized(tmp_path, capsys):
    root = make_folder(tmp_path / "colour", colour=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train" / "box" / "big.png")
    settings = folder_dataset.folder_settings(root)
    assert "1 image" in capsys.readouterr().err  # said once, when the statistics are computed
    assert (settings.channels, settings.image_size, settings.model) == (3, SIDE, "wresnet28_10")
    assert settings.base_transform == "crop_flip_erase"
    data = load_data(settings, tmp_path / "runs")
    assert isinstance(data, InMemoryData)
    assert data.train_images.shape == (3 * 40 + 1 + 3 * 8, 3, SIDE, SIDE)
    assert data.train_images.dtype == torch.uint8


def test_large_images_are_read_from_disk_on_the_imagenet_path(tmp_path):
    root = make_folder(tmp_path / "large", counts={"train": 4, "valid": 2}, side=80, colour=True)
    settings = folder_dataset.folder_settings(root)
    assert not settings.in_memory and settings.base_transform == "imagenet"
    assert (settings.image_size, settings.num_classes) == (224, 3)
    data = load_data(settings, tmp_path / "runs")
    assert isinstance(data, FolderData) and data.test_is_valid
    assert data.valid_indices.tolist() == list(range(12, 18))
    image, label, index = data.train_plain[13]
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8 and (label, index) == (0, 13)


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder")
    root = make_folder(base / "shapes")
    data = base / "runs"
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "folder", "--data-dir", root,
                        "--data", data, "--epochs", 4, "-nr", 0.3, "--los-model", "BOTH",
                        "--hyper-opt", "HES")
    assert result.returncode == 0, result.stderr
    return {"root": root, "data": data, "folder": data / "folder_shapes" / "run0", "result": result}


def test_a_folder_run_writes_the_usual_files_with_the_users_valid_set(folder_run):
    folder = folder_run["folder"]
    for name in (f"best_{RUN}.pt", f"last_{RUN}.pt", f"results_{RUN}.json", "data_ir_1_sr_1.0_nr_0.3.pt"):
        assert (folder / name).is_file(), name
    valid, train, targets = run_files.load_torch(folder / "data_ir_1_sr_1.0_nr_0.3.pt")
    assert valid.tolist() == list(range(120, 144))  # the valid block after the 120 train images
    assert train.tolist() == list(range(120))
    folder_labels = torch.tensor([CLASSES.index(p.parent.name) for p in
                                  sorted((folder_run["root"] / "train").rglob("*.png"))]
                                 + [i // 8 for i in range(24)])
    assert torch.equal(targets[valid], folder_labels[valid])  # the valid set stays clean
    flipped = int((targets[train] != folder_labels[train]).sum())
    assert 0.3 * 120 * (2 / 3) * 0.6 < flipped <= 36  # 36 drawn, a third land on their own class
    results = json.loads((folder / f"results_{RUN}.json").read_text())
    assert results["status"] == "finished" and results["test_set"] == "test"
    assert results["split"]["noisy_labels"] == flipped
    assert results["split"]["train_class_counts"] == [40, 40, 40]
    assert len(results["best"]["per_class_acc"]) == 3


def test_without_a_test_folder_the_run_tests_on_valid_and_says_so_once(tmp_path):
    root = make_folder(tmp_path / "notest", counts={"train": 20, "valid": 5})
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "folder", "--data-dir", root,
                        "--data", tmp_path / "runs", "--epochs", 1, "--model", "wresnet10_1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("has no test/ folder") == 1
    results_file, = (tmp_path / "runs" / "folder_notest" / "run0").glob("results_*.json")
    assert json.loads(results_file.read_text())["test_set"] == "valid"


def _remove(path: Path):
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    path.rmdir()


BAD_LAYOUTS = {
    "no_train": (lambda root: _remove(root / "train"), "has no train/ folder"),
    "no_classes": (lambda root: [_remove(root / "train" / c) for c in CLASSES], "has no class subfolders"),
    "missing_valid_class": (lambda root: _remove(root / "valid" / "vbar"), "class 'vbar'"),
    "valid_only_class": (lambda root: (root / "valid" / "zzz").mkdir(), "zzz has no counterpart"),
    "unreadable": (lambda root: (root / "train" / "hbar" / "broken.png").write_bytes(b"not a png"),
                   "broken.png cannot be read as an image"),
    "not_square": (lambda root: [Image.fromarray(np.zeros((10, 14), np.uint8)).save(p)
                                 for p in root.rglob("*.png")], "14x10, not square"),
    "valid_larger": (lambda root: [(root / "train" / c / f"{i:03d}.png").unlink()
                                   for c in CLASSES for i in range(1, 40)], "more than the 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_each_bad_layout_is_one_line_exit_2_and_no_file(tmp_path, case, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("implicit_augment", REPO / "implicit-augment.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    root = make_folder(tmp_path / "shapes", counts={"train": 40, "valid": 2})
    damage, expected = BAD_LAYOUTS[case]
    damage(root)
    before = all_files(root)
    with pytest.raises(SystemExit) as stop:
        cli.get_args(["--dataset", "folder", "--data-dir", str(root), "--data", str(tmp_path / "runs")])
    assert stop.value.code == 2
    line = error_line(capsys.readouterr().err, "")  # in-process, argparse's prog is not the script's
    assert expected in line
    assert all_files(root) == before and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "folder"], "--dataset folder needs --data-dir"),
    (["--dataset", "DIGITS", "--data-dir", "x"], "--data-dir is for --dataset folder"),
])
def test_data_dir_goes_with_the_folder_dataset_only(argv, expected, tmp_path):
    result = run_script("get-results.py", *argv, "--data", tmp_path)
    assert result.returncode == 2 and expected in error_line(result.stderr, "get-results.py")


# ----------------------------------------------------------------------------- suspects

def test_suggestions_prefer_a_flipped_soft_label_then_the_network():
    given = torch.tensor([0, 0, 0, 1])
    soft = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.9, 0.1], [0.3, 0.7]])
    network = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    weights = torch.tensor([1.0, 0.5, 1.0, 0.2])
    ranked = rank_suspects(given, weights, soft, network, "BOTH")
    assert ranked["suggested"].tolist() == [1, 1, 0, 0]
    assert ranked["from_soft"].tolist() == [True, False, False, False]
    assert ranked["from_network"].tolist() == [False, True, False, True]
    assert ranked["trust"].tolist() == pytest.approx([0.2, 0.45, 0.9, 0.14])
    assert ranked["order"].tolist() == [3, 0, 1, 2]
    assert rank_suspects(given, weights, soft, network, "WGHT")["order"].tolist() == [3, 1, 0, 2]


@pytest.fixture(scope="module")
def folder_suspects(folder_run):
    result = run_script("get-results.py", "--no-cuda", "--dataset", "folder", "--data-dir",
                        folder_run["root"], "--data", folder_run["data"], "-nr", 0.3,
                        "--los-model", "BOTH", "--hyper-opt", "HES", "--suspects", 20)
    assert result.returncode == 0, result.stderr
    path = folder_run["folder"] / f"suspects_{RUN}.csv"
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return {"rows": rows, "stdout": result.stdout, **folder_run}


def test_suspects_csv_has_every_train_image_sorted_by_trust(folder_suspects):
    rows = folder_suspects["rows"]
    assert len(rows) == 120
    assert [int(r["rank"]) for r in rows] == list(range(1, 121))
    assert sorted(int(r["index"]) for r in rows) == list(range(120))
    trust = [float(r["trust"]) for r in rows]
    assert trust == sorted(trust)
    for row in rows:  # BOTH: trust = weight x soft-label probability of the given label
        assert float(row["trust"]) == pytest.approx(float(row["weight"]) * float(row["soft_given"]), rel=1e-4)
        assert Path(row["path"]).parent.parent.name == "train" and row["given"] in CLASSES
    grid = folder_suspects["folder"] / f"suspects_{RUN}.png"
    assert grid.is_file() and grid.stat().st_size > 1000


def test_suspects_precision_and_recall_match_an_independent_count(folder_suspects):
    rows, folder = folder_suspects["rows"], folder_suspects["folder"]
    _, train, targets = run_files.load_torch(folder / "data_ir_1_sr_1.0_nr_0.3.pt")
    # the truth from the file system: an image's class is the folder it lies in
    truth = {int(r["index"]): CLASSES.index(Path(r["path"]).parent.name) for r in rows}
    flipped = {i for i in truth if int(targets[i]) != truth[i]}
    hits = sum(int(r["index"]) in flipped for r in rows[:20])
    assert sum(int(r["mislabelled"]) for r in rows) == len(flipped)
    assert f"precision@20 {hits / 20:.3f}, recall@20 {hits / len(flipped):.3f}" in folder_suspects["stdout"]


def test_suspects_refuse_a_run_that_learned_no_labels(folder_run):
    result = run_script("get-results.py", "--dataset", "folder", "--data-dir", folder_run["root"],
                        "--data", folder_run["data"], "-nr", 0.3, "--suspects")
    assert result.returncode == 1
    assert "--los-model WGHT, SOFT or BOTH" in error_line(result.stderr, "get-results.py")


def test_suspects_on_digits_with_heavy_noise_are_mostly_wrong_labels(tmp_path):
    """-nr 0.4 flips 35 % of the labels (a flip may land on the true class)."""
    options = ["--no-cuda", "--dataset", "DIGITS", "--data", tmp_path, "-nr", 0.4,
               "--los-model", "BOTH", "--hyper-opt", "HES"]
    result = run_script("implicit-augment.py", *options, "--epochs", 12)
    assert result.returncode == 0, result.stderr
    result = run_script("get-results.py", *options, "--suspects", 50)
    assert result.returncode == 0, result.stderr
    line, = [line for line in result.stdout.splitlines() if line.startswith("AutoDO trust")]
    precision = float(line.split("precision@50 ")[1].split(",")[0])
    auroc = float(line.split("AUROC ")[1])
    assert precision >= 0.8 and auroc > 0.8
