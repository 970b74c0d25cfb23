"""A testing hook: a run that stops itself at a chosen point, so that the tests of stops,
kills and resumes act at an exact epoch and batch instead of racing a timer against the run.
Not a user option: it has no flag, and an unset or empty variable changes nothing.

    STOP_RUN_AT=EPOCH:BATCH[:ACTION][@RANK]
        EPOCH, BATCH  counted from 0, as checkpoints count epochs: the stop comes as batch
                      BATCH of epoch EPOCH is about to train (after that epoch's hyper epoch),
                      so the last_ checkpoint then holds epoch EPOCH - 1
    STOP_RUN_AT=setup:STEP[:ACTION][@RANK]
        STEP          prepare_data, build_batches, build_models or load_last: as it starts
        ACTION        TERM (the default): the process sends itself SIGTERM, as a scheduler's
                      pre-emption does; INT: SIGINT, as Ctrl-C; KILL: SIGKILL, as kill -9
                      (nothing more is written); PAUSE: a line on stderr, then wait for a
                      signal from outside (a test acts while the run holds its lock)
        RANK          only that rank of a torchrun launch stops (default: every rank)
"""
import os
import re
import signal
import sys
import time
from typing import NamedTuple, Optional, Tuple, Union

from custom_common.errors import UsageError

VARIABLE = "STOP_RUN_AT"
SETUP_STEPS = ("prepare_data", "build_batches", "build_models", "load_last")
SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "KILL": signal.SIGKILL}
ACTIONS = (*SIGNALS, "PAUSE")
PATTERN = re.compile(r"(?:(\d+):(\d+)|setup:(\w+))(?::([A-Z]+))?(?:@(\d+))?")


class StopPoint(NamedTuple):
    point: Tuple[Union[int, str], Union[int, str]]  # (epoch, batch) or ("setup", step)
    action: str
    rank: Optional[int]  # None: every rank


def requested(value: Optional[str] = None) -> Optional[StopPoint]:
    """The stop point STOP_RUN_AT (or `value`) names; None where it is unset or empty."""
    value = os.environ.get(VARIABLE, "") if value is None else value
    if not value:
        return None
    match = PATTERN.fullmatch(value.strip())
    if match is None or (match.group(3) and match.group(3) not in SETUP_STEPS) or \
            (match.group(4) and match.group(4) not in ACTIONS):
        raise UsageError(f"{VARIABLE}={value!r}: expected EPOCH:BATCH or setup:STEP (one of "
                         f"{', '.join(SETUP_STEPS)}), then optionally :ACTION (one of "
                         f"{', '.join(ACTIONS)}) and @RANK")
    epoch, batch, step, action, rank = match.groups()
    point = ("setup", step) if step else (int(epoch), int(batch))
    return StopPoint(point, action or "TERM", None if rank is None else int(rank))


def stop_if_asked(stop_at: Optional[StopPoint], point: tuple, rank: int) -> None:
    """Stop this process as `stop_at` asks, if it names `point` and this rank."""
    if stop_at is None or stop_at.point != point or stop_at.rank not in (None, rank):
        return
    if stop_at.action == "PAUSE":
        # not print: under torchrun only rank 0's prints are shown
        sys.stderr.write(f"{VARIABLE}: paused at {':'.join(map(str, point))} (rank {rank}); "
                         f"waiting for a signal\n")
        sys.stderr.flush()
        while True:  # a signal's handler raises here (sleep wakes for it)
            time.sleep(0.1)
    os.kill(os.getpid(), SIGNALS[stop_at.action])
    # Python runs the handler at its next instruction; a handler that returns goes on
