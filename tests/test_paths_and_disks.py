"""Paths and disks a user can get wrong: a --data that is a file, lies under one or is
read-only, a run folder outside --data, a disk that fills up during a run, and the
temporary files a killed save leaves behind. Each ends in one line and a non-zero exit,
with no traceback and no half-written file."""
import json
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from custom_common import atomic_files
from custom_runs import run_files

ROOT = Path(__file__).resolve().parents[1]
BASELINE = run_files.run_name("resnet18", "NONE", "NONE", "NONE", 1, 1.0, 0.0)


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
def test_run_table_refuses_a_data_path_that_is_or_lies_under_a_file(tmp_path, make_data, run_script):
    data, expected = make_data(tmp_path)
    result = run_script("run-table.py", "--dataset", "DIGITS", "--configs", "Baseline",
                        "--settings", "1-0.0", "--runs", 1, "--epochs", 1, "--no-cuda", "--data", data,
                        timeout=300)
    assert result.returncode == 2
    line = error_line(result, "run-table.py")
    assert expected in line and "--data" in line


def test_run_table_refuses_a_read_only_data_folder_and_writes_nothing(tmp_path, run_script):
    with mounted_tmpfs(tmp_path / "data", "size=1m,ro") as data:
        result = run_script("run-table.py", "--dataset", "DIGITS", "--configs", "Baseline",
                            "--settings", "1-0.0", "--runs", 1, "--epochs", 1, "--no-cuda",
                            "--data", data / "runs", timeout=300)
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
def test_a_run_folder_outside_data_is_refused_by_every_script(
        tmp_path, script, flags, run_folder, run_script):
    outside = tmp_path / "outside"
    outside.mkdir()
    result = run_script(script, "--dataset", "DIGITS", "--data", tmp_path / "data", "-r", run_folder,
                        "--out" if script != "implicit-augment.py" else "--no-cuda",
                        *((outside,) if script != "implicit-augment.py" else ()), *flags, timeout=300)
    assert result.returncode == 2
    assert f"-r must be a folder name such as run0, got '{run_folder}'" in error_line(result, script)
    assert list(outside.iterdir()) == [] and not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- temporary files

def test_a_start_removes_the_temporaries_a_killed_save_of_its_configuration_left(tmp_path, run_script):
    data = tmp_path / "data"
    folder = run_files.run_dir(data, "DIGITS", "run0")
    folder.mkdir(parents=True)
    mine = [folder / f".{run_files.last_checkpoint_path(folder, BASELINE).name}.k2x_9q0a.tmp",
            folder / f".{run_files.results_path(folder, BASELINE).name}.abcdefgh.tmp",
            folder / f".{run_files.best_checkpoint_path(folder, BASELINE).name}.01234567.tmp",
            folder / f".{run_files.best_valid_checkpoint_path(folder, BASELINE).name}.zz_1.tmp"]
    # another configuration's (whose name begins like this one's), the split's (shared by
    # every configuration of the run folder) and a user's file stay
    other = run_files.last_checkpoint_path(folder, BASELINE + "_text_geometry")
    kept = [folder / f".{other.name}.k2x_9q0a.tmp", folder / ".data_ir_1_sr_1.0_nr_0.0.pt.abcdefgh.tmp",
            folder / "notes.tmp"]
    for path in mine + kept:
        path.write_bytes(b"\0" * 1000)
    result = run_script("implicit-augment.py", "--dataset", "DIGITS", "--no-cuda", "--epochs", 1,
                        "--resume", "--data", data, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [path.exists() for path in mine] == [False] * 4
    assert [path.read_bytes() for path in kept] == [b"\0" * 1000] * 3
    assert "removed 4 temporary files" in result.stderr
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


# ----------------------------------------------------------------------------- a full or read-only disk

def test_a_save_on_a_read_only_folder_fails_naming_the_file_and_leaves_no_file(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "size=1m,ro") as folder:
        for save in (atomic_files.save_json, atomic_files.save_torch, atomic_files.create_once):
            with pytest.raises(atomic_files.SaveFailed, match=r"cannot write .*x\.pt: Read-only file system"):
                save({"a": 1}, folder / "sub" / "x.pt")
        assert list(folder.iterdir()) == []


def test_a_torch_save_on_a_full_disk_fails_naming_the_file_and_keeps_the_old_one(tmp_path):
    import torch
    with mounted_tmpfs(tmp_path / "small", "size=256k") as folder:
        atomic_files.save_torch({"epoch": 1}, folder / "last.pt")
        before = (folder / "last.pt").read_bytes()
        with pytest.raises(atomic_files.SaveFailed, match=r"cannot write .*last\.pt: No space left on device"):
            atomic_files.save_torch({"epoch": 2, "table": torch.zeros(100_000)}, folder / "last.pt")
        assert (folder / "last.pt").read_bytes() == before
        assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]  # no temporary left


