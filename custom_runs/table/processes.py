"""The processes of a table's runs: each run's command (implicit-augment.py by its path in
the checkout, or torchrun of it), starting it with its output appended to its log and a
death signal tied to the launcher, its threads, and stopping it (from a signal handler
too)."""
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from custom_runs.table.sweep import RunSpec

SCRIPT = Path(__file__).resolve().parents[2] / "implicit-augment.py"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_command(spec: RunSpec, gpus_per_run: int = 1) -> List[str]:
    """The run's command: implicit-augment.py, or with several GPUs per run one process per
    GPU under torchrun (`python -m torch.distributed.run` is torchrun without relying on
    the script being on PATH)."""
    if gpus_per_run > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(gpus_per_run), str(SCRIPT), *spec.arguments]
    return [sys.executable, str(SCRIPT), *spec.arguments]


@functools.lru_cache(maxsize=None)
def _libc_prctl() -> Optional[Callable]:
    """libc's prctl, looked up once, in the launcher: never in a child between fork and exec."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(parent_pid: int) -> Optional[Callable[[], None]]:
    """preexec_fn: the run gets SIGTERM (saved and stopped like a pre-emption) when the
    launcher dies in any way, kill -9 included, so no orphan keeps training and holding
    the configuration's lock. Linux only; elsewhere the runs outlive a killed launcher and
    the next start reports them as running elsewhere until they end. Between fork and exec
    the child makes only the prctl, getppid and kill calls: everything else (the lookup of
    prctl, the signal's number) is done here, in the parent."""
    prctl, terminate = _libc_prctl(), int(signal.SIGTERM)
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, terminate, 0, 0, 0)
        if os.getppid() != parent_pid:  # the launcher died before the prctl
            os.kill(os.getpid(), terminate)
    return preexec


def start_run(spec: RunSpec, environment: Dict[str, str], gpus_per_run: int = 1,
              outside_terminal_group: bool = False) -> subprocess.Popen:
    """Starts the run with its output appended to its log (every attempt, with a header).
    `outside_terminal_group`: outside the launcher's process group (setsid), so that a
    terminal's Ctrl-C (SIGINT to the whole foreground group) reaches the launcher alone,
    which then stops each run with one signal. Not for a Slurm task: a cluster that tracks a task's processes by
    their process group (proctrack/pgid) would lose the run."""
    command = run_command(spec, gpus_per_run)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_path, "a") as log:
        placement = " ".join(f"{key}={value}" for key, value in sorted(environment.items()))
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}"
                  f"{' ' + placement if placement else ''}: {' '.join(command)}\n")
        log.flush()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **environment}, start_new_session=outside_terminal_group,
                                preexec_fn=_die_with_parent(os.getpid()))


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_environment(threads: int) -> Dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def stop_processes(processes: Sequence[subprocess.Popen], grace_s: float = 60.0) -> None:
    """SIGTERM (the run saves its epoch and exits), then SIGKILL after `grace_s`."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def has_exited(process: subprocess.Popen) -> bool:
    """Whether the process has ended, without reaping it (WNOWAIT): Popen.poll() still can."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by a poll() this handler interrupted
        return True


def stop_from_handler(process: subprocess.Popen, grace_s: float) -> None:
    """stop_processes for a signal handler: SIGTERM (the run saves its epoch and exits), then
    SIGKILL after `grace_s`, watching with has_exited (no Popen lock, no reaping, so no pid is
    signalled after it could have been reused)."""
    if has_exited(process):
        return
    os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while not has_exited(process):
        if time.monotonic() > deadline:
            os.kill(process.pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)
