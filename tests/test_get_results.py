"""get-results.py against run folders written here in the formats of run_files."""
import contextlib
import csv
import io
import json
import runpy
import shlex
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

import custom_cli.results
from custom_reports import configuration_report, run_reading, statistics, table_formats, tables
from custom_runs import identity, run_files

REPO = Path(__file__).resolve().parents[1]

SCRIPT = REPO / "get-results.py"

A_W_S = dict(aug_model="SEP", los_model="BOTH", hyper_opt="HES")
BASELINE = dict(aug_model="NONE", los_model="NONE", hyper_opt="NONE")


def configuration(model="wresnet28_10", ir=100, nr=0.1, sr=1.0, method=A_W_S, **ablation):
    return identity.Configuration(model, method["aug_model"], method["los_model"],
                                  method["hyper_opt"], ir, sr, nr, **ablation)


def write_run(root, dataset, folder, config, best_acc, final_acc=None, minority_acc=None,
              status="finished", checkpoints=True, versions=None, valid_acc=None):
    """One run's results file (and tiny checkpoints) exactly where implicit-augment.py puts them.
    `valid_acc`: the test accuracy of the validation-selected epoch; None writes a file of
    format 1, from before validation selection."""
    run = run_files.run_dir(root, dataset, folder)
    final_acc = best_acc - 0.5 if final_acc is None else final_acc
    minority = None if minority_acc is None else minority_acc
    results = {
        "format": 1 if valid_acc is None else run_files.RESULTS_FORMAT_VERSION,
        "run_name": config.name, "dataset": dataset,
        "run_folder": folder, "seed": run_files.seed_from_run_folder(folder), "status": status,
        "config": {"model": config.model, "aug_model": config.aug_model,
                   "los_model": config.los_model, "hyper_opt": config.hyper_opt,
                   "imbalance_ratio": config.imbalance_ratio,
                   "subsample_ratio": config.subsample_ratio, "noise_ratio": config.noise_ratio,
                   "overfit": config.overfit, "oversplit": config.oversplit, "epochs": 4},
        "epochs": 4, "epochs_done": 4 if status == "finished" else 2,
        "best": {"epoch": 3, "acc": best_acc, "loss": 0.1, "per_class_acc": [best_acc] * 10,
                 "minority_acc": minority},
        "final": {"epoch": 4, "acc": final_acc, "loss": 0.2, "per_class_acc": [final_acc] * 10,
                  "minority_acc": None if minority is None else minority - 1.0},
    }
    if valid_acc is not None:
        results["best_valid"] = {"epoch": 2, "acc": valid_acc, "loss": 0.15,
                                 "per_class_acc": [valid_acc] * 10,
                                 "minority_acc": None if minority is None else minority - 0.5,
                                 "valid_acc": 99.0, "valid_loss": 0.05}
    if versions is not None:
        results["versions"] = versions
    run_files.save_json(results, run_files.results_path(run, config.name))
    if checkpoints:
        checkpoint = {"encoder_state_dict": {}, "decoder_state_dict": {}, "reweight_state_dict": {},
                      "augment_state_dict": {}, "acc": best_acc, "epoch": 3}
        run_files.save_torch(checkpoint, run_files.best_checkpoint_path(run, config.name))
        run_files.save_torch(checkpoint, run_files.last_checkpoint_path(run, config.name))
        if valid_acc is not None:
            run_files.save_torch({**checkpoint, "acc": valid_acc, "epoch": 2, "valid_acc": 99.0},
                                 run_files.best_valid_checkpoint_path(run, config.name))
    return run


