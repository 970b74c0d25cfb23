"""bench/gpu_check.py: what it would run (--dry-run), its one-line refusal without CUDA,
its summary table and figures from canned step results (bench/gpu_check_report.py), and
the step that also runs on the CPU: a DIGITS run in one process against the same under a
1-rank torchrun (gloo)."""
import json

import numpy as np
import pytest
import torch

from bench import gpu_check, gpu_check_report

STEPS = ["cuda-tests", "throughput-fp32", "throughput-bf16", "throughput-bf16-compile",
         "one-vs-torchrun", "nccl-2-ranks", "capacity-DIGITS", "capacity-FashionMNIST"]


def listing(capsys, *argv):
    assert gpu_check.main(gpu_check.get_args(["--dry-run", *argv])) == 0
    steps, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("    "):
            steps[current].append(line.split())
        else:
            current = line.split(":")[0]
            steps[current] = []
    return steps


def test_dry_run_lists_every_step_and_its_commands(capsys):
    steps = listing(capsys)
    assert list(steps) == STEPS
    assert [len(commands) for commands in steps.values()] == [1, 1, 1, 1, 2, 1, 15, 15]
    assert steps["cuda-tests"][0][1:7] == ["-m", "pytest", "tests", "-q", "-k", "cuda"]
    throughput = [steps[name][0] for name in STEPS[1:4]]
    assert all(command[1:5] == ["bench/throughput.py", "--dataset", "SVHN", "--aug-model"]
               for command in throughput)
    assert [command[-1] for command in throughput] == ["--no-amp", "30", "--compile"]
    one, launched = steps["one-vs-torchrun"]
    assert launched[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                             "implicit-augment.py"]
    assert one[2:one.index("--data")] == launched[7:launched.index("--data")]  # the same run
    assert steps["nccl-2-ranks"][0][5] == "2"
    for dataset, epochs in (("DIGITS", "3"), ("FashionMNIST", "2")):
        commands = steps[f"capacity-{dataset}"]
        folders = [command[command.index("-r") + 1] for command in commands]
        assert folders == ["run100", "run200", "run201", *[f"run40{i}" for i in range(4)],
                           *[f"run80{i}" for i in range(8)]]  # 1, 2, 4 and 8 runs at once
        assert all(command[command.index("--dataset") + 1] == dataset and
                   command[command.index("--epochs") + 1] == epochs for command in commands)
    assert not any("--no-cuda" in command for commands in steps.values() for command in commands)


def test_dry_run_leaves_out_skipped_steps(capsys):
    assert list(listing(capsys, "--skip", "nccl-2-ranks", "capacity-DIGITS")) == \
        [step for step in STEPS if step not in ("nccl-2-ranks", "capacity-DIGITS")]


