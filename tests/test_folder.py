"""--dataset folder (custom_datasets/folder.py) and get-results.py --suspects
(custom_reports/suspects.py): settings and statistics from a generated folder of 12x12
shapes, an end-to-end run, one-line errors for bad layouts, and the suspected-label
report against the truth of injected noise (here and on DIGITS)."""
import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from custom_cli.train import get_args
from custom_datasets import folder as folder_dataset
from custom_datasets.containers import DataUnavailable, FolderData, InMemoryData
from custom_datasets.sources import load_data
from custom_runs import identity, run_files
from custom_runs.metrics import roc_auc
from custom_reports.suspects import DEFAULT_RANK_BY, RANKINGS, rank_suspects

REPO = Path(__file__).resolve().parents[1]
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
    assert settings.name == folder_dataset.dataset_name(root) and settings.model == "resnet18"
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
def folder_run(tmp_path_factory, run_script):
    base = tmp_path_factory.mktemp("folder")
    root = make_folder(base / "shapes")
    data = base / "runs"
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "folder", "--data-dir", root,
                        "--data", data, "--epochs", 4, "-nr", 0.3, "--los-model", "BOTH",
                        "--hyper-opt", "HES")
    assert result.returncode == 0, result.stderr
    return {"root": root, "data": data, "folder": data / folder_dataset.dataset_name(root) / "run0",
            "result": result}


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


def test_without_a_test_folder_the_run_tests_on_valid_and_says_so_once(tmp_path, run_script):
    root = make_folder(tmp_path / "notest", counts={"train": 20, "valid": 5})
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "folder", "--data-dir", root,
                        "--data", tmp_path / "runs", "--epochs", 1, "--model", "wresnet10_1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("has no test/ folder") == 1
    results_file, = (tmp_path / "runs" / folder_dataset.dataset_name(root) / "run0").glob("results_*.json")
    results = json.loads(results_file.read_text())
    assert results["test_set"] == "valid"
    # the valid split is the set tested: the test pass gives the validation numbers
    assert [(h["valid_acc"], h["valid_loss"]) for h in results["history"]] == \
        [(h["test_acc"], h["test_loss"]) for h in results["history"]]


def test_data_folders_of_one_name_get_run_folders_of_their_own_however_they_are_written(
        tmp_path, monkeypatch):
    first, second = tmp_path / "a" / "data", tmp_path / "b" / "data"
    for folder in (first, second):
        folder.mkdir(parents=True)
    names = folder_dataset.dataset_name(first), folder_dataset.dataset_name(second)
    assert all(re.fullmatch(r"folder_data_[0-9a-f]{8}", name) for name in names), names
    assert names[0] != names[1]
    monkeypatch.chdir(tmp_path / "b")
    (tmp_path / "link").symlink_to(first)
    for spelling in ("../a/data", str(tmp_path / "link"), f"{first}/", str(first / ".." / "data")):
        assert folder_dataset.dataset_name(spelling) == names[0], spelling


def test_a_resume_with_a_relative_data_dir_after_an_absolute_one_is_the_same_run(folder_run, run_script):
    relative = os.path.relpath(folder_run["root"], REPO)  # run_script runs in REPO
    assert not Path(relative).is_absolute()
    options = ["--no-cuda", "--dataset", "folder", "--data-dir", relative, "--data", folder_run["data"],
               "--epochs", 4, "-nr", 0.3, "--los-model", "BOTH", "--hyper-opt", "HES"]
    results_file = folder_run["folder"] / f"results_{RUN}.json"
    before = results_file.read_text()
    resumed = run_script("implicit-augment.py", *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "nothing to train: this configuration finished its 4 epochs" in resumed.stderr
    assert json.loads(results_file.read_text())["history"] == json.loads(before)["history"]
    report = run_script("get-results.py", "--dataset", "folder", "--data-dir", relative, "--data",
                        folder_run["data"], "-nr", 0.3, "--los-model", "BOTH", "--hyper-opt", "HES",
                        "--format", "json")
    assert report.returncode == 0, report.stderr
    runs = json.loads(report.stdout)["runs"]
    assert [run["run_folder"] for run in runs] == ["run0"]
    assert runs[0]["acc"] == json.loads(before)["best"]["acc"]


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
    root = make_folder(tmp_path / "shapes", counts={"train": 40, "valid": 2})
    damage, expected = BAD_LAYOUTS[case]
    damage(root)
    before = all_files(root)
    with pytest.raises(SystemExit) as stop:
        get_args(["--dataset", "folder", "--data-dir", str(root), "--data", str(tmp_path / "runs")])
    assert stop.value.code == 2
    line = error_line(capsys.readouterr().err, "")  # in-process, argparse's prog is not the script's
    assert expected in line
    assert all_files(root) == before and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "folder"], "--dataset folder needs --data-dir"),
    (["--dataset", "DIGITS", "--data-dir", "x"], "--data-dir is for --dataset folder"),
])
def test_data_dir_goes_with_the_folder_dataset_only(argv, expected, tmp_path, run_script):
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
    assert rank_suspects(given, weights, soft, network, "BOTH", "trust")["order"].tolist() == [3, 0, 1, 2]
    assert rank_suspects(given, weights, soft, network, "WGHT", "trust")["order"].tolist() == [3, 1, 0, 2]


