"""Tensor files: named tensors + JSON metadata in one ``.safetensors`` file, written atomically.

The generic layer under :mod:`drivenet_patch.models.checkpoint` (model files) and the training state
(optimiser, scheduler, RNG): no model code here, so model builders may read weight files (e.g. a
backbone's initial weights) without an import circle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import loads_json, regular_file
from drivenet_patch.storage.atomic import atomic_path

__all__ = ["CONFIG_META_KEY", "META_KEY", "check_finite", "load_state", "pack_state", "read_header", "read_state",
           "read_state_meta", "save_state", "unpack_state", "write_state"]

#: Header key of :func:`save_state`'s JSON metadata.
META_KEY = "pdn_meta"
#: Header key of a model file's config (see :mod:`drivenet_patch.models.checkpoint`).
CONFIG_META_KEY = "pdn_model_config"


def save_state(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> Path:
    """Write named tensors and JSON metadata to one ``.safetensors`` file, atomically.

    Args:
        path: target file (``.safetensors``).
        tensors: name -> tensor (any device; stored as contiguous CPU tensors).
        meta: JSON-serialisable metadata, stored in the file header (read it back with
            :func:`read_state_meta`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    return write_state(path, tensors, {META_KEY: json.dumps(dict(meta or {}), sort_keys=True)})


def load_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read all tensors of a ``.safetensors`` file.

    Raises:
        PDNError: missing or unreadable file (naming it).
    """
    path = Path(path)
    tensors, _ = read_state(path, device)
    return tensors


def read_state_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata :func:`save_state` stored in ``path`` (``{}`` if it has none)."""
    path = Path(path)
    header = read_header(path)
    text = header.get(META_KEY)
    if text is None:
        return {}
    meta = loads_json(text, f"{path}: metadata {META_KEY!r}")
    if not isinstance(meta, dict):
        raise PDNError(f"{path}: metadata is not a JSON object")
    return meta


def pack_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (e.g. ``optimizer.state_dict()``) into flat tensors + a JSON skeleton.

    Dicts, lists, tuples, tensors, strings, numbers, booleans and ``None`` are supported;
    integer dict keys (optimizer parameter ids) survive the round trip.

    Returns:
        ``(tensors, skeleton)`` for :func:`save_state` (pass the skeleton inside ``meta``)
        and :func:`unpack_state`.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = obj
            return {"__tensor__": name}
        if isinstance(obj, Mapping):
            items = []
            for k, v in obj.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError(f"pack_state: unsupported dict key {k!r}")
                items.append([k, walk(v)])
            return {"__dict__": items}
        if isinstance(obj, (list, tuple)):
            return {"__list__" if isinstance(obj, list) else "__tuple__": [walk(v) for v in obj]}
        if obj is None or isinstance(obj, (str, bool, int, float)):
            return obj
        raise TypeError(f"pack_state: unsupported value of type {type(obj).__name__}")

    return tensors, walk(state)


def unpack_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`pack_state`.

    Raises:
        PDNError: if the skeleton names a tensor that is not there.
    """

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                name = obj["__tensor__"]
                if name not in tensors:
                    raise PDNError(f"state file is missing tensor {name!r}")
                return tensors[name]
            if "__dict__" in obj:
                return {k: walk(v) for k, v in obj["__dict__"]}
            if "__list__" in obj:
                return [walk(v) for v in obj["__list__"]]
            if "__tuple__" in obj:
                return tuple(walk(v) for v in obj["__tuple__"])
        return obj

    return walk(skeleton)


def check_finite(where: str | Path, state: Mapping[str, torch.Tensor],
                 reference: Mapping[str, torch.Tensor] | None = None) -> None:
    """Refuse floating tensors that hold NaN or an infinity, checked after the cast to ``reference``'s dtype.

    A float64 weight of 1e300 is finite, but infinite once a float32 model loads it: the check runs on what
    the model will hold, so such a file is refused instead of giving NaN outputs.

    Args:
        where: the file, for the message.
        state: name -> tensor, as read.
        reference: name -> tensor of the model that will load ``state`` (its dtypes); None: as stored.

    Raises:
        PDNError: naming the file and the first non-finite tensor.
    """
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        ref = None if reference is None else reference.get(key)
        dtype = ref.dtype if ref is not None and ref.dtype.is_floating_point else value.dtype
        if not bool(torch.isfinite(value.to(dtype)).all()):
            cast = "" if dtype == value.dtype else f" once cast from {value.dtype} to the model's {dtype}"
            raise PDNError(f"{where}: {key!r} holds NaN or infinite weights{cast}; retrain the model or re-save "
                           "finite weights")


def write_state(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` (as contiguous CPU tensors) with raw string header ``metadata``, atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={"format": "pt", **metadata})
    return path


def read_header(path: Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file's header (one-line errors naming the file)."""
    regular_file(path, "safetensors file")  # a FIFO would block the reader
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise PDNError(f"{path}: not a readable safetensors file ({exc})") from None


def read_state(path: Path, device: str | torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a ``.safetensors`` file on ``device`` and its header metadata."""
    regular_file(path, "safetensors file")  # a FIFO would block the reader
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            header = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise PDNError(f"{path}: not a readable safetensors file ({exc})") from None
    return tensors, header
