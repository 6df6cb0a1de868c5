"""A small decorator registry: ``create_model("pilotnet", **cfg)``.

A builder is a function with keyword-only arguments and defaults; those arguments *are* the
model's config keys. :func:`create_model` rejects unknown names and keys, validates common
values, builds the model with a seeded initialisation, and stores the complete config on it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from drivenet_patch.models.base import SteeringModel
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_CONFIG_INT, MAX_MODEL_INPUT_SIDE, finite_json, loads_json
from drivenet_patch.safety.values import parse_hw

Builder = Callable[..., SteeringModel]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    defaults: dict[str, Any]
    init_keys: tuple[str, ...]
    doc: str


_REGISTRY: dict[str, _Entry] = {}
_BUILTIN = (
    "drivenet_patch.models.pilotnet",
    "drivenet_patch.models.resnet",
    "drivenet_patch.models.patchdrive",
)
#: Packages outside the core register their models through this entry-point group (pyproject.toml:
#: ``[project.entry-points."drivenet_patch.models"]``, e.g. ``patchvote = "defenses.patchvote"``), so the
#: core never names them; each entry's module registers its models when imported.
ENTRY_POINT_GROUP = "drivenet_patch.models"
_loaded = False


def _ensure_builtin() -> None:
    """Import the built-in model modules and the plugins of ``ENTRY_POINT_GROUP`` (they register themselves),
    however the registry was reached; once per process."""
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN:
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])
    _loaded = True


def register_model(name: str, *, init_keys: tuple[str, ...] = ()) -> Callable[[B], B]:
    """Register a builder under ``name``.

    Args:
        name: registry name (lower case, e.g. ``"pilotnet"``).
        init_keys: config keys that only choose the *initial* weights (e.g. ``"init"``, a
            backbone file). They are kept in the saved config as provenance but ignored when a
            model is rebuilt from a checkpoint, whose weights replace them anyway.

    Returns:
        A decorator that returns the builder unchanged.
    """

    def deco(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(builder).parameters
        defaults = {}
        for key, p in params.items():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
                raise TypeError(f"builder {name!r}: every argument must be keyword-only with a default ({key})")
            defaults[key] = p.default
        for key in init_keys:
            if key not in defaults:
                raise TypeError(f"builder {name!r}: init key {key!r} is not an argument")
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = _Entry(builder, defaults, tuple(init_keys), doc.splitlines()[0] if doc else "")
        return builder

    return deco


def list_models() -> list[str]:
    """Registered model names, sorted."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict[str, Any]:
    """The config keys of model ``name`` with their default values."""
    return dict(_entry(name).defaults)


