"""How the project's processes take stop signals, in one place: SIGTERM (a scheduler's
pre-emption, `kill`) handled as Ctrl-C, stops deferred while a step's files are written,
and signals held pending while a child process is started."""
import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Type

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C, and told apart from it where the exit status says which."""


@contextmanager
def sigterm_as_interrupt(raised: Type[KeyboardInterrupt] = Terminated) -> Iterator[None]:
    """Inside the block SIGTERM raises `raised` (a KeyboardInterrupt), so that every stop
    takes the path Ctrl-C takes; the previous handler is back afterwards."""
    def handler(signum, frame):
        raise raised()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deferred_stops() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside the block take effect when it ends, through the
    handlers that were in place before it (a stop is postponed, never lost). Not a signal
    mask: Python runs its handlers in the main thread even when the kernel hands the signal
    to another thread (torch's, tensorboard's), so a mask on the main thread defers nothing.
    Outside the main thread, where handlers cannot be set, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    # None: a handler set outside Python, which stays
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous = {signum: handler for signum, handler in previous.items() if handler is not None}
    for signum in previous:
        signal.signal(signum, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


@contextmanager
def signals_blocked(signals) -> Iterator[None]:
    """Holds `signals` pending in this thread (and blocked in the processes it starts)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
