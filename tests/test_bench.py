"""bench/throughput.py --epoch --compare: one JSON line per compute path and round, with
the phases of a whole epoch."""
import json

import pytest
import torch

import bench.throughput as throughput
from bench.throughput_run import build_run, synthetic_data
from custom_common.settings import get_settings
from custom_models.training import hyper_epoch
from custom_runs.set_up import plan_run


def test_compare_times_every_phase_of_the_three_paths(capsys, tmp_path):
    args = throughput.get_args(["--dataset", "DIGITS", "-ir", "10", "-nr", "0.1", "--aug-model", "SEP",
                           "--los-model", "BOTH", "--hyper-opt", "HES", "--no-cuda", "--epoch",
                           "--compare", "--paths", "before", "fp32", "bf16", "--epoch-fraction", "0.1",
                           "--warmup", "1",
                           "--data", str(tmp_path)])
    assert throughput.main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == ["before", "fp32", "bf16"]
    assert [line["test_batch_size"] for line in lines] == [1024, 128, 128]
    assert [line["compute_path"].split(" (")[0] for line in lines] == \
        ["CPU: fp32", "CPU: fp32", "CPU: bf16 autocast"]
    assert "channels-last" not in lines[0]["compute_path"] and "channels-last" in lines[1]["compute_path"]
    for line in lines:
        phases = [line[f"{phase}_s"] for phase in ("hyper_epoch", "train_epoch", "test_pass")]
        assert all(seconds > 0 for seconds in phases)
        assert line["epoch_s"] == pytest.approx(sum(phases))
        assert (line["train_size"], line["batch_size"], line["hyper_batch_size"]) == (625, 32, 128)


def test_compare_without_epoch_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        throughput.get_args(["--dataset", "DIGITS", "--compare"])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "error: --compare needs --epoch (see " in line


@pytest.mark.parametrize("flags", [["--steps", "0"], ["--warmup", "-1"]])
def test_no_timed_step_or_a_negative_warm_up_is_refused_in_one_line(capsys, flags):
    with pytest.raises(SystemExit) as stop:
        throughput.get_args(["--dataset", "DIGITS", "--no-cuda", *flags])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "error: --steps must be at least 1 and --warmup at least 0, got " in line


def test_compile_summary_gives_the_compile_time_and_the_epochs_that_repay_it():
    args = throughput.get_args(["--dataset", "DIGITS", "--no-cuda", "--epoch", "--compare", "--epochs", "50",
                           "--hyper-start", "12"])
    phases = {"hyper_epoch_s": 3.0, "train_epoch_s": 5.0, "test_pass_s": 1.0}
    reports = {"fp32": {"repeat": 0, "precision": "fp32", "warmup_s": 4.0, **phases, "epoch_s": 9.0},
               "bf16": {"repeat": 0, "precision": "bf16", "warmup_s": 3.0, "epoch_s": 6.0},
               "compiled": {"repeat": 0, "precision": "fp32", "warmup_s": 64.0, "hyper_epoch_s": 2.0,
                            "train_epoch_s": 3.0, "test_pass_s": 1.0, "epoch_s": 6.0}}
    summary = throughput.compile_summary(args, reports)
    assert summary["compile_s"] == 60.0  # the compiled warm-up less fp32's
    assert summary["speedup"] == {"fp32": 1.5, "bf16": 1.0}
    assert summary["epochs_to_repay"] == 20.0  # 60 s at 3 s an epoch
    # 50 epochs with 37 hyper epochs (after epoch 12): 50 x 6 + 37 x 3 against 60 + 50 x 4 + 37 x 2
    assert (summary["eager_run_s"], summary["compiled_run_s"]) == (411.0, 334.0)
    assert summary["compiled_run_faster"] and summary["path"] == "compile summary"
    reports["compiled"].update(train_epoch_s=5.0, hyper_epoch_s=3.0, epoch_s=9.0)
    slower = throughput.compile_summary(args, reports)
    assert slower["epochs_to_repay"] is None and not slower["compiled_run_faster"]


def test_the_compiled_path_without_a_cpp_compiler_is_refused_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(throughput, "cpp_compiler", lambda: None)
    with pytest.raises(SystemExit) as stop:
        throughput.get_args(["--dataset", "DIGITS", "--no-cuda", "--epoch", "--compare"])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "error: the compiled path needs a C++ compiler" in line
    args = throughput.get_args(["--dataset", "DIGITS", "--no-cuda", "--epoch", "--compare", "--paths", "fp32", "bf16"])
    assert list(throughput.compared_paths(plan_run(args).compute_path, args.paths)) == ["fp32", "bf16"]


def hyper_tables(models):
    """The learned tables and the row optimiser's running squares of the gradients."""
    optimizer = models.hyper.optimizer
    return {**{f"table {name}": table.clone() for name, table in optimizer.tables.items()},
            **{f"square_avg {name}": average.clone() for name, average in optimizer.square_avg.items()}}


@pytest.mark.parametrize("precision", [["--no-amp"], []], ids=["fp32", "chosen"])
def test_the_timed_hyper_step_is_the_runs_hyper_epoch_step_on_the_folded_encoder(tmp_path,
                                                                                  precision):
    args = throughput.get_args(["--dataset", "DIGITS", "-ir", "10", "-nr", "0.1", "--aug-model", "SEP",
                           "--los-model", "BOTH", "--hyper-opt", "HES", "--no-cuda", "--data", str(tmp_path),
                           *precision])
    settings = get_settings("DIGITS")
    data = synthetic_data(settings)
    (_, _, timed_parts), (_, _, run_parts) = (build_run(args, data) for _ in range(2))
    timed, run = timed_parts.models, run_parts.models
    assert timed.network.fold_batch_norm  # the CPU's path folds: the run's hyper epochs see no batch norm
    before = hyper_tables(timed)
    assert all(torch.equal(before[name], table) for name, table in hyper_tables(run).items())
    train, valid = next(iter(timed_parts.batches.hyper)), next(iter(timed_parts.batches.valid))
    torch.manual_seed(0)  # the augmentation's draws
    throughput.hyper_steps(args, timed, iter([train]), iter([valid]), 1)
    torch.manual_seed(0)
    hyper_epoch(run.network, run.hyper, [train], iter([valid]), lambda step: args.hyper_beta)
    timed_tables, run_tables = hyper_tables(timed), hyper_tables(run)
    assert len(run_tables) == 8  # SEP's two tables and BOTH's two, each with its running squares
    for name, table in run_tables.items():
        assert not torch.equal(table, before[name]), f"{name}: unchanged by the step"
        assert torch.equal(timed_tables[name], table), f"{name}: the timed step's differs from the run's"
