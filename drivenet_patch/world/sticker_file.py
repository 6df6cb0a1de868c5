"""A sticker on disk: ``sticker.png`` + ``attack.json`` (its placement), read by ``pdn drive --sticker`` and
written by the attack (:mod:`attacks.artifact`)."""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import folder_file, read_image, read_json
from drivenet_patch.safety.tensors import check_frames, to_uint8
from drivenet_patch.safety.values import (
    MAX_BATCH,
    MAX_FRAMES,
    MAX_SEED,
    MAX_STEPS,
    FieldCheck,
    check_fields,
    flag,
    number,
    obj,
    pair,
    sizes,
    text,
    whole,
)
from drivenet_patch.storage.atomic import atomic_path, write_json
from drivenet_patch.world.sticker import MAX_PARTS, SEGMENTS, StickerPart, StickerPlacement

__all__ = ["ATTACK_JSON", "ATTACK_JSON_FIELDS", "STICKER_PNG", "Sticker", "check_attack_json", "load_sticker",
           "placement_from_json", "save_sticker"]

STICKER_PNG = "sticker.png"
ATTACK_JSON = "attack.json"
#: A sticker design: texture (3, h, w) float in [0, 1] and its template placement.
Sticker = tuple[torch.Tensor, StickerPlacement]


def load_sticker(path: str | Path) -> Sticker:
    """Read a sticker: a PNG texture, or an attack folder with ``sticker.png`` and ``attack.json``.

    Folder format (written by :func:`save_sticker`; ``attack.json`` may hold any other keys)::

        {"placement": {"kind": "road", "d": -1.75, "width_m": 3.5, "length_m": 2.0,
                       "yaw_deg": 0.0, "bottom_m": 1.5}}

    ``placement`` holds :class:`StickerPlacement` fields; missing ones take their defaults and
    ``s`` (optional) is ignored by closed-loop driving, which repeats the sticker along the road.
    A bare PNG gets the default placement: a 3.5 m x 2.0 m road sticker centred on the ego lane.

    Returns:
        ``(texture, placement)``: texture (3, h, w) float32 RGB in [0, 1] (alpha is dropped).
    """
    path = Path(path)
    if path.is_dir():
        png, meta_path = path / STICKER_PNG, path / ATTACK_JSON
        if not meta_path.exists():
            raise PDNError(f"sticker: {path} is a folder but has no {ATTACK_JSON}")
        for name in (ATTACK_JSON, STICKER_PNG):  # read like a dataset folder: no file may lead out of it
            folder_file(path, name, "attack settings" if name == ATTACK_JSON else "sticker image")
        meta = read_json(meta_path, "attack settings")
        placement = placement_from_json(check_attack_json(meta, meta_path), meta_path)
    else:
        png, placement = path, StickerPlacement(s=0.0)
    return _read_texture(png), placement


