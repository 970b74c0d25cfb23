"""Numbers a report must not get wrong: classes without test images, runs resumed on other
code or another compute path, runs of different lengths, the commands that repair a run,
and results files that say finished without a number."""
import json
import shutil
from datetime import datetime
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from custom_cli.table import print_table
from custom_models.training import Network, evaluate
from custom_reports import configuration_report, run_reading, table_formats, tables
from custom_runs import compute_path, identity, run_files, run_state
from custom_runs.table import sweep
from custom_runs.experiment import Experiment
from custom_runs.metrics import minority_accuracy
from test_compute_path import options, run_until
from test_folder import make_folder
from test_get_results import (BASELINE, config_flags, configuration, get_results,  # noqa: F401
                              implicit_augment_args, write_run)


def rewrite(path, **changes):
    """A results file with some of its top-level entries replaced."""
    results = json.loads(path.read_text())
    results.update(changes)
    run_files.save_json(results, path)


# ----------------------------------------------------------------------------- empty test classes

def argmax_network(num_classes: int) -> Network:
    """A network whose prediction is the argmax of its input vector."""
    decoder = nn.Linear(num_classes, num_classes)
    with torch.no_grad():
        decoder.weight.copy_(torch.eye(num_classes))
        decoder.bias.zero_()
    return Network(nn.Flatten(), decoder)


def test_a_class_without_test_images_has_no_accuracy_and_stays_out_of_the_minority():
    # classes 0 and 1 predicted right, class 2 never in the test set
    images = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0]])
    test = evaluate(argmax_network(3), [(images, torch.tensor([0, 1, 1]), torch.arange(3))], 3)
    assert test["acc"] == 100.0
    assert test["per_class_acc"] == [100.0, 100.0, None]
    upper = SimpleNamespace(upper_classes=range(1, 3))
    assert minority_accuracy(test["per_class_acc"], upper) == 100.0
    assert minority_accuracy([50.0, None, None], upper) is None
    assert minority_accuracy([50.0, 20.0, 70.0], upper) == 45.0


def test_a_folder_run_with_an_empty_test_class_reports_its_minority_without_it(tmp_path, capsys):
    root = make_folder(tmp_path / "shapes")
    shutil.rmtree(root / "test" / "vbar")  # label 2, an upper-half (minority) class
    (root / "test" / "vbar").mkdir()
    data = tmp_path / "runs"
    experiment = Experiment(options("--dataset", "folder", "--data-dir", root, "--no-cuda",
                                    "--epochs", 1, "--data", data))
    results = experiment.run()
    assert "class 2 has no test image" in capsys.readouterr().err
    saved = run_files.load_results(experiment.plan.results_path)
    for entry in (saved["best"], saved["final"]):
        per_class = entry["per_class_acc"]
        assert per_class[2] is None and per_class[1] is not None
        assert entry["minority_acc"] == pytest.approx(per_class[1])
    assert saved["history"][0]["per_class_acc"][2] is None
    assert results["best"]["minority_acc"] == saved["best"]["minority_acc"]

    done = get_results(data, "--dataset", "folder", "--data-dir", str(root), "--minority")
    assert done.returncode == 0, done.stderr
    assert "note: run0: class 2 has no test image: left out of its per-class and minority " \
           "accuracy" in done.stdout
    table = get_results(data, "--dataset", "folder", "--data-dir", str(root), "--table", "--minority")
    assert table.returncode == 0, table.stderr
    assert "note: class 2 has no test image in 1 run counted: left out of its per-class and " \
           "minority accuracy" in table.stdout


# ----------------------------------------------------------------------------- "best": null

def test_a_results_file_that_says_finished_without_a_best_accuracy_is_not_finished(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 90.0)
    broken = write_run(tmp_path, "SVHN", "run1", config, 92.0)
    rewrite(run_files.results_path(broken, config.name), best=None)
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    assert [run.run_folder for run in report.runs] == ["run0"]
    assert report.accuracy.mean == 90.0
    [unfinished] = report.unfinished
    assert unfinished.run_folder == "run1" and "no number at best.acc" in unfinished.progress
    text = configuration_report.render_run_report(report)
    assert "run1" in text and "not counted" in text

    [spec] = [spec for spec in sweep.expand("SVHN", str(tmp_path), ["A_W_S"], ["100-0.1"], 2, [])
              if spec.run_folder == "run1"]
    rewrite(spec.results_path, config={**json.loads(spec.results_path.read_text())["config"],
                                       **dict(spec.identity)})
    assert not spec.is_finished()  # the runner runs it again


