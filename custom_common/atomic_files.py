"""Files written atomically and read back safely: a file is written to a temporary name in
its own folder and renamed (or hard-linked) into place, so a killed process never leaves a
truncated file under a final name; torch files are loaded without executing pickled code."""
import json
import os
import re
import tempfile
from contextlib import contextmanager
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


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renamed onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp)
    _default_permissions(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(handle)
    _default_permissions(Path(tmp))
    try:
        torch.save(obj, tmp)
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
