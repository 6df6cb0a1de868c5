"""The scenes a sticker is optimised and evaluated on: frames without it plus its per-pixel maps.

A *scene* is a frame without the sticker plus, per pixel, the sticker coordinates it sees
(``uv``), whether it sees the sticker at all (``mask``) and how the sticker is lit there
(``gain``, ``offset``); :meth:`StickerScenes.apply` composites any texture into them with the
core's compositing function (:mod:`drivenet_patch.world.composite`).

The geometry is computed once per scene; only the texture changes while an attack optimises
it, so every step is one texel lookup per covered pixel (Athalye et al., "Synthesizing Robust
Adversarial Examples", ICML 2018, with the viewpoint distribution given by real poses). A world
scene holds about 0.6 MB at 66x200 (frame, uv, mask, gain, offset); 256 scenes take ~150 MB.

Two sources of scenes:

* **The built-in world** (:func:`world_scenes`): the renderer returns exact maps for a sticker
  at a fixed world place, from poses on real approach trajectories (:class:`ApproachConfig`:
  the expert driving toward the sticker with a disturbance, from jittered starting states),
  under varied lighting. Held-out poses and roads come from the same call with other roads and
  another generator (:func:`world_scene_split`).
* **Real frames** (:func:`frame_scenes`): a flat road sticker at a chosen distance ahead of the
  car, mapped into the frames with the dataset's flat-ground homography
  (:func:`attacks.placement.homography_maps`), lit with a brightness estimated from the road
  around it (:func:`attacks.placement.local_gain`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from attacks.placement import homography_maps, local_gain
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import check_frames
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.composite import apply_dirt, apply_sticker
from drivenet_patch.world.episodes import DriveConfig, drive_episode, lane_state
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import Road
from drivenet_patch.world.sticker import StickerPlacement


@dataclass
class StickerScenes:
    """Precomputed frames and sticker maps; :meth:`apply` composites any texture into them.

    Attributes:
        background: (N, 3, H, W) frames without the sticker, in [0, 1].
        uv: (N, H, W, 2) sticker coordinates (or (1, H, W, 2), shared by all frames).
        mask: (N, H, W) bool (or (1, H, W)).
        gain: (N|1, 3, H|1, W|1) sticker lighting, or None (= 1).
        offset: (N|1, 3, H|1, W|1) haze, or None (= 0).
        info: one row per scene (road, pose, distance, lighting, ...).
        placement: the world placement (world scenes), else None.
        meta: JSON-serialisable description of how the scenes were made.
    """

    background: torch.Tensor
    uv: torch.Tensor
    mask: torch.Tensor
    gain: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    info: pd.DataFrame = field(default_factory=pd.DataFrame)
    placement: StickerPlacement | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        bg = self.background
        if bg.ndim != 4 or bg.shape[1] != 3 or not bg.is_floating_point():
            raise PDNError(f"scenes: background must be float (N, 3, H, W), got {bg.dtype} {tuple(bg.shape)}")
        n, _, H, W = bg.shape
        if n == 0:
            raise PDNError("scenes: no frames")
        lead = (1, n)
        if self.uv.ndim != 4 or self.uv.shape[0] not in lead or self.uv.shape[1:] != (H, W, 2):
            raise PDNError(f"scenes: uv must be (N, {H}, {W}, 2), got {tuple(self.uv.shape)}")
        if self.mask.ndim != 3 or self.mask.shape[0] not in lead or self.mask.shape[1:] != (H, W):
            raise PDNError(f"scenes: mask must be (N, {H}, {W}), got {tuple(self.mask.shape)}")
        if self.mask.dtype != torch.bool:
            raise PDNError(f"scenes: mask must be bool, got {self.mask.dtype}")
        for name in ("gain", "offset"):
            t = getattr(self, name)
            if t is not None and (t.ndim != 4 or t.shape[0] not in lead or t.shape[1] != 3
                                  or t.shape[2] not in (1, H) or t.shape[3] not in (1, W)):
                raise PDNError(f"scenes: {name} must be (N, 3, H|1, W|1), got {tuple(t.shape)}")
        if len(self.info) not in (0, n):
            raise PDNError(f"scenes: info has {len(self.info)} rows for {n} frames")

    def __len__(self) -> int:
        return self.background.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """Frame ``(H, W)``."""
        return int(self.background.shape[2]), int(self.background.shape[3])

    @property
    def device(self) -> torch.device:
        return self.background.device

    def _take(self, t: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or idx is None:
            return t
        if t.shape[0] == 1 and len(self) != 1:
            return t.expand(len(idx), *t.shape[1:])
        return t[idx]

    def maps(self, idx: torch.Tensor | Sequence[int] | None = None) -> tuple[torch.Tensor, ...]:
        """``(background, uv, mask, gain, offset)`` of scenes ``idx`` (all when None), leading dims broadcast to B."""
        if idx is not None:
            idx = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        bg = self._take(self.background, idx)
        b = bg.shape[0]
        uv = self._take(self.uv, idx).expand(b, -1, -1, -1)
        mask = self._take(self.mask, idx).expand(b, -1, -1)
        return bg, uv, mask, self._take(self.gain, idx), self._take(self.offset, idx)

    def apply(self, texture: torch.Tensor, idx: torch.Tensor | Sequence[int] | None = None,
              dirt: bool = False) -> torch.Tensor:
        """Frames (B, 3, H, W) of scenes ``idx`` (all when None) with the sticker.

        Args:
            texture: (3, h, w) sticker in [0, 1] (differentiable), or in dirt mode the multiplier
                ((1, h, w) or (3, h, w)).
            idx: scene indices.
            dirt: darken with the multiplier instead of pasting (see :func:`apply_dirt`).
        """
        bg, uv, mask, gain, offset = self.maps(idx)
        if dirt:
            return apply_dirt(bg, texture, uv, mask, offset)
        return apply_sticker(bg, texture, uv, mask, gain, offset)

    def coverage(self) -> torch.Tensor:
        """Sticker pixels per scene, (N,) int64."""
        return self.mask.expand(len(self), -1, -1).sum(dim=(1, 2))

    def to(self, device: str | torch.device) -> StickerScenes:
        """The same scenes on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.device == device:
            return self

        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return StickerScenes(mv(self.background), mv(self.uv), mv(self.mask), mv(self.gain), mv(self.offset),
                             self.info, self.placement, dict(self.meta))

    def subset(self, idx: torch.Tensor | Sequence[int] | np.ndarray) -> StickerScenes:
        """Scenes ``idx`` as a new :class:`StickerScenes`."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        if len(idx) == 0:
            raise PDNError("scenes: empty subset")
        di = idx.to(self.device)
        info = self.info.iloc[idx.numpy()].reset_index(drop=True) if len(self.info) else self.info

        def keep(t: torch.Tensor | None) -> torch.Tensor | None:
            return t if t is None or t.shape[0] == 1 else t[di]

        return StickerScenes(self.background[di], keep(self.uv), keep(self.mask), keep(self.gain),
                             keep(self.offset), info, self.placement, dict(self.meta))

    def split(self, eval_fraction: float, rng: np.random.Generator) -> tuple[StickerScenes, StickerScenes]:
        """Random ``(train, held_out)`` split of the scenes; ``eval_fraction`` of them are held out."""
        if not 0.0 < eval_fraction < 1.0:
            raise PDNError(f"eval_fraction must lie in (0, 1), got {eval_fraction}")
        n = len(self)
        n_eval = round(n * eval_fraction)
        if not 0 < n_eval < n:
            raise PDNError(f"cannot split {n} scenes with eval_fraction {eval_fraction}")
        perm = rng.permutation(n)
        return self.subset(np.sort(perm[n_eval:])), self.subset(np.sort(perm[:n_eval]))


# ---------------------------------------------------------------------------- world scenes
@dataclass(frozen=True)
class ApproachConfig:
    """How poses approaching a world sticker are drawn.

    Each approach is an expert episode (pure pursuit on the ego lane with an Ornstein-Uhlenbeck
    steering disturbance, :func:`~drivenet_patch.world.episodes.drive_episode`) that starts
    ``lead_m`` before the farthest distance, up to ``lateral_jitter_m`` off the lane centre and
    up to ``yaw_jitter_deg`` off the road's heading. Poses are then taken on that trajectory at
    camera distances drawn uniformly from ``distance_m``, so the offsets and heading errors are
    those a real car recovering from them would show.

    Attributes:
        poses_per_road: scenes drawn per road (before dropping those that hardly see the sticker).
        poses_per_episode: poses taken from each approach trajectory.
        distance_m: ``(near, far)`` arc length from the camera to the sticker centre, metres.
        lateral_jitter_m: start offset from the lane centre, uniform in +- this.
        yaw_jitter_deg: start heading error, uniform in +- this.
        lead_m: distance driven before the farthest pose (lets the disturbance act).
        noise_deg: standard deviation of the steering disturbance.
        vary_lighting: draw lighting per scene (:meth:`Lighting.sample`), else neutral daylight.
        min_pixels: scenes whose sticker covers fewer pixels are dropped.
    """

    poses_per_road: int = 32
    poses_per_episode: int = 4
    distance_m: tuple[float, float] = (5.0, 20.0)
    lateral_jitter_m: float = 0.5
    yaw_jitter_deg: float = 3.0
    lead_m: float = 5.0
    noise_deg: float = 1.5
    vary_lighting: bool = True
    min_pixels: int = 20

    def __post_init__(self) -> None:
        if self.poses_per_road < 1 or self.poses_per_episode < 1:
            raise PDNError(f"poses_per_road and poses_per_episode must be >= 1, got "
                           f"{self.poses_per_road} and {self.poses_per_episode}")
        near, far = (float(x) for x in self.distance_m)
        if not (math.isfinite(near) and math.isfinite(far) and 0.0 < near <= far):
            raise PDNError(f"distance_m must be (near, far) with 0 < near <= far, got {self.distance_m}")
        object.__setattr__(self, "distance_m", (near, far))
        for name in ("lateral_jitter_m", "yaw_jitter_deg", "lead_m", "noise_deg"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise PDNError(f"{name} must be a finite number >= 0, got {value}")
        if self.min_pixels < 0:
            raise PDNError(f"min_pixels must be >= 0, got {self.min_pixels}")

    def to_dict(self) -> dict:
        return asdict(self)


def approach_poses(road: Road, placement: StickerPlacement, camera: Camera, cfg: ApproachConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame]:
    """Rear-axle poses approaching a sticker along expert trajectories (see :class:`ApproachConfig`).

    Args:
        road: the road the sticker is on.
        placement: the sticker (its ``s`` is the arc length of its centre).
        camera: the camera (its mount offsets turn rear-axle poses into camera positions).
        cfg: the approach settings.
        rng: the only source of randomness.

    Returns:
        ``(poses, info)``: (n, 3) poses (x, y, yaw) and a table with ``distance_m`` (camera to
        sticker centre along the road), ``offset_m`` (rear axle from the ego-lane centre, + = left)
        and ``heading_err_deg``.

    Raises:
        PDNError: the sticker is too close to the start or end of the road for the approach.
    """
    near, far = cfg.distance_m
    drive = DriveConfig(noise_deg=cfg.noise_deg, start_offset_m=cfg.lateral_jitter_m,
                        start_heading_deg=cfg.yaw_jitter_deg)
    step_m = drive.speed_mps * drive.dt
    s0 = placement.s - far - camera.forward_m - cfg.lead_m
    if s0 < 0:
        raise PDNError(f"sticker at s = {placement.s} m is too close to the road start for approaches from "
                       f"{far} m (needs s >= {placement.s - s0:.1f} m)")
    # Up to 15 % slack: in a curve the lane's length differs from the centre line's.
    steps = math.ceil(1.15 * (far - near + cfg.lead_m + camera.forward_m) / step_m) + 3
    if s0 + steps * step_m > road.length - drive.lookahead_m - 1.0:
        raise PDNError(f"sticker at s = {placement.s} m is too close to the end of the {road.length:.0f} m road "
                       f"for approaches from {far} m")
    poses, dists = [], []
    left = cfg.poses_per_road
    while left > 0:
        ep = drive_episode(road, rng, steps, drive, s0=s0)
        traj = np.stack([ep["x"], ep["y"], ep["yaw"]], axis=1)  # (T, 3)
        c, s = np.cos(traj[:, 2]), np.sin(traj[:, 2])
        cam_x = traj[:, 0] + camera.forward_m * c - camera.lateral_m * s
        cam_y = traj[:, 1] + camera.forward_m * s + camera.lateral_m * c
        ahead = placement.s - road.to_road(cam_x, cam_y)[0]  # (T,) decreasing along the approach
        if ahead.min() > near or ahead.max() < far:
            raise PDNError(f"approach on road {road.seed} covers camera distances {ahead.min():.1f} .. "
                           f"{ahead.max():.1f} m, not {near} .. {far} m")
        k = min(cfg.poses_per_episode, left)
        want = rng.uniform(near, far, k)
        order = np.argsort(-ahead)  # increasing -ahead for np.interp
        xp = -ahead[order]
        poses.append(np.stack([np.interp(-want, xp, traj[order, j]) for j in range(3)], axis=1))
        dists.append(want)
        left -= k
    out = np.concatenate(poses)
    state = lane_state(road, out)
    info = pd.DataFrame({"distance_m": np.concatenate(dists), "offset_m": state["offset_m"],
                         "heading_err_deg": state["heading_err_deg"]})
    return out, info


def world_scenes(renderer: Renderer, roads: Road | Sequence[Road], placement: StickerPlacement,
                 cfg: ApproachConfig, rng: np.random.Generator) -> StickerScenes:
    """Render the approach scenes of a world sticker once, with their maps.

    The same placement (``s``, ``d``, size, kind) is used on every road. Scenes in which the
    sticker covers fewer than ``cfg.min_pixels`` pixels (a tight curve can hide it) are dropped.

    Args:
        renderer: renders the frames (its camera, device and chunking are used).
        roads: one road or several.
        placement: where the sticker sits on each road.
        cfg: how poses are drawn.
        rng: the only source of randomness (poses, lighting).

    Returns:
        :class:`StickerScenes` on the renderer's device; ``info`` has ``road``, ``road_seed``,
        ``x``, ``y``, ``yaw``, ``distance_m``, ``offset_m``, ``heading_err_deg``, the lighting,
        and ``pixels`` (sticker coverage).

    Raises:
        PDNError: no scene sees the sticker, or the approach does not fit on a road.
    """
    roads = [roads] if isinstance(roads, Road) else list(roads)
    if not roads:
        raise PDNError("world_scenes: no roads")
    parts: list[dict[str, torch.Tensor]] = []
    infos = []
    for i, road in enumerate(roads):
        poses, info = approach_poses(road, placement, renderer.camera, cfg, rng)
        n = len(poses)
        light = (Lighting.sample(rng, n, renderer.device) if cfg.vary_lighting
                 else Lighting.neutral(n, renderer.device))
        out = renderer.render(road, poses, light, sticker=placement, with_maps=True)
        parts.append({k: getattr(out, k) for k in ("background", "uv", "mask", "gain", "offset")})
        info.insert(0, "road", i)
        info.insert(1, "road_seed", -1 if road.seed is None else int(road.seed))
        for j, name in enumerate(("x", "y", "yaw")):
            info[name] = poses[:, j]
        full = light.index(slice(None))  # every field filled in (the sun elevation may default)
        for name in ("brightness", "temperature", "haze", "shadow", "sun_elevation_deg"):
            info[name] = getattr(full, name).cpu().numpy()
        infos.append(info)
    maps = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    info = pd.concat(infos, ignore_index=True)
    pixels = maps["mask"].sum(dim=(1, 2))
    info["pixels"] = pixels.cpu().numpy()
    keep = torch.nonzero(pixels >= max(cfg.min_pixels, 1)).flatten()
    if len(keep) == 0:
        raise PDNError(f"no approach pose sees the sticker at s = {placement.s} m (distances {cfg.distance_m} m)")
    if len(keep) < len(pixels):
        maps = {k: v[keep] for k, v in maps.items()}
        info = info.iloc[keep.cpu().numpy()].reset_index(drop=True)
    meta = {"source": "world", "placement": asdict(placement), "approach": cfg.to_dict(),
            "camera": renderer.camera.to_dict(), "roads": [r.seed for r in roads]}
    return StickerScenes(maps["background"], maps["uv"], maps["mask"], maps["gain"], maps["offset"], info,
                         placement, meta)


def world_scene_split(renderer: Renderer, placement: StickerPlacement, train_roads: Sequence[Road],
                      eval_roads: Sequence[Road], cfg: ApproachConfig, seed: int
                      ) -> tuple[StickerScenes, StickerScenes]:
    """Training scenes and held-out scenes (other roads, independent poses and lighting).

    The two sets draw from independent streams ``default_rng([seed, 0])`` and ``[seed, 1]``,
    so either is reproducible on its own.
    """
    train = world_scenes(renderer, train_roads, placement, cfg, np.random.default_rng([int(seed), 0]))
    held = world_scenes(renderer, eval_roads, placement, cfg, np.random.default_rng([int(seed), 1]))
    return train, held


# ---------------------------------------------------------------------------- real frames
def frame_scenes(
    frames: torch.Tensor, image_to_ground: np.ndarray, distance_m: float, lateral_m: float = 0.0,
    width_m: float = 3.5, length_m: float = 2.0, yaw_deg: float = 0.0, lighting: str = "local",
    road_albedo: float = 0.35,
) -> StickerScenes:
    """Scenes for real frames: one flat road sticker at the same place ahead of the car in every frame.

    Args:
        frames: (N, 3, H, W) frames in [0, 1] (e.g. ``to_tensor(dataset.frames(idx))``).
        image_to_ground: the dataset's ``image_to_ground()``.
        distance_m, lateral_m, width_m, length_m, yaw_deg: see :func:`homography_maps`.
        lighting: ``"local"`` (gain from the road around the sticker, :func:`local_gain`) or
            ``"none"`` (gain 1: the texture's values appear as they are).
        road_albedo: see :func:`local_gain`.

    Returns:
        :class:`StickerScenes` on the frames' device, maps shared by all frames; ``info`` has
        ``frame`` and, with local lighting, ``gain_r``, ``gain_g``, ``gain_b``.

    Raises:
        PDNError: bad frames or geometry, unknown lighting, or a sticker no frame sees.
    """
    check_frames(frames)
    if lighting not in ("local", "none"):
        raise PDNError(f"lighting must be 'local' or 'none', got {lighting!r}")
    n, _, H, W = frames.shape
    if n == 0:
        raise PDNError("frames: no frames")
    uv, mask = homography_maps(image_to_ground, (H, W), distance_m, lateral_m, width_m, length_m, yaw_deg,
                               device=frames.device)
    if not bool(mask.any()):
        raise PDNError(f"a {width_m} x {length_m} m sticker {distance_m} m ahead, {lateral_m} m left "
                       f"is outside the {H}x{W} frame")
    info = pd.DataFrame({"frame": np.arange(n)})
    gain = None
    if lighting == "local":
        gain, _ = local_gain(frames, mask, road_albedo)
        for j, ch in enumerate("rgb"):
            info[f"gain_{ch}"] = gain[:, j, 0, 0].cpu().numpy()
    meta = {"source": "frames", "distance_m": float(distance_m), "lateral_m": float(lateral_m),
            "width_m": float(width_m), "length_m": float(length_m), "yaw_deg": float(yaw_deg),
            "lighting": lighting, "road_albedo": float(road_albedo)}
    return StickerScenes(frames, uv[None], mask[None], gain, None, info, None, meta)


__all__ = [
    "ApproachConfig",
    "StickerScenes",
    "approach_poses",
    "frame_scenes",
    "world_scene_split",
    "world_scenes",
]
