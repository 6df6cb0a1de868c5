"""Atomic writes: a kill never leaves a half-written file behind.

Every writer goes to a temporary file in the destination folder, flushes and fsyncs it, then
``os.replace``s it over the target (atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivenet_patch.errors import PDNError

_UMASK = os.umask(0)
os.umask(_UMASK)
# mkstemp's names: ".<target name>." + 8 random characters + ".tmp" + <target suffix>
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path``.

    The temporary name keeps the target's suffix so that writers which pick a format by
    extension (matplotlib, OpenCV, numpy) behave as they would on the real name. A kill
    part-way leaves at most a ``.<name>.*.tmp<suffix>`` file, never a half-written ``path``
    (:func:`remove_stale_temps` clears those).

    Raises:
        PDNError: the folder or file cannot be created or replaced (no permission, no space, a
            file where a folder should be, a folder where the file should be), naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as exc:  # the writer's own I/O on the temporary file (e.g. disk full)
            if exc.filename not in (None, tmp_name, str(tmp)):
                raise
            raise _write_error(target, exc) from None
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the permissions a plain open() would
            os.replace(tmp, target)
        except OSError as exc:
            raise _write_error(target, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_error(target: Path, exc: OSError) -> PDNError:
    return PDNError(f"{target}: cannot write ({exc.strerror or exc})")


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_path` writer left in ``folder``.

    Only names of the form ``.<name>.<random>.tmp<suffix>`` are touched. Call it where this
    process is the folder's only writer (e.g. a run folder being resumed).

    Returns:
        The paths removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp*"):
        if p.is_file() and _TEMP_RE.match(p.name):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_csv(path: str | os.PathLike[str], frame: Any, **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (``index=False`` unless given)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a ``.npy`` file atomically (readable later with ``mmap_mode='r'``)."""
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
