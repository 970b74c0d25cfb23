"""The Slurm launcher: a table's unfinished cells as one job array through submitit (or
submitit's local executor), each task one run that is requeued on pre-emption, and the
array followed to its end, with sacct or, where a cluster has no accounting, with squeue
and the cells' results files.

Every run is `implicit-augment.py ... --resume` in a process of its own (processes.py), so a
task never needs to know how far its run got: starting it again finishes it.
"""
import contextlib
import io
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import submitit

from custom_common.errors import UsageError
from custom_common.signals import signals_blocked
from custom_runs.table.outcomes import (FAILED, FINISHED, Outcome, before_start, failure_reason,
                                        outcome_of)
from custom_runs.table.processes import start_run, stop_from_handler, thread_environment
from custom_runs.table.sweep import RunSpec


class TableJob(submitit.helpers.Checkpointable):
    """One task of the job array: one cell, to its end. Resubmitted unchanged on pre-emption
    or time-out (submitit calls checkpoint()), which is safe since the run resumes.

    submitit's handler of the pre-emption signal (USR2) runs checkpoint() in this process's
    only thread, between two steps of whatever __call__ is doing; so __call__ polls (never
    Popen.wait(), whose lock checkpoint() could not take), and checkpoint() only signals the
    run and watches it end, taking no lock and reaping nothing."""

    def __init__(self, threads: int, gpus_per_run: int = 1, poll_s: float = 0.5):
        self.threads, self.gpus_per_run, self.poll_s = threads, gpus_per_run, poll_s
        self._process: Optional[subprocess.Popen] = None

    def __call__(self, spec: RunSpec) -> Outcome:
        outcome = before_start(spec)
        if outcome is not None:
            return outcome
        # Slurm signals every process of the task, the run included, whose default for USR2
        # is to die unsaved: the run starts with it blocked (a child inherits the mask), and
        # here it waits until self._process is set, so that checkpoint() finds the run
        # the task's cores shared by its torchrun ranks, one per GPU (as local_slots does)
        threads = thread_environment(max(1, self.threads // self.gpus_per_run))
        with signals_blocked({preemption_signal()}):
            self._process = start_run(spec, threads, self.gpus_per_run)
        while self._process.poll() is None:
            time.sleep(self.poll_s)
        return outcome_of(spec, self._process.returncode)

    def checkpoint(self, spec: RunSpec):
        """Before submitit requeues the task: let the run save its epoch and stop."""
        if self._process is not None:
            stop_from_handler(self._process, grace_s=30.0)
        return submitit.helpers.DelayedSubmission(
            TableJob(self.threads, self.gpus_per_run, self.poll_s), spec)

    def __getstate__(self):  # a running process does not travel with a resubmission
        return {"threads": self.threads, "gpus_per_run": self.gpus_per_run, "poll_s": self.poll_s,
                "_process": None}


def preemption_signal() -> signal.Signals:
    """The signal submitit's jobs take as pre-emption or time-out (USR2 unless configured)."""
    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


@dataclass
class SlurmOptions:
    partition: Optional[str] = None
    time_min: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: Optional[float] = None
    array_parallelism: int = 64
    account: Optional[str] = None
    qos: Optional[str] = None


def make_executor(folder, options: SlurmOptions, cluster: str = "slurm"):
    """submitit's executor for the job array; cluster "local" runs the same path on this
    machine (submitit's local executor, for tests and a dry run)."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if cluster == "slurm" and missing:
        raise UsageError(f"--launcher slurm: {' and '.join(missing)} not on PATH; run on a Slurm "
                         f"login node, or use the local launcher")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    parameters = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_task,
                  "tasks_per_node": 1, "nodes": 1, "name": "run-table"}
    if options.gpus_per_task:
        parameters["gpus_per_node"] = options.gpus_per_task
    if options.mem_gb:
        parameters["mem_gb"] = options.mem_gb
    slurm = {"slurm_array_parallelism": options.array_parallelism}
    if options.partition:
        slurm["slurm_partition"] = options.partition
    extra = {key: value for key, value in (("account", options.account), ("qos", options.qos)) if value}
    if extra:
        slurm["slurm_additional_parameters"] = extra
    executor.update_parameters(**parameters, **(slurm if cluster == "slurm" else {}))
    return executor


class SubmissionFailed(Exception):
    """sbatch did not take the job array; the message quotes sbatch's own, on one line."""


def sbatch_refusal(error: Exception) -> str:
    """sbatch's own message, out of the error submitit raises with it inside (its stderr,
    `sbatch: error: ` before every line), joined into one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = "; ".join(line.split("sbatch: error: ", 1)[-1] for line in lines)
    if not said:  # killed, or ended without a word
        status = getattr(error.__cause__, "returncode", None)
        said = f"it ended with exit status {status} and no message" if status is not None \
            else "it gave no message"
    return (f"sbatch did not submit the job array: {said}; nothing was submitted: change the "
            f"Slurm options (--partition, --cpus-per-task, --mem-gb, --gpus-per-task, --time-min, "
            f"--account, --qos) and run the same command")


def submit_array(specs: Sequence[RunSpec], executor, options: SlurmOptions):
    """One job array, one task per cell that is not finished yet; returns (jobs, specs).
    Raises SubmissionFailed, with the files submitit wrote for the submission removed."""
    todo = [spec for spec in specs if not spec.is_finished()]
    if not todo:
        return [], []
    gpus_per_run = max(1, options.gpus_per_task)
    folder = submitit.core.utils.JobPaths.get_first_id_independent_folder(executor.folder)
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        # submitit prints sbatch's complaint itself before raising it: it is said once, below
        with contextlib.redirect_stderr(io.StringIO()):
            jobs = executor.map_array(TableJob(options.cpus_per_task, gpus_per_run), todo)
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
        # the tasks' pickles and the script of a submission that did not happen
        for path in set(folder.iterdir()) - before if folder.is_dir() else ():
            if path.is_file():
                path.unlink()
        raise SubmissionFailed(sbatch_refusal(error)) from None
    return jobs, todo


# Reasons that no waiting ends: the request itself exceeds what the partition's nodes have
# (PartitionConfig: more cores, memory or nodes than it has, on a cluster that does not
# refuse such a job at submission), the partition's time limit, or a per-job limit of the
# account or QOS; only other options (or an administrator) change them. Kept short on
# purpose: every other reason can pass by itself (Resources, Priority, the Grp* limits
# that running jobs free, ReqNodeNotAvail and PartitionNodeLimit while nodes are down,
# PartitionDown, a JobHeld* that can be released) and is shown and waited for.
NEVER_STARTS = re.compile(r"PartitionConfig|PartitionTimeLimit|(?:Assoc|QOS)Max\w*PerJob\w*")


class NeverStarts(Exception):
    """Slurm keeps the array's tasks pending for a reason that no waiting ends."""


def cancel_pending(array: str, reason: str, count: int) -> NeverStarts:
    """Cancels the array's pending tasks (running ones go on); returns the error that says so."""
    command = ["scancel", "--state=PENDING", array]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        cancelled = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        cancelled = False
    what = (f"cancelled its {count} pending task{'s' if count > 1 else ''} ({' '.join(command)})"
            if cancelled else f"`{' '.join(command)}` cancels its pending tasks")
    return NeverStarts(
        f"job array {array} cannot start: Slurm keeps it pending with reason {reason} (it asks for "
        f"more than the partition or a per-job limit allows: see --cpus-per-task, --mem-gb, "
        f"--gpus-per-task, --time-min, --partition); {what}; change the options and run the same command")


# squeue states of a task that will not run again
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


class QueueUnavailable(Exception):
    """Neither sacct nor squeue says what became of the array; the message says what to run."""


def accounting_works(job_id: str) -> bool:
    """Whether sacct answers about the job (many small clusters have no accounting, and
    there submitit cannot tell a task that left the queue without a result)."""
    try:
        done = subprocess.run(["sacct", "-n", "-P", "-o", "JobID", "-j", job_id],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class SlurmQueue:
    """The job array's tasks as squeue shows them: {"123_4": "RUNNING", ...}, a task that
    left the queue absent. Asks at most every `interval_s`; None while squeue does not
    answer, QueueUnavailable once it has not answered for `patience_s`."""

    def __init__(self, array_id: str, interval_s: float = 5.0, patience_s: float = 300.0):
        self.array_id, self.interval_s, self.patience_s = array_id, interval_s, patience_s
        self.asked_at = float("-inf")
        self.states: Optional[Dict[str, str]] = None
        self.reasons: Dict[str, str] = {}  # squeue's reason of each pending task
        self.failing_since: Optional[float] = None

    def __call__(self) -> Optional[Dict[str, str]]:
        now = time.monotonic()
        if now - self.asked_at < self.interval_s:
            return self.states
        self.asked_at = now
        command = ["squeue", "-h", "-r", "-t", "all", "-j", self.array_id, "-o", "%i|%T|%r"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            problem = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        except (OSError, subprocess.TimeoutExpired) as error:
            done, problem = None, str(error)
        if done is not None and (done.returncode == 0 or "Invalid job id" in done.stderr):
            # an unknown id: every task left the queue (MinJobAge after its end)
            self.failing_since = None
            # a reason may hold spaces ("ReqNodeNotAvail, Reserved for maintenance")
            rows = [line.strip().split("|") for line in done.stdout.splitlines() if "|" in line] \
                if done.returncode == 0 else []
            self.states = {row[0]: row[1] for row in rows}
            self.reasons = {row[0]: row[2] for row in rows if len(row) > 2 and row[1] == "PENDING"}
            return self.states
        self.failing_since = self.failing_since if self.failing_since is not None else now
        self.states = None
        if now - self.failing_since >= self.patience_s:
            raise QueueUnavailable(
                f"cannot follow job array {self.array_id}: sacct does not work here and squeue has "
                f"not answered for {self.patience_s:.0f} s ({problem}); the array may still be "
                f"running: `squeue -j {self.array_id}` shows it; once it has ended, the same command "
                f"prints the table and resubmits what is unfinished")
        return None

    def pending_reasons(self) -> Dict[str, str]:
        """{task: squeue's reason} of the pending tasks, as of the latest answer."""
        self()
        return self.reasons


def left_the_queue(job, spec: RunSpec, state: Optional[str]) -> Outcome:
    """A task gone from squeue (or ended there) without submitit's result file: its cell's
    results file says whether the run finished."""
    if spec.is_finished():
        return Outcome(spec.title, FINISHED)
    how = f"ended {state}" if state else "left the queue"
    return Outcome(spec.title, FAILED,
                   f"job {job.job_id} {how} without a result; submitit log {job.paths.stderr}, "
                   f"run log {spec.log_path}: {failure_reason(spec.log_path)}")


def show_pending(reasons: Dict[str, str], waiting: Dict[str, tuple], shown: Dict[str, str],
                 progress) -> None:
    """Says, grouped by reason, which waiting cells' reasons changed since `shown` (updated);
    raises NeverStarts, with their pending tasks cancelled, for a reason no waiting ends."""
    changed: Dict[str, List[str]] = {}
    for job_id, (_, spec) in waiting.items():
        reason = reasons.get(job_id)
        if reason is None:  # running, or gone: a later wait is news again
            shown.pop(job_id, None)
        elif reason != shown.get(job_id) and reason != "None":  # "None": not yet considered
            shown[job_id] = reason
            changed.setdefault(reason, []).append(spec.title)
    for reason, titles in changed.items():
        progress.pending(titles, reason)
        if NEVER_STARTS.fullmatch(reason):
            array = next(iter(waiting)).split("_")[0]
            raise cancel_pending(array, reason, len(reasons))


def wait_for_jobs(jobs, specs: Sequence[RunSpec], progress, poll_s: float = 5.0,
                  queue: Optional[Callable[[], Optional[Dict[str, str]]]] = None,
                  reasons: Optional[Callable[[], Dict[str, str]]] = None) -> List[Outcome]:
    """Progress of the array until every task ended. Without `queue` submitit follows the
    tasks (sacct); with it (a SlurmQueue, where sacct does not work) a task has ended when
    submitit's result file is there or the task has left the queue. `reasons` (a
    SlurmQueue's pending_reasons) shows why tasks wait, and stops at a reason that no
    waiting ends (NeverStarts)."""
    outcomes: List[Outcome] = []
    waiting = dict(zip([job.job_id for job in jobs], zip(jobs, specs)))
    started = set()
    shown: Dict[str, str] = {}
    while waiting:
        states = queue() if queue is not None else None
        if reasons is not None:
            show_pending(reasons(), waiting, shown, progress)
        for job_id, (job, spec) in list(waiting.items()):
            if queue is None:
                state = job.state
            elif states is None:  # squeue did not answer this time
                continue
            else:
                state = states.get(job_id)
            if job_id not in started and state in ("RUNNING", "COMPLETED", "FINISHED"):
                started.add(job_id)
                progress.started(spec)
            if queue is None:
                ended = job.done()
            else:  # the result file is written before the task leaves the queue
                has_result = job.paths.result_pickle.exists()
                ended = has_result or state is None or state in ENDED_STATES
            if not ended:
                continue
            del waiting[job_id]
            if queue is not None and not has_result:
                outcome = left_the_queue(job, spec, state)
            else:
                try:
                    outcome = job.result()
                except Exception as error:  # the task itself failed (node failure, cancelled, ...)
                    reason = " ".join(str(error).split())[:300]
                    outcome = Outcome(spec.title, FAILED, f"job {job_id} ({reason}); submitit log "
                                                          f"{job.paths.stderr}, run log {spec.log_path}")
            outcomes.append(outcome)
            progress.ended(outcome)
        if waiting:
            time.sleep(poll_s)
    return outcomes
