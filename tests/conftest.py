import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# one thread per process: on a few shared cores torch's thread pool mostly spins; no
# bytecode written into the checkout; output as it happens, so a killed run's log is whole
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
              "PYTHONUNBUFFERED": "1"}


def pytest_configure(config):
    config.addinivalue_line("markers", "compile: compiles with torch.compile (inductor builds C++ "
                                       "kernels: seconds to tens of seconds on a small CPU)")


def environment(env=None) -> dict:
    """This process's environment with ONE_THREAD and `env` over it."""
    return {**os.environ, **ONE_THREAD, **(env or {})}


def python(*arguments, env=None, timeout=600, cwd=ROOT) -> subprocess.CompletedProcess:
    """The test interpreter with `arguments` (each made a string) in `cwd` (the checkout),
    in environment(env), to its end; stdout and stderr as text."""
    return subprocess.run([sys.executable, *map(str, arguments)], cwd=cwd, env=environment(env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_python():
    """python(*arguments, env=None, timeout=600, cwd=ROOT): e.g. "-m", "torch.distributed.run", ..."""
    return python


@pytest.fixture(scope="session")
def run_script():
    """run_script(script, *args, env=None, timeout=600): a script at the top of the checkout
    (implicit-augment.py, run-table.py, get-results.py, ...) as a user runs it."""
    def run(script, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
        return python(ROOT / script, *args, env=env, timeout=timeout)
    return run


@pytest.fixture(scope="session")
def start_script():
    """start_script(script, *args, env=None, **popen_options) -> Popen: a script at the top
    of the checkout started as run_script runs it, for a test that signals or watches it;
    popen_options (stdout, stderr, start_new_session, ...) go to subprocess.Popen."""
    def start(script, *args, env=None, **popen_options) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                                env=environment(env), **popen_options)
    return start