def test_without_cuda_it_says_so_in_one_line_and_fails(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(gpu_check.get_args(["--out", str(tmp_path / "out")])) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("gpu_check.py: error: no CUDA device here")
    assert not (tmp_path / "out").exists()


def test_summary_table_and_files_from_canned_results(tmp_path):
    rows = [("cuda-tests", "the CUDA cases of the tests", gpu_check.Outcome("ok", "12 passed", 41.6)),
            ("nccl-2-ranks", "2 ranks, NCCL", gpu_check.Outcome("skipped", "1 GPU here, 2 needed")),
            ("throughput-fp32", "SVHN shape, fp32", gpu_check.Outcome("FAILED", "exit status 1", 3.2))]
    assert gpu_check_report.summary_table(rows) == (
        "| step | what | status | s | figures |\n"
        "| --- | --- | --- | ---: | --- |\n"
        "| cuda-tests | the CUDA cases of the tests | ok | 42 | 12 passed |\n"
        "| nccl-2-ranks | 2 ranks, NCCL | skipped | 0 | 1 GPU here, 2 needed |\n"
        "| throughput-fp32 | SVHN shape, fp32 | FAILED | 3 | exit status 1 |")
    gpu_check_report.write_summary(rows, tmp_path)
    assert (tmp_path / "summary.md").read_text() == gpu_check_report.summary_table(rows) + "\n"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert [(row["step"], row["status"]) for row in saved] == \
        [("cuda-tests", "ok"), ("nccl-2-ranks", "skipped"), ("throughput-fp32", "FAILED")]


def test_figures_of_pytest_throughput_and_capacity():
    assert gpu_check_report.pytest_counts("....s\n4 passed, 1 skipped, 490 deselected in 12.31s\n") == \
        {"passed": 4, "skipped": 1, "deselected": 490}
    assert gpu_check_report.pytest_counts("1 failed, 3 passed in 2.0s") == {"failed": 1, "passed": 3}
    report = {"train_step_s": 0.0331, "hyper_step_s": 0.0343, "hyper_to_train_ratio": 1.036,
              "train_images_per_s": 7740.2, "test_pass_s": 1.234, "projected_200_epoch_s": 1284,
              "peak_memory_mb": 3379}
    assert gpu_check_report.throughput_figures(report) == (
        "train step 33.1 ms, hyper step 34.3 ms (1.04x), 7,740 img/s, test pass 1.23 s, "
        "full run 21.4 min projected, 3.3 GiB")
    results = [{"timings_s": {"total": 6.0}, "epochs_done": 3, "split": {"train_size": 1000}},
               {"timings_s": {"total": 12.0}, "epochs_done": 3, "split": {"train_size": 1000}}]
    row = gpu_check_report.capacity_row(2, 20.0, results)
    assert row == {"runs": 2, "wall_s": 20.0, "epoch_s": 3.0, "epochs_per_min": 40.0,
                   "train_images_per_s": pytest.approx(2000 / 3)}
    one = gpu_check_report.capacity_row(1, 9.0, results[:1])
    assert gpu_check_report.capacity_figures([one, row]) == (
        "1: 30.0 epochs/min (2.0 s an epoch); 2: 40.0 epochs/min (3.0 s an epoch); most at 2 at once")


def test_generated_fashion_mnist_reads_back_through_the_dataset_loader(monkeypatch, tmp_path):
    from custom_datasets.sources import load_mnist_family
    monkeypatch.setattr(gpu_check, "FASHION_SIZES", {"train": 7, "t10k": 3})
    gpu_check.write_fashion_mnist(tmp_path)
    data = load_mnist_family("FashionMNIST", tmp_path, download=False)
    assert (data.num_train, len(data.test_targets)) == (7, 3)
    assert data.train_images.shape[1:] == (1, 28, 28) and data.train_images.dtype == torch.uint8
    assert int(data.train_targets.max()) < 10 and len(np.unique(data.train_images.numpy())) > 100


def test_largest_difference_finds_the_number_that_moved():
    results = {"history": [{"epoch": 1, "test_acc": 50.0, "test_loss": 1.5, "train_loss": 2.0}],
               "hyper_diagnostics": [{"epoch": 1, "g_norm_sq": 4.0, "v_norm_sq": 1.0, "g_dot_v": 0.5}],
               "learned": {"noisy_weight_auroc": 0.7, "aug_probability_lower": None},
               "final": {"acc": 50.0}}
    assert len(gpu_check_report.compared_numbers(results)) == 8
    assert gpu_check_report.largest_difference(results, json.loads(json.dumps(results))) == (0.0, "")
    moved = json.loads(json.dumps(results))
    moved["hyper_diagnostics"][0]["g_dot_v"] = 0.55
    difference, where = gpu_check_report.largest_difference(results, moved)
    assert difference == pytest.approx(0.05 / 0.55) and where == "epoch 1 g_dot_v"


def test_one_process_and_a_one_rank_torchrun_give_the_same_numbers_on_the_cpu(tmp_path):
    # a few seconds a run on 2 quiet cores; the timeout is for a machine shared with other work
    context = gpu_check.Context(out=tmp_path / "out", work=tmp_path, cuda=False, epochs=2, timeout=900)
    context.out.mkdir()
    step = next(step for step in gpu_check.all_steps() if step.name == "one-vs-torchrun")
    assert all(command[-1] == "--no-cuda" for command in step.commands(context))
    outcome = step.run(step, context)
    log = (context.out / "one-vs-torchrun.log").read_text()
    assert outcome.status == "ok", log[-3000:]
    # 2 epochs x (test acc, test loss, train loss), 1 hyper epoch x 3 norms, the 7 figures of
    # what SEP + BOTH learned (with the skipped hyper steps) and the final accuracy
    assert outcome.details == {"largest_difference": 0.0, "where": "", "numbers": 6 + 3 + 7 + 1}
    assert log.count("$ ") == 2 and "torch.distributed.run" in log
    assert json.loads(gpu_check_report.results_file(tmp_path / "torchrun").read_text())["world_size"] == 1