def parse_model_args(name: str, items: Sequence[str], where: str = "model_args") -> dict[str, Any]:
    """``["key=value", ...]`` -> config keys of model ``name`` (``pdn train --model-arg``).

    A value that looks like JSON (a number, ``true``/``false``/``null``, a quoted string, a list or an
    object) is read with the bounded JSON reader of files (:func:`drivenet_patch.safety.inputs.loads_json`:
    size and nesting bounded, NaN and Infinity refused anywhere inside it); any other text is taken as a
    string (``96x192``). Each key must be one of the model's config keys and each value must have its
    default's type (a bool for a bool, an integer for an int, a number for a float, a list of the same
    length for a tuple, any list for an empty tuple such as ``abstain``); the model's own range checks
    run when it is built.

    Raises:
        PDNError: one line naming the argument, for a malformed item, an unknown or repeated
            key, or a value of the wrong type.
    """
    defaults = model_defaults(name)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise PDNError(f"{where} {item!r}: expected KEY=VALUE")
        if key not in defaults:
            raise PDNError(f"{where} {item!r}: model {name!r} has no config key {key!r}; "
                           f"valid keys: {', '.join(sorted(defaults))}")
        if key in out:
            raise PDNError(f"{where} {item!r}: {key} is given twice")
        value = _model_arg_value(text, f"{where} {key}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif isinstance(default, (tuple, list)):  # an empty default (abstain) takes a list of any length
            ok = (isinstance(value, list) and (len(value) == len(default) or not default)) or key == "input_size"
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            kind = (type(default).__name__ if not isinstance(default, (tuple, list))
                    else f"list of {len(default)}" if default else "list")
            raise PDNError(f"{where} {item!r}: {key} of model {name!r} must be a {kind} "
                           f"(default {_jsonable(default)!r}), got {text!r}")
        out[key] = value
    return out


#: Text that is read as JSON: a number, a JSON constant (NaN and Infinity too, to be refused), or a
#: string, list or object by its first character.
_JSON_LIKE = re.compile(r"-?(?:\d[\d.]*|\.\d)[\d.eE+-]*|true|false|null|-?NaN|-?Infinity|[\[{\"].*", re.DOTALL)


def _model_arg_value(text: str, where: str) -> Any:
    """The value of one ``KEY=VALUE``: JSON through the bounded reader when it looks like JSON, else the text."""
    stripped = text.strip()
    if not _JSON_LIKE.fullmatch(stripped):
        return text
    value = loads_json(stripped, where, finite=True)  # deep, huge, malformed or NaN: one line
    _, bad = finite_json(value)  # and numbers past float's range (1e999 reads as inf)
    if bad:
        raise PDNError(f"{where}: {bad[0]} must be a finite number, got {stripped[:40]!r}")
    return value


def _entry(name: str) -> _Entry:
    _ensure_builtin()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise PDNError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, *, generator: torch.Generator | None = None, **cfg: Any) -> SteeringModel:
    """Build a registered steering model.

    Weights are initialised with each layer's usual PyTorch/torchvision scheme from one seed,
    inside ``torch.random.fork_rng``. With a ``generator`` the seed is drawn from it: the
    weights depend only on the generator and the global RNG is left untouched. Without one,
    the seed is one draw from the global torch RNG, so ``torch.manual_seed(s)`` before the call
    makes it reproducible, as for any ``nn.Module``.

    Args:
        name: one of :func:`list_models`.
        generator: source of the initialisation seed (recommended).
        **cfg: config keys of that model (see :func:`model_defaults`); ``input_size`` is
            ``(H, W)`` (a list or ``"HxW"`` string also works).

    Returns:
        The model on the CPU in train mode, with ``model.config == {"name": name, **all cfg}``.

    Raises:
        PDNError: unknown model name, unknown config key, or an invalid value.
    """
    entry = _entry(name)
    unknown = sorted(set(cfg) - set(entry.defaults))
    if unknown:
        raise PDNError(
            f"model {name!r}: unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(entry.defaults))}"
        )
    merged = {**entry.defaults, **cfg}
    if "input_size" in merged:
        merged["input_size"] = parse_input_size(merged["input_size"], f"model {name!r}: input_size")
    for key in ("dropout", "out_scale"):
        if key in merged:
            merged[key] = _float(merged[key], f"model {name!r}: {key}")
    if "dropout" in merged and not 0.0 <= merged["dropout"] < 1.0:
        raise PDNError(f"model {name!r}: dropout must lie in [0, 1), got {merged['dropout']}")
    if "out_scale" in merged and not merged["out_scale"] > 0.0:
        raise PDNError(f"model {name!r}: out_scale must be > 0, got {merged['out_scale']}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.builder(**merged)
    config = {"name": name, **{k: _jsonable(v) for k, v in merged.items()}}
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise PDNError(f"model {name!r}: config is not JSON-serialisable ({exc})") from None
    model.config = config
    return model


def model_from_config(config: Mapping[str, Any], where: str = "config") -> SteeringModel:
    """Rebuild the architecture described by a saved ``model.config`` (weights: fresh init).

    Keys registered as ``init_keys`` are reset to their defaults, so a checkpoint never
    re-reads its original initialisation files; the recorded values stay in ``model.config``.

    Args:
        config: ``{"name": ..., **cfg}``.
        where: what to call the config in error messages (e.g. the ``config.json`` path).

    Raises:
        PDNError: not a dict, no/unknown name, unknown keys or invalid values, naming ``where``.
    """
    if not isinstance(config, Mapping) or "name" not in config:
        raise PDNError(f"{where}: model config must be an object with a 'name'")
    cfg = dict(config)
    name = cfg.pop("name")
    try:
        entry = _entry(name)
        recorded = {k: cfg[k] for k in entry.init_keys if k in cfg}
        for key in recorded:
            cfg[key] = entry.defaults[key]
        # A fixed generator: the weights are about to be replaced, and the global RNG stays put.
        for key, value in cfg.items():  # sizes that would allocate without bound, checked before building
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    raise PDNError(f"{key} must be a finite number, got {v!r}")
                if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_CONFIG_INT:
                    raise PDNError(f"{key}: {v} is beyond the limit of {MAX_CONFIG_INT} for a model config value")
        model = create_model(name, generator=torch.Generator().manual_seed(0), **cfg)
    except PDNError as exc:
        raise PDNError(f"{where}: {exc}") from None
    except (RuntimeError, MemoryError, ValueError, TypeError, OverflowError) as exc:  # sizes that cannot be built
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise PDNError(f"{where}: cannot build model {name!r} from this config ({first})") from None
    model.config.update(recorded)
    return model


def parse_input_size(value: Any, where: str = "input_size") -> tuple[int, int]:
    """``(H, W)``, ``[H, W]`` or ``"HxW"`` -> ``(H, W)`` of ints in [1, ``MAX_MODEL_INPUT_SIDE``] (the weights
    grow with the input: a larger one is refused before they are allocated)."""
    return parse_hw(where, value, low=1, high=MAX_MODEL_INPUT_SIDE)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise PDNError(f"{where}: expected a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise PDNError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise PDNError(f"{where}: expected a finite number, got {value!r}")
    return out
