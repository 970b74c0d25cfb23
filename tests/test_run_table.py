"""run-table.py: a table of DIGITS runs through the local launcher and through submitit's
Slurm path (local executor, and a fake sbatch for the submission script); resume after
kill -9; cells that need no process."""
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from custom_reports import reporting
from custom_runs import launchers, run_files, sweep
from custom_runs.options import UsageError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run-table.py"
CONFIGS = ("Baseline", "A_W_S")
SHORT = ("--epochs", "3", "--hyper-start", "0", "--no-cuda")
# one one-thread worker per core (at least two at a time): CPU runs are then exact on resume
JOBS = str(max(2, launchers.cpu_threads()))


def table_command(data, *extra, runs=2):
    return [sys.executable, str(SCRIPT), "--dataset", "DIGITS", "--configs", *CONFIGS,
            "--settings", "10-0.1", "--runs", str(runs), "--data", str(data), *SHORT, *extra]


def run_table(data, *extra, runs=2, timeout=600):
    return subprocess.run(table_command(data, *extra, runs=runs), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def specs_of(data, runs=2):
    return sweep.expand("DIGITS", str(data), CONFIGS, ["10-0.1"], runs, list(SHORT))


def files_under(folder: Path) -> dict:
    return {str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def histories(data, runs=2) -> dict:
    """Every cell's per-epoch test accuracy and loss, and its best accuracy."""
    out = {}
    for spec in specs_of(data, runs):
        results = run_files.load_results(spec.results_path)
        out[spec.title] = (results["best"]["acc"],
                           [(epoch["test_acc"], epoch["test_loss"]) for epoch in results["history"]])
    return out


def table_text(data, runs=2) -> str:
    table = reporting.build_table(data, "DIGITS", "resnet18", max_runs=runs,
                                  only=[s.config for s in specs_of(data)])
    return reporting.render_table(table, "json")


@pytest.fixture(scope="module")
def finished_table(tmp_path_factory):
    """The whole 2 x 2 table, uninterrupted, with the local launcher."""
    data = tmp_path_factory.mktemp("table")
    done = run_table(data, "--jobs", JOBS)
    return data, done


def test_every_cell_finishes_and_the_table_is_printed(finished_table):
    data, done = finished_table
    assert done.returncode == 0, done.stderr
    for spec in specs_of(data):
        results = run_files.load_results(spec.results_path)
        assert results["status"] == "finished" and results["epochs_done"] == 3
        log = spec.log_path.read_text()
        assert log.count("=== ") == 1 and "--resume" in log.splitlines()[0]
        assert "best test accuracy" in log  # the run's own output went to its log
    assert "4 done (0 skipped), 0 running, 0 failed" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("DIGITS: top-1 test error (%)")
    assert [line.split()[0] for line in lines[3:5]] == ["Baseline", "A_W_S"]
    assert all(line.rstrip().endswith("(2)") for line in lines[3:5])


def test_configurations_started_together_share_one_split(finished_table):
    data, _ = finished_table
    for run in ("run0", "run1"):
        folder = run_files.run_dir(data, "DIGITS", run)
        assert [path.name for path in folder.glob("data_*")] == [run_files.split_file_name(10, 1.0, 0.1)]
        assert not list(folder.glob(".*.tmp"))
        seeds = {run_files.load_results(path)["split_seed"] for path in folder.glob("results_*.json")}
        assert seeds == {run_files.seed_from_run_folder(run)}


def test_a_second_invocation_starts_no_process_and_touches_no_file(finished_table):
    data, _ = finished_table
    before = files_under(data / "DIGITS")
    done = run_table(data, "--jobs", JOBS)
    assert done.returncode == 0, done.stderr
    assert "4 done (4 skipped), 0 running, 0 failed" in done.stderr
    assert "started" not in done.stderr
    assert files_under(data / "DIGITS") == before  # logs included: no attempt was made


def test_after_kill_9_of_the_runner_the_same_command_ends_with_the_uninterrupted_table(
        finished_table, tmp_path):
    reference, _ = finished_table
    # run0's two cells (the reference's first run): both start together, one is killed mid-run
    runner = subprocess.Popen(table_command(tmp_path, "--jobs", JOBS, runs=1), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    specs = specs_of(tmp_path, runs=1)
    deadline = time.monotonic() + 300
    # mid-table: a run has saved an epoch (so something is left to resume), none has finished
    while not any(run_files.last_checkpoint_path(s.folder, s.name).is_file() for s in specs):
        assert runner.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    # the runs die with the runner (SIGTERM from the kernel): no lock outlives it
    deadline = time.monotonic() + 60
    while any(s.running_elsewhere() for s in specs):
        assert time.monotonic() < deadline, "a run outlived the killed runner"
        time.sleep(0.2)
    assert not any(s.is_finished() for s in specs)
    begun = [s for s in specs if run_files.last_checkpoint_path(s.folder, s.name).is_file()]
    assert begun
    done = run_table(tmp_path, "--jobs", JOBS, runs=1)
    assert done.returncode == 0, done.stderr
    assert histories(tmp_path, runs=1) == histories(reference, runs=1)
    assert table_text(tmp_path, runs=1) == table_text(reference, runs=1)
    for spec in begun:  # continued by a second attempt, from its checkpoint
        log = spec.log_path.read_text()
        second = log.split("=== ")[2]
        assert log.count("=== ") == 2 and "epoch 3/3 " in second and "epoch 1/3 " not in second


def test_a_failing_run_is_reported_with_its_log_and_the_others_finish(tmp_path):
    [broken, other] = sweep.expand("DIGITS", str(tmp_path), CONFIGS, ["10-0.1"], 1,
                                   ["--epochs", "1", "--no-cuda"])
    broken.folder.mkdir(parents=True)
    run_files.last_checkpoint_path(broken.folder, broken.name).write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "DIGITS", "--configs", *CONFIGS,
                           "--settings", "10-0.1", "--runs", "1", "--data", str(tmp_path),
                           "--epochs", "1", "--no-cuda", "--jobs", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert other.is_finished() and not broken.is_finished()
    [line] = [line for line in done.stderr.splitlines() if line.startswith("failed: Baseline")]
    assert f"log {broken.log_path}: implicit-augment.py: error: " in line
    assert f"{run_files.last_checkpoint_path(broken.folder, broken.name)} cannot be read" in line
    assert "1 done (0 skipped), 0 running, 1 failed" in done.stderr


def test_a_cell_trained_by_another_live_process_is_running_elsewhere_not_failed(tmp_path):
    [spec] = sweep.expand("DIGITS", str(tmp_path), ["Baseline"], ["10-0.1"], 1, ["--epochs", "1"])
    with run_files.configuration_lock(spec.folder, spec.name):
        done = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "DIGITS", "--configs",
                               "Baseline", "--settings", "10-0.1", "--runs", "1", "--epochs", "1",
                               "--data", str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"running elsewhere: Baseline 10-0.1 run0: pid {os.getpid()} on " in done.stderr
    assert not spec.log_path.exists()  # no process was started for it


# ----------------------------------------------------------------------------- Slurm path

def test_submitit_local_array_resumes_a_half_finished_run_and_ends_with_the_same_table(
        finished_table, tmp_path):
    reference, _ = finished_table
    half = specs_of(tmp_path, runs=1)[0]  # Baseline run0: trained to an epoch, then killed
    command = [sys.executable, str(REPO / "implicit-augment.py"), *half.arguments]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = run_files.last_checkpoint_path(half.folder, half.name)
    while not last.is_file():
        assert process.poll() is None
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert not half.is_finished()
    done = run_table(tmp_path, "--launcher", "submitit-local", "--cpus-per-task", "1", runs=1)
    assert done.returncode == 0, done.stderr
    assert "submitted job array" in done.stderr and ": 2 tasks" in done.stderr
    assert histories(tmp_path, runs=1) == histories(reference, runs=1)
    assert table_text(tmp_path, runs=1) == table_text(reference, runs=1)
    submitit = tmp_path / "DIGITS" / "submitit"
    assert len(list(submitit.glob("*/*_result.pkl"))) == 2
    assert half.log_path.read_text().count("=== ") == 1  # the array's attempt; it resumed at epoch 2
    assert "epoch 1/3 " not in half.log_path.read_text()
    # a second submission finds every cell finished and submits nothing
    again = run_table(tmp_path, "--launcher", "submitit-local", runs=1)
    assert again.returncode == 0 and "submitted" not in again.stderr
    assert "2 done (2 skipped)" in again.stderr


def test_slurm_submission_script_carries_the_options_given(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    copy = tmp_path / "submitted.sh"
    (fake / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {copy}\necho 'Submitted batch job 12345'\n")
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it; never called here
    for tool in ("sbatch", "srun"):
        (fake / tool).chmod(0o755)
    data = tmp_path / "data"
    done = subprocess.run(
        table_command(data, "--launcher", "slurm", "--no-wait", "--partition", "gpu-long",
                      "--time-min", "90", "--gpus-per-task", "2", "--cpus-per-task", "8",
                      "--mem-gb", "32", "--array-parallelism", "3", "--account", "proj7",
                      "--qos", "high"),
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert "submitted job array 12345: 4 tasks" in done.stderr
    script = copy.read_text()
    for line in ("#SBATCH --partition=gpu-long", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --array=0-3%3",
                 "#SBATCH --account=proj7", "#SBATCH --qos=high", "#SBATCH --signal=USR2@"):
        assert line in script.splitlines() or any(l.startswith(line) for l in script.splitlines()), line
    folder = data / "DIGITS" / "submitit"
    assert f"--output {folder}/%A_%a/" in script.replace("#SBATCH --output=", "--output ")
    # each task is the table's cell, run under torchrun on its two GPUs, with --resume
    pickles = sorted(folder.glob("*/*_submitted.pkl"))
    assert len(pickles) == 4
    delayed = pickle.loads(pickles[0].read_bytes())
    job, (spec,) = delayed.function, delayed.args
    assert isinstance(job, launchers.TableJob) and job.gpus_per_run == 2 and job.threads == 8
    command = launchers.run_command(spec, job.gpus_per_run)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert command[-1] == "--resume"


# ----------------------------------------------------------------------------- pieces

def test_gpu_slots_pin_each_worker_to_its_group_of_gpus():
    slots = launchers.local_slots(0, [0, 1, 2, 3], per_gpu=2, gpus_per_run=2)
    assert [slot["CUDA_VISIBLE_DEVICES"] for slot in slots] == ["0,1", "0,1", "2,3", "2,3"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in launchers.local_slots(0, [4, 6], per_gpu=3)] == \
        ["4"] * 3 + ["6"] * 3
    with pytest.raises(UsageError, match="does not divide"):
        launchers.local_slots(0, [0, 1, 2], gpus_per_run=2)


def test_cpu_slots_share_the_cores():
    cores = launchers.cpu_threads()
    slots = launchers.local_slots(2)
    assert len(slots) == 2 and all(s["OMP_NUM_THREADS"] == str(max(1, cores // 2)) for s in slots)
    assert "CUDA_VISIBLE_DEVICES" not in slots[0]


def test_the_command_of_a_run_on_several_gpus_is_torchrun_of_implicit_augment():
    [spec] = sweep.expand("DIGITS", "d", ["A_W_S"], ["10-0.1"], 1, ["--epochs", "5"])
    assert launchers.run_command(spec, 1) == [sys.executable, str(REPO / "implicit-augment.py"),
                                              *spec.arguments]
    assert launchers.run_command(spec, 4) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
        str(REPO / "implicit-augment.py"), "--data", "d", "--dataset", "DIGITS", "-r", "run0",
        "-ir", "10", "-nr", "0.1", "--aug-model", "SEP", "--los-model", "BOTH", "--hyper-opt", "HES",
        "--epochs", "5", "--resume"]


def test_expansion_is_runs_then_settings_then_configurations_with_the_paper_columns_by_default():
    specs = sweep.expand("SVHN", "d", ["Baseline", "A"], sweep.default_settings("SVHN"), 2, [])
    assert len(specs) == 2 * 4 * 2
    assert [s.title for s in specs[:3]] == ["Baseline 1-0.0 run0", "A 1-0.0 run0", "Baseline 100-0.0 run0"]
    assert specs[-1].title == "A 100-0.1 run1"
    assert specs[0].config.name == run_files.run_name("wresnet28_10", "NONE", "NONE", "NONE", 1, 1.0, 0.0)
    assert sweep.default_settings("DIGITS") == sweep.DEFAULT_SETTINGS
    # a passed option that enters the run name names the cell's files too
    [text] = sweep.expand("DIGITS", "d", ["A"], ["10-0.1"], 1, ["--paper-text", "geometry", "valid"])
    assert text.name == run_files.run_name("resnet18", "HES", "SEP", "NONE", 10, 1.0, 0.1,
                                           paper_text=("geometry", "valid"))
    assert text.arguments[-4:] == ("--paper-text", "geometry", "valid", "--resume")


@pytest.mark.parametrize("flags, message", [
    (["--settings", "10"], "--settings: '10' is not IR-NR such as 100-0.1 or 1-0.0"),
    (["-r", "run5"], "run-table.py sets -r (use --runs) itself; leave it out"),
    (["--gpu", "1"], "run-table.py sets --gpu (use --gpus) itself"),
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--modle", "x"], "unrecognized arguments: --modle x (options passed on to implicit-augment.py)"),
    (["--configs", "AWS"], "argument --configs: invalid choice: 'AWS'"),
    (["--gpus", "0,a"], "--gpus: '0,a' is not a comma-separated list"),
    (["--gpus-per-run", "2"], "--gpus-per-run 2 needs --gpus"),
    (["-nr", "0.1"], "run-table.py sets -nr (use --settings) itself"),
    (["--partition", "gpu"], "--partition: for --launcher slurm (or submitit-local)"),
    (["--launcher", "slurm", "--gpus", "0"], "--gpus: for the local launcher, not --launcher slurm"),
])
def test_bad_options_are_one_line_before_anything_starts(tmp_path, capsys, flags, message):
    import runpy
    get_args = runpy.run_path(str(SCRIPT))["get_args"]
    with pytest.raises(SystemExit) as exit_code:
        get_args(["--dataset", "DIGITS", "--data", str(tmp_path), *flags])
    assert exit_code.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert message in line
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- make run

def test_slow_make_run_shows_a_w_s_beating_the_baseline_and_resumes_to_nothing(tmp_path):
    """`make run`'s own recipe (its venv step taken as done: -o venv, this interpreter);
    about three minutes on 2 cores. `pytest -k "not slow"` leaves it out."""
    make = ["make", "-s", "run", "-o", "venv", f"BIN={Path(sys.executable).parent}", f"DATA={tmp_path}"]
    done = subprocess.run(make, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    errors = {}
    for spec in sweep.expand("DIGITS", str(tmp_path), CONFIGS, ["10-0.1"], 1,
                             ["--epochs", "100", "--no-cuda"]):
        results = run_files.load_results(spec.results_path)
        assert results["status"] == "finished" and results["epochs_done"] == 100
        errors[spec.label] = 100 - results["best"]["acc"]
    assert errors["A_W_S"] < errors["Baseline"] - 5, errors
    printed = {line.split()[0]: float(line.split()[1]) for line in done.stdout.splitlines()
               if line.split()[:1] in (["Baseline"], ["A_W_S"])}
    assert printed == pytest.approx(errors, abs=0.005)
    again = subprocess.run(make, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 done (2 skipped)" in again.stderr
    assert again.stdout == done.stdout


def test_a_folder_dataset_table_goes_under_its_folder_name(tmp_path):
    from tests.test_folder import make_folder
    root = make_folder(tmp_path / "shapes", counts={"train": 12, "valid": 4, "test": 4})
    data = tmp_path / "runs"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "folder", "--data-dir", str(root),
                           "--configs", "Baseline", "--settings", "1-0.3", "--runs", "1",
                           "--epochs", "1", "--no-cuda", "--data", str(data)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [spec] = sweep.expand("folder", str(data), ["Baseline"], ["1-0.3"], 1,
                          ["--data-dir", str(root), "--epochs", "1", "--no-cuda"])
    assert spec.folder == data / "folder_shapes" / "run0" and spec.is_finished()
    assert done.stdout.splitlines()[0].startswith("folder_shapes: top-1 test error (%)")
    assert done.stdout.splitlines()[3].split()[0] == "Baseline"
