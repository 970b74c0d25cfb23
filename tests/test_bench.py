"""bench/throughput.py --epoch --compare: one JSON line per compute path and round, with
the phases of a whole epoch (issue 13)."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_times_every_phase_of_the_three_paths(bench, capsys, tmp_path):
    args = bench.get_args(["--dataset", "DIGITS", "-ir", "10", "-nr", "0.1", "--aug-model", "SEP",
                           "--los-model", "BOTH", "--hyper-opt", "HES", "--no-cuda", "--epoch",
                           "--compare", "--paths", "before", "fp32", "bf16", "--epoch-fraction", "0.1",
                           "--warmup", "1",
                           "--data", str(tmp_path)])
    assert bench.main(args) == 0
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


def test_compare_without_epoch_is_refused_in_one_line(bench, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.get_args(["--dataset", "DIGITS", "--compare"])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "error: --compare needs --epoch (see " in line
