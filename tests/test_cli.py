"""implicit-augment.py end to end on DIGITS (subprocesses with the test interpreter,
--data in a temporary folder): the files of docs/design.md §8 and their contents, the
defaults derived from the run folder and --epochs, refusing to overwrite, one
split file per run folder, and one-line errors for bad options."""
import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from custom_cli.train import get_args
from custom_common.settings import get_settings
from custom_datasets.sources import load_digits
from custom_datasets.split import build_split
from custom_models.networks import build_network
from custom_transforms.base import EvalTransform

REPO = Path(__file__).resolve().parents[1]

RUN_NAME = "resnet18_opt_NONE_est_True_aug_model_NONE_los_model_NONE_ir_1_sr_1.0_nr_0.0"
SECOND_NAME = "wresnet10_1_opt_NONE_est_True_aug_model_NONE_los_model_NONE_ir_1_sr_1.0_nr_0.0"
SPLIT_NAME = "data_ir_1_sr_1.0_nr_0.0.pt"
CHECKPOINT_KEYS = {"encoder_state_dict", "decoder_state_dict", "reweight_state_dict",
                   "augment_state_dict", "acc", "epoch"}
DIGITS = get_settings("DIGITS")


def snapshot(folder: Path) -> dict:
    """Every file under `folder`: modification time and content hash."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(stderr: str) -> str:
    """The error is one line; argparse may put its usage block (first line 'usage:',
    continuation lines indented) before it. Returns the error line."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("implicit-augment.py: error: ")
    assert sum("error" in line for line in lines) == 1
    usage = lines[:-1]
    if usage:
        assert usage[0].startswith("usage: implicit-augment.py")
        assert all(line.startswith(" ") for line in usage[1:])
    return lines[-1]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, run_script):
    data = tmp_path_factory.mktemp("cli") / "data"
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "DIGITS", "--epochs", 2,
                        "--data", data, "-r", "run3")
    assert result.returncode == 0, result.stderr
    folder = data / "DIGITS" / "run3"
    results = json.loads((folder / f"results_{RUN_NAME}.json").read_text())
    return {"data": data, "folder": folder, "result": result, "results": results,
            "snapshot": snapshot(data)}


@pytest.fixture(scope="module")
def second_configuration(first_run, run_script):
    """Another configuration (a small WRN, 8 epochs) in the same run folder."""
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "DIGITS", "--epochs", 8,
                        "--model", "wresnet10_1", "--data", first_run["data"], "-r", "run3")
    assert result.returncode == 0, result.stderr
    results = json.loads((first_run["folder"] / f"results_{SECOND_NAME}.json").read_text())
    return {"result": result, "results": results}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


# ----------------------------------------------------------------------------- files of a run

