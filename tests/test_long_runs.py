"""Long runs: resume after SIGKILL, concurrent configurations, no silent overwrite,
and clear errors that leave nothing behind (issue: robust runs)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from custom_models import run_files

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "implicit-augment.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
AUTODO = ["--dataset", "DIGITS", "-ir", "10", "-nr", "0.2", "--aug-model", "SEP",
          "--los-model", "BOTH", "--hyper-opt", "HES", "--no-cuda"]
NAME = run_files.run_name("resnet18", "HES", "SEP", "BOTH", 10, 1.0, 0.2)


def run(args, data, check=True):
    result = subprocess.run([sys.executable, SCRIPT, *args, "--data", str(data)], env=ENV,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def load(path):
    return run_files.load_torch(path)


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    args = AUTODO + ["--epochs", "5", "--hyper-start", "1"]
    straight = tmp_path / "straight"
    run(args, straight)

    interrupted = tmp_path / "interrupted"
    folder = run_files.run_dir(interrupted, "DIGITS", "run0")
    last = run_files.last_checkpoint_path(folder, NAME)
    process = subprocess.Popen([sys.executable, SCRIPT, *args, "--data", str(interrupted)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # wait until two epochs are saved, then kill during the third (a hyper epoch)
    while time.time() < deadline and process.poll() is None:
        if last.is_file() and load(last)["epoch"] >= 1:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = load(last)["epoch"]
    assert killed_at < 4
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [] or \
        all(p.name.endswith(".tmp") for p in folder.iterdir() if p.name.startswith("."))

    refused = run(args, interrupted, check=False)
    assert refused.returncode != 0 and "--resume" in refused.stderr

    run(args + ["--resume"], interrupted)
    a = run_files.load_results(run_files.results_path(run_files.run_dir(straight, "DIGITS", "run0"), NAME))
    b = run_files.load_results(run_files.results_path(folder, NAME))
    assert b["status"] == "finished" and b["epochs_done"] == 5
    assert [h["test_acc"] for h in b["history"]] == [h["test_acc"] for h in a["history"]]
    assert b["final"]["acc"] == a["final"]["acc"] and b["best"] == a["best"]
    last_a = load(run_files.last_checkpoint_path(run_files.run_dir(straight, "DIGITS", "run0"), NAME))
    last_b = load(last)
    for key in ("reweight_state_dict", "augment_state_dict", "decoder_state_dict"):
        for name, tensor in last_a[key].items():
            assert torch.equal(tensor, last_b[key][name]), (key, name)


def test_resume_with_other_options_says_what_differs(tmp_path):
    run(AUTODO + ["--epochs", "2"], tmp_path)
    result = run(AUTODO + ["--epochs", "3", "--resume"], tmp_path, check=False)
    assert result.returncode != 0
    assert "epochs 2 -> 3" in result.stderr and "Traceback" not in result.stderr


def test_resume_starts_a_run_that_has_nothing_to_resume_and_repeats_a_finished_one(tmp_path):
    """One command for every (re)submission of a pre-emptible job."""
    args = ["--dataset", "DIGITS", "--epochs", "1", "--no-cuda", "--resume"]
    first = run(args, tmp_path)
    assert "starting from epoch 1" in first.stderr
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    name = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)
    results = run_files.load_results(run_files.results_path(folder, name))
    best = run_files.best_checkpoint_path(folder, name).read_bytes()
    again = run(args, tmp_path)
    assert "nothing to train" in again.stderr
    assert run_files.load_results(run_files.results_path(folder, name))["final"] == results["final"]
    assert run_files.best_checkpoint_path(folder, name).read_bytes() == best


def test_a_finished_result_is_not_overwritten_without_force(tmp_path):
    args = ["--dataset", "DIGITS", "--epochs", "1", "--no-cuda"]
    run(args, tmp_path)
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    name = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)
    before = run_files.results_path(folder, name).read_bytes()
    result = run(args, tmp_path, check=False)
    assert result.returncode != 0 and "--force" in result.stderr
    assert run_files.results_path(folder, name).read_bytes() == before
    run(args + ["--force"], tmp_path)
    assert json.loads(run_files.results_path(folder, name).read_text())["status"] == "finished"


def test_four_configurations_started_together_share_one_split(tmp_path):
    configurations = [["--aug-model", "NONE"], ["--aug-model", "SHA", "--hyper-opt", "HES"],
                      ["--los-model", "WGHT", "--hyper-opt", "HES"], ["--aug-model", "SEP"]]
    processes = [subprocess.Popen([sys.executable, SCRIPT, "--dataset", "DIGITS", "-ir", "5",
                                   "-nr", "0.3", "--epochs", "2", "--hyper-start", "0",
                                   "--no-cuda", "--data", str(tmp_path), *extra],
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for extra in configurations]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err for _, err in outputs]
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    assert sorted(p.name for p in folder.glob("data_*.pt")) == ["data_ir_5_sr_1.0_nr_0.3.pt"]
    results = [run_files.load_results(p) for p in folder.glob("results_*.json")]
    assert len(results) == 4
    assert len({json.dumps(r["split"]) for r in results}) == 1
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("args, message", [
    (["-ir", "1000"], "upper classes"),
    (["--model", "wresnet27_2"], "6n+4"),
    (["--hyper-opt", "HES"], "nothing to learn"),
])
def test_impossible_settings_fail_with_one_line_and_leave_no_files(tmp_path, args, message):
    result = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda", *args], tmp_path, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not tmp_path.exists() or list(tmp_path.rglob("*")) == []


def test_a_corrupt_dataset_file_is_named_in_the_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / stem).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")  # header, no data
    result = run(["--dataset", "MNIST", "--epochs", "1", "--no-cuda"], tmp_path, check=False)
    assert result.returncode != 0
    assert "train-images-idx3-ubyte is corrupt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "MNIST" / "run0").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_data_folder_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        result = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda"], tmp_path / "x", check=False)
    finally:
        tmp_path.chmod(0o700)
    assert result.returncode != 0 and "not writable" in result.stderr


def test_a_data_path_inside_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    result = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda"], tmp_path / "file" / "x", check=False)
    assert result.returncode != 0 and "is a file, not a folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_hyper_start_after_the_last_epoch_warns_that_no_hyper_step_runs(tmp_path):
    result = run(["--dataset", "DIGITS", "--epochs", "2", "--hyper-start", "5", "--no-cuda",
                  "--los-model", "WGHT", "--hyper-opt", "HES"], tmp_path)
    assert "no hyper step will run" in result.stderr
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    results = run_files.load_results(next(folder.glob("results_*.json")))
    assert results["hyper_diagnostics"] == []
