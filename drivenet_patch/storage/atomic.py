"""Atomic writes: a kill never leaves a half-written file behind.

Every writer goes to a temporary file in the destination folder, flushes and fsyncs it, then
``os.replace``s it over the target (atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import dumps_strict

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


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file :func:`atomic_path` makes (left behind only by a kill)."""
    return bool(_TEMP_RE.match(name))


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


def write_json(path: str | os.PathLike[str], obj: Any) -> list[str]:
    """Write ``obj`` as indented, strict JSON atomically: a NaN or infinite number is written as ``null``
    (JSON has neither; see :func:`drivenet_patch.safety.inputs.dumps_strict`).

    Returns:
        The keys whose value was not finite and was written as ``null``.
    """
    text, replaced = dumps_strict(obj, indent=2, sort_keys=True, default=_json_default)
    write_text(path, text + "\n")
    return replaced


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


# ---------------------------------------------------------------------------- whole folders
_STAGING = ".staging-"
_OLD = ".old-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem or kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def clean_stale_folders(out: str | os.PathLike[str]) -> list[Path]:
    """Recover from a :func:`replace_folder` writer that was killed: returns the paths removed.

    A staging folder whose writer process is gone is deleted (it may hold a 100 MB half-written
    ``images.npy``); an old copy left between the two renames of the non-atomic fallback is put
    back when ``out`` is missing, deleted otherwise.
    """
    import shutil

    out = Path(out)
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for p in sorted(out.parent.glob(f".{glob_escape(out.name)}.*")):
        rest = p.name[len(out.name) + 1:]
        if not p.is_dir() or p.is_symlink() or not rest.startswith((_STAGING, _OLD)):
            continue
        pid_text = rest.split("-")[1] if rest.count("-") >= 2 else ""
        if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue  # another writer is still at work
        if rest.startswith(_OLD) and not out.exists():
            os.rename(p, out)
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob wildcards escaped."""
    import glob

    return glob.escape(name)


@contextlib.contextmanager
def replace_folder(out: str | os.PathLike[str], owned: tuple[str, ...] | Callable[[str], bool],
                   what: str = "output") -> Iterator[Path]:
    """Build a whole output folder beside ``out`` and swap it in at the end; a kill loses nothing.

    Yields a fresh staging folder ``.<out name>.staging-<pid>-<random>`` next to ``out``. When the
    block ends normally, the staging folder replaces ``out`` in one atomic exchange
    (``renameat2``; two renames where the filesystem cannot exchange) and the old content is
    deleted. On an exception, or a kill at any moment, ``out`` is left exactly as it was; the
    staging folder is removed then, or by the next call (:func:`clean_stale_folders`).

    Args:
        out: the folder to (re)create.
        owned: file names a previous run of the same command writes there (or a test of a
            name); ``out`` holding anything else is refused rather than deleted.
        what: what the folder is, for messages (e.g. ``"a synth dataset"``).

    Raises:
        PDNError: ``out`` is a file, or a folder holding files this command did not write.
    """
    import shutil

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PDNError(f"out: {out} is a file, not a folder")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise PDNError(f"{out}: cannot write (Not a directory: {above} is a file)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_folders(out)
        if out.is_dir():
            remove_stale_temps(out)
            mine = owned if callable(owned) else (lambda name: name in owned)
            foreign = sorted(p.name for p in out.iterdir() if not (mine(p.name) and p.is_file()))
            if foreign:
                raise PDNError(f"out: {out} holds {foreign[0]!r}, which is not part of {what}; "
                               "choose an empty or new folder (nothing was changed)")
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{_STAGING}{os.getpid()}-", dir=out.parent))
        os.chmod(staging, 0o777 & ~_UMASK)
    except OSError as exc:
        raise _write_error(out, exc) from None
    try:
        yield staging
        _fsync_dir(staging)
        if not out.exists():
            os.rename(staging, out)
        elif _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # now the old content
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}{_OLD}{os.getpid()}-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
            os.rename(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(out.parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_error(out, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
