"""A stop (SIGTERM, Ctrl-C) at any step of a run's set-up leaves the files as one during
training does: exit 143 with the line that says how to continue, and, once a resumed
run's state is loaded, an "interrupted" results file that agrees with its last_ checkpoint.
The signal is delivered by the process to itself at the step."""
import hashlib
import os
import signal
from pathlib import Path

import pytest

from custom_cli import train
from custom_runs import builders, run_files, run_state, set_up
from custom_common.signals import deferred_stops

NAME = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)


@pytest.fixture(scope="module")
def cli():
    return train


# the module whose function each step is (the run calls them through their modules)
STEPS = {"prepare_data": set_up, "build_batches": builders, "build_models": builders,
         "load_last": run_state, "save_last": run_state}


def sigterm_at(monkeypatch, step: str, after: bool = False) -> None:
    """The set-up step `step` sends this process a SIGTERM as it starts (or as it returns)."""
    original = getattr(STEPS[step], step)

    def stopped_here(*args, **kwargs):
        if not after:
            os.kill(os.getpid(), signal.SIGTERM)
        returned = original(*args, **kwargs)
        if after:
            os.kill(os.getpid(), signal.SIGTERM)
        return returned
    monkeypatch.setattr(STEPS[step], step, stopped_here)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stopped_after_one_epoch(cli, tmp_path_factory):
    """A two-epoch run stopped by SIGTERM while it saves epoch 1: the state a stop during
    training leaves (the reference), then the results file a kill -9 between the last_
    checkpoint and the results file would not have left."""
    data = tmp_path_factory.mktemp("stops")
    argv = ["--no-cuda", "--dataset", "DIGITS", "--epochs", "2", "--data", str(data)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        sigterm_at(monkeypatch, "save_last", after=True)
        assert cli.main(cli.get_args(argv)) == 128 + signal.SIGTERM
    folder = run_files.run_dir(data, "DIGITS", "run0")
    results_path = run_files.results_path(folder, NAME)
    reference = run_files.load_results(results_path)
    assert reference["status"] == "interrupted" and reference["epochs_done"] == 1
    last = run_files.last_checkpoint_path(folder, NAME)
    assert run_files.load_torch(last)["epoch"] == 0
    return {"argv": argv + ["--resume"], "folder": folder, "results_path": results_path,
            "reference": reference, "last": last, "last_digest": digest(last)}


@pytest.mark.parametrize("step", ["build_batches", "build_models", "load_last"])
def test_a_stop_during_the_set_up_of_a_resumed_run_writes_the_interrupted_results_of_its_checkpoint(
        cli, stopped_after_one_epoch, monkeypatch, capsys, step):
    state = stopped_after_one_epoch
    state["results_path"].unlink()  # as kill -9 between last_ and the results file leaves it
    sigterm_at(monkeypatch, step)
    assert cli.main(cli.get_args(state["argv"])) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().endswith(
        "terminated (SIGTERM); continue with the same command and --resume")
    results = run_files.load_results(state["results_path"])
    assert results["status"] == "interrupted" and results["epochs_done"] == 1
    assert results["history"] == state["reference"]["history"]
    assert results["best"] == state["reference"]["best"]
    assert digest(state["last"]) == state["last_digest"]  # the checkpoint is untouched
    assert not run_files.lock_path(state["folder"], NAME).exists()
    assert not [p.name for p in state["folder"].iterdir() if p.name.endswith(".tmp")]


def test_a_stop_before_the_lock_is_taken_leaves_every_file_as_it_was(
        cli, stopped_after_one_epoch, monkeypatch, capsys):
    state = stopped_after_one_epoch
    run_files.save_json(state["reference"], state["results_path"])
    before = {p.name: digest(p) for p in state["folder"].iterdir() if p.is_file()}
    sigterm_at(monkeypatch, "prepare_data")
    assert cli.main(cli.get_args(state["argv"])) == 128 + signal.SIGTERM
    assert "terminated (SIGTERM); continue with the same command and --resume" in capsys.readouterr().err
    assert {p.name: digest(p) for p in state["folder"].iterdir() if p.is_file()} == before


def test_a_stop_while_a_finished_run_is_set_up_keeps_it_finished(cli, tmp_path, monkeypatch):
    argv = ["--no-cuda", "--dataset", "DIGITS", "--epochs", "1", "--data", str(tmp_path)]
    assert cli.main(cli.get_args(argv)) == 0
    results_path = run_files.results_path(run_files.run_dir(tmp_path, "DIGITS", "run0"), NAME)
    sigterm_at(monkeypatch, "load_last")
    assert cli.main(cli.get_args(argv + ["--resume"])) == 128 + signal.SIGTERM
    assert run_files.load_results(results_path)["status"] == "finished"


def test_a_deferred_stop_reaches_the_previous_handler_once_when_the_block_ends():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with deferred_stops():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert received == []
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