def save_sticker(folder: str | Path, texture: torch.Tensor, placement: StickerPlacement,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write an attack folder that :func:`load_sticker` reads: ``sticker.png`` and ``attack.json``.

    Args:
        folder: destination folder (created).
        texture: (3, h, w) RGB in [0, 1].
        placement: the placement stored under ``"placement"``.
        extra: further JSON-serialisable keys for ``attack.json`` (attack settings, metrics).

    Returns:
        The folder.
    """
    check_frames(texture[None] if torch.is_tensor(texture) else texture, "sticker texture")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / STICKER_PNG) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(to_uint8(texture[None])[0], cv2.COLOR_RGB2BGR)):
            raise PDNError(f"cannot write {folder / STICKER_PNG}")
    extra = dict(extra or {})
    if "placement" in extra:
        raise PDNError("extra must not hold a 'placement' key")
    write_json(folder / ATTACK_JSON, {**extra, "placement": asdict(placement)})
    return folder


def _read_texture(png: Path) -> torch.Tensor:
    if not os.path.lexists(png):
        raise PDNError(f"sticker: {png} does not exist")
    try:  # a regular file, its declared size checked before decoding (safety.inputs.read_image)
        img = read_image(png, "sticker image", cv2.IMREAD_UNCHANGED)
    except PDNError as exc:
        raise PDNError(f"sticker: {exc}") from None
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    if img.dtype not in (np.uint8, np.uint16):
        raise PDNError(f"sticker: {png} has unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise PDNError(f"sticker: {png} has {img.shape[2]} channels; expected 1, 3 or 4")
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32) / scale)


# ---------------------------------------------------------------------------- attack.json, checked
#: Largest sticker side, metres (the physical threat's limit, :data:`defenses.physical.MAX_SIDE_M`).
MAX_STICKER_SIDE_M = 60.0
#: Farthest lateral offset of a sticker's centre from the road centre line, metres.
MAX_STICKER_D_M = 40.0
#: Farthest camera distance of an attack's scenes, metres.
MAX_STICKER_DISTANCE_M = 200.0
#: Longest road position ``s`` of a sticker, metres (1000 km).
MAX_STICKER_S_M = 1e6


def _side(name: str, value: Any) -> tuple[float, float]:
    """``[width, length]`` of a sticker: two numbers in (0, MAX_STICKER_SIDE_M] (not a range: either may be larger)."""
    if not isinstance(value, list) or len(value) != 2:
        raise PDNError(f"{name} = {str(value)[:40]} must be a list of two numbers [WIDTH, LENGTH] in metres")
    side = number(0.0, MAX_STICKER_SIDE_M, low_open=True)
    return side(f"{name}[0]", value[0]), side(f"{name}[1]", value[1])


def _parts(name: str, value: Any) -> list[dict[str, float]]:
    """A group's ``parts``: a list of up to ``MAX_PARTS`` objects of :class:`StickerPart` fields, each checked
    (empty: one sticker)."""
    if not isinstance(value, list) or len(value) > MAX_PARTS:
        raise PDNError(f"{name} must be a list of at most {MAX_PARTS} sticker parts, got {str(value)[:40]}")
    known = {f.name for f in fields(StickerPart)}
    checks = {"ds": number(-MAX_STICKER_SIDE_M, MAX_STICKER_SIDE_M), "dd": number(-MAX_STICKER_D_M, MAX_STICKER_D_M),
              "width_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True),
              "length_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True), "yaw_deg": number(-90.0, 90.0)}
    out = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or set(part) - known:
            raise PDNError(f"{name}[{i}] must be an object with fields {', '.join(sorted(known))}")
        out.append({k: checks[k](f"{name}[{i}].{k}", v) for k, v in part.items()})
    return out


#: The fields of ``attack.json`` that any reader uses, with their types and bounds (other keys are kept as
#: they are). ``placement.*`` places the sticker; ``attack.*`` are the attack's settings; the rest says how
#: the sticker was made and judged.
ATTACK_JSON_FIELDS: dict[str, FieldCheck] = {
    "placement": obj(),
    "placement.kind": text(("road", "billboard")),
    "placement.s": number(0.0, MAX_STICKER_S_M),
    "placement.d": number(-MAX_STICKER_D_M, MAX_STICKER_D_M),
    "placement.width_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True),
    "placement.length_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True),
    "placement.yaw_deg": number(-180.0, 180.0),
    "placement.bottom_m": number(0.0, MAX_STICKER_SIDE_M),
    "placement.segment": text(SEGMENTS),
    "placement.parts": _parts,
    "mode": text(("sticker", "dirt")),
    "attack": obj(),
    "attack.target": text(("left", "right", "away")),
    "attack.loss": text(("mse", "hinge")),
    "attack.dirt": flag(),
    "attack.dirt_range": pair(0.0, 1.0),
    "attack.steps": whole(1, MAX_STEPS),
    "attack.batch": whole(1, MAX_BATCH),
    "attack.seed": whole(0, MAX_SEED),
    "attack.texture_hw": sizes(1, 4096),
    "attack.angle_deg": number(0.0, 360.0),
    "attack.lr": number(0.0, 1e6),
    "attack.palette": text(null=True),
    "distance_m": pair(0.0, MAX_STICKER_DISTANCE_M, low_open=True),
    "lateral_m": number(-MAX_STICKER_D_M, MAX_STICKER_D_M),
    "size_m": _side,
    "model": text(),
    "source": text(),
    "closed_loop": flag(),
    "seed": whole(0, MAX_SEED),
    "metrics": obj(),
    "metrics.heldout": obj(null=True),
    "metrics.heldout.mean_dev_deg": number(0.0, 1e6, null=True),
    "metrics.heldout.success_rate": number(0.0, 1.0, null=True),
    "metrics.heldout.n_frames": whole(0, MAX_FRAMES, null=True),
    "final": obj(),
    "scenes": obj(),
}


def check_attack_json(meta: Any, where: str | Path) -> dict[str, Any]:
    """``attack.json`` (parsed) with every field a reader uses checked (:data:`ATTACK_JSON_FIELDS`).

    Raises:
        PDNError: one line naming the file and the field (a string, a single number or an object where a
            range belongs, a non-finite or out-of-range number, an unknown kind).
    """
    check_fields(str(where), meta, ATTACK_JSON_FIELDS, required=("placement",),
                 hint="fix the field, or write the folder again with pdn attack")
    return meta


def placement_from_json(meta: dict[str, Any], where: str | Path) -> StickerPlacement:
    """The :class:`StickerPlacement` of a checked ``attack.json`` (:func:`check_attack_json`); ``s`` is 0
    unless given. An unknown placement field is refused (a typo would otherwise be ignored)."""
    placement = meta["placement"]
    known = {f.name for f in fields(StickerPlacement)}
    unknown = sorted(str(k) for k in set(placement) - known)
    if unknown:
        raise PDNError(f"{where}: unknown placement field {unknown[0][:40]!r}; known: {', '.join(sorted(known))}")
    values = {"s": 0.0, **{k: (v if k in ("kind", "segment", "parts") else float(v)) for k, v in placement.items()}}
    if values.get("parts"):
        values["parts"] = tuple(StickerPart(**{k: float(v) for k, v in p.items()}) for p in values["parts"])
    else:
        values.pop("parts", None)
    return StickerPlacement(**values)