def test_the_table_keeps_the_row_of_a_run_without_a_best_accuracy_and_marks_it(tmp_path):
    baseline, a_w_s = configuration(method=BASELINE), configuration()
    write_run(tmp_path, "SVHN", "run0", baseline, 85.0, checkpoints=False)
    write_run(tmp_path, "SVHN", "run0", a_w_s, 90.0, checkpoints=False)
    broken = write_run(tmp_path, "SVHN", "run1", a_w_s, 91.0, checkpoints=False)
    rewrite(run_files.results_path(broken, a_w_s.name), best=None)
    only = write_run(tmp_path, "SVHN", "run0", configuration(nr=0.0), 95.0, checkpoints=False)
    rewrite(run_files.results_path(only, configuration(nr=0.0).name), best=None)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10")
    assert table.columns == ["100-0.0", "100-0.1"]
    [row] = [row for row in table.rows if row.name == "A_W_S"]
    assert row.cells["100-0.1"].values == [10.0]
    assert row.cells["100-0.1"].without_number == ["run1"]
    assert row.cells["100-0.0"].values == [] and row.cells["100-0.0"].without_number == ["run0"]
    text = table_formats.render_table(table)
    [line] = [line for line in text.splitlines() if line.startswith("A_W_S")]
    assert "— [run0: no number]" in line and "10.00 (1) [run1: no number]" in line
    assert any("say finished but have no number at best.acc" in note for note in table.notes)
    cells = json.loads(table_formats.render_table(table, "json"))["rows"]
    [a_w_s_cells] = [row["cells"] for row in cells if row["name"] == "A_W_S"]
    assert a_w_s_cells["100-0.0"]["without_number"] == ["run0"]


def test_resume_rewrites_a_finished_results_file_that_lost_its_best_accuracy(tmp_path):
    argv = ["--dataset", "DIGITS", "--no-cuda", "--epochs", 1, "--data", tmp_path]
    first = Experiment(options(*argv)).run()
    path = Experiment(options(*argv)).plan.results_path
    rewrite(path, best=None)
    Experiment(options(*argv, "--resume")).run()
    assert run_files.load_results(path)["best"] == first["best"]
    assert run_files.finished(run_files.load_results(path))


# ----------------------------------------------------------------------------- repair commands

def test_the_command_for_a_lost_best_checkpoint_repeats_every_option_of_the_run(
        implicit_augment_args, tmp_path):
    config = identity.Configuration("wresnet28_10", "NONE", "NONE", "NONE", 10, 1.0, 0.2,
                                    paper_text=("valid",))
    root = tmp_path / "runs"
    run = write_run(root, "SVHN", "run1", config, 91.0)
    argv = ["--data", "elsewhere", "--dataset", "SVHN", "-r", "run1", "-ir", "10", "-nr", "0.2",
            "--epochs", "3", "--lr-warm-epochs", "1", "--hyper-gamma", "0.9", "--no-amp",
            "--paper-text", "valid", "--model", "wresnet28_10"]
    trained = vars(implicit_augment_args(argv))
    saved = {key: value for key, value in trained.items() if key not in ("resume", "force")}
    rewrite(run_files.results_path(run, config.name), config={**saved, "world_size": 1})
    run_files.best_checkpoint_path(run, config.name).unlink()
    with pytest.raises(run_files.UnreadableFile) as error:
        configuration_report.run_report(root, "SVHN", config)
    message = str(error.value)
    command = message.split("re-run it: python ", 1)[1].split()
    assert command[:5] == ["implicit-augment.py", "--data", str(root), "-r", "run1"]
    assert command[-1] == "--force"
    text = " ".join(command)
    for flags in ("--epochs 3", "--lr-warm-epochs 1", "--hyper-gamma 0.9", "--no-amp",
                  "--paper-text valid", "--dataset SVHN", "--imbalance-ratio 10", "--noise-ratio 0.2"):
        assert flags in text
    again = vars(implicit_augment_args(command[1:]))
    assert again["force"] and again["data"] == str(root)
    assert {key: again[key] for key in saved if key != "data"} == \
        {key: value for key, value in saved.items() if key != "data"}