def get_results(root, *flags):
    """get-results.py run as __main__ inside this process (the same code path as the command
    line, without a Python start and torch import per call): the exit status, stdout and
    stderr the process would give; an uncaught exception is exit status 1 with its traceback."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = [str(SCRIPT), "--data", str(root), *flags]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        patch.chdir(REPO)
        try:
            runpy.run_path(str(SCRIPT), run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
        except Exception:  # what the interpreter would print before exiting with 1
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def config_flags(config, dataset="SVHN"):
    return ["--dataset", dataset, "-ir", str(config.imbalance_ratio), "-nr", str(config.noise_ratio),
            "-sr", str(config.subsample_ratio), "--aug-model", config.aug_model,
            "--los-model", config.los_model, "--hyper-opt", config.hyper_opt]


def assert_one_line_error(done, *needles):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0]


# ----------------------------------------------------------------------------- one configuration
# The command line is exercised once per mode and for every error path; the numbers
# are pinned through the custom_reports modules, whose output is all the script prints, because
# each interpreter start (torch import) costs seconds on a 2-core machine.

def test_cli_json_mean_and_sample_std_over_every_run_folder_match_numpy(tmp_path, run_script):
    config = configuration()
    accuracies = [93.1, 94.25, 92.8, 93.9]
    for index, acc in enumerate(accuracies):
        write_run(tmp_path, "SVHN", f"run{index}", config, acc)
    done = run_script("get-results.py", "--data", tmp_path, *config_flags(config), "--format", "json",
                      timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [run["acc"] for run in report["runs"]] == accuracies
    assert report["acc"]["n"] == 4
    assert report["acc"]["mean"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert report["acc"]["std"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-12)
    errors = 100 - np.array(accuracies)
    assert report["error"]["mean"] == pytest.approx(errors.mean(), abs=1e-12)
    assert report["error"]["std"] == pytest.approx(errors.std(ddof=1), abs=1e-12)


def test_json_carries_each_runs_minority_accuracy_and_error(tmp_path):
    config = configuration()
    for index, (acc, minority) in enumerate(((93.0, 81.5), (94.0, 84.25))):
        write_run(tmp_path, "SVHN", f"run{index}", config, acc, minority_acc=minority)
    report = configuration_report.run_report(tmp_path, "SVHN", config, minority=True)
    runs = json.loads(configuration_report.render_run_report(report, "json"))["runs"]
    assert [(run["minority_acc"], run["minority_error"]) for run in runs] == [(81.5, 18.5), (84.25, 15.75)]


def test_cli_text_report_shows_each_runs_best_checkpoint_and_accuracy(tmp_path):
    config = configuration()
    runs = [write_run(tmp_path, "SVHN", f"run{i}", config, acc) for i, acc in enumerate([93.1, 94.3])]
    done = get_results(tmp_path, *config_flags(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for run, acc in zip(runs, ["93.10", "94.30"]):
        line = next(line for line in lines if str(run_files.best_checkpoint_path(run, config.name)) in line)
        assert f"acc {acc} %" in line
    assert "mean 93.70 %  std 0.85" in done.stdout  # std of (93.1, 94.3) = 0.8485
    assert "mean 6.30 %  std 0.85" in done.stdout  # error


def test_single_run_reports_std_as_undefined(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 91.0)
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    assert report.accuracy.mean == 91.0 and np.isnan(report.accuracy.std)
    assert "std nan (undefined for a single run)" in configuration_report.render_run_report(report)
    assert json.loads(configuration_report.render_run_report(report, "json"))["acc"]["std"] is None


def test_metric_last_reads_final_accuracy_and_shows_last_checkpoint(tmp_path):
    config = configuration()
    for index, (best, final) in enumerate([(95.0, 94.0), (96.0, 93.0)]):
        write_run(tmp_path, "SVHN", f"run{index}", config, best, final_acc=final)
    report = configuration_report.run_report(tmp_path, "SVHN", config, metric="last")
    assert [run.acc for run in report.runs] == [94.0, 93.0]
    assert all(run.checkpoint.name.startswith("last_") for run in report.runs)
    assert report.accuracy.mean == pytest.approx(93.5)


def test_runs_flag_averages_the_first_n_runs(tmp_path):
    config = configuration()
    for index, acc in enumerate([90.0, 92.0, 99.0]):
        write_run(tmp_path, "SVHN", f"run{index}", config, acc)
    report = configuration_report.run_report(tmp_path, "SVHN", config, required_runs=2)
    assert [run.run_folder for run in report.runs] == ["run0", "run1"]
    assert report.accuracy.mean == pytest.approx(91.0)


def test_unfinished_runs_are_listed_but_not_averaged(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 90.0)
    write_run(tmp_path, "SVHN", "run1", config, 10.0, status="running", checkpoints=False)
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    assert [run.run_folder for run in report.runs] == ["run0"]
    assert report.accuracy.mean == 90.0
    text = configuration_report.render_run_report(report)
    assert "run1" in text and "not finished (epoch 2/4), not counted" in text and "runs: 1" in text


def test_paper_number_is_given_beside_the_single_configuration(tmp_path):
    config = configuration()
    for index, acc in enumerate([93.0, 94.0]):
        write_run(tmp_path, "SVHN", f"run{index}", config, acc)
    report = configuration_report.run_report(tmp_path, "SVHN", config, with_paper=True)
    assert report.paper == (6.3, 0.57, "wresnet28_10")
    assert "paper error:        mean 6.3 %  std 0.57" in configuration_report.render_run_report(report)


def test_minority_accuracy_is_added_per_run_and_averaged(tmp_path):
    config = configuration()
    for index, minority in enumerate([80.0, 84.0]):
        write_run(tmp_path, "SVHN", f"run{index}", config, 93.0, minority_acc=minority)
    report = configuration_report.run_report(tmp_path, "SVHN", config, minority=True)
    assert [run.minority_acc for run in report.runs] == [80.0, 84.0]
    assert report.minority_error.mean == pytest.approx(18.0)
    assert report.minority_error.std == pytest.approx(np.std([20.0, 16.0], ddof=1))


def test_markdown_and_csv_list_an_unfinished_run_with_its_progress_and_no_numbers(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 90.0)
    running = write_run(tmp_path, "SVHN", "run1", config, 10.0, status="running", checkpoints=False)
    results_file = str(run_files.results_path(running, config.name))
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    markdown = configuration_report.render_run_report(report, "markdown").splitlines()
    assert f"| run1 | not finished | epoch 2/4 | {results_file} |  |  |" in markdown
    assert "| n |  |  |  | 1 | 1 |" in markdown and "| mean |  |  |  | 90.00 | 10.00 |" in markdown
    rows = list(csv.DictReader(io.StringIO(configuration_report.render_run_report(report, "csv"))))
    assert [row["run"] for row in rows] == ["run0", "run1", "n", "mean", "std"]
    assert rows[1] == {"run": "run1", "status": "not finished", "progress": "epoch 2/4",
                       "file": results_file, "acc": "", "error": ""}
    assert (rows[0]["status"], rows[0]["acc"], rows[2]["acc"]) == ("finished", "90.00", "1")


def test_markdown_and_csv_give_the_papers_error_as_rows(tmp_path):
    config = configuration()
    for index, acc in enumerate([93.0, 94.0]):
        write_run(tmp_path, "SVHN", f"run{index}", config, acc)
    report = configuration_report.run_report(tmp_path, "SVHN", config, with_paper=True)
    markdown = configuration_report.render_run_report(report, "markdown").splitlines()
    assert "| paper mean |  |  |  |  | 6.3 |" in markdown
    assert "| paper std |  |  |  |  | 0.57 |" in markdown
    csv_text = configuration_report.render_run_report(report, "csv")
    rows = {row["run"]: row for row in csv.DictReader(io.StringIO(csv_text))}
    assert (rows["paper mean"]["error"], rows["paper std"]["error"]) == ("6.3", "0.57")
    assert rows["paper mean"]["acc"] == "" and rows["mean"]["error"] == "6.50"
    assert report.notes == []  # the paper's network is ours; another network is said


def test_paper_number_for_another_network_says_which_network_the_paper_used(tmp_path):
    config = configuration(model="wresnet28_2")
    write_run(tmp_path, "SVHN", "run0", config, 93.0)
    report = configuration_report.run_report(tmp_path, "SVHN", config, with_paper=True)
    assert report.paper == (6.3, 0.57, "wresnet28_10")
    assert "note: paper numbers are for wresnet28_10" in configuration_report.render_run_report(report, "markdown")


def test_markdown_minority_error_is_100_minus_the_minority_accuracy(tmp_path):
    config = configuration()
    for index, minority in enumerate([80.0, 84.5]):
        write_run(tmp_path, "SVHN", f"run{index}", config, 93.0, minority_acc=minority)
    report = configuration_report.run_report(tmp_path, "SVHN", config, minority=True)
    lines = configuration_report.render_run_report(report, "markdown").splitlines()
    assert "| run | status | progress | file | acc | error | minority acc | minority error |" in lines
    assert next(line for line in lines if line.startswith("| run0 |")).endswith(
        " | 93.00 | 7.00 | 80.00 | 20.00 |")
    assert next(line for line in lines if line.startswith("| run1 |")).endswith(
        " | 93.00 | 7.00 | 84.50 | 15.50 |")
    assert "| mean |  |  |  | 93.00 | 7.00 | 82.25 | 17.75 |" in lines


def test_cli_csv_carries_unfinished_runs_paper_and_minority_error_in_one_set_of_columns(tmp_path):
    config = configuration()
    for index, minority in enumerate([80.0, 84.5]):
        write_run(tmp_path, "SVHN", f"run{index}", config, 93.0, minority_acc=minority)
    write_run(tmp_path, "SVHN", "run2", config, 10.0, status="running", checkpoints=False)
    done = get_results(tmp_path, *config_flags(config), "--minority", "--paper", "--format", "csv")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    table = list(csv.reader(io.StringIO(done.stdout)))
    header = ["run", "status", "progress", "file", "acc", "error", "minority acc", "minority error"]
    assert table[0] == header and all(len(row) == len(header) for row in table)
    rows = {row[0]: dict(zip(header, row)) for row in table[1:]}
    assert list(rows) == ["run0", "run1", "run2", "n", "mean", "std", "paper mean", "paper std"]
    for run, minority in (("run0", 80.0), ("run1", 84.5)):
        assert float(rows[run]["minority acc"]) == minority
        assert float(rows[run]["minority error"]) == pytest.approx(100 - minority)
    assert (rows["mean"]["minority acc"], rows["mean"]["minority error"]) == ("82.25", "17.75")
    assert (rows["run2"]["status"], rows["run2"]["progress"], rows["run2"]["minority error"]) == \
        ("not finished", "epoch 2/4", "")
    assert (rows["paper mean"]["error"], rows["paper std"]["error"]) == ("6.3", "0.57")


def test_checkpoint_accuracy_that_disagrees_with_the_results_file_is_noted(tmp_path):
    config = configuration()
    run = write_run(tmp_path, "SVHN", "run0", config, 90.0)
    run_files.save_torch({"acc": 80.0, "epoch": 1}, run_files.best_checkpoint_path(run, config.name))
    report = configuration_report.run_report(tmp_path, "SVHN", config)
    assert report.accuracy.mean == 90.0
    assert any("stores best accuracy 80.0000" in note for note in report.notes)


# ----------------------------------------------------------------------------- errors

def test_cli_runs_flag_fails_when_fewer_runs_are_found(tmp_path):
    config = configuration()
    for index in range(2):
        write_run(tmp_path, "SVHN", f"run{index}", config, 90.0 + index)
    done = get_results(tmp_path, *config_flags(config), "--runs", "3")
    assert_one_line_error(done, "--runs 3", "found 2 finished runs")


def test_cli_no_runs_is_a_one_line_error_with_the_command_to_train(tmp_path):
    config = configuration()
    done = get_results(tmp_path, *config_flags(config))
    assert_one_line_error(done, config.name, "python implicit-augment.py")


def test_cli_unreadable_results_file_is_a_one_line_error_suggesting_resume_not_force(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 90.0)
    broken = write_run(tmp_path, "SVHN", "run1", config, 91.0)
    results_file = run_files.results_path(broken, config.name)
    results_file.write_text(results_file.read_text()[:50])  # truncated
    done = get_results(tmp_path, *config_flags(config))
    # the test's last_ checkpoint keeps no options, so none are invented (no default --epochs)
    assert_one_line_error(done, str(results_file), "cannot be read",
                          f"python implicit-augment.py --data {tmp_path} -r run1 with the run's "
                          f"original options plus --resume")
    assert "--force" not in done.stderr and "--epochs" not in done.stderr


@pytest.fixture(scope="module")
def implicit_augment_args():
    """implicit-augment.py's get_args, without a new interpreter."""
    from custom_cli.train import get_args
    return get_args


