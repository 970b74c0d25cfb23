"""run-table.py --launcher slurm against a real Slurm: the single-node cluster that
.ci/slurm-cluster.sh stands up from Debian's packages (partition `debug`, no accounting).
Skipped, saying why, where no such cluster is up.

A task of a two-cell DIGITS array is pre-empted mid-run (`scancel --signal=USR2`, what Slurm
sends before a time limit): submitit's handler stops the run (it saves its epoch), requeues
the task, the task starts again and the run resumes; the table then equals an uninterrupted
one, number for number. Without accounting (sacct fails here) the runner follows the array
with squeue and the results files, and a task killed outright is reported with its log.
sbatch's refusals are one line quoting sbatch; a waiting task's reason is shown, and a task
that can never start (more cores than the node has) is cancelled and said so."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from custom_reports import table_formats, tables
from custom_runs import run_files
from custom_runs.table import sweep

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run-table.py"
CONFIGS = ("Baseline", "A_W_S")
# four epochs: the pre-emption waits for the first one's checkpoint, so it lands mid-run
SHORT = ("--epochs", "4", "--hyper-start", "0", "--no-cuda")
SLURM = ("--launcher", "slurm", "--partition", "debug", "--cpus-per-task", "1", "--time-min", "30")


def cluster_problem():
    """Why the tests cannot use a cluster here, or None."""
    missing = [tool for tool in ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
               if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH (apt-get install slurm-wlm munge; .ci/slurm-cluster.sh)"
    try:
        states = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%T"], capture_output=True,
                                text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s"
    usable = {"idle", "mixed", "allocated", "completing"}
    if states.returncode != 0 or not usable & set(states.stdout.split()):
        return (f"no usable node in partition debug (sinfo: {' '.join(states.stdout.split()) or '-'} "
                f"{' '.join(states.stderr.split())}); start the cluster with .ci/slurm-cluster.sh as root")
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        pytest.skip(f"no single-node Slurm cluster: {problem}")


def table_command(data, *extra, configs=CONFIGS, epochs=SHORT):
    return [sys.executable, str(SCRIPT), "--dataset", "DIGITS", "--configs", *configs,
            "--settings", "10-0.1", "--runs", "1", "--data", str(data), *epochs, *extra]


def specs_of(data, configs=CONFIGS, epochs=SHORT):
    return sweep.expand("DIGITS", str(data), configs, ["10-0.1"], 1, list(epochs))


def numbers(data) -> dict:
    """Every cell's per-epoch test accuracy and loss, its best accuracy, and the table."""
    out = {}
    for spec in specs_of(data):
        results = run_files.load_results(spec.results_path)
        out[spec.title] = (results["status"], results["epochs_done"], results["best"]["acc"],
                           [(epoch["test_acc"], epoch["test_loss"]) for epoch in results["history"]])
    table = tables.build_table(data, "DIGITS", "resnet18", only=[s.config for s in specs_of(data)])
    out["table"] = table_formats.render_table(table, "json")
    return out


def wait_for(condition, what, runner, timeout_s=240.0, every_s=0.2):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert runner.poll() is None, f"the runner ended (exit {runner.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:.0f} s"
        time.sleep(every_s)


def array_of(stderr_path: Path, runner) -> str:
    found = []

    def submitted():
        found[:] = re.findall(r"submitted job array (\d+):", stderr_path.read_text())
        return bool(found)
    wait_for(submitted, "submitted job array", runner, timeout_s=60)
    return found[0]


def log_text(spec) -> str:
    try:
        return spec.log_path.read_text()
    except FileNotFoundError:
        return ""


