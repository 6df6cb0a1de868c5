"""Model and training-state files: safetensors + JSON, never pickle.

A run folder holds::

    config.json          {"format_version": 1, "model": model.config, **extra}
    model.safetensors    the state dict (e.g. also best.safetensors / last.safetensors)

Each ``.safetensors`` file also carries its model config in its header metadata, so a lone
weights file still loads when its ``config.json`` is missing. Every file is written to a
temporary name and renamed into place (:func:`drivenet_patch.storage.atomic.atomic_path`).

Generic tensor files (optimiser and training state) are :mod:`drivenet_patch.storage.state`'s; this module
adds the model on top.

Pickle-based files (``.pt``, ``.pth``, ``.pkl``, ``.ckpt``, ``.bin``) can execute code when
loaded; they are refused unless the caller opts in with ``allow_pickle=True``, and even then
only read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from drivenet_patch.models import SteeringModel, model_from_config
from drivenet_patch.models.zoo import is_zoo_ref, zoo_folder
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import folder_file, loads_json, read_json
from drivenet_patch.storage.atomic import write_json
from drivenet_patch.storage.state import (
    CONFIG_META_KEY,
    check_finite,
    read_state,
    write_state,
)

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# ---------------------------------------------------------------------------- models
def save_model(
    run_dir: str | Path, model: SteeringModel, extra: Mapping[str, Any] | None = None, name: str = "model"
) -> Path:
    """Write ``{run_dir}/{name}.safetensors`` and ``{run_dir}/config.json``, each atomically.

    Args:
        run_dir: run folder (created if needed).
        model: a model built by :func:`drivenet_patch.models.create_model` (has ``config``).
        extra: more JSON-serialisable top-level entries for ``config.json`` (e.g. training
            settings); may not use the keys ``model`` or ``format_version``.
        name: weights file stem, e.g. ``"best"`` or ``"last"`` to keep several in one run;
            ``config.json`` is shared and rewritten on every call.

    Returns:
        The path of the weights file.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"save_model: bad weights name {name!r}")
    if not getattr(model, "config", None) or "name" not in model.config:
        raise ValueError("save_model: model has no config; build it with drivenet_patch.models.create_model")
    extra = dict(extra or {})
    clash = {"model", "format_version"} & set(extra)
    if clash:
        raise ValueError(f"save_model: extra may not set {sorted(clash)}")
    run_dir = Path(run_dir)
    config_text = json.dumps(model.config, sort_keys=True)
    weights = write_state(run_dir / f"{name}.safetensors", model.state_dict(), {CONFIG_META_KEY: config_text})
    write_json(run_dir / CONFIG_NAME, {"format_version": FORMAT_VERSION, "model": model.config, **extra})
    return weights


def load_model(path: str | Path, device: str | torch.device = "cpu", allow_pickle: bool = False,
               allow_outside: bool = False) -> SteeringModel:
    """Load a steering model, in eval mode, from a run folder or a weights file.

    Args:
        path: a run folder (``model.safetensors`` + ``config.json``), ``"zoo:NAME"`` (a model of the
            package's zoo, :mod:`drivenet_patch.models.zoo`, its weights checked against the manifest's
            sha256), a ``.safetensors`` file
            (``config.json`` beside it; else the config embedded in the file), or, with
            ``allow_pickle=True``, a ``.pt``/``.pth``/``.pkl``/``.ckpt``/``.bin`` state dict
            (``config.json`` beside it).
        device: where to put the model.
        allow_pickle: permit pickle-based files (read with ``torch.load(weights_only=True)``).
        allow_outside: let the run folder's weights or ``config.json`` (the weights file's folder's
            ``config.json``) be a symbolic link that leads out of that folder (refused by default,
            as in a dataset folder).

    Raises:
        PDNError: missing file, a file of the folder that leads out of it, pickle file without
            ``allow_pickle``, unreadable or invalid ``config.json`` (unknown model, bad keys), weights
            that do not fit the model, or a zoo model that is unknown or whose weights differ from the
            manifest's sha256.
    """
    if is_zoo_ref(path):
        path = zoo_folder(path)
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        if not os.path.lexists(weights):
            raise PDNError(f"{weights}: missing (a run folder needs model.safetensors and {CONFIG_NAME})")
        folder_file(path, weights.name, "model weights", allow_outside)
    elif path.exists():
        weights = path
    else:
        raise PDNError(f"{path}: no such model file or run folder")
    suffix = weights.suffix.lower()
    config_path = weights.parent / CONFIG_NAME
    folder_file(weights.parent, CONFIG_NAME, "model config", allow_outside)  # read below only if inside
    if suffix == ".safetensors":
        state, header = read_state(weights, "cpu")
        if config_path.exists():  # read_json refuses a FIFO or folder there
            model_cfg, where = _read_config(config_path), str(config_path)
        elif CONFIG_META_KEY in header:
            where = f"{weights} (embedded config)"
            model_cfg = loads_json(header[CONFIG_META_KEY], where)
        else:
            raise PDNError(f"{config_path}: missing (needed to know the architecture of {weights.name})")
    elif suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise PDNError(
                f"refusing to load pickle file {weights}: pickle can run arbitrary code; "
                "convert it to safetensors (or pass allow_pickle=True if you trust it)"
            )
        if not config_path.is_file():
            raise PDNError(f"{config_path}: missing (needed to know the architecture of {weights.name})")
        model_cfg, where = _read_config(config_path), str(config_path)
        state = _torch_load_state(weights)
    else:
        raise PDNError(f"{weights}: unknown model file type {suffix or '(none)'!r}; expected .safetensors")
    model = model_from_config(model_cfg, where=where)
    _load_weights(model, state, weights)
    try:
        model = model.to(torch.device(device))
    except (RuntimeError, AssertionError) as exc:
        raise PDNError(f"device {str(device)!r}: {exc}") from None
    return model.eval()


# ---------------------------------------------------------------------------- internals
def _read_config(path: Path) -> dict[str, Any]:
    cfg = read_json(path, "model config")  # non-finite values are named by the registry check
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise PDNError(f"{path}: expected an object with a 'model' object")
    version = cfg.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
        raise PDNError(f"{path}: unsupported format_version {version!r} (this version reads {FORMAT_VERSION})")
    return cfg["model"]


def _torch_load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here (UnpicklingError, RuntimeError, ...)
        raise PDNError(f"{path}: cannot read as a weights-only torch file ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise PDNError(f"{path}: expected a state dict (names -> tensors)")
    return obj


def _load_weights(model: SteeringModel, state: Mapping[str, torch.Tensor], where: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]!r})")
        raise PDNError(f"{where}: weights do not fit model {model.name!r}: {', '.join(parts)}")
    for key, ref in own.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise PDNError(
                f"{where}: shape mismatch for {key!r}: file has {tuple(state[key].shape)}, "
                f"model {model.name!r} needs {tuple(ref.shape)}"
            )
        got = state[key].dtype
        if got != ref.dtype and not (got.is_floating_point and ref.dtype.is_floating_point):
            # loading would cast silently (int, bool, complex -> float): refuse instead
            raise PDNError(f"{where}: {key!r} is stored as {got}, model {model.name!r} needs {ref.dtype}")
    check_finite(where, state, own)  # after the cast to the model's dtype: 1e300 in float64 is inf in float32
    model.load_state_dict(state, strict=True)