# ----------------------------------------------------------------------------- runs of different lengths

def write_length(root, dataset, folder, config, acc, epochs):
    """write_run's results file, of a run of `epochs` epochs."""
    run = write_run(root, dataset, folder, config, acc, checkpoints=dataset == "SVHN")
    path = run_files.results_path(run, config.name)
    saved = json.loads(path.read_text())
    rewrite(path, config={**saved["config"], "epochs": epochs}, epochs=epochs, epochs_done=epochs)
    return run


def test_one_configuration_counts_the_runs_of_one_length_and_names_the_others(tmp_path):
    config = configuration()
    for folder, acc, epochs in (("run0", 90.0, 200), ("run1", 92.0, 200), ("run2", 60.0, 3)):
        write_length(tmp_path, "SVHN", folder, config, acc, epochs)
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    assert [run.run_folder for run in report.runs] == ["run0", "run1"]
    assert report.accuracy.mean == 91.0 and report.epochs == 200
    assert ("runs of other lengths are not counted: run2 (3 epochs); the runs counted are of "
            "200 epochs (choose a length with --epochs N)") in report.notes

    done = get_results(tmp_path, *config_flags(config), "--epochs", "3", "--format", "json")
    assert done.returncode == 0, done.stderr
    chosen = json.loads(done.stdout)
    assert [run["run_folder"] for run in chosen["runs"]] == ["run2"]
    assert chosen["acc"]["mean"] == 60.0 and chosen["epochs"] == 3

    refused = get_results(tmp_path, *config_flags(config), "--epochs", "50")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "--epochs 50: no finished run of" in refused.stderr
    assert "run0 (200 epochs), run1 (200 epochs), run2 (3 epochs)" in refused.stderr


def test_a_tie_between_lengths_counts_the_longer_runs(tmp_path):
    config = configuration()
    write_length(tmp_path, "SVHN", "run0", config, 60.0, 3)
    write_length(tmp_path, "SVHN", "run1", config, 90.0, 200)
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    assert [run.run_folder for run in report.runs] == ["run1"] and report.epochs == 200


def test_the_table_gives_each_length_its_own_row_and_epochs_selects_one(tmp_path):
    a_w_s, baseline = configuration(), configuration(method=BASELINE)
    for folder, acc, epochs in (("run0", 90.0, 200), ("run1", 92.0, 200), ("run2", 60.0, 3)):
        write_length(tmp_path, "SVHN", folder, a_w_s, acc, epochs)
    write_length(tmp_path, "SVHN", "run0", baseline, 80.0, 200)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10")
    cells = {row.name: (row.epochs, row.cells["100-0.1"].values) for row in table.rows}
    assert cells == {"Baseline (200 epochs)": (200, [20.0]), "A_W_S (200 epochs)": (200, [10.0, 8.0]),
                     "A_W_S (3 epochs)": (3, [40.0])}
    assert [row.name for row in table.rows] == ["Baseline (200 epochs)", "A_W_S (200 epochs)",
                                                "A_W_S (3 epochs)"]
    assert "the runs counted differ in length (3, 200 epochs): each length has rows of its own" \
        in table.notes

    done = get_results(tmp_path, "--dataset", "SVHN", "--table", "--epochs", "200", "--format", "json")
    assert done.returncode == 0, done.stderr
    chosen = json.loads(done.stdout)
    assert [(row["name"], row["epochs"], row["cells"]["100-0.1"]["values"]) for row in chosen["rows"]] \
        == [("Baseline", 200, [20.0]), ("A_W_S", 200, [10.0, 8.0])]
    assert "1 results file of another length than --epochs 200 is not counted" in chosen["notes"]


def test_a_table_of_one_length_keeps_its_row_names(tmp_path):
    for folder in ("run0", "run1"):
        write_length(tmp_path, "SVHN", folder, configuration(), 90.0, 200)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10", with_paper=True)
    assert "A_W_S" in [row.name for row in table.rows]
    [row] = [row for row in table.rows if row.name == "A_W_S"]
    assert row.cells["100-0.1"].values == [10.0, 10.0] and row.cells["100-0.1"].paper is not None