def task_state(task: str) -> str:
    done = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", task, "-o", "%T"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_a_preempted_task_is_requeued_resumes_and_the_table_equals_an_uninterrupted_one(
        cluster, tmp_path):
    reference = tmp_path / "reference"
    done = subprocess.run(table_command(reference, "--jobs", "2"), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    data, stderr_path = tmp_path / "slurm", tmp_path / "runner.err"
    with open(stderr_path, "w") as stderr:
        runner = subprocess.Popen(table_command(data, *SLURM), cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=stderr, text=True)
    try:
        array = array_of(stderr_path, runner)
        baseline, preempted = specs_of(data)  # tasks 0 and 1 of the array
        task = f"{array}_1"
        # the epoch's line comes after its checkpoint: something is saved, three epochs to come
        wait_for(lambda: "epoch 1/4 " in log_text(preempted), "epoch 1/4 in the run's log", runner)
        assert not preempted.is_finished()
        subprocess.run(["scancel", "--signal=USR2", task], check=True, timeout=30)
        # the handler stopped the run and requeued the task: Slurm holds a requeued task two
        # minutes before it may start again; the test lets it start at once
        wait_for(lambda: task_state(task) == "PENDING", f"requeued task {task}", runner)
        subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True, timeout=30)
        stdout, _ = runner.communicate(timeout=600)
    finally:
        if runner.poll() is None:
            runner.kill()
            subprocess.run(["scancel", array], timeout=30)
    errors = stderr_path.read_text()
    assert runner.returncode == 0, errors
    assert f"sacct does not work on this cluster: following job array {array} with squeue" in errors
    assert "2 done (0 skipped), 0 running, 0 failed" in errors
    assert numbers(data) == numbers(reference)
    assert stdout.splitlines()[3].split()[0] == "Baseline" and stdout == done.stdout

    submitit_log = (data / "DIGITS" / "submitit" / task / f"{task}_0_log.out").read_text()
    # submitit's later lines ("Calling checkpoint method", "Requeued job") can be lost: Slurm
    # cancels the step as soon as the requeue is asked for, before a buffered stderr is
    # flushed. The requeue itself shows in the run's log: a second attempt, resumed.
    assert "this job is preempted" in \
        submitit_log + (data / "DIGITS" / "submitit" / task / f"{task}_0_log.err").read_text()
    first, second = preempted.log_path.read_text().split("=== ")[1:]  # two attempts, no third
    assert "epoch 1/4 " in first and "terminated (SIGTERM); continue with the same command" in first
    assert "epoch 1/4 " not in second and "epoch 4/4 " in second  # resumed from its checkpoint
    assert baseline.log_path.read_text().count("=== ") == 1


def test_a_task_killed_outright_is_failed_with_its_log_without_accounting(cluster, tmp_path):
    long = ("--epochs", "40", "--no-cuda")
    data, stderr_path = tmp_path / "slurm", tmp_path / "runner.err"
    with open(stderr_path, "w") as stderr:
        runner = subprocess.Popen(table_command(data, *SLURM, configs=["Baseline"], epochs=long),
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        array = array_of(stderr_path, runner)
        [spec] = specs_of(data, ["Baseline"], long)
        wait_for(lambda: "epoch 1/40 " in log_text(spec), "epoch 1/40 in the run's log", runner)
        # every process of the task dies at once, as by a node's OOM killer: no submitit
        # result file, no saved results (`scancel --signal=KILL` would cancel the job, and the
        # run save its epoch). submitit submits one cell as a plain job, not an array of one.
        listed = subprocess.run(["scontrol", "listpids", array], capture_output=True, text=True,
                                check=True, timeout=30).stdout.splitlines()[1:]
        for pid in {int(line.split()[0]) for line in listed}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            subprocess.run(["scancel", array], timeout=30)
    errors = stderr_path.read_text()
    assert runner.returncode == 1, errors
    [line] = [line for line in errors.splitlines() if line.startswith("failed: Baseline 10-0.1 run0: ")]
    assert re.search(rf"job {array} (ended [A-Z_]+|left the queue) without a result; submitit "
                     rf"log \S+/{array}_0_log.err, run log {re.escape(str(spec.log_path))}: ", line), line
    assert "0 done (0 skipped), 0 running, 1 failed" in errors
    assert not spec.is_finished()


def node_cpus() -> int:
    return int(subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%c"], capture_output=True, text=True,
                              check=True, timeout=30).stdout.split()[0].rstrip("+"))


