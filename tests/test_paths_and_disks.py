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


# ----------------------------------------------------------------------------- temporary files

def test_a_start_removes_the_temporaries_a_killed_save_of_its_configuration_left(tmp_path):
    data = tmp_path / "data"
    folder = run_files.run_dir(data, "DIGITS", "run0")
    folder.mkdir(parents=True)
    mine = [folder / f".{run_files.last_checkpoint_path(folder, BASELINE).name}.k2x_9q0a.tmp",
            folder / f".{run_files.results_path(folder, BASELINE).name}.abcdefgh.tmp",
            folder / f".{run_files.best_checkpoint_path(folder, BASELINE).name}.01234567.tmp"]
    # another configuration's (whose name begins like this one's), the split's (shared by
    # every configuration of the run folder) and a user's file stay
    other = run_files.last_checkpoint_path(folder, BASELINE + "_text_geometry")
    kept = [folder / f".{other.name}.k2x_9q0a.tmp", folder / ".data_ir_1_sr_1.0_nr_0.0.pt.abcdefgh.tmp",
            folder / "notes.tmp"]
    for path in mine + kept:
        path.write_bytes(b"\0" * 1000)
    result = run_script("implicit-augment.py", "--dataset", "DIGITS", "--no-cuda", "--epochs", 1,
                        "--resume", "--data", data)
    assert result.returncode == 0, result.stderr
    assert [path.exists() for path in mine] == [False] * 3
    assert [path.read_bytes() for path in kept] == [b"\0" * 1000] * 3
    assert "removed 3 temporary files" in result.stderr
    assert run_files.results_path(folder, BASELINE).is_file()


def test_stale_temporaries_are_those_of_atomic_path_for_that_file_alone(tmp_path):
    target = tmp_path / "last_x.pt"
    with atomic_files.atomic_path(target) as tmp:
        assert atomic_files.stale_temporaries(target) == [tmp]  # the name atomic_path gives
        tmp.write_text("partial")
    assert atomic_files.stale_temporaries(target) == [] and target.read_text() == "partial"
    (tmp_path / ".last_x.pt.tmp").write_text("")  # no random part: not atomic_path's
    (tmp_path / ".last_x.pt.ab.cd.tmp").write_text("")
    (tmp_path / ".last_x.pt_more.ab12.tmp").write_text("")
    assert atomic_files.stale_temporaries(target) == []