def test_run_writes_split_best_last_results_and_tensorboard_files(first_run):
    folder = first_run["folder"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        SPLIT_NAME, f"best_{RUN_NAME}.pt", f"bestvalid_{RUN_NAME}.pt", f"last_{RUN_NAME}.pt",
        f"results_{RUN_NAME}.json", "tensorboard"])
    events = list((folder / "tensorboard" / RUN_NAME).glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    # nothing else under --data: no raw files for DIGITS, no temporary leftovers
    assert sorted(p.name for p in first_run["data"].iterdir()) == ["DIGITS"]
    assert sorted(p.name for p in (first_run["data"] / "DIGITS").iterdir()) == ["run3"]
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert f"results: {folder / f'results_{RUN_NAME}.json'}" in first_run["result"].stdout


def test_run_name_is_the_design_pattern(first_run):
    assert first_run["results"]["run_name"] == RUN_NAME
    assert first_run["results"]["run_folder"] == "run3"
    assert first_run["results"]["dataset"] == "DIGITS"


def test_split_file_is_the_seed_3_split_of_the_digits_train_set(first_run, digits):
    stored = torch.load(first_run["folder"] / SPLIT_NAME, weights_only=True)
    assert isinstance(stored, tuple) and len(stored) == 3
    assert all(t.dtype == torch.int64 for t in stored)
    valid, train, targets = stored
    assert (len(valid), len(train), len(targets)) == (287, 1150, 1437)
    expected = build_split(digits.train_targets, 10, 287, 1, 1.0, 0.0, seed=3)
    for saved, built in zip(stored, expected.as_tuple()):
        assert torch.equal(saved, built)
    class_counts = torch.bincount(digits.train_targets, minlength=10).double()
    valid_counts = torch.bincount(digits.train_targets[valid], minlength=10).double()
    assert float((valid_counts - class_counts * 287 / 1437).abs().max()) < 1.0
    assert torch.equal(targets, digits.train_targets)  # no noise at -nr 0


def test_checkpoints_hold_the_design_keys_and_load_with_weights_only(first_run):
    folder, results = first_run["folder"], first_run["results"]
    best = torch.load(folder / f"best_{RUN_NAME}.pt", weights_only=True)
    last = torch.load(folder / f"last_{RUN_NAME}.pt", weights_only=True)
    assert set(best) == CHECKPOINT_KEYS
    assert CHECKPOINT_KEYS <= set(last)
    assert best["acc"] == pytest.approx(results["best"]["acc"], abs=1e-9)
    assert best["epoch"] == results["best"]["epoch"]
    assert last["epoch"] == 1 and last["acc"] == pytest.approx(best["acc"], abs=1e-9)
    assert best["decoder_state_dict"]["weight"].shape == (10, 64)
    assert best["reweight_state_dict"]["weight_logits"].shape == (1437,)
    assert best["reweight_state_dict"]["soft_logits"].shape == (1437, 10)
    assert best["augment_state_dict"] == {}


def test_best_checkpoint_reproduces_its_test_accuracy(first_run, digits):
    best = torch.load(first_run["folder"] / f"best_{RUN_NAME}.pt", weights_only=True)
    encoder, decoder = build_network("resnet18", DIGITS)
    encoder.load_state_dict(best["encoder_state_dict"])
    decoder.load_state_dict(best["decoder_state_dict"])
    encoder.eval()
    # on the run's own compute path: a CPU with native bf16 evaluated in bf16 autocast
    amp = first_run["results"]["compute_path"]["precision"] == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        features = encoder(EvalTransform(DIGITS)(digits.test_images))
    predictions = decoder(features.float()).argmax(-1)
    accuracy = 100.0 * float((predictions == digits.test_targets).double().mean())
    assert abs(accuracy - best["acc"]) <= 100.0 / 360 + 1e-9  # at most one image differs
    assert best["acc"] > 20.0  # better than chance after 2 epochs


def test_validation_accuracy_is_the_plain_valid_split_s_and_best_valid_its_best_epoch(first_run, digits):
    """history's valid_acc is the accuracy on the split's valid images without augmentation or
    resample; best_valid is the epoch of highest valid_acc, with that epoch's test numbers."""
    folder, results = first_run["folder"], first_run["results"]
    history, chosen = results["history"], results["best_valid"]
    assert results["format"] == 2
    ranked = sorted(history, key=lambda record: (-record["valid_acc"], record["valid_loss"], record["epoch"]))
    assert chosen["epoch"] == ranked[0]["epoch"]
    record = history[chosen["epoch"]]
    assert (chosen["acc"], chosen["loss"], chosen["valid_acc"], chosen["valid_loss"]) == (
        record["test_acc"], record["test_loss"], record["valid_acc"], record["valid_loss"])
    assert chosen["minority_acc"] == pytest.approx(np.mean(chosen["per_class_acc"][5:]), abs=1e-6)
    assert results["timings_s"]["valid"] > 0

    saved = torch.load(folder / f"bestvalid_{RUN_NAME}.pt", weights_only=True)
    assert set(saved) == CHECKPOINT_KEYS | {"valid_acc"}
    assert (saved["epoch"], saved["acc"], saved["valid_acc"]) == (chosen["epoch"], chosen["acc"],
                                                                 chosen["valid_acc"])
    encoder, decoder = build_network("resnet18", DIGITS)
    encoder.load_state_dict(saved["encoder_state_dict"])
    decoder.load_state_dict(saved["decoder_state_dict"])
    encoder.eval()
    valid = torch.load(folder / SPLIT_NAME, weights_only=True)[0]
    amp = results["compute_path"]["precision"] == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        features = encoder(EvalTransform(DIGITS)(digits.train_images[valid]))
    predictions = decoder(features.float()).argmax(-1)
    accuracy = 100.0 * float((predictions == digits.train_targets[valid]).double().mean())
    assert abs(accuracy - chosen["valid_acc"]) <= 100.0 / 287 + 1e-9  # at most one image differs


def test_results_file_reports_a_finished_two_epoch_run(first_run, digits):
    results = first_run["results"]
    assert results["status"] == "finished"
    assert results["epochs"] == 2 and results["epochs_done"] == 2
    history = results["history"]
    assert [record["epoch"] for record in history] == [0, 1]
    best, final = results["best"], results["final"]
    assert final["acc"] == history[-1]["test_acc"] and final["epoch"] == 1
    assert best["acc"] == max(record["test_acc"] for record in history)
    assert history[best["epoch"]]["test_acc"] == best["acc"]
    test_counts = torch.bincount(digits.test_targets, minlength=10).double()
    for summary in (best, final):
        assert len(summary["per_class_acc"]) == 10
        weighted = float((torch.tensor(summary["per_class_acc"], dtype=torch.float64) * test_counts).sum() / 360)
        assert weighted == pytest.approx(summary["acc"], abs=1e-3)
        assert summary["minority_acc"] == pytest.approx(np.mean(summary["per_class_acc"][5:]), abs=1e-6)
    split = results["split"]
    assert (split["train_size"], split["valid_size"], split["noisy_labels"]) == (1150, 287, 0)
    stored_train = torch.load(first_run["folder"] / SPLIT_NAME, weights_only=True)[1]
    assert split["train_class_counts"] == torch.bincount(digits.train_targets[stored_train],
                                                         minlength=10).tolist()
    assert sum(split["train_class_counts"]) == 1150
    assert results["timings_s"]["total"] > 0


def test_results_file_records_config_seed_and_versions(first_run):
    results = first_run["results"]
    config = results["config"]
    assert {key: config[key] for key in ("dataset", "model", "epochs", "imbalance_ratio",
                                         "subsample_ratio", "noise_ratio", "aug_model", "los_model",
                                         "hyper_opt", "lr", "run_folder")} == {
        "dataset": "DIGITS", "model": "resnet18", "epochs": 2, "imbalance_ratio": 1,
        "subsample_ratio": 1.0, "noise_ratio": 0.0, "aug_model": "NONE", "los_model": "NONE",
        "hyper_opt": "NONE", "lr": 0.05, "run_folder": "run3"}
    assert config["hyper_start"] == round(2 * 0.25)
    versions = results["versions"]
    assert versions["torch"] == torch.__version__
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["numpy"] == np.__version__
    assert {"torchvision", "kornia", "cuda", "device"} <= set(versions)


def test_seed_defaults_to_the_run_folder_number(first_run):
    assert first_run["results"]["seed"] == 3
    assert first_run["results"]["config"]["seed"] == 3


# ----------------------------------------------------------------------------- re-runs

def test_second_run_of_a_finished_configuration_fails_in_one_line_and_touches_nothing(first_run, run_script):
    before = snapshot(first_run["data"])
    result = run_script("implicit-augment.py", "--no-cuda", "--dataset", "DIGITS", "--epochs", 2,
                        "--data", first_run["data"], "-r", "run3")
    assert result.returncode != 0
    error = assert_one_line_error(result.stderr)
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert "finished result" in error and "--resume" in error and "--force" in error
    assert snapshot(first_run["data"]) == before


def test_second_configuration_in_the_run_folder_loads_the_same_split_file(first_run, second_configuration):
    folder = first_run["folder"]
    assert sorted(p.name for p in folder.glob("data_*.pt")) == [SPLIT_NAME]
    assert snapshot(folder)[SPLIT_NAME] == first_run["snapshot"][f"DIGITS/run3/{SPLIT_NAME}"]
    first, second = first_run["results"]["split"], second_configuration["results"]["split"]
    assert second == first
    assert second_configuration["results"]["run_name"] == SECOND_NAME
    # the first configuration's files are untouched
    after = snapshot(first_run["data"])
    for path, state in first_run["snapshot"].items():
        if RUN_NAME in path or path.endswith(SPLIT_NAME):
            assert after[path] == state


def test_hyper_start_default_scales_with_epochs_in_the_results(second_configuration):
    results = second_configuration["results"]
    assert results["config"]["epochs"] == 8
    assert results["config"]["hyper_start"] == 2  # 50 of 200 epochs -> 2 of 8
    assert results["epochs_done"] == 8 and len(results["history"]) == 8


# ----------------------------------------------------------------------------- option defaults

@pytest.mark.parametrize("argv, hyper_start", [
    (["--epochs", "8"], 2), (["--epochs", "200"], 50), (["--epochs", "20"], 5),
    (["--epochs", "4"], 1), (["--dataset", "ImageNet", "--epochs", "200"], 100),
    (["--dataset", "ImageNet", "--epochs", "8"], 4), (["--epochs", "8", "--hyper-start", "6"], 6),
    (["--epochs", "8", "--hyper-start", "0"], 0),
])
def test_hyper_start_default_is_a_quarter_of_epochs_unless_given(argv, hyper_start, tmp_path):
    args = get_args(["--data", str(tmp_path)] + argv)
    assert args.hyper_start == hyper_start


@pytest.mark.parametrize("run_folder, seed", [("run0", 0), ("run3", 3), ("run12", 12)])
def test_seed_default_is_the_run_number(run_folder, seed, tmp_path):
    assert get_args(["--data", str(tmp_path), "-r", run_folder]).seed == seed
    assert get_args(["--data", str(tmp_path), "-r", run_folder, "--seed", "7"]).seed == 7


@pytest.mark.parametrize("dataset, model, lr", [("DIGITS", "resnet18", 0.05), ("CIFAR10", "wresnet28_10", 0.1),
                                                ("SVHN", "wresnet28_10", 0.005), ("ImageNet", "resnet18", 0.1)])
def test_model_and_lr_default_to_the_dataset_settings(dataset, model, lr, tmp_path):
    args = get_args(["--data", str(tmp_path), "--dataset", dataset])
    assert (args.model, args.lr) == (model, lr)


# ----------------------------------------------------------------------------- bad options

BAD_OPTIONS = {
    "unknown_dataset": (["--dataset", "FOO"], "unknown dataset 'FOO'"),
    "unknown_model": (["--model", "resnet50"], "unknown model 'resnet50'"),
    "ir_0": (["-ir", "0"], "-ir must be an integer >= 1, got 0"),
    "sr_0": (["-sr", "0"], "-sr must be in (0, 1], got 0.0"),
    "sr_1.5": (["-sr", "1.5"], "-sr must be in (0, 1], got 1.5"),
    "nr_1.0": (["-nr", "1.0"], "-nr must be in [0, 1), got 1.0"),
    "nr_-0.1": (["-nr", "-0.1"], "-nr must be in [0, 1), got -0.1"),
    "epochs_0": (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    "hes_nothing_to_learn": (["--hyper-opt", "HES"], "--hyper-opt HES has nothing to learn"),
    "ir_empties_upper_classes": (["-ir", "1000"], "-ir 1000 leaves no image of the upper classes"),
    "sr_keeps_nothing": (["-sr", "0.0001"], "-sr 0.0001 keeps no train image"),
}


@pytest.fixture(scope="module")
def bad_option_runs(tmp_path_factory, run_script):
    root = tmp_path_factory.mktemp("bad_options")

    def attempt(case):
        data = root / case
        data.mkdir()
        options, _ = BAD_OPTIONS[case]
        return case, data, run_script("implicit-augment.py", "--no-cuda", "--dataset", "DIGITS", "--epochs", 2,
                                      "--data", data, *options, timeout=300)
    with ThreadPoolExecutor(max_workers=3) as pool:
        return {case: (data, result) for case, data, result in pool.map(attempt, BAD_OPTIONS)}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_fails_with_one_error_line_and_creates_no_file(bad_option_runs, case):
    data, result = bad_option_runs[case]
    _, message = BAD_OPTIONS[case]
    assert result.returncode != 0
    error = assert_one_line_error(result.stderr)
    assert message in error
    assert list(data.rglob("*")) == []
    assert result.stdout == ""


def test_help_states_each_default_once_and_points_only_at_files_a_user_has(run_script):
    result = run_script("implicit-augment.py", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert text.count("(default: ./local_data)") == 1 and text.count("(default: 200)") == 1
    assert "(default: None)" not in text and "DESIGN" not in text


# ----------------------------------------------------------------------------- the project's version

def git(folder, *arguments):
    return subprocess.run(["git", "-C", str(folder), *arguments], capture_output=True, text=True,
                          check=True).stdout.strip()


def checkout_of(folder) -> bool:
    """Whether `folder` is the top of a git checkout (not a source archive, not a folder
    inside another repository) and git is there to say so."""
    try:
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True)
    except FileNotFoundError:
        return False
    return top.returncode == 0 and Path(top.stdout.strip()).resolve() == Path(folder).resolve()


def test_results_file_records_the_commit_of_the_code_that_ran(first_run):
    versions = first_run["results"]["versions"]
    if not checkout_of(REPO):  # a source archive ("download ZIP"): no commit to record
        assert (versions["commit"], versions["uncommitted_changes"]) == ("unknown", "unknown")
        return
    assert versions["commit"] == git(REPO, "rev-parse", "HEAD")
    changed = bool(git(REPO, "status", "--porcelain", "--untracked-files=no"))
    assert versions["uncommitted_changes"] is changed


def test_a_copy_of_the_source_without_git_records_an_unknown_commit(tmp_path, run_python):
    archive = tmp_path / "autodo-main"  # as a source archive unpacks
    for package in ("custom_common", "custom_datasets", "custom_models", "custom_runs",
                    "custom_transforms"):
        shutil.copytree(REPO / package, archive / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    look = ("import json; from custom_runs.run_state import code_version, PROJECT_ROOT; "
            "print(json.dumps([str(PROJECT_ROOT), code_version()]))")
    # git must not find a repository above the copy either
    done = run_python("-c", look, cwd=archive, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)},
                      timeout=120)
    assert done.returncode == 0, done.stderr
    root, version = json.loads(done.stdout)
    assert Path(root) == archive  # the copy's code ran, not the checkout's
    assert version == {"commit": "unknown", "uncommitted_changes": "unknown"}


def test_code_version_of_a_checkout_its_changes_and_of_no_checkout(tmp_path, monkeypatch):
    from custom_runs.run_state import code_version
    look = code_version.__wrapped__  # uncached
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print(1)\n")
    unknown = {"commit": "unknown", "uncommitted_changes": "unknown"}
    assert look(project) == unknown  # not a git checkout
    git(project, "init", "-q")
    git(project, "add", "train.py")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = git(project, "rev-parse", "HEAD")
    assert len(commit) == 40
    (project / "local_data").mkdir()
    (project / "local_data" / "results.json").write_text("{}")  # untracked: not a change
    assert look(project) == {"commit": commit, "uncommitted_changes": False}
    (project / "train.py").write_text("print(2)\n")
    assert look(project) == {"commit": commit, "uncommitted_changes": True}
    assert look(project / "local_data") == unknown  # a folder inside a checkout is not one
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert look(project) == unknown  # git missing
