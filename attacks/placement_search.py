"""Where the paint goes: several stickers for one budget, and a search over their placement.

A placement here is a :class:`PlacementCandidate`: the kind of road segment the stickers sit on
(straight, where a curve starts, where it ends; see :data:`drivenet_patch.world.sticker.SEGMENTS`),
how far along the approach from that point the group is centred (``shift_m``), how far apart its
stickers are along the road (``gap_m``), their lateral offset from the lane centre and their yaw.
:meth:`PlacementCandidate.placement` turns one into a group of ``n`` equal road stickers sharing a
total area (:meth:`drivenet_patch.world.sticker.StickerPlacement.group`); the ``n`` textures are one
atlas, so the optimisers optimise them together through the same rollouts.

:func:`search_placement` is the outer loop: random search (Bergstra and Bengio, "Random Search for
Hyper-Parameter Optimization", JMLR 2012) over candidates, each scored by a short closed-loop-aware
optimisation on its own roads and one closed-loop rollout of the result (mean peak lane offset
toward the target, then departures); the best one is then optimised in full by the caller.

Roads for a segment placement come from :func:`segment_roads`: the first roads of a seed base that
have such a segment with room for the approach.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.road import EGO_LANE_D
from drivenet_patch.world.sticker import MAX_PARTS, SEGMENTS, StickerPart, StickerPlacement

#: Bounds of the random search (metres, degrees).
SHIFT_M = (-15.0, 10.0)
GAP_M = (3.0, 14.0)
LATERAL_M = (-0.9, 0.9)
YAW_DEG = (-25.0, 25.0)
SEARCH_SEGMENTS = ("any", "straight", "curve_entry", "curve_exit")
MAX_ROAD_TRIES = 40  # roads drawn per road wanted when looking for a segment


@dataclass(frozen=True)
class PlacementCandidate:
    """One placement of a group of stickers (see the module docstring).

    Attributes:
        segment: a :data:`~drivenet_patch.world.sticker.SEGMENTS` kind; ``curve_entry`` and ``curve_exit``
            are made specific by :meth:`placement` when a target side is given (a curve turning away from it).
        shift_m: the group's centre, metres along the road from the segment point (+ = past it).
        gap_m: free road between consecutive stickers along the road, metres.
        lateral_m: every sticker's centre offset from the ego-lane centre (+ = left).
        yaw_deg: every sticker's yaw relative to the road.
    """

    segment: str = "any"
    shift_m: float = 0.0
    gap_m: float = 6.0
    lateral_m: float = 0.0
    yaw_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.segment not in SEGMENTS:
            raise PDNError(f"segment must be one of {', '.join(SEGMENTS)}, got {self.segment!r}")
        for name in ("shift_m", "gap_m", "lateral_m", "yaw_deg"):
            v = getattr(self, name)
            if not math.isfinite(float(v)):
                raise PDNError(f"{name} must be finite, got {v!r}")
        if self.gap_m < 0 or abs(self.lateral_m) > 3.0 or abs(self.yaw_deg) > 60.0 or abs(self.shift_m) > 60.0:
            raise PDNError(f"placement out of range: {self}")

    def placement(self, part_size: tuple[float, float], n: int, target: str | None = None) -> StickerPlacement:
        """A group of ``n`` stickers of ``part_size`` (across, along the road) in a row along the lane.

        With ``target`` ``left`` / ``right``, a curve segment without a turn becomes the curve turning away from
        the target (a push toward the target then carries the car out of the curve)."""
        if not 1 <= int(n) <= MAX_PARTS:
            raise PDNError(f"stickers must be 1 to {MAX_PARTS}, got {n}")
        w, length = (float(x) for x in part_size)
        pitch = length + self.gap_m
        parts = [StickerPart(ds=self.shift_m + (k - 0.5 * (n - 1)) * pitch, dd=self.lateral_m, width_m=w,
                             length_m=length, yaw_deg=self.yaw_deg) for k in range(int(n))]
        return StickerPlacement.group(parts, s=0.0, d=EGO_LANE_D, segment=self.turned(target))

    def turned(self, target: str | None) -> str:
        """The segment with its turn made explicit: away from ``target`` (unchanged when it has one already)."""
        if self.segment in ("curve_entry", "curve_exit") and target in ("left", "right"):
            return f"{self.segment}_{'right' if target == 'left' else 'left'}"
        return self.segment

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def part_size(area_m2: float, n: int, aspect: str = "along") -> tuple[float, float]:
    """Size (across, along) of each of ``n`` equal stickers sharing ``area_m2`` (:func:`attacks.sweep.sticker_size`)."""
    from attacks.sweep import sticker_size

    if not (math.isfinite(area_m2) and area_m2 > 0) or not 1 <= int(n) <= MAX_PARTS:
        raise PDNError(f"need an area > 0 and 1 to {MAX_PARTS} stickers, got {area_m2} m², {n}")
    return sticker_size(float(area_m2) / int(n), aspect)


def random_candidates(count: int, rng: np.random.Generator, segments: Sequence[str] = SEARCH_SEGMENTS,
                      first: PlacementCandidate | None = None) -> list[PlacementCandidate]:
    """``count`` candidates: ``first`` (default: the plain placement) and ``count - 1`` drawn uniformly from
    ``segments`` and the bounds :data:`SHIFT_M`, :data:`GAP_M`, :data:`LATERAL_M`, :data:`YAW_DEG`."""
    if count < 1:
        raise PDNError(f"count must be >= 1, got {count}")
    out = [first or PlacementCandidate()]
    for _ in range(count - 1):
        out.append(PlacementCandidate(
            segment=str(rng.choice(list(segments))), shift_m=round(float(rng.uniform(*SHIFT_M)), 2),
            gap_m=round(float(rng.uniform(*GAP_M)), 2), lateral_m=round(float(rng.uniform(*LATERAL_M)), 2),
            yaw_deg=round(float(rng.uniform(*YAW_DEG)), 1)))
    return out


def segment_roads(base: int, seed: int, count: int, placement: StickerPlacement, ccfg: Any,
                  drive: Any = None) -> list[Any]:
    """The first ``count`` roads of seed base ``base`` (``Road.generate(base + 1000 * seed + i)``, long enough
    for a segment to be found) on which ``placement`` has room for a rollout approach."""
    from attacks.closed_loop import DEFAULT_DRIVE, rollout_road_length, segment_sticker_s
    from drivenet_patch.world.road import Road

    drive = drive or DEFAULT_DRIVE
    length = rollout_road_length(placement, ccfg, drive) + (0.0 if placement.segment == "any" else 400.0)
    roads = []
    for i in range(count * MAX_ROAD_TRIES):
        road = Road.generate(base + 1000 * int(seed) + i, length)
        if segment_sticker_s(road, placement, ccfg, drive) is not None:
            roads.append(road)
            if len(roads) == count:
                return roads
    raise PDNError(f"only {len(roads)} of {count * MAX_ROAD_TRIES} roads have a {placement.segment} segment")


def search_placement(candidates: Sequence[PlacementCandidate],
                     optimise: Callable[[StickerPlacement, int], Any], score: Callable[[StickerPlacement, Any], dict],
                     size: tuple[float, float], n: int, target: str) -> tuple[int, pd.DataFrame]:
    """Score every candidate and return the best one's index and the table of all.

    Args:
        candidates: from :func:`random_candidates`.
        optimise: ``(placement, index) -> StickerResult``: a short optimisation at that placement.
        score: ``(placement, result) -> {"peak_offset_m": ..., "departure_rate": ...}`` of one rollout.
        size: each sticker's (across, along) size; n: stickers; target: the attack's side.

    Returns:
        ``(best, table)``; ``table`` has one row per candidate: its fields, ``peak_offset_m`` and
        ``departure_rate``; the best has the most departures, then the largest peak offset.
    """
    rows = []
    for i, cand in enumerate(candidates):
        placement = cand.placement(size, n, target)
        result = optimise(placement, i)
        rows.append({"candidate": i, **cand.to_dict(), "segment_used": placement.segment, **score(placement, result)})
    table = pd.DataFrame(rows)
    order = table.sort_values(["departure_rate", "peak_offset_m"], ascending=False, kind="stable")
    return int(order["candidate"].iloc[0]), table


def rollout_score(model: nn.Module, approaches: Any, texture: torch.Tensor, renderer: Any, target: str,
                  drive: Any = None) -> dict[str, float]:
    """Mean peak lane offset toward ``target`` and the departure rate of one closed-loop rollout under ``texture``."""
    from attacks.base import attack_mode
    from attacks.closed_loop import DEFAULT_DRIVE, rollout

    sign = 1.0 if target == "left" else -1.0
    with attack_mode(model):
        roll = rollout(model, approaches, texture, renderer, drive or DEFAULT_DRIVE)
    return {"peak_offset_m": float(np.max(sign * roll.offset_m, axis=0).mean()),
            "departure_rate": roll.departure_rate()}


__all__ = [
    "GAP_M",
    "LATERAL_M",
    "SEARCH_SEGMENTS",
    "SHIFT_M",
    "YAW_DEG",
    "PlacementCandidate",
    "part_size",
    "random_candidates",
    "rollout_score",
    "search_placement",
    "segment_roads",
]
