"""Files written atomically and read back safely: a file is written to a temporary name in
its own folder and renamed (or hard-linked) into place, so a killed process never leaves a
truncated file under a final name; torch files are loaded without executing pickled code."""
import json
import os
import re
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, List

import torch


def _default_permissions(path: Path) -> None:
    """mkstemp creates files readable by their owner only; give them the permissions a
    plain open() would (0666 less the umask), so that results can be shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def stale_temporaries(path) -> List[Path]:
    """The temporary files of `path` (atomic_path's and create_once's names for it) that are
    there now: ones a killed process left, or ones a live process is writing. Removing
    them is safe only where nothing else writes `path`, e.g. under its configuration's lock."""
    path = Path(path)
    # mkstemp's random part: letters, digits and underscores, no dots
    name = re.compile(re.escape(_temporary_prefix(path)) + r"[A-Za-z0-9_]+\.tmp")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if name.fullmatch(p.name))


class SaveFailed(OSError):
    """A file could not be written: no space left, a read-only or unwritable folder. The
    message names the file and the reason; what was there before is kept as it was."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(error.errno, f"cannot write {path}: {error.strerror or error}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def _saving(path: Path) -> Iterator[None]:
    """OSError of writing `path` as SaveFailed, the one error every caller turns into its line."""
    try:
        yield
    except SaveFailed:
        raise
    except OSError as error:
        raise SaveFailed(path, error) from None


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renamed onto `path` only if the block succeeds.
    A failed write (its folder, the temporary file, the block's writes) raises SaveFailed."""
    path = Path(path)
    with _saving(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(handle)
        tmp = Path(tmp)
        try:
            _default_permissions(tmp)
            yield tmp
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


@contextmanager
def atomic_paths(paths) -> Iterator[List[Path]]:
    """atomic_path for several files that belong together (a report's CSV and figures):
    all are renamed into place if the block succeeds, none if it fails."""
    with ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path)) for path in paths]


def _torch_save(obj, path: Path) -> None:
    # Through a Python file, a failed write is an OSError with its errno (ENOSPC, EROFS);
    # torch.save(obj, path) says only RuntimeError("[enforce fail at inline_container.cc]").
    # torch may still wrap the file's OSError in a RuntimeError of its own: unwrap it.
    with open(path, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as error:
            cause = error.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None


def save_torch(obj, path) -> None:
    with atomic_path(path) as tmp:
        _torch_save(obj, tmp)


def save_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def create_once(obj, path) -> bool:
    """Writes `obj` to `path` only if no file is there yet, atomically across processes.

    The data is written to a temporary file and hard-linked to its final name:
    link() fails if the name exists, so when two processes race, exactly one
    file wins and both go on to load it. Returns True if this call created it.
    """
    path = Path(path)
    with _saving(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(handle)
        try:
            _default_permissions(Path(tmp))
            _torch_save(obj, Path(tmp))
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)


class UnreadableFile(RuntimeError):
    """A run file that is missing, truncated or not what it should be."""


def load_torch(path, map_location="cpu", mmap: bool = False):
    """Loads a checkpoint or split file without executing pickled code (weights_only).

    mmap=True maps the tensors instead of reading them: for a look at a checkpoint's
    small entries (acc, config) beside tables of up to ~10 GiB (ImageNet)."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # a truncated zip, a foreign pickle, ...
        raise UnreadableFile(f"{path} cannot be read ({type(error).__name__}: {error}); "
                             f"delete it and re-run the configuration that wrote it") from None
