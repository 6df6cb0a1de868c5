"""Judge a sticker on held-out scenes and in closed loop, beside two controls of the same size and place.

A sticker "works" only if it beats what any sticker-shaped object at the same spot does: a
road marking the model never saw can move its steering by itself. So every number is reported
for the attack texture and for two controls composited identically (:func:`control_textures`):
uniform random noise and plain mid grey.

* **Offline** (:func:`offline_eval`): steering with and without the sticker on the same frames.
  ``mean_dev_deg`` is the mean ``|adv - clean|``; ``success_rate`` the share of frames whose
  deviation *in the attack's direction* (:func:`attacks.base.deviation`) is at least
  ``threshold_deg``.
* **Closed loop** (:func:`closed_loop_eval`): the model drives procedural roads with a copy of
  the sticker every ``sticker_every_m`` (:func:`drivenet_patch.driving.drive.drive_closed_loop`); an
  *approach* is the stretch from ``before_m`` ahead of a copy to ``after_m`` past it, and it
  ends in a departure when a wheel leaves the lane (``|offset| > LANE_DEPARTURE_M``) anywhere in
  it. The safety driver re-centres a car that strays more than 1 m, so one approach cannot
  spill into the next (copies are 100 m apart by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from attacks.base import TARGETS, attack_mode, deviation, model_device
from attacks.composite import DIRT_RANGE
from attacks.scenes import StickerScenes
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.road import Road
from drivenet_patch.world.sticker import StickerPlacement

CONTROLS = ("noise", "grey")
SUMMARY_KEYS = ("mean_dev_deg", "success_rate", "departure_rate")


def control_textures(texture_hw: tuple[int, int], generator: torch.Generator, dirt: bool = False,
                     dirt_range: tuple[float, float] = DIRT_RANGE) -> dict[str, torch.Tensor]:
    """The two controls: ``noise`` (uniform random texels) and ``grey`` (plain mid grey).

    In dirt mode they are darkening multipliers (1, h, w): uniform in ``dirt_range`` and its middle.

    Args:
        texture_hw: ``(h, w)`` texels, as the attack texture.
        generator: draws the noise (CPU generator; same state, same control).
        dirt: controls for a dirt-mode sticker.
        dirt_range: ``(lo, hi)`` of the dirt multiplier.

    Returns:
        ``{"noise": (C, h, w), "grey": (C, h, w)}`` float32 on the CPU, C = 1 in dirt mode else 3.
    """
    h, w = (int(v) for v in texture_hw)
    if h < 1 or w < 1:
        raise PDNError(f"control texture size must be >= 1x1, got {texture_hw}")
    if dirt:
        lo, hi = dirt_range
        noise = lo + (hi - lo) * torch.rand(1, h, w, generator=generator)
        return {"noise": noise, "grey": torch.full((1, h, w), 0.5 * (lo + hi))}
    return {"noise": torch.rand(3, h, w, generator=generator), "grey": torch.full((3, h, w), 0.5)}


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise PDNError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")


def _threshold(value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise PDNError(f"threshold_deg must be a number > 0 degrees, got {value}")
    return value


@torch.no_grad()
def offline_eval(model: nn.Module, scenes: StickerScenes, texture: torch.Tensor, target: str,
                 threshold_deg: float = 3.0, dirt: bool = False, chunk: int = 256,
                 clean: torch.Tensor | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Steering deviation a texture causes on precomputed scenes.

    Args:
        model: images (B, 3, H, W) in [0, 1] -> (B,) degrees.
        scenes: the frames and sticker maps (held-out ones for an honest number).
        texture: (3, h, w) sticker (dirt mode: the multiplier).
        target: ``left``, ``right`` or ``away`` (the direction success is counted in).
        threshold_deg: a frame succeeds when its deviation in the target direction is at least this.
        dirt: composite in dirt mode.
        chunk: frames per forward pass.
        clean: the model's predictions on ``scenes.background`` (computed when None).

    Returns:
        ``(frames, summary)``: one row per scene (``scenes.info`` plus ``clean_deg``, ``adv_deg``,
        ``delta_deg``, ``deviation_deg``, ``success``) and ``mean_dev_deg`` (mean ``|delta|``),
        ``mean_signed_dev_deg`` (mean deviation in the target direction), ``success_rate``,
        ``n_frames`` and, when the scenes know their distance to the sticker, ``mean_dev_5_15m_deg``
        (poses 5-15 m before it).
    """
    _check_target(target)
    threshold_deg = _threshold(threshold_deg)
    device = model_device(model)
    scenes = scenes.to(device)
    texture = texture.to(device, torch.float32)
    n = len(scenes)
    with attack_mode(model):
        if clean is None:
            clean = torch.cat([model(scenes.background[i : i + chunk]) for i in range(0, n, chunk)])
        adv = torch.cat([model(scenes.apply(texture, torch.arange(i, min(i + chunk, n), device=device), dirt))
                         for i in range(0, n, chunk)])
    clean, adv = clean.double().cpu(), adv.double().cpu()
    dev = deviation(adv, clean, target)
    frames = scenes.info.copy() if len(scenes.info) == n else pd.DataFrame(index=range(n))
    frames["clean_deg"] = clean.numpy()
    frames["adv_deg"] = adv.numpy()
    frames["delta_deg"] = (adv - clean).numpy()
    frames["deviation_deg"] = dev.numpy()
    frames["success"] = (dev >= threshold_deg).numpy()
    summary: dict[str, Any] = {
        "mean_dev_deg": float(frames["delta_deg"].abs().mean()),
        "mean_signed_dev_deg": float(frames["deviation_deg"].mean()),
        "success_rate": float(frames["success"].mean()),
        "n_frames": int(n),
    }
    if "distance_m" in frames:
        near = frames["distance_m"].between(5.0, 15.0)
        summary["mean_dev_5_15m_deg"] = float(frames.loc[near, "delta_deg"].abs().mean()) if near.any() else None
    return frames, summary


