"""The one place that opens the files a user hands the toolkit: logs, models, JSON, HDF5.

Inputs come from somebody else: a dataset folder or run folder downloaded from the web may hold
a FIFO where a log should be, a symlink to ``~/.ssh/id_rsa``, JSON nested 100,000 levels deep or
an HDF5 file whose datasets are stored in (or link to) other files on the machine. Every loader
goes through the helpers here, which refuse such input with one :class:`PDNError` line naming the
file (and key), before anything blocks, allocates or reads outside the dataset folder.

The limits are named constants (documented in docs/hostile_inputs.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from drivenet_patch.safety.errors import PDNError

#: Largest JSON file (or JSON text in a file header) read, in bytes.
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Deepest nesting of arrays/objects accepted in any JSON input (ours never exceed ~8).
MAX_JSON_DEPTH = 64
#: Largest steering label accepted, road-wheel degrees (a road wheel cannot turn further).
MAX_STEERING_DEG = 90.0
#: Largest side of a camera image or model input, pixels.
MAX_IMAGE_SIDE = 8192
#: Largest side of a model input, pixels (PilotNet at 1024x1024 already has 94 M weights).
MAX_MODEL_INPUT_SIDE = 1024
#: Largest integer in a model config (layer widths, counts): the weights grow with it.
MAX_CONFIG_INT = 4096
#: Largest image file decoded, in bytes.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: Most frames one HDF5 camera file may declare.
MAX_H5_FRAMES = 10_000_000
#: Most elements one HDF5 log array may declare (10^8 float64 = 800 MB).
MAX_H5_ELEMENTS = 100_000_000
#: Most objects (groups, datasets, links) walked when vetting an HDF5 file.
MAX_H5_OBJECTS = 100_000

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` if it is (a symlink to) a regular file; a PDNError otherwise, without opening it.

    ``stat`` never blocks, unlike ``open`` on a FIFO or a device, so this is safe to call on
    anything a user names.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. ``"image"``).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise PDNError(f"{p}: missing ({what})") from None
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL
        raise PDNError(f"{p}: cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PDNError(f"{p}: is {_kind(st.st_mode)}, expected a regular {what}")
    return p


@contextlib.contextmanager
def open_regular(path: str | os.PathLike[str], what: str = "file") -> Iterator[BinaryIO]:
    """Open ``path`` for binary reading only if it is a regular file (no FIFO/device can block).

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor, so a file
    swapped for a FIFO between a check and the open cannot hang the process either.
    """
    p = regular_file(path, what)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise PDNError(f"{p}: cannot open {what} ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise PDNError(f"{p}: is {_kind(mode)}, expected a regular {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_bytes(path: str | os.PathLike[str], what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file, refusing one larger than ``max_bytes``."""
    with open_regular(path, what) as fh:
        if max_bytes is not None:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise PDNError(f"{path}: {size} bytes, more than the {max_bytes} a {what} may have")
        try:
            return fh.read() if max_bytes is None else fh.read(max_bytes + 1)[:max_bytes]
        except OSError as exc:
            raise PDNError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), computed without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in node)
    return depth


