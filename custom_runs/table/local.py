"""The local launcher: worker slots on this machine's cores or GPUs (CUDA_VISIBLE_DEVICES per
slot), one run per slot at a time, each run a process of its own."""
import time
from typing import Dict, List, Sequence

from custom_common.errors import UsageError
from custom_common.signals import deferred_stops
from custom_runs.table.outcomes import Outcome, before_start, outcome_of
from custom_runs.table.processes import cpu_threads, start_run, stop_processes, thread_environment
from custom_runs.table.sweep import RunSpec

def local_slots(jobs: int, gpus: Sequence[int] = (), per_gpu: int = 1,
                gpus_per_run: int = 1) -> List[Dict[str, str]]:
    """One environment per worker. CPU: `jobs` workers sharing the cores. GPUs: `per_gpu`
    workers on each group of `gpus_per_run` of the listed GPUs (CUDA_VISIBLE_DEVICES)."""
    if not gpus:
        if jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {jobs}")
        return [thread_environment(max(1, cpu_threads() // jobs)) for _ in range(jobs)]
    if per_gpu < 1 or gpus_per_run < 1:
        raise UsageError("--per-gpu and --gpus-per-run must be at least 1")
    if len(gpus) % gpus_per_run:
        raise UsageError(f"--gpus-per-run {gpus_per_run} does not divide the {len(gpus)} GPUs of "
                         f"--gpus into groups; list a multiple of {gpus_per_run} GPUs")
    groups = [gpus[start:start + gpus_per_run] for start in range(0, len(gpus), gpus_per_run)]
    threads = max(1, cpu_threads() // (len(groups) * per_gpu * gpus_per_run))
    return [{**thread_environment(threads), "CUDA_VISIBLE_DEVICES": ",".join(map(str, group))}
            for group in groups for _ in range(per_gpu)]


def run_local(specs: Sequence[RunSpec], slots: List[Dict[str, str]], progress,
              gpus_per_run: int = 1, poll_s: float = 0.2) -> List[Outcome]:
    """Runs the cells on the slots, one run per slot at a time. One thread polls the
    processes (preexec_fn is only safe without other threads). Ctrl-C / SIGTERM stop the
    runs (each saves and says how to resume) and propagate as KeyboardInterrupt.

    A run gets exactly one stop, from here: it is not in the terminal's foreground process
    group (start_run's outside_terminal_group), and a second Ctrl-C waits until the runs have ended.
    A second signal that lands while a run handles the first can end it before its results
    file says "interrupted" (it would keep saying "running")."""
    pending = list(specs)
    outcomes: List[Outcome] = []
    running: Dict[int, tuple] = {}  # slot -> (spec, process)
    try:
        while pending or running:
            for slot, environment in enumerate(slots):
                while slot not in running and pending:
                    spec = pending.pop(0)
                    outcome = before_start(spec)
                    if outcome is not None:
                        outcomes.append(outcome)
                        progress.ended(outcome)
                        continue
                    running[slot] = (spec, start_run(spec, environment, gpus_per_run,
                                                     outside_terminal_group=True))
                    progress.started(spec)
            time.sleep(poll_s)
            for slot, (spec, process) in list(running.items()):
                if process.poll() is not None:
                    del running[slot]
                    outcome = outcome_of(spec, process.returncode)
                    outcomes.append(outcome)
                    progress.ended(outcome)
    except KeyboardInterrupt:
        with deferred_stops():
            stop_processes([process for _, process in running.values()])
        raise
    return outcomes