def test_rank_by_orders_by_the_chosen_score_and_defaults_to_self_confidence():
    given = torch.tensor([0, 0, 1, 2])
    network = torch.tensor([[0.40, 0.30, 0.30],   # p[y] 0.40, margin +0.10
                            [0.45, 0.55, 0.00],   # p[y] 0.45, margin -0.10
                            [0.10, 0.80, 0.10],   # p[y] 0.80, margin +0.70
                            [0.05, 0.05, 0.90]])  # p[y] 0.90, margin +0.85
    weights = torch.tensor([1.0, 1.0, 0.3, 0.9])
    soft = torch.full((4, 3), 1 / 3)  # BOTH trust: w / 3
    def order(rank_by=None):
        extra = () if rank_by is None else (rank_by,)
        return rank_suspects(given, weights, soft, network, "BOTH", *extra)["order"].tolist()
    assert DEFAULT_RANK_BY == "self-confidence" and order() == order("self-confidence") == [0, 1, 2, 3]
    assert order("margin") == [1, 0, 2, 3]
    assert order("trust") == [2, 3, 0, 1]
    # trust x p[y]: 0.1333, 0.15, 0.08, 0.27
    assert order("trust-x-confidence") == [2, 0, 1, 3]
    scores = rank_suspects(given, weights, soft, network, "BOTH")["scores"]
    assert scores["margin"].tolist() == pytest.approx([0.10, -0.10, 0.70, 0.85])
    assert scores["trust-x-confidence"].tolist() == pytest.approx([0.4 / 3, 0.15, 0.08, 0.27])