def _text_depth(text: str) -> int:
    """Upper bound of the bracket nesting of JSON ``text`` (brackets inside strings are skipped)."""
    depth = best = 0
    in_str = escape = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_JSON_DEPTH:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def loads_json(text: str | bytes, where: str, finite: bool = False) -> Any:
    """Parse JSON from an untrusted source: size and nesting bounded.

    Documents nested deeper than :data:`MAX_JSON_DEPTH` are refused before parsing, so a
    100,000-level document cannot raise ``RecursionError``.

    Args:
        text: the JSON text.
        where: the file (and key) for messages.
        finite: refuse ``NaN``/``Infinity`` (which Python's json accepts but JSON does not),
            naming the key that holds one.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PDNError(f"{where}: not valid JSON (not UTF-8 at byte {exc.start})") from None
    if len(text) > MAX_JSON_BYTES:
        raise PDNError(f"{where}: JSON of {len(text)} characters, more than the limit of {MAX_JSON_BYTES}")
    if _text_depth(text) > MAX_JSON_DEPTH:
        raise PDNError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        # With ``finite``, NaN/Infinity stop the parse at once (no walk over a large document); the key that
        # holds one is looked up only then.
        obj = json.loads(text, parse_constant=_refuse_constant if finite else None)
    except _NonFinite:
        _, bad = finite_json(json.loads(text))
        raise PDNError(f"{where}: {bad[0] if bad else 'a value'} must be a finite number (NaN and Infinity are not "
                       "JSON numbers)") from None
    except RecursionError:
        raise PDNError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PDNError(f"{where}: not valid JSON ({first[:120]})") from None
    return obj


class _NonFinite(Exception):
    """Raised by the JSON parser at a NaN or Infinity when only finite numbers are accepted."""


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def read_json(path: str | os.PathLike[str], what: str = "JSON file", finite: bool = False) -> Any:
    """Parse a JSON file with :func:`read_bytes` and :func:`loads_json` limits."""
    return loads_json(read_bytes(path, what, MAX_JSON_BYTES), str(path), finite)


def read_json_object(path: str | os.PathLike[str], what: str = "JSON file") -> dict[str, Any]:
    """:func:`read_json` that must give an object."""
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise PDNError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


# ---------------------------------------------------------------------------- strict JSON output
def finite_json(obj: Any) -> tuple[Any, list[str]]:
    """``obj`` with every non-finite float replaced by ``None``, and the keys where that happened.

    Returns:
        ``(clean, paths)``; ``paths`` names each replaced value as ``a.b[3]``.
    """
    replaced: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if type(node).__module__ == "numpy" and hasattr(node, "tolist") and getattr(node, "ndim", 0) > 0:
            node = node.tolist()  # an array: its elements are checked as a list
        if isinstance(node, float) or (type(node).__module__ == "numpy" and getattr(node, "shape", None) == ()
                                       and getattr(node, "dtype", None) is not None and node.dtype.kind == "f"):
            if not math.isfinite(float(node)):
                replaced.append(where or "(value)")
                return None
            return node
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    return walk(obj, ""), replaced


def dumps_strict(obj: Any, **kwargs: Any) -> tuple[str, list[str]]:
    """``json.dumps`` that never writes ``NaN``/``Infinity``: they become ``null``.

    Every JSON the toolkit writes is strict JSON (RFC 8259, which has no NaN or Infinity); a ``null``
    number means "not measured, or not a finite number" (an unbounded interval's half-width, say).

    Returns:
        ``(text, replaced)`` where ``replaced`` lists the keys whose value was not finite.
    """
    clean, replaced = finite_json(obj)
    return json.dumps(clean, allow_nan=False, **kwargs), replaced


# ---------------------------------------------------------------------------- devices
def check_device(device: Any, option: str = "device") -> str:
    """``device`` as a torch device string that exists on this machine; a one-line PDNError otherwise.

    Accepts ``cpu``, ``cuda``/``cuda:N`` (N below the number of GPUs) and ``mps`` where present.
    """
    import torch

    text = str(device)
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise PDNError(f"{option} {text[:60]!r}: not a torch device (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cpu":
        return str(dev)
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise PDNError(f"{option} {text!r}: no CUDA GPU is available here")
        if dev.index is not None and dev.index >= n:
            raise PDNError(f"{option} {text!r}: this machine has {n} CUDA GPU(s)")
        return str(dev)
    if dev.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return str(dev)
    raise PDNError(f"{option} {text!r}: device type {dev.type!r} is not available here (use cpu or cuda)")


# ---------------------------------------------------------------------------- containment
def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True when ``path`` resolves (symlinks followed) to ``root`` or below it."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


#: What to do about a file that leads out of its folder, where the caller may permit it.
OUTSIDE_HINT = "pass allow_outside=True to permit it"
#: What to do about it where nothing permits it.
CONTAINED_HINT = "a file of a named folder may not lead out of it; copy the file in instead"
#: Most entries walked when checking that nothing in a named folder leads out of it.
MAX_FOLDER_ENTRIES = 100_000


def _outside(p: str | os.PathLike[str], root: str | os.PathLike[str], hint: str | None) -> PDNError:
    return PDNError(f"{p}: resolves to {os.path.realpath(p)}, outside the folder {root} ({hint or CONTAINED_HINT})")


def contained_file(path: str | os.PathLike[str], root: str | os.PathLike[str], allow_outside: bool = False,
                   what: str = "file", hint: str | None = OUTSIDE_HINT) -> Path:
    """:func:`regular_file` that must also resolve inside ``root`` unless ``allow_outside``.

    Args:
        hint: what to do, for the message (``None``: nothing permits it, copy the file in).
    """
    p = regular_file(path, what)
    if not allow_outside and not inside(p, root):
        raise _outside(p, root, hint)
    return p


def folder_file(root: str | os.PathLike[str], name: str, what: str = "file", allow_outside: bool = False,
                hint: str | None = None) -> Path | None:
    """``root/name`` if it exists there and resolves inside ``root`` (a regular file); None if it is absent.

    Every folder a user names (run, attack, sweep, certify, results folders) is read like a dataset
    folder: a symbolic link in it may not lead out of it, unless ``allow_outside``.

    Raises:
        PDNError: the entry exists but is not a regular file, or leads out of ``root``.
    """
    p = Path(root) / name
    if not os.path.lexists(p):
        return None
    if not allow_outside and not inside(p, root):  # before stat: a link out is refused even if it dangles
        raise _outside(p, root, hint)
    return regular_file(p, what)


def check_folder_contained(root: str | os.PathLike[str], allow_outside: bool = False, hint: str | None = None,
                           max_entries: int = MAX_FOLDER_ENTRIES) -> None:
    """Refuse a folder in which a symbolic link (at any depth) leads out of it, before anything is read.

    For input folders whose files many readers open (a report's inputs): checked once, as a whole.
    Links to folders are not followed (a link that stays inside is walked where its target lies);
    the walk refuses a folder of more than ``max_entries`` entries.

    Raises:
        PDNError: naming the first link that resolves outside ``root``.
    """
    if allow_outside:
        return
    root_real = os.path.realpath(root)
    stack, seen = [os.fspath(root)], 0
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            raise PDNError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
        for entry in entries:
            seen += 1
            if seen > max_entries:
                raise PDNError(f"{root}: more than {max_entries} entries; too large to read as an input folder")
            if entry.is_symlink():
                if not inside(entry.path, root_real):
                    raise _outside(entry.path, root, hint)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)


# ---------------------------------------------------------------------------- outputs
#: File names that belong to a dataset or a model: never written over by a command that did not make them.
PROTECTED_SUFFIXES = (".safetensors", ".npy", ".h5", ".hdf5", ".pt", ".pth", ".ckpt")
PROTECTED_NAMES = ("meta.json", "labels.csv", "config.json", "train_state.safetensors", "driving_log.csv",
                   "data.txt", "interpolated.csv")


def check_input_path(path: str | os.PathLike[str], option: str) -> None:
    """Refuse a path argument that exists but is neither a regular file nor a folder (FIFO, socket, device).

    Reading such a path blocks forever or never ends; a missing path is left to the command,
    which knows what it expected.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise PDNError(f"{option} {path}: is {_kind(st.st_mode)}, expected a regular file or a folder")


def check_output(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], option: str = "out",
                 is_file: bool = True, own_names: tuple[str, ...] = (),
                 may_equal: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Refuse an output that would overwrite an input of the command, or a model or dataset file.

    Args:
        out: the file or folder the command is about to write.
        inputs: the files and folders the command reads (run folders, dataset folders, logs).
        option: the option that named ``out``, for the message.
        is_file: ``out`` is a file (else a folder the command writes its files into).
        own_names: file names this command itself writes inside an input folder (e.g. a run's
            ``predictions.csv``): rewriting those is allowed.
        may_equal: inputs that ``out`` may be (a folder the command adds its results to).

    Raises:
        PDNError: ``out`` is an input (or, for a file, lies inside an input folder where it would
            replace a file the command did not write, or is an existing model or dataset file).
    """
    p = Path(out)
    real = os.path.realpath(p)
    name = p.name.lower()
    protected = name in PROTECTED_NAMES or name.endswith(PROTECTED_SUFFIXES)
    allowed = {os.path.realpath(m) for m in may_equal}
    for item in inputs:
        item_real = os.path.realpath(item)
        if real == item_real and real not in allowed:
            raise PDNError(f"{option} {p}: is an input of this command ({item}); choose another path")
        if (is_file and os.path.isdir(item_real) and inside(p, item_real) and name not in own_names
                and (os.path.lexists(p) or protected)):
            raise PDNError(f"{option} {p}: would overwrite a file of the input folder {item}; choose another file")
    if is_file and protected and os.path.lexists(p):
        raise PDNError(f"{option} {p}: is a model or dataset file; refusing to overwrite it")
    return p


# ---------------------------------------------------------------------------- HDF5
def open_h5(path: str | os.PathLike[str], allow_outside: bool = False) -> Any:
    """Open an HDF5 file for reading after refusing what could read other files or exhaust memory.

    Refused unless ``allow_outside``: external links (to another file), datasets with external
    storage (raw data kept in other files), virtual datasets (mapping other files), and any
    user-defined link. Soft links stay inside the file (and cannot reach another one, as no
    external link is allowed). The walk is bounded by :data:`MAX_H5_OBJECTS`.

    Returns:
        An open ``h5py.File`` (caller closes it).
    """
    try:
        import h5py
    except ImportError:
        raise PDNError("reading HDF5 needs h5py, which is not installed: pip install 'patchdrivenet[h5]'") from None
    p = regular_file(path, "HDF5 file")
    try:
        f = h5py.File(p, "r")
    except (OSError, ValueError) as exc:
        raise PDNError(f"{p}: cannot open HDF5 file, truncated or not HDF5 ({str(exc)[:120]})") from None
    try:
        if not allow_outside:
            _vet_h5(h5py, f, p)
    except BaseException:
        f.close()
        raise
    return f


def _vet_h5(h5py: Any, f: Any, p: Path) -> None:
    hint = "(pass allow_outside=True to permit it)"
    seen: set[Any] = set()
    stack: list[tuple[Any, str]] = [(f, "/")]
    count = 0
    while stack:
        group, gname = stack.pop()
        try:
            names = list(group.keys())
        except (OSError, RuntimeError, KeyError) as exc:
            raise PDNError(f"{p}: cannot list group {gname} ({str(exc)[:100]})") from None
        for name in names:
            count += 1
            if count > MAX_H5_OBJECTS:
                raise PDNError(f"{p}: more than {MAX_H5_OBJECTS} HDF5 objects")
            full = gname.rstrip("/") + "/" + name
            try:
                link = group.get(name, getlink=True)
            except (OSError, RuntimeError, KeyError, TypeError) as exc:
                raise PDNError(f"{p}: {full}: unreadable link ({str(exc)[:100]})") from None
            if isinstance(link, h5py.ExternalLink):
                raise PDNError(f"{p}: {full} is an external link to {link.filename}:{link.path} {hint}")
            if isinstance(link, h5py.SoftLink):
                continue  # resolves inside this file; its target is vetted where it lives
            if not isinstance(link, h5py.HardLink):
                raise PDNError(f"{p}: {full} is a user-defined link, refused")
            try:
                obj = group[name]
            except (OSError, RuntimeError, KeyError) as exc:
                raise PDNError(f"{p}: {full}: unreadable object ({str(exc)[:100]})") from None
            addr = h5py.h5o.get_info(obj.id).addr  # hard links can make cycles
            if addr in seen:
                continue
            seen.add(addr)
            if isinstance(obj, h5py.Group):
                stack.append((obj, full))
            elif isinstance(obj, h5py.Dataset):
                if obj.external:
                    raise PDNError(f"{p}: dataset {full} keeps its data in external file(s) "
                                   f"{obj.external[0][0]!r} {hint}")
                if obj.is_virtual:
                    raise PDNError(f"{p}: dataset {full} is a virtual dataset (maps other files) {hint}")


def h5_elements(shape: tuple[int, ...]) -> int:
    """Number of elements of an HDF5 shape, as an exact Python integer (no overflow)."""
    n = 1
    for s in shape:
        n *= int(s)
    return n


# ---------------------------------------------------------------------------- images
#: Most pixels one image file may declare (a side of at most MAX_IMAGE_SIDE each way).
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
#: The formats whose header :func:`image_size` reads (every other one is refused before decoding).
IMAGE_FORMATS = "PNG, JPEG, BMP, GIF, WebP, TIFF, PNM and Sun raster"


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first start-of-frame segment of a JPEG stream."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in (0x01, *range(0xD0, 0xDA)):  # no length field
            continue
        if i + 2 > n:
            return None
        length = int.from_bytes(data[i:i + 2], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 7 <= n:
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 3:i + 5], "big")
        if length < 2:
            return None
        i += length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first image file directory of a TIFF."""
    order = "little" if data[:2] == b"II" else "big"
    if len(data) < 8:
        return None
    ifd = int.from_bytes(data[4:8], order)
    if ifd + 2 > len(data):
        return None
    count = int.from_bytes(data[ifd:ifd + 2], order)
    size: dict[int, int] = {}
    for k in range(min(count, 4096)):
        e = ifd + 2 + 12 * k
        if e + 12 > len(data):
            break
        tag, kind = int.from_bytes(data[e:e + 2], order), int.from_bytes(data[e + 2:e + 4], order)
        if tag in (256, 257):
            size[tag] = int.from_bytes(data[e + 8:e + 10] if kind == 3 else data[e + 8:e + 12], order)
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PBM/PGM/PPM/PFM header (``P6 640 480 255``, comments skipped)."""
    tokens: list[bytes] = []
    for line in data[2:4096].split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            break
    try:
        return int(tokens[0]), int(tokens[1])
    except (IndexError, ValueError):
        return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as an image file's header declares it, read without decoding; None when the
    format is not one of :data:`IMAGE_FORMATS` or its header is cut short."""
    head = data[:32]
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if head.startswith(b"BM") and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # OS/2 core header: 16-bit sizes
            return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
        return (abs(int.from_bytes(data[18:22], "little", signed=True)),
                abs(int.from_bytes(data[22:26], "little", signed=True)))
    if head[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(data) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8 ":
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456Ff" and head[2:3].isspace():
        return _pnm_size(data)
    if head[:4] == b"\x59\xa6\x6a\x95" and len(data) >= 12:  # Sun raster
        return int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")
    return None


def check_image_header(data: bytes, where: str) -> tuple[int, int]:
    """The ``(width, height)`` an image file declares, refused past :data:`MAX_IMAGE_SIDE` a side before
    anything is decoded (a few kilobytes of PNG can declare 16000 x 16000 pixels, a gigabyte decoded)."""
    size = image_size(data)
    if size is None:
        raise PDNError(f"{where}: cannot decode image: corrupt or not an image (no size in its header)")
    w, h = size
    if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE):
        raise PDNError(f"{where}: declares {w} x {h} pixels; the limit is {MAX_IMAGE_SIDE} a side (and at least 1): "
                       "resize the image")
    return w, h


def read_image(path: str | os.PathLike[str], what: str = "image", flags: int | None = None) -> Any:
    """Decode an image file a user names, as ``cv2.imdecode`` with ``flags`` (default: colour, BGR) does.

    Regular files only, at most :data:`MAX_IMAGE_BYTES`, and its header's declared size at most
    :data:`MAX_IMAGE_SIDE` a side, checked before decoding (:func:`check_image_header`).

    Raises:
        PDNError: one line naming the file: missing, not a regular file, too large, too many pixels
            declared, or not decodable.
    """
    import cv2
    import numpy as np

    data = read_bytes(path, what, MAX_IMAGE_BYTES)
    check_image_header(data, f"{path}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if flags is None else flags)
    if img is None or img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise PDNError(f"{path}: cannot decode the {what}: the file is corrupt or not an image")
    return img
