"""The tests' stop points (custom_runs/stop_points.py): STOP_RUN_AT makes a run stop itself
at exactly the epoch and batch, or the set-up step, it names, and on the rank it names."""
import signal

import pytest

from custom_cli import train
from custom_runs import run_files, stop_points
from custom_runs.experiment import Experiment
from custom_common.errors import UsageError

NAME = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return train


@pytest.mark.parametrize("value, point, action, rank", [
    ("2:5", (2, 5), "TERM", None),
    ("0:0:KILL", (0, 0), "KILL", None),
    ("1:1@1", (1, 1), "TERM", 1),
    ("setup:load_last:PAUSE@0", ("setup", "load_last"), "PAUSE", 0),
    ("setup:build_models:INT", ("setup", "build_models"), "INT", None),
])
def test_the_variable_names_a_point_an_action_and_a_rank(value, point, action, rank):
    assert stop_points.requested(value) == stop_points.StopPoint(point, action, rank)


def test_an_unset_variable_asks_for_nothing_and_a_malformed_one_is_refused(monkeypatch):
    monkeypatch.delenv(stop_points.VARIABLE, raising=False)
    assert stop_points.requested() is None and stop_points.requested("") is None
    for bad in ("2", "2:x", "-1:0", "setup:train", "1:0:STOP", "1:0@x", "1:0 2:0"):
        with pytest.raises(UsageError, match=r"STOP_RUN_AT=.*expected EPOCH:BATCH or setup:STEP"):
            stop_points.requested(bad)


def test_only_the_named_point_on_the_named_rank_sends_the_signal():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        stop_at = stop_points.requested("1:2@1")
        for point, rank in (((1, 2), 0), ((1, 1), 1), ((2, 2), 1), (("setup", "load_last"), 1)):
            stop_points.stop_if_asked(stop_at, point, rank)
        stop_points.stop_if_asked(None, (1, 2), 1)
        assert received == []
        stop_points.stop_if_asked(stop_at, (1, 2), 1)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_run_stops_itself_at_exactly_that_epoch_and_batch(cli, monkeypatch, tmp_path, capsys):
    batches = []
    set_lr = Experiment.set_lr

    def recorded(self, epoch, batch):
        batches.append((epoch, batch))
        return set_lr(self, epoch, batch)
    monkeypatch.setattr(Experiment, "set_lr", recorded)
    monkeypatch.setenv(stop_points.VARIABLE, "1:3")
    argv = ["--no-cuda", "--dataset", "DIGITS", "--epochs", "3", "--data", str(tmp_path)]
    assert cli.main(cli.get_args(argv)) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().endswith(
        "terminated (SIGTERM); continue with the same command and --resume")
    per_epoch = len([batch for epoch, batch in batches if epoch == 0])
    assert per_epoch > 4 and batches == [(0, b) for b in range(per_epoch)] + [(1, b) for b in range(4)]
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    assert run_files.load_torch(run_files.last_checkpoint_path(folder, NAME))["epoch"] == 0
    results = run_files.load_results(run_files.results_path(folder, NAME))
    assert results["status"] == "interrupted" and results["epochs_done"] == 1
    assert [record["epoch"] for record in results["history"]] == [0]
    assert not run_files.lock_path(folder, NAME).exists()


def test_a_run_stops_itself_at_a_set_up_step_before_any_epoch(cli, monkeypatch, tmp_path):
    monkeypatch.setenv(stop_points.VARIABLE, "setup:build_models")
    monkeypatch.setattr(Experiment, "set_lr", lambda *args: pytest.fail("a batch was trained"))
    argv = ["--no-cuda", "--dataset", "DIGITS", "--epochs", "1", "--data", str(tmp_path)]
    assert cli.main(cli.get_args(argv)) == 128 + signal.SIGTERM
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    assert not run_files.results_path(folder, NAME).exists()
    assert not run_files.last_checkpoint_path(folder, NAME).exists()
    assert not run_files.lock_path(folder, NAME).exists()
    assert (folder / run_files.split_file_name(1, 1.0, 0.0)).is_file()


def test_a_malformed_stop_point_is_one_line_and_exit_2(cli, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(stop_points.VARIABLE, "epoch 2")
    argv = ["--no-cuda", "--dataset", "DIGITS", "--data", str(tmp_path)]
    assert cli.main(cli.get_args(argv)) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("implicit-augment.py: error: STOP_RUN_AT='epoch 2': expected")
    assert not (tmp_path / "DIGITS").exists()