def test_roc_auc_matches_sklearn_on_a_hand_made_case():
    from sklearn.metrics import roc_auc_score
    scores = torch.tensor([0.9, 0.8, 0.8, 0.4, 0.3, 0.3, 0.2, 0.1])
    positive = torch.tensor([1, 0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    # 16 pairs: a positive above a negative in 12, tied in 2 (0.8/0.8, 0.3/0.3): (12 + 1) / 16
    assert roc_auc(scores, positive) == pytest.approx(0.8125)
    assert roc_auc(scores, positive) == pytest.approx(roc_auc_score(positive.numpy(), scores.numpy()))


def test_roc_auc_keeps_the_rank_formulas_answers_where_sklearn_raises():
    # the values the hand-written rank formula gave before roc_auc went through sklearn
    positive = torch.tensor([1, 0, 1], dtype=torch.bool)
    three = torch.tensor([0.1, 0.2, 0.3])
    assert roc_auc(three, torch.ones(3, dtype=torch.bool)) is None  # no negative
    assert roc_auc(three, torch.zeros(3, dtype=torch.bool)) is None  # no positive
    assert math.isnan(roc_auc(torch.tensor([0.1, math.nan, 0.3]), positive))
    assert roc_auc(torch.tensor([0.1, math.inf, 0.3]), positive) == 0.0
    assert roc_auc(torch.tensor([-math.inf, 0.2, 0.3]), positive) == 0.5
    assert roc_auc(torch.full((3,), 0.5), positive) == 0.5
    assert roc_auc(three, positive) == 0.5


def test_folder_images_are_torchvisions_extensions_and_gif_pbm():
    from torchvision.datasets.folder import IMG_EXTENSIONS
    assert set(folder_dataset.IMAGE_EXTENSIONS) == set(IMG_EXTENSIONS) | {".gif", ".pbm"}
    assert set(folder_dataset.IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif",
                                                    ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


@pytest.fixture(scope="module")
def folder_suspects(folder_run, run_script):
    result = run_script("get-results.py", "--no-cuda", "--dataset", "folder", "--data-dir",
                        folder_run["root"], "--data", folder_run["data"], "-nr", 0.3,
                        "--los-model", "BOTH", "--hyper-opt", "HES", "--suspects", 20)
    assert result.returncode == 0, result.stderr
    path = folder_run["folder"] / f"suspects_{RUN}_valid.csv"  # the default: bestvalid_'s network
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return {"rows": rows, "stdout": result.stdout, **folder_run}


def test_suspects_csv_has_every_train_image_sorted_by_self_confidence(folder_suspects):
    rows = folder_suspects["rows"]
    assert len(rows) == 120
    assert [int(r["rank"]) for r in rows] == list(range(1, 121))
    assert sorted(int(r["index"]) for r in rows) == list(range(120))
    confidence = [float(r["network_given_prob"]) for r in rows]  # the default --rank-by
    assert confidence == sorted(confidence)
    for row in rows:  # BOTH: trust = weight x soft-label probability of the given label
        assert float(row["trust"]) == pytest.approx(float(row["weight"]) * float(row["soft_given"]), rel=1e-4)
        assert float(row["trust_x_confidence"]) == pytest.approx(
            float(row["trust"]) * float(row["network_given_prob"]), rel=1e-4, abs=1e-6)
        assert float(row["network_margin"]) <= float(row["network_given_prob"])
        assert Path(row["path"]).parent.parent.name == "train" and row["given"] in CLASSES
    grid = folder_suspects["folder"] / f"suspects_{RUN}_valid.png"
    assert grid.is_file() and grid.stat().st_size > 1000
    line, = [line for line in folder_suspects["stdout"].splitlines() if "the CSV's order" in line]
    assert line.startswith("network confidence:")


@pytest.mark.parametrize("rank_by", ["trust", "margin"])
def test_rank_by_reorders_the_csv_and_keeps_every_score(
        folder_run, folder_suspects, rank_by, tmp_path, run_script):
    result = run_script("get-results.py", "--no-cuda", "--dataset", "folder", "--data-dir",
                        folder_run["root"], "--data", folder_run["data"], "-nr", 0.3,
                        "--los-model", "BOTH", "--hyper-opt", "HES", "--suspects", 20,
                        "--rank-by", rank_by, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / f"suspects_{RUN}_valid.csv") as handle:
        rows = list(csv.DictReader(handle))
    column = RANKINGS[rank_by][0]
    values = [float(r[column]) for r in rows]
    assert values == sorted(values)
    # the same images with the same scores as the default report, in another order
    by_index = {r["index"]: r for r in folder_suspects["rows"]}
    assert [r["index"] for r in rows] != [r["index"] for r in folder_suspects["rows"]]
    for row in rows:
        for name in ("trust", "network_given_prob", "network_margin", "trust_x_confidence"):
            assert row[name] == by_index[row["index"]][name]
    line, = [line for line in result.stdout.splitlines() if "the CSV's order" in line]
    assert line.startswith(RANKINGS[rank_by][1] + ":")


def test_suspects_precision_and_recall_match_an_independent_count(folder_suspects):
    rows, folder = folder_suspects["rows"], folder_suspects["folder"]
    _, train, targets = run_files.load_torch(folder / "data_ir_1_sr_1.0_nr_0.3.pt")
    # the truth from the file system: an image's class is the folder it lies in
    truth = {int(r["index"]): CLASSES.index(Path(r["path"]).parent.name) for r in rows}
    flipped = {i for i in truth if int(targets[i]) != truth[i]}
    hits = sum(int(r["index"]) in flipped for r in rows[:20])
    assert sum(int(r["mislabelled"]) for r in rows) == len(flipped)
    assert f"precision@20 {hits / 20:.3f}, recall@20 {hits / len(flipped):.3f}" in folder_suspects["stdout"]


def test_suspects_refuse_a_run_that_learned_no_labels(folder_run, run_script):
    result = run_script("get-results.py", "--dataset", "folder", "--data-dir", folder_run["root"],
                        "--data", folder_run["data"], "-nr", 0.3, "--suspects")
    assert result.returncode == 2  # a usage error, as argparse's
    assert "--los-model WGHT, SOFT or BOTH" in error_line(result.stderr, "get-results.py")


def test_suspects_on_digits_with_heavy_noise_are_mostly_wrong_labels(tmp_path, run_script):
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


@pytest.mark.parametrize("checkpoint", ["valid", "best", "last"])
def test_suspects_name_the_last_checkpoint_when_its_tables_do_not_fit(tmp_path, checkpoint):
    """The tables come from last_ whatever --checkpoint says: an error about them names
    last_, not the --checkpoint file."""
    from custom_common.settings import get_settings
    from custom_reports.suspects import suspects_report
    settings = get_settings("DIGITS")
    config = identity.Configuration("resnet18", "NONE", "BOTH", "HES", 1, 1.0, 0.2)
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    targets = load_data(settings, tmp_path).train_targets
    indices = torch.arange(len(targets))
    run_files.save_torch((indices[:100], indices[100:], targets),
                         folder / run_files.split_file_name(1, 1.0, 0.2))
    network = {"encoder_state_dict": {}, "decoder_state_dict": {}, "acc": 50.0, "epoch": 0}
    for kind in ("best", "valid"):
        run_files.save_torch(network, run_files.checkpoint_path(folder, config.name, kind))
    tables = {"weight_logits": torch.zeros(7), "soft_logits": torch.zeros(7, 10)}  # 7 images, not all
    run_files.save_torch({**network, "reweight_state_dict": tables},
                         run_files.last_checkpoint_path(folder, config.name))
    with pytest.raises(run_files.UnreadableFile) as raised:
        suspects_report(tmp_path, settings, "run0", config, checkpoint, 10, None, torch.device("cpu"))
    assert str(raised.value).startswith(
        f"{run_files.last_checkpoint_path(folder, config.name)}: its tables do not match the "
        f"{len(targets)} images of the split file")


# ----------------------------------------------------------------------------- commands in hints

def test_the_train_command_get_results_suggests_for_a_folder_dataset_is_accepted_by_implicit_augment(
        folder_run, run_script):
    import shlex
    from custom_runs.options import dataset_settings
    missing = run_script("get-results.py", "--dataset", "folder", "--data-dir", folder_run["root"],
                         "--data", folder_run["data"], "-nr", 0.2, "--los-model", "BOTH",
                         "--hyper-opt", "HES")
    assert missing.returncode != 0
    hint = missing.stderr.strip().split("train one with: ", 1)[1]
    command = shlex.split(hint)
    assert command[:2] == ["python", "implicit-augment.py"]
    args = get_args(command[2:])  # exits 2 on a command it rejects
    assert args.dataset == "folder" and Path(args.data_dir) == folder_run["root"].resolve()
    assert (args.noise_ratio, args.los_model, args.hyper_opt) == (0.2, "BOTH", "HES")
    # and it trains into the run folder get-results reads
    assert run_files.run_dir(args.data, dataset_settings(args).name, args.run_folder) == \
        folder_run["folder"]


# ----------------------------------------------------------------------------- unusual files

def ramp_16_bit(side: int = 16) -> np.ndarray:
    """0 .. 65535 in side*side equal steps (uint16): 257 * k for k = 0 .. 255 at side 16."""
    return (np.arange(side * side, dtype=np.uint32) * 65535 // (side * side - 1)) \
        .reshape(side, side).astype(np.uint16)


def test_a_16_bit_greyscale_png_keeps_its_256_levels(tmp_path):
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp_16_bit()).save(path)
    assert Image.open(path).mode == "I;16"  # what Pillow makes of a 16-bit greyscale PNG
    decoded = folder_dataset.decode(path, channels=1, side=16)
    assert decoded.dtype == np.uint8 and decoded.shape == (1, 16, 16)
    # the high byte of each value, as for an 8-bit copy of the image (not clipped at 255)
    assert decoded.ravel().tolist() == list(range(256))


def test_a_folder_of_16_bit_images_has_the_statistics_of_its_8_bit_copy(tmp_path):
    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    rng = np.random.default_rng(0)
    for part, count in (("train", 6), ("valid", 2)):
        for name in CLASSES:
            for i in range(count):
                (eight / part / name).mkdir(parents=True, exist_ok=True)
                (sixteen / part / name).mkdir(parents=True, exist_ok=True)
                array = rng.integers(0, 256, (SIDE, SIDE)).astype(np.uint8)
                Image.fromarray(array).save(eight / part / name / f"{i}.png")
                Image.fromarray(array.astype(np.uint16) * 257).save(sixteen / part / name / f"{i}.png")
    expected = folder_dataset.folder_settings(eight)
    got = folder_dataset.folder_settings(sixteen)
    assert got.channels == 1
    assert got.mean == pytest.approx(expected.mean, abs=1e-6)
    assert got.std == pytest.approx(expected.std, abs=1e-6)
    assert 0.45 < got.mean[0] < 0.55 and 0.25 < got.std[0] < 0.32  # uniform 0..255


def test_a_32_bit_image_with_values_above_255_is_refused_naming_it(tmp_path):
    path = tmp_path / "deep.tif"
    Image.fromarray(np.full((8, 8), 70000, np.int32), mode="I").save(path)
    with pytest.raises(DataUnavailable, match=r"deep\.tif.*70000"):
        folder_dataset.decode(path, channels=1, side=8)


def test_file_and_class_names_that_are_not_utf8_are_stamped_and_trained_on(tmp_path, run_script):
    root = make_folder(tmp_path / os.fsdecode(b"sh\xe9pes"), counts={"train": 10, "valid": 2})
    odd_class = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8
    (root / "train" / "box").rename(root / "train" / odd_class)
    (root / "valid" / "box").rename(root / "valid" / odd_class)
    odd_file = root / "train" / "hbar" / os.fsdecode(b"\xff.png")
    (root / "train" / "hbar" / "000.png").rename(odd_file)
    settings = folder_dataset.folder_settings(root)
    assert settings.classes == (odd_class, "hbar", "vbar")  # sorted: "caf" first
    assert settings.train_size == 3 * (10 + 2)
    cache = json.loads((root / ".autodo_stats.json").read_text())
    assert cache["classes"] == [odd_class, "hbar", "vbar"]
    assert folder_dataset.folder_settings(root) == settings  # read back from the cache
    data = tmp_path / "runs"
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "folder", "--data-dir", root,
                        "--data", data, "--epochs", 1, "--model", "wresnet10_1")
    assert result.returncode == 0, result.stderr
    results = json.loads(next((data / settings.name / "run0").glob("results_*.json")).read_text())
    assert results["status"] == "finished" and results["split"]["train_size"] == 30
    assert settings.name.startswith("folder_sh_pes_")


def test_a_relabelled_folder_is_named_as_such_and_the_advised_run_folder_trains(tmp_path, run_script):
    root = make_folder(tmp_path / "shapes", counts={"train": 10, "valid": 2})
    data = tmp_path / "runs"
    command = ("implicit-augment.py", "--no-cuda", "--dataset", "folder", "--data-dir", root,
               "--data", data, "--epochs", 1, "--model", "wresnet10_1")
    first = run_script(*command)
    assert first.returncode == 0, first.stderr
    # the user corrects a label: same files, one of them in another class folder
    (root / "train" / "box" / "003.png").rename(root / "train" / "hbar" / "003b.png")
    # every way on that the earlier message suggested in turn, and another configuration
    refusals = [run_script(*command, *extra) for extra in (
        ("--resume",), ("--force",), ("--resume", "--seed", 0), ("--aug-model", "RAND"))]
    for refused in refusals:
        assert refused.returncode == 2
        line = error_line(refused.stderr, "implicit-augment.py")
        assert "labels" in line and "add --seed" not in line, line
        assert "-r run1" in line, line
    advised = run_script(*command, "-r", "run1")
    assert advised.returncode == 0, advised.stderr
    folder = data / folder_dataset.dataset_name(root) / "run1"
    results = json.loads(next(folder.glob("results_*.json")).read_text())
    assert results["status"] == "finished" and results["split_seed"] == 1
    assert results["split"]["train_class_counts"] == [9, 11, 10]
