"""Paths and disks a user can get wrong: a --data that is a file, lies under one or is
read-only, a run folder outside --data, a disk that fills up during a run, and the
temporary files a killed save leaves behind. Each ends in one line and a non-zero exit,
with no traceback and no half-written file."""
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from custom_common import atomic_files
from custom_runs import run_files

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.is_file() else sys.executable
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
BASELINE = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)


def run_script(script: str, *args, timeout=300):
    return subprocess.run([PYTHON, str(ROOT / script), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def error_line(result, script: str) -> str:
    """The one error line of a script that failed: no traceback, nothing else called an error."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"{script}: error: "), errors[0]
    return errors[0]


@contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """A tmpfs at `folder` (a small one stands in for a full disk, a read-only one for a
    folder root cannot write to); the test is skipped where the machine cannot mount."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mount.stderr.strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


# ----------------------------------------------------------------------------- --data of run-table.py

def data_is_a_file(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    return tmp_path / "data", "is a file"


def data_under_a_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    return tmp_path / "file" / "data", "is a file"


@pytest.mark.parametrize("make_data", [data_is_a_file, data_under_a_file])
def test_run_table_refuses_a_data_path_that_is_or_lies_under_a_file(tmp_path, make_data):
    data, expected = make_data(tmp_path)
    result = run_script("run-table.py", "--dataset", "DIGITS", "--configs", "Baseline",
                        "--settings", "1-0.0", "--runs", 1, "--epochs", 1, "--no-cuda", "--data", data)
    assert result.returncode == 2
    line = error_line(result, "run-table.py")
    assert expected in line and "--data" in line


def test_run_table_refuses_a_read_only_data_folder_and_writes_nothing(tmp_path):
    with mounted_tmpfs(tmp_path / "data", "size=1m,ro") as data:
        result = run_script("run-table.py", "--dataset", "DIGITS", "--configs", "Baseline",
                            "--settings", "1-0.0", "--runs", 1, "--epochs", 1, "--no-cuda",
                            "--data", data / "runs")
        assert result.returncode == 2
        assert "not writable" in error_line(result, "run-table.py")
        assert list(data.iterdir()) == []


# ----------------------------------------------------------------------------- -r of the report scripts

@pytest.mark.parametrize("script, flags", [
    ("get-results.py", ("--los-model", "BOTH", "--hyper-opt", "HES", "--suspects", 5)),
    ("visualize-density.py", ()),
    ("implicit-augment.py", ()),
])
@pytest.mark.parametrize("run_folder", ["../../..", ".."])
def test_a_run_folder_outside_data_is_refused_by_every_script(tmp_path, script, flags, run_folder):
    outside = tmp_path / "outside"
    outside.mkdir()
    result = run_script(script, "--dataset", "DIGITS", "--data", tmp_path / "data", "-r", run_folder,
                        "--out" if script != "implicit-augment.py" else "--no-cuda",
                        *((outside,) if script != "implicit-augment.py" else ()), *flags)
    assert result.returncode == 2
    assert f"-r must be a folder name such as run0, got '{run_folder}'" in error_line(result, script)
    assert list(outside.iterdir()) == [] and not (tmp_path / "data").exists()
