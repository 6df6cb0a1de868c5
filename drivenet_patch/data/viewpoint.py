"""Exact viewpoint augmentation for world data: re-render a recorded frame from a shifted pose.

Real frames can only be warped with a flat-ground homography (:mod:`drivenet_patch.training.augment`);
world frames know their road (``road_seed``), pose and lighting, so a lateral shift or yaw
rotation is rendered exactly and labelled by the expert at the new pose (PilotNet's
viewpoint augmentation without its approximations).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from drivenet_patch.data.synth import SynthDataset
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.episodes import expert_steer, lateral_shift
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import Road

LIGHT_COLUMNS = ("light_brightness", "light_temperature", "light_haze", "light_shadow")


def shift_poses(poses: np.ndarray, dy: np.ndarray | float, dpsi_deg: np.ndarray | float) -> np.ndarray:
    """Poses (N, 3) moved ``dy`` metres to their left, then turned ``dpsi_deg`` to the left about the rear axle."""
    out = lateral_shift(poses, 0.0)
    dy = np.broadcast_to(np.asarray(dy, dtype=np.float64), len(out))
    out[:, 0] -= dy * np.sin(out[:, 2])
    out[:, 1] += dy * np.cos(out[:, 2])
    out[:, 2] += np.radians(np.broadcast_to(np.asarray(dpsi_deg, dtype=np.float64), len(out)))
    return out


class WorldViewpointShift:
    """Re-render frames of a synth dataset from shifted poses, with exact expert labels.

    Args:
        dataset: a :class:`SynthDataset` (its labels carry road seed, pose and lighting).
        device: torch device for rendering.
        max_roads: roads kept in memory (each ~10 MB of lookup tables).
    """

    def __init__(self, dataset: SynthDataset, device: str = "cpu", compile: bool = False, max_roads: int = 16) -> None:
        need = {"road_seed", "x", "y", "yaw", "camera", *LIGHT_COLUMNS}
        missing = sorted(need - set(dataset.labels.columns))
        if missing:
            raise PDNError(f"{dataset.root / 'labels.csv'}: exact viewpoint shift needs columns {missing}")
        meta = dataset.meta
        self.dataset = dataset
        self.road_length = float(meta["road_length_m"])
        self.lookahead = float(meta["drive"]["lookahead_m"])
        cams = meta["cameras"]
        self.mounts = {name: float(lat) for name, lat in cams.items()}
        self.renderers = {name: Renderer(dataset.camera.shifted(lat), device=device, compile=compile)
                          for name, lat in self.mounts.items()}
        self._roads: OrderedDict[int, Road] = OrderedDict()
        self.max_roads = max_roads

    def road(self, seed: int) -> Road:
        road = self._roads.pop(seed, None) or Road.generate(seed, self.road_length)
        self._roads[seed] = road
        while len(self._roads) > self.max_roads:
            self._roads.popitem(last=False)
        return road

    def __call__(self, indices: np.ndarray | list[int], dy: np.ndarray | float = 0.0,
                 dpsi_deg: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Frames (n, H, W, 3) uint8 and labels (n,) seen from the shifted poses."""
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.dataset.labels.iloc[idx]
        dy = np.broadcast_to(np.asarray(dy, dtype=np.float64), len(idx))
        dpsi = np.broadcast_to(np.asarray(dpsi_deg, dtype=np.float64), len(idx))
        H, W = self.dataset.size
        frames = np.empty((len(idx), H, W, 3), np.uint8)
        labels = np.empty(len(idx))
        groups = rows.groupby(["road_seed", "camera"], sort=False).indices
        for (seed, cam), where in groups.items():
            road = self.road(int(seed))
            sub = rows.iloc[where]
            poses = shift_poses(sub[["x", "y", "yaw"]].to_numpy(np.float64), dy[where], dpsi[where])
            cols = [*LIGHT_COLUMNS, *(["light_sun_elevation_deg"] if "light_sun_elevation_deg" in sub else [])]
            light = Lighting(*(torch.as_tensor(sub[c].to_numpy(np.float32)) for c in cols))
            frames[where] = self.renderers[cam].render_uint8(road, poses, light)
            labels[where] = expert_steer(road, lateral_shift(poses, self.mounts[cam]), self.lookahead)
        return frames, labels