@pytest.mark.parametrize("epoch, what", [(14, "rebuild it without retraining"),
                                         (2, "(epoch 3 of 15)")])
def test_resume_command_for_a_broken_results_file_repeats_the_options_of_the_last_checkpoint(
        implicit_augment_args, tmp_path, epoch, what):
    config = configuration()
    root = tmp_path / "sp ace"  # a --data with a space is quoted in the command
    run = write_run(root, "SVHN", "run1", config, 91.0)
    argv = ["--data", "elsewhere", "--dataset", "SVHN", "-r", "run1", "-ir", "100", "-nr", "0.1",
            "--aug-model", "SEP", "--los-model", "BOTH", "--hyper-opt", "HES", "--epochs", "15",
            "--lr", "0.02", "--lr-decay-epochs", "5", "10", "--hyper-iters", "3"]
    trained = vars(implicit_augment_args(argv))
    saved = {key: value for key, value in trained.items() if key not in ("resume", "force")}
    run_files.save_torch({"acc": 91.0, "epoch": epoch, "config": saved},
                         run_files.last_checkpoint_path(run, config.name))
    run_files.results_path(run, config.name).write_text("{bad\n")
    with pytest.raises(run_files.UnreadableFile) as error:
        configuration_report.run_report(root, "SVHN", config)
    message = str(error.value)
    assert what in message and "--force" not in message
    command = shlex.split(message.split(": python ", 1)[1])
    assert command[:5] == ["implicit-augment.py", "--data", str(root), "-r", "run1"]
    assert command[-1] == "--resume"
    resumed = vars(implicit_augment_args(command[1:]))
    assert {key: resumed[key] for key in run_reading.resume_options()} == \
        {key: trained[key] for key in run_reading.resume_options()}
    assert (resumed["epochs"], resumed["lr"], resumed["lr_decay_epochs"]) == (15, 0.02, [5, 10])


def test_train_command_for_a_data_path_with_a_space_gives_implicit_augment_that_path(
        implicit_augment_args, tmp_path):
    config = configuration(overfit=True)
    root = tmp_path / "sp ace"
    with pytest.raises(run_reading.ReportError) as error:
        configuration_report.run_report(root, "SVHN", config)
    command = shlex.split(str(error.value).split("train one with: python ", 1)[1])
    trained = implicit_augment_args(command[1:])
    assert (trained.data, trained.dataset, trained.run_folder) == (str(root), "SVHN", "run0")
    assert (trained.imbalance_ratio, trained.noise_ratio, trained.overfit) == (100, 0.1, True)


