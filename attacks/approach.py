"""The sticker's approach set-ups: where the sticker sits, the roads it is seen on, and the scene sets
built from them (world approaches or real frames).

Road seeds come from :mod:`drivenet_patch.world.seeds` (optimisation, held-out check, evaluation): the roads
of a scene set are ``Road.generate(base + 1000 * seed + i)``. Every function here is library code
(tensors and dataclasses in, scenes out); the command line parses its flags in
:mod:`drivenet_patch.app.cli.attack` and calls these.
"""

from __future__ import annotations

import math
from typing import Any

from drivenet_patch.safety.errors import PDNError

__all__ = [
    "MAX_POSES",
    "MAX_SCENES",
    "MAX_SCENE_ROADS",
    "STICKER_S_M",
    "approach_roads",
    "approach_scenes",
    "check_scene_counts",
    "frame_scene_set",
    "model_camera",
    "world_placement",
    "world_scene_sets",
]

STICKER_S_M = 40.0  # where the sticker sits on an approach road (metres along it)
#: Bounds of a world scene set: each scene holds its frame and sticker maps (~0.5 MB at 66x200).
MAX_SCENE_ROADS = 1000
MAX_POSES = 1024
MAX_SCENES = 16384


def approach_roads(base: int, seed: int, count: int, length_m: float) -> list[Any]:
    """``count`` procedural roads of ``length_m`` metres: road ``i`` from seed ``base + 1000 * seed + i``."""
    from drivenet_patch.world.road import Road

    return [Road.generate(base + 1000 * int(seed) + i, length_m) for i in range(count)]


def model_camera(model: Any) -> Any:
    """The world's default camera at ``model``'s input size."""
    from drivenet_patch.world.camera import Camera

    return Camera().with_size(*model.input_size)


def world_placement(kind: str, size: tuple[float, float], lateral_m: float = 0.0) -> Any:
    """The sticker at ``STICKER_S_M`` on an approach road.

    Args:
        kind: ``"road"`` (flat on the ego lane) or ``"billboard"`` (upright beside the road).
        size: (width, length) metres for a road sticker; (width, height) for a billboard.
        lateral_m: offset from the ego-lane centre (road) or from the billboard's default spot, metres,
            + = left; within +-10 m.
    """
    from drivenet_patch.world.road import EGO_LANE_D
    from drivenet_patch.world.sticker import StickerPlacement

    if not math.isfinite(lateral_m) or abs(lateral_m) > 10.0:
        raise PDNError(f"lateral_m must be a number of metres within +-10, got {lateral_m}")
    if kind == "road":
        return StickerPlacement(s=STICKER_S_M, d=EGO_LANE_D + lateral_m, width_m=size[0], length_m=size[1])
    if kind == "billboard":
        default = StickerPlacement.billboard(s=STICKER_S_M)
        return StickerPlacement.billboard(s=STICKER_S_M, d=default.d + lateral_m, width_m=size[0], height_m=size[1])
    raise PDNError(f"kind must be road or billboard, got {kind!r}")


def check_scene_counts(roads: int, poses: int) -> None:
    """Refuse road and pose counts that would build an absurd number of approach scenes."""
    if not 1 <= roads <= MAX_SCENE_ROADS:
        raise PDNError(f"roads must lie in [1, {MAX_SCENE_ROADS}], got {roads}")
    if not 1 <= poses <= MAX_POSES:
        raise PDNError(f"poses must lie in [1, {MAX_POSES}], got {poses}")
    if roads * poses > MAX_SCENES:
        raise PDNError(f"roads x poses must be at most {MAX_SCENES} scenes, got {roads} x {poses}")


def approach_scenes(model: Any, placement: Any, distance: tuple[float, float], roads: int, poses: int, seed: int,
                    base: int, device: str, rng_key: int | None = None) -> Any:
    """World approach scenes for ``model``'s camera.

    The sticker sits at ``STICKER_S_M`` on ``roads`` roads of seed base ``base`` (see
    :func:`approach_roads`), seen from ``poses`` poses each at camera distances ``distance`` (metres);
    poses and lighting come from ``numpy.random.default_rng([seed, rng_key])`` (``rng_key`` defaults to
    ``base``).
    """
    from dataclasses import replace

    import numpy as np

    from attacks.scenes import ApproachConfig, world_scenes
    from drivenet_patch.world.render import Renderer

    check_scene_counts(roads, poses)
    return world_scenes(Renderer(model_camera(model), device=device),
                        approach_roads(base, seed, roads, STICKER_S_M + 40.0),
                        replace(placement, s=STICKER_S_M), ApproachConfig(poses_per_road=poses, distance_m=distance),
                        np.random.default_rng([int(seed), base if rng_key is None else rng_key]))


def world_scene_sets(model: Any, placement: Any, distance: tuple[float, float], roads: int, poses: int,
                     seed: int, bases: tuple[int, int], device: str) -> tuple[Any, Any]:
    """Approach scenes on two disjoint sets of roads (``bases``: seed bases of each set; the second has half
    as many roads)."""
    first = approach_scenes(model, placement, distance, roads, poses, seed, bases[0], device)
    second = approach_scenes(model, placement, distance, max(1, roads // 2), poses, seed, bases[1], device)
    return first, second


def frame_scene_set(model: Any, data: str, fmt: str, frames: int, distance: tuple[float, float],
                    size: tuple[float, float], device: str, offset: int = 0, lateral_m: float = 0.0) -> Any:
    """Scenes on real frames: a flat road sticker at 4 distances across ``distance``, one per frame group.

    Frames ``offset, offset + 2, ...`` of the dataset are used (even / odd: optimisation / held out).
    """
    import numpy as np
    import pandas as pd
    import torch

    from attacks.scenes import StickerScenes, frame_scenes
    from drivenet_patch.data import open_dataset
    from drivenet_patch.safety.tensors import to_tensor

    ds = open_dataset(data, format=fmt, size=model.input_size)
    n = len(ds)
    if n < 2:
        raise PDNError(f"data: {data} has {n} frames; need at least 2")
    idx = np.arange(offset, n, 2)[:frames]
    if len(idx) == 0:
        raise PDNError(f"data: {data} has no frames left for this split")
    x = to_tensor(ds.frames(idx), device)
    groups = np.array_split(np.arange(len(idx)), min(4, len(idx)))
    dists = np.linspace(distance[0], distance[1], len(groups))
    parts = []
    for g, d in zip(groups, dists, strict=True):
        sc = frame_scenes(x[g], ds.image_to_ground(), float(d), lateral_m, size[0], size[1])
        sc.info["distance_m"] = float(d)
        sc.info["frame"] = idx[g]
        parts.append(sc)
    info = pd.concat([p.info for p in parts], ignore_index=True)

    def cat(name: str) -> torch.Tensor | None:
        ts = [getattr(p, name) for p in parts]
        if ts[0] is None:
            return None
        return torch.cat([t.expand(len(p), *t.shape[1:]) for t, p in zip(ts, parts, strict=True)])

    meta = {**parts[0].meta, "distance_m": list(map(float, dists)), "data": str(data), "frames": len(idx)}
    return StickerScenes(cat("background"), cat("uv"), cat("mask"), cat("gain"), None, info, None, meta)