def test_atomic_paths_writes_all_of_its_files_or_none(tmp_path):
    paths = [tmp_path / "a.csv", tmp_path / "a.png"]
    with pytest.raises(ValueError):
        with atomic_files.atomic_paths(paths) as (first, second):
            first.write_text("rows")
            raise ValueError("the figure failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_files.atomic_paths(paths) as (first, second):
        first.write_text("rows")
        second.write_text("image")
    assert [p.read_text() for p in paths] == ["rows", "image"] and len(list(tmp_path.iterdir())) == 2


SMALL_RUN = ("--dataset", "DIGITS", "--no-cuda", "--model", "wresnet10_1")


def test_a_run_on_a_disk_that_fills_up_stops_in_one_line_and_resumes_after_space_is_freed(
        tmp_path, run_script):
    name = run_files.run_name("wresnet10_1", "NONE", "NONE", "NONE", 1, 1.0, 0.0)
    # room for the first epoch's files (split, best_, bestvalid_, last_, results: about 1.6 MB) but not
    # for the second epoch's temporary checkpoint beside them
    with mounted_tmpfs(tmp_path / "disk", "size=1800k") as data:
        folder = run_files.run_dir(data, "DIGITS", "run0")
        full = run_script("implicit-augment.py", *SMALL_RUN, "--epochs", 3, "--data", data, timeout=300)
        assert full.returncode == 1
        line = error_line(full, "implicit-augment.py")
        assert "No space left on device" in line and str(folder) in line and "--resume" in line
        results = json.loads(run_files.results_path(folder, name).read_text())
        assert results["status"] == "interrupted" and results["epochs_done"] == 1
        assert atomic_files.load_torch(run_files.last_checkpoint_path(folder, name))["epoch"] == 0
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

        subprocess.run(["mount", "-o", "remount,size=8m", str(data)], check=True)  # space freed
        resumed = run_script("implicit-augment.py", *SMALL_RUN, "--epochs", 3, "--data", data,
                             "--resume", timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        results = json.loads(run_files.results_path(folder, name).read_text())
        assert results["status"] == "finished" and results["epochs_done"] == 3
    straight = run_script("implicit-augment.py", *SMALL_RUN, "--epochs", 3, "--data", tmp_path / "roomy",
                          timeout=300)
    assert straight.returncode == 0, straight.stderr
    expected = json.loads(run_files.results_path(run_files.run_dir(tmp_path / "roomy", "DIGITS", "run0"),
                                                 name).read_text())
    assert [h["test_acc"] for h in results["history"]] == [h["test_acc"] for h in expected["history"]]


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory, run_script):
    """A DIGITS run that learned loss weights and soft labels: what --suspects reads."""
    data = tmp_path_factory.mktemp("suspects") / "data"
    flags = (*SMALL_RUN, "-nr", 0.2, "--los-model", "BOTH", "--hyper-opt", "HES", "--hyper-start", 0)
    result = run_script("implicit-augment.py", *flags, "--epochs", 2, "--data", data, timeout=300)
    assert result.returncode == 0, result.stderr
    return data, tuple(flag for flag in flags if flag not in ("--hyper-start", 0))


def suspects_into(run_script, learned_run, out):
    data, flags = learned_run
    return run_script("get-results.py", *flags, "--data", data, "--suspects", 10, "--out", out, timeout=300)


def test_suspects_on_a_disk_too_small_for_all_of_them_write_none_in_one_line(
        learned_run, tmp_path, run_script):
    written = suspects_into(run_script, learned_run, tmp_path / "roomy")
    assert written.returncode == 0, written.stderr
    sizes = {p.suffix: p.stat().st_size for p in (tmp_path / "roomy").iterdir()}
    assert sorted(sizes) == [".csv", ".pdf", ".png"]
    # room for the CSV, not for the figures beside it
    with mounted_tmpfs(tmp_path / "small", f"size={sizes['.csv'] + 8192}") as out:
        full = suspects_into(run_script, learned_run, out)
        assert full.returncode == 1
        line = error_line(full, "get-results.py")
        assert "No space left on device" in line and str(out) in line and "--out" in line
        assert list(out.iterdir()) == []


def test_suspects_into_a_read_only_folder_fail_in_one_line(learned_run, tmp_path, run_script):
    with mounted_tmpfs(tmp_path / "ro", "size=1m,ro") as out:
        refused = suspects_into(run_script, learned_run, out / "suspects")
        assert refused.returncode == 1
        assert "Read-only file system" in error_line(refused, "get-results.py")
        assert list(out.iterdir()) == []