def test_commands_quote_only_the_arguments_that_need_it():
    assert configuration(model="resnet18").train_command("./local_data", "DIGITS", "run0") == (
        "python implicit-augment.py --data ./local_data --dataset DIGITS -r run0 -ir 100 -sr 1.0 "
        "-nr 0.1 --aug-model SEP --los-model BOTH --hyper-opt HES --model resnet18")
    assert identity.command_line("implicit-augment.py", ["--data", "/tmp/it's here"]) == \
        "python implicit-augment.py --data '/tmp/it'\"'\"'s here'"


def test_cli_out_of_range_noise_ratio_is_a_one_line_usage_error(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 90.0)
    done = get_results(tmp_path, "--dataset", "SVHN", "-ir", "100", "-nr", "1.5")
    assert_one_line_error(done, "-nr must be in [0, 1), got 1.5")
    assert done.returncode == 2 and "implicit-augment.py" not in done.stderr


def test_distortion_ranges_are_those_of_implicit_augment(capsys):
    get_args = custom_cli.results.get_args
    for flags, message in ((["-ir", "0"], "-ir must be an integer >= 1, got 0"),
                           (["-sr", "0"], "-sr must be in (0, 1], got 0.0"),
                           (["-sr", "1.5"], "-sr must be in (0, 1], got 1.5"),
                           (["-nr", "-0.1"], "-nr must be in [0, 1), got -0.1")):
        with pytest.raises(SystemExit, match="^2$"):
            get_args(["--dataset", "DIGITS", "--table", *flags])
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f": error: {message} (see " in error


def test_cli_missing_results_file_beside_a_checkpoint_is_a_one_line_error(tmp_path):
    config = configuration()
    run = write_run(tmp_path, "SVHN", "run0", config, 90.0)
    run_files.results_path(run, config.name).unlink()
    done = get_results(tmp_path, *config_flags(config))
    assert_one_line_error(done, str(run_files.results_path(run, config.name)), "does not exist",
                          "python implicit-augment.py")


def test_cli_truncated_checkpoint_is_a_one_line_error_naming_it(tmp_path):
    config = configuration()
    run = write_run(tmp_path, "SVHN", "run0", config, 90.0)
    checkpoint = run_files.best_checkpoint_path(run, config.name)
    checkpoint.write_bytes(checkpoint.read_bytes()[:40])
    done = get_results(tmp_path, *config_flags(config))
    assert_one_line_error(done, str(checkpoint), "cannot be read")


def test_results_file_whose_config_disagrees_with_its_name_is_rejected(tmp_path):
    real, other = configuration(), configuration(nr=0.0)
    run = write_run(tmp_path, "SVHN", "run0", other, 90.0)
    moved = run_files.results_path(run, real.name)
    run_files.results_path(run, other.name).rename(moved)
    with pytest.raises(run_reading.ReportError, match=f"1 unreadable.*{moved}.*move it out"):
        tables.build_table(tmp_path, "SVHN", "wresnet28_10")


def test_table_without_any_results_is_an_error(tmp_path):
    (tmp_path / "SVHN" / "run0").mkdir(parents=True)
    with pytest.raises(run_reading.ReportError, match="no results files"):
        tables.build_table(tmp_path, "SVHN", "wresnet28_10")


def test_cli_paper_table_without_any_run_is_the_papers_table_alone(tmp_path):
    done = get_results(tmp_path, "--dataset", "SVHN", "--table", "--paper", "--format", "json")
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    paper = identity.load_paper_results()["SVHN"]
    assert table["columns"] == sorted(paper["columns"], key=lambda c: (float(c.split("-")[1]), int(c.split("-")[0])))
    assert [row["name"] for row in table["rows"]] == [name for name in identity.paper_methods() if name in paper]
    baseline = table["rows"][0]["cells"]
    assert [baseline[column]["paper_mean"] for column in paper["columns"]] == [m for m, _ in paper["Baseline"]]
    assert all(cell["n"] == 0 for row in table["rows"] for cell in row["cells"].values())
    assert any("the paper's numbers alone" in note for note in table["notes"])


# ----------------------------------------------------------------------------- the paper's table

def write_table_runs(root):
    """SVHN: Baseline and A_W_S at 1-0.0 and 100-0.1, three runs each, plus one extra method."""
    errors = {}
    for method, name in ((BASELINE, "Baseline"), (A_W_S, "A_W_S")):
        for ir, nr in ((1, 0.0), (100, 0.1)):
            accs = [97.0 - ir / 50 - nr * 20 - (name == "Baseline") * 3 + 0.1 * i for i in range(3)]
            for index, acc in enumerate(accs):
                write_run(root, "SVHN", f"run{index}", configuration(ir=ir, nr=nr, method=method), acc,
                          minority_acc=acc - 10, checkpoints=False)
            errors[(name, f"{ir}-{nr}")] = [100 - acc for acc in accs]
    extra = dict(aug_model="SEP", los_model="SOFT", hyper_opt="HES")
    write_run(root, "SVHN", "run0", configuration(ir=1, nr=0.0, method=extra), 96.0, checkpoints=False)
    return errors


def svhn_table(root, fmt, **options):
    return table_formats.render_table(tables.build_table(root, "SVHN", "wresnet28_10", **options), fmt)


