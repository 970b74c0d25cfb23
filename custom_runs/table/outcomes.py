"""What the cells of a table end as (finished, skipped, failed, running elsewhere), read from
a run's exit status, results file and log, and the progress the runner shows of them."""
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

from tqdm import tqdm

from custom_runs.table.sweep import RunSpec

# what a cell ends as
FINISHED, SKIPPED, FAILED, ELSEWHERE = "finished", "skipped", "failed", "running elsewhere"


@dataclass
class Outcome:
    title: str
    state: str
    detail: str = ""  # failed: the log and its last line; elsewhere: who holds the lock


def failure_reason(log: Path) -> str:
    """What the last attempt in a run's log said last: its "implicit-augment.py: error: …"
    (which may span lines, e.g. a library's message) joined into one line, else its last line."""
    try:
        attempt = log.read_text(errors="replace").rsplit("\n=== ", 1)[-1]
    except OSError:
        return ""
    # a progress bar's carriage returns leave its last state on the line
    lines = [line.split("\r")[-1].strip() for line in attempt.splitlines()]
    lines = [line for line in lines if line]
    errors = [index for index, line in enumerate(lines) if ": error: " in line]
    if errors:
        return " ".join(lines[errors[-1]:])
    return lines[-1] if lines else ""


def outcome_of(spec: RunSpec, returncode: int) -> Outcome:
    """What an ended run means for its cell."""
    if returncode == 0 and spec.is_finished():
        return Outcome(spec.title, FINISHED)
    holder = spec.running_elsewhere()
    if holder:  # it lost the race for the lock: another launcher or a user's own command
        return Outcome(spec.title, ELSEWHERE, holder)
    return Outcome(spec.title, FAILED,
                   f"exit status {returncode}, log {spec.log_path}: {failure_reason(spec.log_path)}")


def before_start(spec: RunSpec) -> Optional[Outcome]:
    """A cell that needs no process: finished already, or trained by another live process."""
    if spec.is_finished():
        return Outcome(spec.title, SKIPPED)
    holder = spec.running_elsewhere()
    if holder:
        return Outcome(spec.title, ELSEWHERE, holder)
    return None


# squeue reasons of a pending task (%r) that the runner explains as it shows them
WAITING_MEANS = {"Priority": "other jobs go first", "Resources": "waiting for free cores, memory or GPUs",
                 "JobArrayTaskLimit": "--array-parallelism tasks run at a time",
                 "BeginTime": "a requeued task waits about two minutes before it starts again"}


class Progress:
    """Cells done / running / failed / skipped: a tqdm bar on a terminal, one plain line per
    event otherwise (a log file, a CI job)."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.counts = {FINISHED: 0, SKIPPED: 0, FAILED: 0, ELSEWHERE: 0}
        self.running = 0
        self.started_at: Dict[str, float] = {}
        interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        # no monitor thread (tqdm starts one with its first bar, even a disabled one): the
        # local launcher forks its runs with a preexec_fn, safe only in a one-thread process
        tqdm.monitor_interval = 0
        self.bar = tqdm(total=total, file=self.stream, unit="run", dynamic_ncols=True,
                        disable=not interactive)

    def _say(self, text: str) -> None:
        if self.bar.disable:
            print(text, file=self.stream, flush=True)
        else:
            self.bar.write(text, file=self.stream)
        self.bar.set_postfix_str(self.summary(), refresh=True)

    def summary(self) -> str:
        return (f"{self.counts[FINISHED] + self.counts[SKIPPED]} done ({self.counts[SKIPPED]} "
                f"skipped), {self.running} running, {self.counts[FAILED]} failed"
                + (f", {self.counts[ELSEWHERE]} running elsewhere" if self.counts[ELSEWHERE] else ""))

    def started(self, spec: RunSpec) -> None:
        self.running += 1
        self.started_at[spec.title] = time.monotonic()
        self._say(f"started  {spec.title} (log {spec.log_path})")

    def ended(self, outcome: Outcome) -> None:
        if outcome.title in self.started_at:
            self.running -= 1
            seconds = time.monotonic() - self.started_at.pop(outcome.title)
            took = f" after {seconds:.0f} s"
        else:
            took = ""
        self.counts[outcome.state] += 1
        self.bar.update(1)
        detail = f": {outcome.detail}" if outcome.detail else ""
        self._say(f"{outcome.state:<8} {outcome.title}{took}{detail}")

    def pending(self, titles: Sequence[str], reason: str) -> None:
        """Why Slurm keeps these cells' tasks waiting (squeue's reason), said as it changes."""
        named = ", ".join(titles[:3]) + (f" and {len(titles) - 3} more" if len(titles) > 3 else "")
        meaning = f" ({WAITING_MEANS[reason]})" if reason in WAITING_MEANS else ""
        self._say(f"pending  {named}: {reason}{meaning}")

    def close(self) -> None:
        self.bar.close()
