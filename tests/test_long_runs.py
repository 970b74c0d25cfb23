"""Long runs: resume after SIGKILL, concurrent configurations, no silent overwrite,
and clear errors that leave nothing behind."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from custom_cli import train
from custom_runs import run_files

ROOT = Path(__file__).resolve().parents[1]
AUTODO = ["--dataset", "DIGITS", "-ir", "10", "-nr", "0.2", "--aug-model", "SEP",
          "--los-model", "BOTH", "--hyper-opt", "HES", "--no-cuda"]
NAME = run_files.run_name("resnet18", "HES", "SEP", "BOTH", 10, 1.0, 0.2)


@pytest.fixture(scope="session")
def run(run_script):
    """run(args, data, check=True): implicit-augment.py with `args` and --data `data`, which
    with `check` must succeed."""
    def run(args, data, check=True):
        result = run_script("implicit-augment.py", *args, "--data", data, timeout=300)
        if check:
            assert result.returncode == 0, result.stderr
        return result
    return run


def load(path):
    return run_files.load_torch(path)


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path, start_script, run):
    # enough epochs after the kill point that a fast machine cannot finish before the kill
    args = AUTODO + ["--epochs", "8", "--hyper-start", "1"]
    straight = tmp_path / "straight"
    run(args, straight)

    interrupted = tmp_path / "interrupted"
    folder = run_files.run_dir(interrupted, "DIGITS", "run0")
    last = run_files.last_checkpoint_path(folder, NAME)
    # two epochs saved, then kill -9 during the third, after its hyper epoch: the run sends
    # itself SIGKILL as batch 1 of epoch index 2 starts (custom_runs/stop_points.py)
    process = start_script("implicit-augment.py", *args, "--data", interrupted,
                           env={"STOP_RUN_AT": "2:1:KILL"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = load(last)["epoch"]
    assert killed_at < 7
    # hidden files left by the kill: temporary files, and the configuration's lock file,
    # which no live process holds any more
    lock = run_files.lock_path(folder, NAME)
    assert all(p.name.endswith(".tmp") or p == lock for p in folder.iterdir() if p.name.startswith("."))

    refused = run(args, interrupted, check=False)
    assert refused.returncode != 0 and "--resume" in refused.stderr

    run(args + ["--resume"], interrupted)
    a = run_files.load_results(run_files.results_path(run_files.run_dir(straight, "DIGITS", "run0"), NAME))
    b = run_files.load_results(run_files.results_path(folder, NAME))
    assert b["status"] == "finished" and b["epochs_done"] == 8
    assert not lock.exists()
    assert [h["test_acc"] for h in b["history"]] == [h["test_acc"] for h in a["history"]]
    assert b["final"]["acc"] == a["final"]["acc"] and b["best"] == a["best"]
    assert [h["valid_acc"] for h in b["history"]] == [h["valid_acc"] for h in a["history"]]
    assert b["best_valid"] == a["best_valid"]
    last_a = load(run_files.last_checkpoint_path(run_files.run_dir(straight, "DIGITS", "run0"), NAME))
    last_b = load(last)
    for key in ("reweight_state_dict", "augment_state_dict", "decoder_state_dict"):
        for name, tensor in last_a[key].items():
            assert torch.equal(tensor, last_b[key][name]), (key, name)


def test_a_resumed_run_keeps_the_best_valid_epoch_chosen_before_the_stop(tmp_path, start_script, run):
    """The stop comes after the best validation epoch: a resume that forgot it would choose
    among the later epochs only."""
    args = ["--dataset", "DIGITS", "-nr", "0.5", "--lr", "0.2", "--epochs", "5", "--no-cuda"]
    name = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.5)
    straight = run_files.run_dir(tmp_path / "straight", "DIGITS", "run0")
    run(args, tmp_path / "straight")
    expected = run_files.load_results(run_files.results_path(straight, name))["best_valid"]
    assert expected["epoch"] < 4, "the best validation epoch is the last: nothing to forget"

    folder = run_files.run_dir(tmp_path / "resumed", "DIGITS", "run0")
    process = start_script("implicit-augment.py", *args, "--data", tmp_path / "resumed",
                           env={"STOP_RUN_AT": f"{expected['epoch'] + 1}:0:KILL"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert load(run_files.last_checkpoint_path(folder, name))["best_valid"] == expected
    run(args + ["--resume"], tmp_path / "resumed")
    resumed = run_files.load_results(run_files.results_path(folder, name))
    assert resumed["status"] == "finished" and resumed["best_valid"] == expected
    saved, straight_saved = (load(run_files.best_valid_checkpoint_path(where, name))
                             for where in (folder, straight))
    assert saved["epoch"] == expected["epoch"]
    for key, tensor in straight_saved["decoder_state_dict"].items():
        assert torch.equal(tensor, saved["decoder_state_dict"][key]), key


def test_resume_with_other_options_says_what_differs(tmp_path, run):
    run(AUTODO + ["--epochs", "2"], tmp_path)
    result = run(AUTODO + ["--epochs", "3", "--resume"], tmp_path, check=False)
    assert result.returncode != 0
    assert "epochs 2 -> 3" in result.stderr and "Traceback" not in result.stderr


def test_resume_starts_a_run_that_has_nothing_to_resume_and_repeats_a_finished_one(tmp_path, run):
    """One command for every (re)submission of a pre-emptible job."""
    args = ["--dataset", "DIGITS", "--epochs", "1", "--no-cuda", "--resume"]
    first = run(args, tmp_path)
    assert "starting from epoch 1" in first.stderr
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    name = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)
    results = run_files.load_results(run_files.results_path(folder, name))
    best = run_files.best_checkpoint_path(folder, name).read_bytes()
    events = sorted(run_files.tensorboard_dir(folder, name).iterdir())
    again = run(args, tmp_path)
    assert "nothing to train" in again.stderr
    assert run_files.load_results(run_files.results_path(folder, name))["final"] == results["final"]
    assert run_files.best_checkpoint_path(folder, name).read_bytes() == best
    assert sorted(run_files.tensorboard_dir(folder, name).iterdir()) == events


def test_a_finished_result_is_not_overwritten_without_force(tmp_path, run):
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


def test_four_configurations_started_together_share_one_split(tmp_path, start_script):
    configurations = [["--aug-model", "NONE"], ["--aug-model", "SHA", "--hyper-opt", "HES"],
                      ["--los-model", "WGHT", "--hyper-opt", "HES"], ["--aug-model", "SEP"]]
    processes = [start_script("implicit-augment.py", "--dataset", "DIGITS", "-ir", "5", "-nr", "0.3",
                              "--epochs", "2", "--hyper-start", "0", "--no-cuda", "--data", tmp_path,
                              *extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
def test_impossible_settings_fail_with_one_line_and_leave_no_files(tmp_path, args, message, run):
    result = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda", *args], tmp_path, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not tmp_path.exists() or list(tmp_path.rglob("*")) == []


def test_a_corrupt_dataset_file_is_named_in_the_error(tmp_path, run):
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
def test_an_unwritable_data_folder_is_refused(tmp_path, run):
    tmp_path.chmod(0o500)
    try:
        result = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda"], tmp_path / "x", check=False)
    finally:
        tmp_path.chmod(0o700)
    assert result.returncode != 0 and "not writable" in result.stderr


def test_a_data_path_inside_a_file_is_refused(tmp_path, run):
    (tmp_path / "file").write_text("")
    result = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda"], tmp_path / "file" / "x", check=False)
    assert result.returncode != 0 and "is a file, not a folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_hyper_start_after_the_last_epoch_warns_that_no_hyper_step_runs(tmp_path, run):
    result = run(["--dataset", "DIGITS", "--epochs", "2", "--hyper-start", "5", "--no-cuda",
                  "--los-model", "WGHT", "--hyper-opt", "HES"], tmp_path)
    assert "no hyper step will run" in result.stderr
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    results = run_files.load_results(next(folder.glob("results_*.json")))
    assert results["hyper_diagnostics"] == []


def _wait_for(condition, process, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None and not condition():
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before the test could act on it"


def test_a_running_configuration_refuses_a_second_process_and_sigterm_stops_it_for_resume(
        tmp_path, start_script, run):
    args = ["--dataset", "DIGITS", "--epochs", "60", "--no-cuda"]
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    name = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)
    lock, results = run_files.lock_path(folder, name), run_files.results_path(folder, name)
    # an epoch is done and the lock is held: the run waits there for a signal
    # (custom_runs/stop_points.py), for as long as the test needs
    stderr_path = tmp_path / "first.stderr"
    with open(stderr_path, "w") as stderr_file:
        first = start_script("implicit-augment.py", *args, "--data", tmp_path,
                             env={"STOP_RUN_AT": "1:0:PAUSE"}, stdout=subprocess.DEVNULL,
                             stderr=stderr_file)
    try:
        _wait_for(lambda: "STOP_RUN_AT: paused at 1:0" in stderr_path.read_text(), first)
        assert results.is_file()
        assert lock.read_text().startswith(f"pid {first.pid} on ")
        for extra in ([], ["--resume"], ["--force"], ["--resume", "--lr", "0.01"]):
            second = run(args + extra, tmp_path, check=False)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(lines) == 1, second.stderr
            assert f"pid {first.pid} on " in lines[0] and "is training this configuration" in lines[0]
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    stderr = stderr_path.read_text()
    assert first.returncode == 128 + signal.SIGTERM
    assert "terminated (SIGTERM); continue with the same command and --resume" in stderr
    stopped = run_files.load_results(results)
    assert stopped["status"] == "interrupted" and 1 <= stopped["epochs_done"] < 60
    assert load(run_files.last_checkpoint_path(folder, name))["epoch"] == stopped["epochs_done"] - 1
    assert not lock.exists()


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return train


def _fail_on_epoch(monkeypatch, failing_call):
    """The training loss becomes NaN in the epoch with index `failing_call`."""
    from custom_runs import experiment
    real, calls = experiment.train_one_epoch, []

    def train_one_epoch(*args, **kwargs):
        calls.append(None)
        if len(calls) == failing_call + 1:
            raise FloatingPointError("the training loss became nan")
        return real(*args, **kwargs)
    monkeypatch.setattr(experiment, "train_one_epoch", train_one_epoch)


def test_a_non_finite_loss_says_how_to_go_on_and_resume_may_lower_the_lr(cli, monkeypatch, tmp_path, capsys):
    base = ["--dataset", "DIGITS", "--epochs", "3", "--no-cuda", "--data", str(tmp_path)]
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    name = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)
    with monkeypatch.context() as patch:
        _fail_on_epoch(patch, 1)
        assert cli.main(cli.get_args(base + ["--lr", "0.5"])) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "the training loss became nan" in error[0]
    assert "epoch 1 is the last good one" in error[0]
    assert "--resume and a lower --lr (now 0.5)" in error[0]
    failed = run_files.load_results(run_files.results_path(folder, name))
    assert failed["status"] == "failed" and failed["epochs_done"] == 1

    assert cli.main(cli.get_args(base + ["--lr", "0.05", "--resume"])) == 0
    assert "learning rate 0.5 -> 0.05 from epoch 2" in capsys.readouterr().err
    finished = run_files.load_results(run_files.results_path(folder, name))
    assert finished["status"] == "finished" and finished["epochs_done"] == 3
    assert finished["lr_changes"] == [{"epoch": 1, "from": 0.5, "to": 0.05}]
    assert finished["config"]["lr"] == 0.05
    # epoch 0 ran on the old rate, epochs 1 and 2 on the new one (1150 train images, 35 batches)
    from custom_models.schedule import learning_rate
    expected = [learning_rate(rate, epoch, 34, 35, 3, 5, 1e-3) for rate, epoch in ((0.5, 0), (0.05, 1), (0.05, 2))]
    assert [epoch["lr"] for epoch in finished["history"]] == pytest.approx(expected)

    # on a finished run there is nothing to train at another rate: nothing is recorded
    assert cli.main(cli.get_args(base + ["--lr", "0.001", "--resume"])) == 0
    assert "nothing to train" in capsys.readouterr().err
    again = run_files.load_results(run_files.results_path(folder, name))
    assert again["lr_changes"] == finished["lr_changes"] and again["config"]["lr"] == 0.05


def test_a_non_finite_loss_in_the_first_epoch_says_nothing_was_saved(cli, monkeypatch, tmp_path, capsys):
    _fail_on_epoch(monkeypatch, 0)
    args = cli.get_args(["--dataset", "DIGITS", "--epochs", "3", "--no-cuda", "--data", str(tmp_path)])
    assert cli.main(args) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no epoch finished, so nothing was saved" in error[0]
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    assert not list(folder.glob("results_*")) and not list(folder.glob("last_*"))


def test_a_seed_other_than_the_split_file_s_is_refused_and_a_foreign_split_is_noted(tmp_path, run):
    common = ["--dataset", "DIGITS", "--epochs", "1", "--no-cuda"]
    run(common, tmp_path)
    run0 = run_files.run_dir(tmp_path, "DIGITS", "run0")
    first = run_files.load_results(next(run0.glob("results_*.json")))
    assert first["seed"] == 0 and first["split_seed"] == 0

    split_name = run_files.split_file_name(1, 1.0, 0.0)
    refused = run(common + ["--aug-model", "RAND", "--seed", "7"], tmp_path, check=False)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert f"{split_name} in {run0} was made with seed 0" in lines[0]
    assert "add --seed 0" in lines[0] and "give seed 7 a run folder of its own" in lines[0]
    assert len(list(run0.glob("results_*.json"))) == 1

    # run3's split made with --seed 5: the folder's own default seed 3 is refused too
    run(common + ["-r", "run3", "--seed", "5"], tmp_path)
    run3 = run_files.run_dir(tmp_path, "DIGITS", "run3")
    default = run(common + ["-r", "run3", "--aug-model", "RAND"], tmp_path, check=False)
    assert default.returncode == 2 and "was made with seed 5" in default.stderr
    assert "add --seed 5" in default.stderr and len(list(run3.glob("results_*.json"))) == 1

    # a split file brought from elsewhere (here: run0's, seed 0) into run5 (seed 5)
    run5 = run_files.run_dir(tmp_path, "DIGITS", "run5")
    run5.mkdir()
    (run5 / split_name).write_bytes((run0 / split_name).read_bytes())
    noted = run(common + ["-r", "run5"], tmp_path)
    assert f"{split_name} in {run5} is not the split seed 5 makes here" in noted.stderr
    moved = run_files.load_results(next(run5.glob("results_*.json")))
    assert moved["seed"] == 5 and moved["split_seed"] is None
    assert moved["split"] == first["split"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_a_gpu_request_is_said_out_loud(tmp_path, run):
    result = run(["--dataset", "DIGITS", "--epochs", "1", "--gpu", "3"], tmp_path)
    # --compile is not ignored on the CPU (tests/test_compile.py)
    assert "note: CUDA is not available, training on the CPU (--gpu ignored)" in result.stderr
    quiet = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda", "--force"], tmp_path)
    assert "CUDA" not in quiet.stderr


def test_classes_left_without_train_images_are_named(tmp_path, run):
    result = run(["--dataset", "DIGITS", "--epochs", "1", "--no-cuda", "-ir", "300"], tmp_path)
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    counts = run_files.load_results(next(folder.glob("results_*.json")))["split"]["train_class_counts"]
    empty = [label for label, count in enumerate(counts) if count == 0]
    assert empty and all(label >= 5 for label in empty)
    assert f"note: classes {', '.join(map(str, empty))} have no train image with -ir 300 -sr 1.0" in result.stderr