@dataclass(frozen=True)
class ApproachWindow:
    """The stretch of road that counts as one approach to a sticker copy (metres, along the road)."""

    before_m: float = 25.0
    after_m: float = 20.0

    def __post_init__(self) -> None:
        for name in ("before_m", "after_m"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise PDNError(f"{name} must be a finite number >= 0, got {v}")


def approach_table(log: pd.DataFrame, roads: Sequence[Road], placement: StickerPlacement, cfg: Any,
                   window: ApproachWindow = ApproachWindow()) -> pd.DataFrame:
    """One row per sticker copy the car fully drove past: ``road``, ``sticker_s``, ``departure``,
    ``intervention``, ``max_abs_offset_m`` (within the window).

    Args:
        log: :func:`drivenet_patch.driving.drive.drive_closed_loop`'s per-step log.
        roads: the roads driven (index = ``log.road``).
        placement: the sticker template (its copies are found as the drive placed them).
        cfg: the drive's :class:`~drivenet_patch.driving.drive.ClosedLoopConfig`.
        window: what counts as one approach.
    """
    from drivenet_patch.driving.drive import LANE_DEPARTURE_M, sticker_positions

    rows = []
    for r, road in enumerate(roads):
        steps = log[log["road"] == r]
        reached = float(steps["s"].max())
        for s_c in sticker_positions(road, placement, cfg):
            if s_c + window.after_m > reached:
                continue  # not driven past: no verdict
            inside = steps[steps["s"].between(s_c - window.before_m, s_c + window.after_m)]
            if inside.empty:
                continue
            offset = inside["offset_m"].abs()
            rows.append({"road": r, "road_seed": road.seed, "sticker_s": float(s_c),
                         "departure": bool((offset > LANE_DEPARTURE_M).any()),
                         "intervention": bool(inside["intervention"].any()),
                         "max_abs_offset_m": float(offset.max())})
    return pd.DataFrame(rows, columns=["road", "road_seed", "sticker_s", "departure", "intervention",
                                       "max_abs_offset_m"])


def approach_tracks(log: pd.DataFrame, approaches: pd.DataFrame, window: ApproachWindow = ApproachWindow()
                    ) -> pd.DataFrame:
    """The car's path through every approach in road coordinates, for top-down plots.

    Returns:
        One row per logged step inside an approach window: ``road``, ``sticker_s``, ``rel_s``
        (metres along the road from the sticker's centre, negative before it) and ``offset_m``
        (lateral offset from the lane centre, positive = left).
    """
    parts = []
    for road, s_c in zip(approaches["road"], approaches["sticker_s"]):
        steps = log[(log["road"] == road) & log["s"].between(s_c - window.before_m, s_c + window.after_m)]
        parts.append(pd.DataFrame({"road": road, "sticker_s": s_c, "rel_s": steps["s"].to_numpy() - s_c,
                                   "offset_m": steps["offset_m"].to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["road", "sticker_s", "rel_s", "offset_m"])
    return pd.concat(parts, ignore_index=True)


def closed_loop_eval(model: nn.Module, texture: torch.Tensor | None, placement: StickerPlacement,
                     roads: Sequence[Road], steps_per_road: int, camera: Any, cfg: Any, seed: int,
                     window: ApproachWindow = ApproachWindow(), progress: bool = False, tracks: bool = False
                     ) -> tuple[pd.DataFrame, dict[str, Any]] | tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Drive ``roads`` with sticker copies (``texture=None``: no sticker, copies still mark approaches).

    Every call draws the roads' lighting from ``numpy.random.default_rng(seed)``, so the attack
    and its controls are driven under identical conditions.

    Returns:
        ``(approaches, summary)``: :func:`approach_table` and ``departure_rate``,
        ``n_approaches``, ``interventions``, ``autonomy_pct``; with ``tracks=True`` also
        :func:`approach_tracks` as a third item.
    """
    from drivenet_patch.driving.drive import drive_closed_loop

    device = model_device(model)
    with attack_mode(model):
        metrics, log = drive_closed_loop(
            model, roads, steps_per_road, camera, cfg, np.random.default_rng(seed),
            sticker=None if texture is None else (texture, placement), device=device, progress=progress)
    approaches = approach_table(log, roads, placement, cfg, window)
    n = len(approaches)
    summary = {
        "departure_rate": float(approaches["departure"].mean()) if n else None,
        "n_approaches": n,
        "interventions": int(metrics["interventions"]),
        "autonomy_pct": float(metrics["autonomy_pct"]),
    }
    if tracks:
        return approaches, summary, approach_tracks(log, approaches, window)
    return approaches, summary


def window_dict(window: ApproachWindow) -> dict[str, float]:
    return asdict(window)


__all__ = [
    "CONTROLS",
    "SUMMARY_KEYS",
    "ApproachWindow",
    "approach_table",
    "approach_tracks",
    "closed_loop_eval",
    "control_textures",
    "offline_eval",
    "window_dict",
]