@pytest.mark.parametrize("options, sbatch_says", [
    (("--partition", "nosuch"), "invalid partition specified: nosuch"),
    (("--partition", "debug", "--mem-gb", "100000"), "Memory specification can not be satisfied")])
def test_an_sbatch_refusal_is_one_line_with_sbatch_s_message(cluster, tmp_path, options, sbatch_says):
    data = tmp_path / "slurm"
    done = subprocess.run(table_command(data, "--launcher", "slurm", *options, configs=["Baseline"],
                                        epochs=("--epochs", "1", "--no-cuda")),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("run-table.py: error: sbatch did not submit the job array: ") and sbatch_says in last
    assert last.endswith("nothing was submitted: change the Slurm options (--partition, --cpus-per-task, "
                         "--mem-gb, --gpus-per-task, --time-min, --account, --qos) and run the same command")
    assert "Traceback" not in done.stderr and done.stderr.count(sbatch_says) == 1
    assert [path for path in (data / "DIGITS" / "submitit").rglob("*") if path.is_file()] == []


def test_a_task_that_can_never_start_is_said_with_its_reason_and_cancelled(cluster, tmp_path):
    cpus = str(node_cpus() + 1)  # more cores than the partition's only node has: PartitionConfig
    data = tmp_path / "slurm"
    done = subprocess.run(table_command(data, "--launcher", "slurm", "--partition", "debug",
                                        "--cpus-per-task", cpus, configs=["Baseline"],
                                        epochs=("--epochs", "1", "--no-cuda")),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    array = re.search(r"submitted job array (\d+):", done.stderr).group(1)
    try:
        assert done.returncode == 1, done.stderr
        lines = done.stderr.splitlines()
        assert "pending  Baseline 10-0.1 run0: PartitionConfig" in lines
        assert lines[-1] == (
            f"run-table.py: error: job array {array} cannot start: Slurm keeps it pending with reason "
            f"PartitionConfig (it asks for more than the partition or a per-job limit allows: see "
            f"--cpus-per-task, --mem-gb, --gpus-per-task, --time-min, --partition); cancelled its 1 "
            f"pending task (scancel --state=PENDING {array}); change the options and run the same command")
        assert task_state(array) in ("CANCELLED", "")  # "": already gone from the queue
    finally:
        subprocess.run(["scancel", array], timeout=30)


def test_a_waiting_task_shows_why_and_ctrl_c_leaves_it_queued(cluster, tmp_path):
    # every core of the node held by another job: the table's task waits for resources
    holder = subprocess.run(["sbatch", "--parsable", "-p", "debug", "-J", "hold-the-node", "-o", "/dev/null",
                             f"--cpus-per-task={node_cpus()}", "--wrap", "sleep 300"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    data, stderr_path = tmp_path / "slurm", tmp_path / "runner.err"
    cancel = [holder]
    with open(stderr_path, "w") as stderr:
        runner = subprocess.Popen(table_command(data, *SLURM, configs=["Baseline"],
                                                epochs=("--epochs", "1", "--no-cuda")),
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        array = array_of(stderr_path, runner)
        cancel.append(array)
        wait_for(lambda: re.search(r"^pending  Baseline 10-0\.1 run0: (Resources|Priority) \(",
                                   stderr_path.read_text(), re.M), "a pending reason", runner, timeout_s=60)
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=60) == 130
        assert task_state(array) == "PENDING"  # following stopped; the array did not
        assert f"interrupted: job array {array} goes on running on the cluster" in stderr_path.read_text()
    finally:
        if runner.poll() is None:
            runner.kill()
        subprocess.run(["scancel", *cancel], timeout=30)