def test_the_runner_prints_the_table_of_exactly_its_own_cells(tmp_path, capsys):
    specs = sweep.expand("DIGITS", str(tmp_path), ["Baseline"], ["10-0.1"], 2, ["--epochs", "3"])
    config = specs[0].config
    write_length(tmp_path, "DIGITS", "run0", config, 90.0, 3)
    write_length(tmp_path, "DIGITS", "run1", config, 50.0, 200)  # not this table's length
    write_length(tmp_path, "DIGITS", "run2", config, 40.0, 3)  # not one of its run folders
    args = SimpleNamespace(dataset="DIGITS", data=str(tmp_path), format="json")
    print_table(args, specs)
    table = json.loads(capsys.readouterr().out)
    [row] = table["rows"]
    assert (row["name"], row["cells"]["10-0.1"]["runs"], row["cells"]["10-0.1"]["values"]) == \
        ("Baseline", ["run0"], [10.0])


# ----------------------------------------------------------------------------- attempts

def test_a_resumed_run_records_each_attempts_code_and_compute_path_and_reports_warn(
        monkeypatch, tmp_path):
    argv = ["--dataset", "DIGITS", "--no-cuda", "--epochs", 3, "--data", tmp_path]
    first_code = {"commit": "a" * 40, "uncommitted_changes": False}
    second_code = {"commit": "b" * 40, "uncommitted_changes": True}
    monkeypatch.setattr(run_state, "code_version", lambda: first_code)
    monkeypatch.setattr(compute_path, "native_cpu_bf16", lambda: "AMX")
    first = Experiment(options(*argv))
    bf16 = first.plan.compute_path.describe()
    run_until(first, 2)
    stopped = run_files.load_results(first.plan.results_path)
    assert stopped["status"] == "interrupted"
    assert [attempt["commit"] for attempt in stopped["attempts"]] == ["a" * 40]

    monkeypatch.setattr(run_state, "code_version", lambda: second_code)
    resumed = Experiment(options(*argv, "--resume", "--no-amp"))
    fp32 = resumed.plan.compute_path.describe()
    results = resumed.run()
    assert results["status"] == "finished" and results["epochs_done"] == 3
    saved = run_files.load_results(resumed.plan.results_path)
    started = [attempt.pop("started") for attempt in saved["attempts"]]
    assert saved["attempts"] == [
        {"first_epoch": 0, "commit": "a" * 40, "uncommitted_changes": False, "compute_path": bf16},
        {"first_epoch": 2, "commit": "b" * 40, "uncommitted_changes": True, "compute_path": fp32}]
    assert all(datetime.fromisoformat(time).tzinfo is not None for time in started)
    assert started[0] <= started[1]
    last = run_files.load_torch(resumed.plan.last_path)
    assert [attempt["commit"] for attempt in last["attempts"]] == ["a" * 40, "b" * 40]

    # a finished run that is resumed again trains nothing: no attempt is added
    Experiment(options(*argv, "--resume", "--no-amp")).run()
    assert len(run_files.load_results(resumed.plan.results_path)["attempts"]) == 2

    done = get_results(tmp_path, "--dataset", "DIGITS")
    assert done.returncode == 0, done.stderr
    assert (f"note: run0: its epochs come from attempts that differ in code or compute path: "
            f"epochs 1-2 on aaaaaaaaaaaa ({bf16}), epoch 3 on bbbbbbbbbbbb with uncommitted "
            f"changes ({fp32}) (attempts of its results file)") in done.stdout
    table = tables.build_table(tmp_path, "DIGITS", "resnet18")
    assert ("runs resumed on other code or another compute path: run0 of Baseline at 1-0.0 "
            "(get-results.py for the configuration lists their attempts)") in table.notes


def test_a_results_file_without_attempts_is_one_attempt_of_its_versions(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 90.0,
              versions={"commit": "c" * 40, "uncommitted_changes": False})
    path = run_files.results_path(run_files.run_dir(tmp_path, "SVHN", "run0"), config.name)
    results = run_files.load_results(path)
    assert "attempts" not in results
    assert run_reading.attempts_of(results) == [
        {"first_epoch": 0, "commit": "c" * 40, "uncommitted_changes": False, "compute_path": None}]
    assert run_reading.mixed_attempts(results) is None
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    assert not [note for note in report.notes if "attempts" in note]
