"""An attack's files: writing the attack folder that ``pdn drive --sticker`` and the evaluations read.

The folder format (``sticker.png`` + ``attack.json``) is the core's
(:func:`drivenet_patch.driving.drive.save_sticker` / :func:`~drivenet_patch.driving.drive.load_sticker`); this
module fills it from an attack's result and scenes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from attacks.base import StickerResult
from attacks.scenes import StickerScenes
from drivenet_patch.world.sticker import StickerPlacement
from drivenet_patch.world.sticker_file import save_sticker


def save_result(folder: str | Path, result: StickerResult, scenes: StickerScenes,
                extra: dict[str, Any] | None = None) -> Path:
    """Write an attack folder in the format :func:`drivenet_patch.driving.drive.load_sticker` reads.

    ``sticker.png`` holds the texture (in dirt mode the grey multiplier); ``attack.json`` holds
    the placement (world scenes: theirs; real frames: a road sticker of the same size and yaw,
    centred on the ego lane), ``"mode"``, the attack settings, how the scenes were made and the
    last step's history row, plus ``extra``.

    Returns:
        The folder.
    """
    placement = scenes.placement
    if placement is None:
        meta = scenes.meta
        placement = StickerPlacement(s=0.0, width_m=float(meta.get("width_m", 3.5)),
                                     length_m=float(meta.get("length_m", 2.0)), yaw_deg=float(meta.get("yaw_deg", 0.0)))
    row = result.history.iloc[-1].items() if len(result.history) else ()
    last = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in row}  # JSON has no NaN
    info = {"mode": result.mode, "attack": result.config, "scenes": scenes.meta, "final": last, **(extra or {})}
    return save_sticker(folder, result.texture.detach().cpu(), placement, info)


__all__ = ["read_attack", "save_result"]


def read_attack(folder: str | Path) -> tuple[Any, StickerPlacement, dict[str, Any]]:
    """``(texture, placement, attack.json)`` of an attack folder written by ``pdn attack``.

    Returns:
        texture (3, h, w) float32 in [0, 1], the sticker's placement, and the parsed ``attack.json``.

    Raises:
        PDNError: not a folder, or its ``attack.json`` has no ``attack`` settings or a field of the wrong type
            or out of range (:data:`drivenet_patch.world.sticker_file.ATTACK_JSON_FIELDS`; the file and field
            are named).
    """
    from drivenet_patch.safety.errors import PDNError
    from drivenet_patch.safety.inputs import read_json
    from drivenet_patch.world.sticker_file import check_attack_json, load_sticker

    folder = Path(folder)
    if not folder.is_dir():
        raise PDNError(f"sticker: {folder} is not an attack folder (from pdn attack)")
    texture, placement = load_sticker(folder)
    meta = check_attack_json(read_json(folder / "attack.json", "attack settings"), folder / "attack.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("attack"), dict):
        raise PDNError(f"sticker: {folder / 'attack.json'} has no 'attack' settings (not written by pdn attack?)")
    return texture, placement, meta