def test_cli_table_skips_an_unreadable_results_file_and_says_how_to_rebuild_it(tmp_path):
    errors = write_table_runs(tmp_path)
    broken = run_files.results_path(run_files.run_dir(tmp_path, "SVHN", "run1"),
                                    configuration(method=BASELINE).name)
    broken.write_text("{bad\n")
    done = get_results(tmp_path, "--dataset", "SVHN", "--table", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    [note] = done.stderr.strip().splitlines()
    assert note.startswith(f"note: skipped {broken} cannot be read")
    # write_table_runs keeps no checkpoints: nothing to rebuild from, so the run is trained again
    assert f"last_{configuration(method=BASELINE).name}.pt is missing or unreadable too" in note
    assert note.endswith("-r run1 with the run's original options plus --force")
    table = json.loads(done.stdout)
    rows = {row["name"]: row for row in table["rows"]}
    baseline = rows["Baseline"]["cells"]["100-0.1"]
    assert baseline["runs"] == ["run0", "run2"]
    values = [errors[("Baseline", "100-0.1")][index] for index in (0, 2)]
    assert baseline["mean"] == pytest.approx(np.mean(values), abs=1e-12)
    assert rows["A_W_S"]["cells"]["100-0.1"]["n"] == 3  # the other cells keep every run
    assert "1 results files that cannot be read are not counted" in table["notes"]


def test_table_json_has_one_cell_per_method_and_setting_with_exact_numbers(tmp_path):
    errors = write_table_runs(tmp_path)
    table = json.loads(svhn_table(tmp_path, "json"))
    assert set(table) >= {"dataset", "metric", "quantity", "columns", "rows"}
    assert table["columns"] == ["1-0.0", "100-0.1"]
    assert [row["name"] for row in table["rows"]] == ["Baseline", "A_W_S", "SEP/SOFT/HES"]
    rows = {row["name"]: row for row in table["rows"]}
    for (name, column), values in errors.items():
        cell = rows[name]["cells"][column]
        assert cell["n"] == 3 and cell["runs"] == ["run0", "run1", "run2"]
        assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert cell["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert rows["SEP/SOFT/HES"]["cells"]["1-0.0"]["std"] is None  # a single run


def test_cli_table_markdown_header_and_cells(tmp_path):
    errors = write_table_runs(tmp_path)
    done = get_results(tmp_path, "--dataset", "SVHN", "--table", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines.index("| Method | 1-0.0 test-sel. (paper) | 1-0.0 valid-sel. | 1-0.0 last | "
                         "1-0.0 vs Baseline | 100-0.1 test-sel. (paper) | 100-0.1 valid-sel. | "
                         "100-0.1 last | 100-0.1 vs Baseline |")
    assert lines[header + 1] == "|---|---|---|---|---|---|---|---|---|"
    baseline = lines[header + 2].split(" | ")
    values = errors[("Baseline", "100-0.1")]
    assert baseline[0] == "| Baseline"
    assert baseline[5] == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} (3)"


def test_table_csv_parses_to_numbers(tmp_path):
    errors = write_table_runs(tmp_path)
    rows = list(csv.DictReader(io.StringIO(svhn_table(tmp_path, "csv"))))
    assert [row["Method"] for row in rows] == ["Baseline", "A_W_S", "SEP/SOFT/HES"]
    values = errors[("A_W_S", "1-0.0")]
    assert float(rows[1]["1-0.0 best mean"]) == pytest.approx(np.mean(values), abs=1e-4)
    assert float(rows[1]["1-0.0 best std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-4)
    assert rows[1]["1-0.0 best n"] == "3"
    assert rows[2]["100-0.1 best n"] == "0" and rows[2]["100-0.1 best mean"] == ""


def test_table_text_aligns_rows_under_the_ir_nr_header(tmp_path):
    write_table_runs(tmp_path)
    lines = svhn_table(tmp_path, "text").splitlines()
    header = next(line for line in lines if line.startswith("Method"))
    column = header.index("100-0.1")
    for name in ("Baseline", "A_W_S"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert row[column:].split("  ")[0].endswith("(3)")  # the first of its columns


def test_cli_table_with_paper_puts_the_papers_error_beside_ours(tmp_path):
    write_table_runs(tmp_path)
    done = get_results(tmp_path, "--dataset", "SVHN", "--table", "--paper", "--format", "json")
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    assert table["columns"] == ["1-0.0", "100-0.0", "1-0.1", "100-0.1"]  # the paper's columns
    rows = {row["name"]: row for row in table["rows"]}
    assert list(rows)[:8] == ["Baseline", "RAA", "FAA", "DADA", "A_SHA", "A", "A_W", "A_W_S"]
    assert rows["A_W_S"]["cells"]["100-0.1"]["paper_mean"] == 6.3
    assert rows["A_W_S"]["cells"]["100-0.1"]["paper_std"] == 0.57
    assert rows["A_W_S"]["cells"]["100-0.1"]["n"] == 3
    empty = {"n": 0, "mean": None, "std": None, "values": []}
    assert rows["FAA"]["cells"]["1-0.0"] == {**empty, "runs": [], "paper_mean": 2.8, "paper_std": 0.02,
                                             "selections": {"best": empty, "valid": empty,
                                                            "last": empty}, "versus": None}
    markdown = svhn_table(tmp_path, "markdown", with_paper=True)
    assert "| Method | 1-0.0 test-sel. (paper) | 1-0.0 valid-sel. | 1-0.0 last | 1-0.0 paper | " \
        "1-0.0 vs Baseline | 100-0.0 test-sel. (paper) |" in markdown
    baseline = next(line for line in markdown.splitlines() if line.startswith("| Baseline |"))
    assert baseline.split(" | ")[4] == "3.6 ± 0.10"


def test_table_for_a_dataset_without_paper_numbers_says_so(tmp_path):
    write_run(tmp_path, "DIGITS", "run0", configuration(model="resnet18", ir=1, nr=0.0), 95.0,
              checkpoints=False)
    text = table_formats.render_table(tables.build_table(tmp_path, "DIGITS", "resnet18", with_paper=True))
    assert "note: the paper reports no numbers for DIGITS" in text
    assert "A_W_S" in text and "5.00 (1)" in text and "nan" not in text


def test_minority_table_uses_the_minority_error(tmp_path):
    errors = write_table_runs(tmp_path)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10", minority=True)
    assert table.quantity == "minority error"
    baseline = next(row for row in table.rows if row.name == "Baseline")
    assert baseline.cells["100-0.1"].summary.mean == pytest.approx(
        np.mean(errors[("Baseline", "100-0.1")]) + 10)
    # the extra method's results file has no minority accuracy: not counted, and said so
    assert [row.name for row in table.rows] == ["Baseline", "A_W_S"]
    assert "1 results files without best.minority_acc are not counted" in table.notes


def test_table_metric_last_uses_final_accuracy(tmp_path):
    write_run(tmp_path, "SVHN", "run0", configuration(method=BASELINE), 95.0, final_acc=90.0,
              checkpoints=False)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10", metric="last")
    assert table.rows[0].cells["100-0.1"].summary.mean == pytest.approx(10.0)


def test_other_networks_and_ablations_get_their_own_rows(tmp_path):
    write_run(tmp_path, "SVHN", "run0", configuration(), 94.0, checkpoints=False)
    write_run(tmp_path, "SVHN", "run0", configuration(model="wresnet28_2"), 92.0, checkpoints=False)
    write_run(tmp_path, "SVHN", "run0", configuration(overfit=True), 96.0, checkpoints=False)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10")
    assert [row.name for row in table.rows] == [
        "A_W_S", "A_W_S [wresnet28_2]", "A_W_S [overfit_wresnet28_10]"]
    only = tables.build_table(tmp_path, "SVHN", "wresnet28_10", model="wresnet28_2")
    assert [row.name for row in only.rows] == ["A_W_S [wresnet28_2]"]


def test_summarize_uses_the_sample_standard_deviation():
    values = [1.0, 2.0, 4.0]
    summary = statistics.summarize(values)
    assert (summary.n, summary.mean) == (3, pytest.approx(7 / 3))
    assert summary.std == pytest.approx(np.std(values, ddof=1))
    assert np.isnan(statistics.summarize([5.0]).std)


# ----------------------------------------------------------------------------- selection, pairs

T_975_2 = 4.302652729911275  # t(0.975, 2 degrees of freedom), from a t table


def text_cells(line):
    """The cells of a row of the text table (two or more spaces apart)."""
    return [part.strip() for part in line.split("  ") if part.strip()]


def write_paired_runs(root):
    """Three run folders of Baseline and A_W_S at 100-0.1: A_W_S makes 1, 2, 3 points more
    errors at the test-selected epoch and 2, 3, 4 fewer at the validation-selected one."""
    for index in range(3):
        write_run(root, "SVHN", f"run{index}", configuration(method=BASELINE), 90.0 + index,
                  valid_acc=88.0, checkpoints=False)
        write_run(root, "SVHN", f"run{index}", configuration(), 89.0, valid_acc=90.0 + index,
                  checkpoints=False)


def test_table_shows_test_selected_valid_selected_and_last_errors_of_each_run(tmp_path):
    write_paired_runs(tmp_path)
    table = json.loads(svhn_table(tmp_path, "json"))
    assert table["selections"] == {"best": "test-sel. (paper)", "valid": "valid-sel.", "last": "last"}
    cell = {row["name"]: row for row in table["rows"]}["A_W_S"]["cells"]["100-0.1"]
    assert cell["selections"]["best"]["values"] == pytest.approx([11.0, 11.0, 11.0])
    assert cell["selections"]["valid"]["values"] == pytest.approx([10.0, 9.0, 8.0])
    assert cell["selections"]["last"]["values"] == pytest.approx([11.5, 11.5, 11.5])
    assert cell["selections"]["valid"]["mean"] == pytest.approx(9.0)
    assert cell["selections"]["valid"]["std"] == pytest.approx(1.0)
    text = svhn_table(tmp_path, "text")
    row = next(line for line in text.splitlines() if line.startswith("A_W_S "))
    assert text_cells(row)[1:4] == ["11.00 ± 0.00 (3)", "9.00 ± 1.00 (3)", "11.50 ± 0.00 (3)"]
    assert "the paper's protocol, chosen with the test labels" in text
    rows = list(csv.DictReader(io.StringIO(svhn_table(tmp_path, "csv"))))
    assert [float(rows[1][f"100-0.1 {metric} mean"]) for metric in ("best", "valid", "last")] == \
        pytest.approx([11.0, 9.0, 11.5])


def test_table_minority_applies_to_all_three_selections(tmp_path):
    write_run(tmp_path, "SVHN", "run0", configuration(), 90.0, minority_acc=80.0, valid_acc=89.0,
              checkpoints=False)
    cell = tables.build_table(tmp_path, "SVHN", "wresnet28_10", minority=True).rows[0].cells["100-0.1"]
    # write_run: best 80, best_valid 80 - 0.5, final 80 - 1 on the minority classes
    assert [cell.selections[metric] for metric in ("best", "valid", "last")] == [[20.0], [20.5], [21.0]]


def test_paired_difference_of_1_2_3_points_is_2_with_the_t_interval_over_three_runs(tmp_path):
    write_paired_runs(tmp_path)
    table = json.loads(svhn_table(tmp_path, "json"))
    assert table["versus"] == "Baseline"
    rows = {row["name"]: row for row in table["rows"]}
    paired = rows["A_W_S"]["cells"]["100-0.1"]["versus"]
    half = T_975_2 * 1.0 / np.sqrt(3)
    assert paired["against"] == "Baseline" and paired["runs"] == ["run0", "run1", "run2"]
    assert paired["differences"] == pytest.approx([1.0, 2.0, 3.0])
    assert (paired["n"], paired["mean"]) == (3, pytest.approx(2.0))
    assert (paired["low"], paired["high"]) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    assert (paired["wins"], paired["verdict"]) == (0, "comparable")
    assert rows["Baseline"]["cells"]["100-0.1"]["versus"] is None
    text = svhn_table(tmp_path, "text")
    assert f"+2.00 [{2 - half:+.2f}, {2 + half:+.2f}] 0/3" in text  # +2.00 [-0.48, +4.48] 0/3
    markdown = svhn_table(tmp_path, "markdown")
    assert "| +2.00 [-0.48, +4.48] 0/3 |" in markdown
    rows = list(csv.DictReader(io.StringIO(svhn_table(tmp_path, "csv"))))
    assert [rows[1][f"100-0.1 vs Baseline {what}"] for what in ("mean", "low", "high", "n", "wins", "verdict")] \
        == ["2.0000", f"{2 - half:.4f}", f"{2 + half:.4f}", "3", "0", "comparable"]


def test_metric_valid_compares_the_validation_selected_errors(tmp_path):
    write_paired_runs(tmp_path)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10", metric="valid")
    paired = next(row for row in table.rows if row.name == "A_W_S").cells["100-0.1"].versus
    assert paired.differences == pytest.approx([-2.0, -3.0, -4.0])
    half = T_975_2 / np.sqrt(3)
    assert paired.interval == (pytest.approx(-3.0 - half), pytest.approx(-3.0 + half))
    assert (paired.wins, paired.verdict) == (3, "better")
    assert "-3.00 [-5.48, -0.52] 3/3" in table_formats.render_table(table)


def test_pairs_are_the_run_folders_finished_in_both_rows(tmp_path):
    for index in range(3):
        write_run(tmp_path, "SVHN", f"run{index}", configuration(method=BASELINE), 90.0,
                  valid_acc=90.0, checkpoints=False)
    for index, acc in ((1, 89.0), (2, 87.0), (3, 80.0)):
        write_run(tmp_path, "SVHN", f"run{index}", configuration(), acc, valid_acc=acc, checkpoints=False)
    write_run(tmp_path, "SVHN", "run0", configuration(), 10.0, status="running", checkpoints=False)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10")
    paired = next(row for row in table.rows if row.name == "A_W_S").cells["100-0.1"].versus
    assert paired.runs == ["run1", "run2"] and paired.differences == pytest.approx([1.0, 3.0])


def test_a_single_pair_has_no_interval_and_prints_no_nan(tmp_path):
    write_run(tmp_path, "SVHN", "run0", configuration(method=BASELINE), 90.0, valid_acc=90.0,
              checkpoints=False)
    write_run(tmp_path, "SVHN", "run0", configuration(), 92.5, valid_acc=92.0, checkpoints=False)
    for fmt in ("text", "markdown"):
        text = svhn_table(tmp_path, fmt)
        assert "-2.50 (n = 1: no interval) 1/1" in text and "nan" not in text
    paired = json.loads(svhn_table(tmp_path, "json"))["rows"][1]["cells"]["100-0.1"]["versus"]
    assert (paired["n"], paired["low"], paired["high"], paired["verdict"]) == (1, None, None, "comparable")
    row = list(csv.DictReader(io.StringIO(svhn_table(tmp_path, "csv"))))[1]
    assert (row["100-0.1 vs Baseline low"], row["100-0.1 vs Baseline high"]) == ("", "")


def test_verdict_is_better_or_worse_only_where_the_interval_excludes_zero():
    def verdict(differences):
        return statistics.PairedDifference("Baseline", [f"run{i}" for i in range(len(differences))],
                                           differences).verdict
    assert verdict([-2.0, -3.0, -4.0]) == "better"  # -3 ± 2.48
    assert verdict([1.0, 2.0, 3.0]) == "comparable"  # 2 ± 2.48 reaches below zero
    assert verdict([2.0, 2.5, 3.0]) == "worse"
    assert verdict([-5.0]) == "comparable"  # one run: no interval


def test_versus_compares_with_another_row_and_an_unknown_row_is_a_one_line_error(tmp_path):
    write_paired_runs(tmp_path)
    a_w = dict(aug_model="SEP", los_model="WGHT", hyper_opt="HES")
    for index in range(3):
        write_run(tmp_path, "SVHN", f"run{index}", configuration(method=a_w), 88.0, valid_acc=88.0,
                  checkpoints=False)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10", versus="A_W")
    rows = {row.name: row for row in table.rows}
    assert table.versus == "A_W" and rows["A_W"].cells["100-0.1"].versus is None
    assert rows["A_W_S"].cells["100-0.1"].versus.differences == pytest.approx([-1.0, -1.0, -1.0])
    assert rows["Baseline"].cells["100-0.1"].versus.differences == pytest.approx([-2.0, -3.0, -4.0])
    done = get_results(tmp_path, "--dataset", "SVHN", "--table", "--versus", "A_X")
    assert_one_line_error(done, "--versus A_X: no such row in this table; rows: Baseline, A_W, A_W_S")


def test_another_networks_rows_are_compared_with_that_networks_baseline(tmp_path):
    small = "wresnet28_2"
    for index in range(2):
        write_run(tmp_path, "SVHN", f"run{index}", configuration(method=BASELINE), 90.0, checkpoints=False)
        write_run(tmp_path, "SVHN", f"run{index}", configuration(model=small, method=BASELINE), 80.0,
                  checkpoints=False)
        write_run(tmp_path, "SVHN", f"run{index}", configuration(model=small), 85.0, checkpoints=False)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10")
    paired = next(row for row in table.rows if row.name == f"A_W_S [{small}]").cells["100-0.1"].versus
    assert paired.against == f"Baseline [{small}]" and paired.differences == pytest.approx([-5.0, -5.0])


def test_results_files_from_before_validation_selection_show_a_dash_and_a_note(tmp_path):
    write_paired_runs(tmp_path)
    write_run(tmp_path, "SVHN", "run3", configuration(), 89.0, checkpoints=False)  # format 1
    write_run(tmp_path, "SVHN", "run0", configuration(ir=1, nr=0.0), 95.0, checkpoints=False)
    table = tables.build_table(tmp_path, "SVHN", "wresnet28_10")
    cells = {row.name: row.cells for row in table.rows}["A_W_S"]
    assert cells["100-0.1"].summary.n == 4 and cells["100-0.1"].summary_of("valid").n == 3
    text = table_formats.render_table(table)
    row = next(line for line in text.splitlines() if line.startswith("A_W_S "))
    assert text_cells(row)[1:4] == ["5.00 (1)", statistics.MISSING, "5.50 (1)"]
    assert ("note: 2 results files written before validation selection have no valid-selected "
            "number") in text
    assert "Traceback" not in text and "nan" not in text
    chosen = tables.build_table(tmp_path, "SVHN", "wresnet28_10", metric="valid")
    assert {row.name: row.cells for row in chosen.rows}["A_W_S"]["100-0.1"].summary.n == 3
    assert ("2 results files written before validation selection (no best_valid) are not counted; "
            "--metric best counts them") in chosen.notes


def test_metric_valid_reads_best_valid_and_names_the_bestvalid_checkpoint(tmp_path):
    config = configuration()
    runs = [write_run(tmp_path, "SVHN", f"run{index}", config, 95.0, valid_acc=acc)
            for index, acc in enumerate((93.0, 94.0))]
    report = configuration_report.run_report(tmp_path, "SVHN", config, metric="valid")
    assert [run.acc for run in report.runs] == [93.0, 94.0]
    assert [run.checkpoint for run in report.runs] == [
        run_files.best_valid_checkpoint_path(run, config.name) for run in runs]
    assert not report.notes  # the bestvalid_ checkpoints store the test accuracy of their epoch
    assert "valid-sel.: best_valid.acc" in configuration_report.render_run_report(report)


def test_metric_valid_of_runs_from_before_validation_selection_is_a_one_line_error(tmp_path):
    config = configuration()
    write_run(tmp_path, "SVHN", "run0", config, 95.0)
    done = get_results(tmp_path, *config_flags(config), "--metric", "valid")
    assert_one_line_error(done, "has a validation-selected number", "use --metric best or last")
    write_run(tmp_path, "SVHN", "run1", config, 94.0, valid_acc=93.0)
    report = configuration_report.run_report(tmp_path, "SVHN", config, metric="valid")
    assert [run.run_folder for run in report.runs] == ["run1"]
    assert report.notes == ["run0: written before validation selection (no best_valid), not counted; "
                            "--metric best reads them"]


# ----------------------------------------------------------------------------- which code

def test_table_notes_once_that_its_runs_come_from_different_commits(tmp_path):
    first, second = "a" * 40, "b" * 40
    for index, (commit, changed) in enumerate(((first, False), (first, False), (second, True))):
        write_run(tmp_path, "SVHN", f"run{index}", configuration(), 90.0 + index, checkpoints=False,
                  versions={"commit": commit, "uncommitted_changes": changed})
    write_run(tmp_path, "SVHN", "run0", configuration(method=BASELINE), 85.0, checkpoints=False,
              versions={"commit": first, "uncommitted_changes": False})
    done = get_results(tmp_path, "--dataset", "SVHN", "--table")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stdout.splitlines() if "different code" in line]
    assert notes == [f"note: the runs counted come from different code: {first[:12]} (3 runs), "
                     f"{second[:12]} with uncommitted changes (1 run) (versions.commit of their "
                     f"results files)"]


def test_table_of_one_commit_or_of_files_without_one_has_no_code_note(tmp_path):
    for index in range(2):
        write_run(tmp_path, "SVHN", f"run{index}", configuration(), 90.0 + index, checkpoints=False,
                  versions={"commit": "c" * 40, "uncommitted_changes": False})
    write_table_runs(tmp_path / "older")  # results files written before the commit was recorded
    for root in (tmp_path, tmp_path / "older"):
        notes = tables.build_table(root, "SVHN", "wresnet28_10").notes
        assert not [note for note in notes if "different code" in note]
    write_run(tmp_path, "SVHN", "run2", configuration(), 92.0, checkpoints=False)
    [note] = [note for note in tables.build_table(tmp_path, "SVHN", "wresnet28_10").notes
              if "different code" in note]
    assert f"{'c' * 12} (2 runs), no recorded commit (1 run)" in note


# ----------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv, needle", [
    (["--suspects", "-3", "--los-model", "BOTH"], "--suspects K must be at least 1, got -3"),
    (["--suspects", "0", "--los-model", "BOTH"], "--suspects K must be at least 1, got 0"),
    (["--runs", "0"], "--runs must be at least 1, got 0"),
    (["--table", "--suspects"], "choose one of --table and --suspects"),
    (["--suspects", "5"], "--suspects needs a run that learned loss weights or soft labels"),
])
def test_usage_errors_exit_2_as_argparse_does(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exited:
        custom_cli.results.get_args(["--data", str(tmp_path), "--dataset", "DIGITS", *argv])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert ": error: " in line and needle in line  # (prog is pytest's name in-process)


def test_cli_suspects_minus_3_exits_2(tmp_path, run_script):
    done = run_script("get-results.py", "--data", tmp_path, "--dataset", "DIGITS", "--los-model", "BOTH",
                      "--suspects", "-3", timeout=120)
    assert done.returncode == 2
    assert_one_line_error(done, "get-results.py: error: --suspects K must be at least 1, got -3")


def test_cli_suspects_of_a_run_without_a_bestvalid_checkpoint_say_what_to_use_instead(tmp_path):
    config = configuration(model="resnet18", ir=1, nr=0.2, method=dict(aug_model="NONE",
                                                                      los_model="BOTH", hyper_opt="HES"))
    run = run_files.run_dir(tmp_path, "DIGITS", "run0")
    for kind in ("best", "last"):  # a run from before validation selection
        run_files.save_torch({"acc": 50.0, "epoch": 0}, run_files.checkpoint_path(run, config.name, kind))
    run_files.save_torch((), run / run_files.split_file_name(1, 1.0, 0.2))
    done = get_results(tmp_path, *config_flags(config, "DIGITS"), "--suspects", "5")
    missing = run_files.best_valid_checkpoint_path(run, config.name)
    assert_one_line_error(done, f"get-results.py: error: missing {missing}; runs from before "
                                f"validation selection have no bestvalid_ checkpoint: use "
                                f"--checkpoint best (test-selected, the paper's protocol) or "
                                f"--checkpoint last")


def test_table_settings_keeps_only_the_named_columns(tmp_path):
    for ir, nr, acc in ((10, 0.1, 80.0), (1, 0.0, 95.0), (10, 0.0, 90.0)):
        write_run(tmp_path, "DIGITS", "run0", configuration("resnet18", ir=ir, nr=nr, method=BASELINE),
                  acc, valid_acc=acc - 1.0)
    done = get_results(tmp_path, "--dataset", "DIGITS", "--table", "--format", "csv",
                       "--settings", "10-0.1", "1-0.0")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    header = out.splitlines()[0]
    assert "10-0.1" in header and "1-0.0" in header and "10-0.0" not in header
    # the kept cells hold their own runs' errors: 20.00 at 10-0.1 and 5.00 at 1-0.0
    assert "20.00" in out and "5.00" in out and "10.00" not in out


def test_settings_without_table_is_a_usage_error(tmp_path):
    done = get_results(tmp_path, "--dataset", "DIGITS", "--settings", "10-0.1")
    assert done.returncode == 2 and "add --table" in done.stderr and "Traceback" not in done.stderr


def test_table_settings_with_no_run_names_the_settings_asked_for(tmp_path):
    write_run(tmp_path, "DIGITS", "run0", configuration("resnet18", ir=10, nr=0.1, method=BASELINE), 80.0)
    done = get_results(tmp_path, "--dataset", "DIGITS", "--table", "--settings", "1-0.0")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "no finished run at 1-0.0" in done.stderr
