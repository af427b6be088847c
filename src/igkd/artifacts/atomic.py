"""Atomic file writes: write to a temporary file, fsync, rename; never leave half-written output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from igkd.errors import IgkdError


def ensure_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) or fail with one line naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IgkdError(f"cannot create output directory '{path}': {exc.strerror}; choose a writable output directory") from None
    return path


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block finishes without error."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise IgkdError(f"cannot write to '{path.parent}': {exc.strerror}; choose a writable output directory") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _permissions_for(path))
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise IgkdError(f"cannot write '{path}': {exc.strerror}; free disk space or choose another output directory") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _process_umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def _permissions_for(path: Path) -> int:
    """The mode a replaced file keeps, or what a plain ``open`` would give a new one (0o666 less the umask).

    ``mkstemp`` creates its file readable by the owner alone; without this every output would end up 0o600.
    """
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable where the OS allows it (POSIX; not Windows or some network filesystems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # the file itself is complete and fsynced; only the rename's durability is left to the OS
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)


def atomic_write_with(path: str | Path, writer: Callable[[BinaryIO], None]) -> None:
    """Call ``writer(handle)`` on a temporary file that replaces ``path`` on success."""
    with atomic_open(path) as handle:
        writer(handle)


def replace_directory(staging: Path, target: Path) -> None:
    """Put the finished folder ``staging`` where ``target`` is, so that nothing of the old ``target`` lingers (a file the
    new one does not write included); ``target`` is missing only between two renames."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``, or {} when it is absent or unreadable (atomic writes never leave a partial one)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
