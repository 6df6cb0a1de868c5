"""Closed-loop-aware sticker optimisation: optimise on the frames the deviating car actually sees.

The open-loop attack (:mod:`attacks.sticker`) optimises over poses of expert approaches: every
frame is seen from a car that the sticker has not pushed yet. DRP (Sato et al., "Dirty Road Can
Attack: Security of Deep Learning based Automated Lane Centering under Physical-World Attack",
USENIX Security 2021) instead alternates

(a) **closed-loop rollouts** of the optimisation approaches under the current sticker: the attacked
    model drives, the kinematic bicycle (:func:`drivenet_patch.world.vehicle.bicycle_step`) moves
    the car, the world renderer gives exact sticker maps at the poses actually visited (batched over
    the approaches on a road; one policy call for all approaches per step) - its "motion model
    input generation"; and
(b) EOT steps (:mod:`attacks.eot`) on the frames of the last rollout, re-simulating every
    ``resim_every`` steps,

and optimises the **lateral displacement the car accumulates** over the approach window rather
than the per-frame steering change. Here the displacement is a differentiable function of the
steering outputs along the rolled-out trajectory: the rollout's poses (hence its frames) are held
fixed, and the bicycle model is integrated again in torch from each approach's start pose with the
steering sequence in which the frames drawn by the EOT step carry the model's new outputs and the
others keep the rollout's (:func:`lateral_offsets`). With the rollout's own steering the
integration reproduces the rollout exactly; its gradient is the sensitivity of the lane offset to
each command (DRP's objective, as a first-order model of the car's motion).

The lane offset of the re-integrated car centre is taken along the road's left normal at the
rolled-out position: ``offset_t = offset_roll_t + n_t . (c_t - c_roll_t)`` (exact at the rollout,
first order off it). The per-frame objectives of :mod:`attacks.base` stay available
(``objective="steering"``): they then see the closed-loop frames but score each frame alone.

No safety driver acts in the rollouts (a departure is what the attack wants); before the car
strays past the intervention corridor a rollout is the same drive as
:func:`drivenet_patch.driving.drive.drive_closed_loop` from the same start and lighting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from attacks.base import (
    Objective,
    StickerResult,
    TrajectoryObjective,
    attack_mode,
    deviation,
    lateral_hinge,
    make_objective,
    model_device,
    predict,
)
from attacks.eot import draw_eot, eot_frames
from attacks.scenes import StickerScenes
from attacks.sticker import HISTORY_COLUMNS, StickerConfig, TextureOptimiser
from drivenet_patch.driving.drive import (
    CAR_CENTRE_M,
    LANE_DEPARTURE_M,
    ClosedLoopConfig,
    centre_state,
    centred_pose,
    cpu_threads,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.composite import apply_dirt, apply_sticker
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import VIEW_MARGIN_M, Road
from drivenet_patch.world.sticker import StickerPlacement
from drivenet_patch.world.vehicle import MAX_STEER_DEG, WHEELBASE_M, bicycle_step

OBJECTIVES = ("displacement", "steering")
ROLLOUT_COLUMNS = ("rollout_offset_m", "rollout_departure_rate")  # added to the history
DEFAULT_DRIVE = ClosedLoopConfig()  # the drive of pdn drive and pdn attack eval: speed, step


@dataclass(frozen=True)
class ClosedLoopAttackConfig:
    """Settings of the closed-loop-aware attack (validated on construction).

    Attributes:
        resim_every: re-simulate the approaches under the current sticker every this many
            optimisation steps (DRP re-simulates at every iteration: 1).
        objective: ``"displacement"`` (the lane offset accumulated over the window, toward the
            target side) or ``"steering"`` (the per-frame objective of the sticker config).
        before_m: each approach starts with the car centre this far before the sticker centre.
        after_m: and ends this far past it.
        approaches_per_road: approaches driven on each road (different start states and lighting).
        start_offset_m: start offset from the lane centre, uniform in +- this.
        start_yaw_deg: start heading error, uniform in +- this.
        goal_m: displacement hinge: a step whose offset toward the target side is at least this
            costs nothing (a wheel leaves the lane at 0.85 m).
        metre_weight: the displacement objective (metres) enters the loss times this, so that the
            printability weights keep the meaning they have against the per-frame hinge (degrees).
        min_pixels: frames whose sticker covers fewer pixels are not drawn by the EOT steps.
    """

    resim_every: int = 25
    objective: str = "displacement"
    before_m: float = 25.0
    after_m: float = 20.0
    approaches_per_road: int = 2
    start_offset_m: float = 0.3
    start_yaw_deg: float = 2.0
    goal_m: float = 1.2
    metre_weight: float = 10.0
    min_pixels: int = 20

    def __post_init__(self) -> None:
        for name, low, high in (("resim_every", 1, 500), ("approaches_per_road", 1, 64), ("min_pixels", 0, 10**6)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise PDNError(f"{name} must be an integer in [{low}, {high}], got {v!r}")
        if self.objective not in OBJECTIVES:
            raise PDNError(f"closed-loop objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("before_m", "after_m", "start_offset_m", "start_yaw_deg", "goal_m", "metre_weight"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise PDNError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.before_m < 5.0:
            raise PDNError(f"before_m must be >= 5 m (the car must see the sticker coming), got {self.before_m}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- approaches
@dataclass
class Approaches:
    """The fixed set of optimisation approaches every rollout drives.

    Attributes:
        roads: the roads (one sticker on each, at ``placements[r]``).
        placements: the sticker on each road (its ``s`` is where the sticker sits on that road).
        road_of: (A,) road index of every approach.
        start: (A, 3) rear-axle start poses.
        lighting: one :class:`Lighting` entry per approach.
        steps: simulation steps of every approach.
    """

    roads: list[Road]
    placements: list[StickerPlacement]
    road_of: np.ndarray
    start: np.ndarray
    lighting: Lighting
    steps: int

    def __len__(self) -> int:
        return len(self.road_of)


def approach_sticker_s(placement: StickerPlacement, cfg: ClosedLoopAttackConfig, drive: ClosedLoopConfig) -> float:
    """Where the sticker sits on a rollout road: far enough from the start for ``before_m`` (plus half its length)."""
    return max(drive.start_s_m, CAR_CENTRE_M) + cfg.before_m + 0.5 * placement.length_m + 1.0


def rollout_road_length(placement: StickerPlacement, cfg: ClosedLoopAttackConfig, drive: ClosedLoopConfig) -> float:
    """Road length (metres, before the renderer's view margin) a rollout road needs."""
    s = approach_sticker_s(placement, cfg, drive)
    return s + 1.15 * (cfg.after_m + 0.5 * placement.length_m) + drive.lookahead_m + 20.0


def make_approaches(roads: Sequence[Road], placement: StickerPlacement, cfg: ClosedLoopAttackConfig,
                    rng: np.random.Generator, drive: ClosedLoopConfig = DEFAULT_DRIVE,
                    device: str | torch.device = "cpu") -> Approaches:
    """Approaches to one sticker copy per road: ``approaches_per_road`` start states per road.

    The car centre starts ``before_m + length/2`` before the sticker's centre (so a long sticker is
    approached from as far as a short one's near edge), off the lane centre by up to
    ``start_offset_m`` and off the road's heading by up to ``start_yaw_deg``; every approach has its
    own lighting. The walk covers the window up to ``after_m`` past the sticker's far half.

    Args:
        roads: the roads, each at least :func:`rollout_road_length` long (+ the view margin).
        placement: the sticker template (its ``s`` is replaced by :func:`approach_sticker_s`).
        cfg: the attack settings.
        rng: start states and lighting (the only randomness).
        drive: speed and step (``start_s_m`` is where the window may begin at the earliest).
        device: where the lighting lives (the renderer's device).
    """
    roads = list(roads)
    if not roads:
        raise PDNError("closed-loop attack: no roads")
    need = rollout_road_length(placement, cfg, drive)
    centres = []
    for i, road in enumerate(roads):
        if road.length - VIEW_MARGIN_M < need:
            raise PDNError(f"road {i} has {road.length - VIEW_MARGIN_M:.0f} drivable m; the approach needs {need:.0f} m")
        s_r = segment_sticker_s(road, placement, cfg, drive)
        if s_r is None:
            raise PDNError(f"road {i} has no {placement.segment} segment with room for the approach")
        centres.append(s_r)
    k = cfg.approaches_per_road
    starts, road_of = [], []
    for r, road in enumerate(roads):
        s0 = centres[r] - cfg.before_m - 0.5 * placement.length_m
        for _ in range(k):
            pose = centred_pose(road, s0)
            h = pose[2]
            d = rng.uniform(-cfg.start_offset_m, cfg.start_offset_m)
            pose = pose + np.array([-d * math.sin(h), d * math.cos(h), math.radians(
                rng.uniform(-cfg.start_yaw_deg, cfg.start_yaw_deg))])
            starts.append(pose)
            road_of.append(r)
    steps = max(1, math.ceil((cfg.before_m + cfg.after_m + placement.length_m) / (drive.speed_mps * drive.dt)))
    n = len(starts)
    lights = Lighting.sample(rng, n, device) if drive.vary_lighting else Lighting.neutral(n, device)
    return Approaches(roads, [replace(placement, s=c) for c in centres], np.array(road_of), np.stack(starts),
                      lights, steps)


def segment_sticker_s(road: Road, placement: StickerPlacement, cfg: ClosedLoopAttackConfig,
                      drive: ClosedLoopConfig = DEFAULT_DRIVE) -> float | None:
    """Where the sticker sits on a rollout road: :func:`approach_sticker_s` for a placement anywhere; for one on a
    kind of segment (``placement.segment``), the first such segment with room for the approach before and after
    it (None when the road has none)."""
    from drivenet_patch.world.sticker import segment_positions

    s_c = approach_sticker_s(placement, cfg, drive)
    if placement.segment == "any":
        return s_c
    tail = rollout_road_length(placement, cfg, drive) - s_c
    found = segment_positions(road, placement.segment, s_c, road.length - VIEW_MARGIN_M - tail, 1.0)
    return float(found[0]) if len(found) else None


# ---------------------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """One closed-loop drive of every approach under one sticker.

    Attributes:
        poses: (T + 1, A, 3) rear-axle poses; frame ``t`` was rendered from ``poses[t]``.
        steer: (T, A) the model's commands (degrees, + = left), as executed.
        offset_m: (T + 1, A) lane offset of the car centre (+ = left).
        normal: (T + 1, A, 2) the road's left unit normal at the car centre.
        scenes: the frames in which the sticker covers at least ``min_pixels`` pixels, with their
            maps; ``scenes.info`` has ``t``, ``approach``, ``x``, ``y``, ``yaw``.
        frame_index: (len(scenes),) long, ``t * A + a`` of every scene.
    """

    poses: np.ndarray
    steer: torch.Tensor
    offset_m: np.ndarray
    normal: np.ndarray
    scenes: StickerScenes | None
    frame_index: torch.Tensor

    def departure_rate(self) -> float:
        """Share of approaches in which a wheel leaves the lane (any side), as :mod:`attacks.evaluate` counts."""
        return float((np.abs(self.offset_m) > LANE_DEPARTURE_M).any(axis=0).mean())


def _lane_frames(approaches: Approaches, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lane offsets (A,) and left normals (A, 2) of the car centres of rear-axle poses (A, 3)."""
    off = np.zeros(len(poses))
    nrm = np.zeros((len(poses), 2))
    for r, road in enumerate(approaches.roads):
        idx = np.flatnonzero(approaches.road_of == r)
        if len(idx) == 0:
            continue
        st = centre_state(road, poses[idx])
        off[idx] = st["offset_m"]
        h = road.centre(st["s"])[2]
        nrm[idx] = np.stack([-np.sin(h), np.cos(h)], axis=1)
    return off, nrm


@torch.no_grad()
def rollout(model: nn.Module, approaches: Approaches, texture: torch.Tensor | None, renderer: Renderer,
            drive: ClosedLoopConfig = DEFAULT_DRIVE, dirt: bool = False, min_pixels: int = 20,
            threads: int | None = 1) -> Rollout:
    """Drive every approach closed loop under ``texture`` and keep the frames that see the sticker.

    Each step renders the current pose of every approach with exact sticker maps (one render call
    per road, all its approaches batched), composites the texture with the core's
    :func:`~drivenet_patch.world.composite.apply_sticker` (the attack's own compositing: the EOT
    steps see the same pixels), runs the model once on all approaches and moves every car with
    :func:`~drivenet_patch.world.vehicle.bicycle_step`.

    Args:
        model: frames (B, 3, H, W) -> (B,) degrees; called as it is (put it in eval mode first).
        approaches: from :func:`make_approaches`.
        texture: (3, h, w) sticker (dirt mode: the multiplier), or None for no sticker.
        renderer: its camera must be the model's input size.
        drive: speed and step.
        dirt: composite in dirt mode.
        min_pixels: frames with fewer sticker pixels are left out of ``scenes``.
        threads: torch intra-op threads during the rollout on a CPU device, restored afterwards (None:
            leave the setting alone; see :func:`drivenet_patch.driving.drive.cpu_threads`). On busy shared cores a
            second thread made one 66x200 render ~12x slower (measured 0.024 s with 1 thread, 0.31 s with 2).
    """
    with cpu_threads(threads, renderer.device):
        return _rollout(model, approaches, texture, renderer, drive, dirt, min_pixels)


def _rollout(model: nn.Module, approaches: Approaches, texture: torch.Tensor | None, renderer: Renderer,
             drive: ClosedLoopConfig, dirt: bool, min_pixels: int) -> Rollout:
    A, T = len(approaches), approaches.steps
    device = renderer.device
    poses = np.zeros((T + 1, A, 3))
    poses[0] = approaches.start
    steer = torch.zeros(T, A, device=device)
    offsets = np.zeros((T + 1, A))
    normals = np.zeros((T + 1, A, 2))
    kept: list[dict[str, torch.Tensor]] = []
    rows: list[pd.DataFrame] = []
    index: list[torch.Tensor] = []
    tex = None if texture is None else texture.detach().to(device, torch.float32)
    for t in range(T):
        offsets[t], normals[t] = _lane_frames(approaches, poses[t])
        parts: dict[str, list[torch.Tensor]] = {}
        order = []
        for r, road in enumerate(approaches.roads):
            idx = np.flatnonzero(approaches.road_of == r)
            if len(idx) == 0:
                continue
            out = renderer.render(road, poses[t, idx], approaches.lighting.index(torch.as_tensor(idx, device=approaches.lighting.brightness.device)),
                                  sticker=approaches.placements[r], with_maps=True)
            for k in ("background", "uv", "mask", "gain", "offset"):
                parts.setdefault(k, []).append(getattr(out, k))
            order.append(idx)
        perm = torch.as_tensor(np.argsort(np.concatenate(order)), device=device)
        maps = {k: torch.cat(v)[perm] for k, v in parts.items()}  # (A, ...) in approach order
        if tex is None:
            frames = maps["background"]
        elif dirt:
            frames = apply_dirt(maps["background"], tex[:1], maps["uv"], maps["mask"], maps["offset"])
        else:
            frames = apply_sticker(maps["background"], tex, maps["uv"], maps["mask"], maps["gain"], maps["offset"])
        cmd = model(frames).reshape(-1).float()
        if cmd.shape != (A,) or not bool(torch.isfinite(cmd).all()):
            raise PDNError(f"model returned {tuple(cmd.shape)} or non-finite steering for {A} frames")
        steer[t] = cmd
        poses[t + 1] = bicycle_step(poses[t], cmd.double().cpu().numpy(), drive.speed_mps, drive.dt)
        visible = torch.nonzero(maps["mask"].sum(dim=(1, 2)) >= max(min_pixels, 1)).flatten()
        if len(visible):
            kept.append({k: v[visible] for k, v in maps.items()})
            vis = visible.cpu().numpy()
            rows.append(pd.DataFrame({"t": t, "approach": vis, "x": poses[t, vis, 0], "y": poses[t, vis, 1],
                                      "yaw": poses[t, vis, 2]}))
            index.append(t * A + visible)
    offsets[T], normals[T] = _lane_frames(approaches, poses[T])
    scenes = None
    if kept:
        m = {k: torch.cat([p[k] for p in kept]) for k in kept[0]}
        scenes = StickerScenes(m["background"], m["uv"], m["mask"], m["gain"], m["offset"],
                               pd.concat(rows, ignore_index=True), approaches.placements[0],
                               {"source": "closed_loop"})
    frame_index = torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=device)
    return Rollout(poses, steer, offsets, normals, scenes, frame_index)


# ---------------------------------------------------------------------------- displacement
def bicycle_poses(start: torch.Tensor, steer_deg: torch.Tensor, speed: float, dt: float,
                  wheelbase: float = WHEELBASE_M) -> torch.Tensor:
    """The kinematic bicycle of :func:`~drivenet_patch.world.vehicle.bicycle_step`, in torch (differentiable).

    Exact integration on the arc (Rajamani, "Vehicle Dynamics and Control", ch. 2): the chord
    ``speed * dt * sinc(dyaw / 2)`` at the mid heading; steering clipped to +- ``MAX_STEER_DEG``.

    Shape:
        start (A, 3), steer_deg (T, A) -> poses (T + 1, A, 3), ``poses[0] = start``.
    """
    pose = start
    out = [pose]
    for t in range(steer_deg.shape[0]):
        kappa = torch.tan(torch.deg2rad(steer_deg[t].clamp(-MAX_STEER_DEG, MAX_STEER_DEG))) / wheelbase
        dyaw = kappa * (speed * dt)
        chord = torch.sinc(dyaw / (2.0 * math.pi)) * (speed * dt)  # 2 sin(dyaw/2) / dyaw, 1 at 0
        mid = pose[:, 2] + dyaw / 2.0
        pose = torch.stack([pose[:, 0] + chord * torch.cos(mid), pose[:, 1] + chord * torch.sin(mid),
                            pose[:, 2] + dyaw], dim=1)
        out.append(pose)
    return torch.stack(out)


def lateral_offsets(steer_deg: torch.Tensor, roll: Rollout, drive: ClosedLoopConfig = DEFAULT_DRIVE
                    ) -> torch.Tensor:
    """Lane offsets (T + 1, A) of the car driven by ``steer_deg`` from the rollout's starts (metres, + = left).

    The rollout's poses are held fixed (its frames were rendered there); the car is integrated again
    with :func:`bicycle_poses` and its centre's departure from the rolled-out centre is projected on
    the road's left normal there: ``offset_roll + n . (c - c_roll)``. With ``steer_deg =
    roll.steer`` this is the rollout's own offsets.

    Shape:
        steer_deg (T, A) -> (T + 1, A), float64.
    """
    dev = steer_deg.device
    ref = torch.as_tensor(roll.poses, dtype=torch.float64, device=dev)  # (T+1, A, 3)
    poses = bicycle_poses(ref[0], steer_deg.double(), drive.speed_mps, drive.dt)

    def centre(p: torch.Tensor) -> torch.Tensor:
        return p[..., :2] + CAR_CENTRE_M * torch.stack([torch.cos(p[..., 2]), torch.sin(p[..., 2])], dim=-1)

    n = torch.as_tensor(roll.normal, dtype=torch.float64, device=dev)
    base = torch.as_tensor(roll.offset_m, dtype=torch.float64, device=dev)
    return base + ((centre(poses) - centre(ref)) * n).sum(dim=-1)


# ---------------------------------------------------------------------------- the attack
def optimize_closed_loop(
    model: nn.Module, approaches: Approaches, cfg: StickerConfig, ccfg: ClosedLoopAttackConfig,
    renderer: Renderer, generator: torch.Generator | None = None, progress: bool = False,
    objective: Objective | None = None, trajectory_objective: TrajectoryObjective | None = None,
    palette: torch.Tensor | None = None, drive: ClosedLoopConfig = DEFAULT_DRIVE,
) -> StickerResult:
    """Optimise a sticker closed-loop-aware (DRP-style; see the module docstring).

    Every ``ccfg.resim_every`` steps the approaches are driven again under the current texture
    (:func:`rollout`); in between, each step draws ``cfg.batch`` EOT samples from the last rollout's
    frames that see the sticker and takes an Adam step on

        metre_weight * trajectory_objective(lateral_offsets(steering)) + printability

    where ``steering`` is the rollout's with the drawn frames' entries replaced by the model's
    outputs on their EOT versions (duplicates averaged); its gradient is scaled by
    ``frames / batch`` so that it estimates the gradient over all the rollout's frames. With
    ``ccfg.objective == "steering"`` the per-frame ``objective`` scores the drawn frames instead.

    Args:
        model: images (B, 3, H, W) in [0, 1] -> steering (B,) degrees; eval mode and frozen
            weights during the attack, restored after.
        approaches: from :func:`make_approaches` (on ``renderer``'s device or the CPU).
        cfg: the sticker settings (steps, batch, lr, texture, target, printability, EOT, dirt).
        ccfg: the closed-loop settings.
        renderer: renders the rollouts; its camera size must be the model's input size.
        generator: the only randomness (initial texture, EOT draws); default from ``cfg.seed``.
        progress: a progress bar on stderr.
        objective: per-frame objective (default from ``cfg``), used with ``objective="steering"``.
        trajectory_objective: ``offsets (T, A) -> scalar`` to minimise; default
            :func:`~attacks.base.lateral_hinge` toward ``cfg.target`` with ``ccfg.goal_m``.
        palette: printer colours for the NPS.
        drive: speed and step of the rollouts.

    Returns:
        :class:`~attacks.base.StickerResult`; the history has the sticker attack's columns plus
        ``rollout_offset_m`` (mean peak offset toward the target over the approaches, last
        rollout) and ``rollout_departure_rate``; ``config`` holds ``closed_loop`` settings.

    Raises:
        PDNError: ``displacement`` with ``target="away"``; a renderer whose size is not the model's.
    """
    device = model_device(model)
    input_size = getattr(model, "input_size", None)
    cam = (renderer.camera.height, renderer.camera.width)
    if input_size is not None and tuple(input_size) != cam:
        raise PDNError(f"the renderer draws {cam[0]}x{cam[1]} frames but the model expects "
                       f"{input_size[0]}x{input_size[1]}")
    if ccfg.objective == "displacement" and cfg.target not in ("left", "right"):
        raise PDNError(f"the displacement objective needs target left or right, got {cfg.target!r}")
    sign = 1.0 if cfg.target == "left" else -1.0
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    if objective is None:
        objective = make_objective(cfg.target, cfg.angle_deg, cfg.loss)
    if trajectory_objective is None and ccfg.objective == "displacement":
        trajectory_objective = lateral_hinge(cfg.target, ccfg.goal_m)
    tex = TextureOptimiser.start(cfg, generator, device, palette)
    layer = tex.layer
    rows: list[list[float]] = []
    roll: Rollout | None = None
    with attack_mode(model):
        bar = tqdm(range(cfg.steps), desc="closed-loop sticker", disable=not progress, leave=False)
        for step in bar:
            if step % ccfg.resim_every == 0 or roll is None:
                with torch.no_grad():
                    roll = rollout(model, approaches, layer.texture(), renderer, drive, cfg.dirt, ccfg.min_pixels)
                if roll.scenes is None:
                    raise PDNError("no rollout frame sees the sticker (is it on the approached lane?)")
                scenes = roll.scenes.to(device)
                stale = roll.steer.reshape(-1).to(device)  # (T*A,)
                frame_index = roll.frame_index.to(device)
                clean = predict(model, scenes.background)
                peak = float(np.max(sign * roll.offset_m, axis=0).mean())
                dep = roll.departure_rate()
            params = draw_eot(cfg.eot, len(scenes), cfg.batch, scenes.size, generator, device)
            texture = layer.texture()
            frames = eot_frames(scenes, texture, params, cfg.eot, cfg.dirt).contiguous(
                memory_format=torch.channels_last)
            pred = model(frames)  # (B,)
            ref = clean[params.idx]
            if ccfg.objective == "displacement":
                flat = frame_index[params.idx]
                count = torch.bincount(flat, minlength=len(stale)).to(pred.dtype)
                scale = len(scenes) / cfg.batch
                live = pred.detach() + scale * (pred - pred.detach())  # value: pred; gradient: scaled
                diff = (live - stale[flat]) / count[flat]
                steering = stale.index_add(0, flat, diff).view_as(roll.steer)
                offsets = lateral_offsets(steering, roll, drive)[1:]  # (T, A)
                obj = trajectory_objective(offsets).to(pred.dtype) * ccfg.metre_weight
            else:
                obj = objective(pred, ref)
            loss, score, tv = tex.loss(obj, texture)
            tex.step(loss)
            dev_deg = deviation(pred.detach(), ref, cfg.target).mean()
            rows.append([float(loss.detach()), float(obj.detach()), float(dev_deg), float(score.detach()), float(tv.detach()),
                         peak, dep])
            if progress and (step % 10 == 0 or step == cfg.steps - 1):
                bar.set_postfix(loss=f"{float(loss):.3g}", dev=f"{float(dev_deg):.2f}", offset=f"{peak:.2f}")
    history = pd.DataFrame(rows, columns=[*HISTORY_COLUMNS[1:], *ROLLOUT_COLUMNS])
    history.insert(0, "step", range(len(history)))
    with torch.no_grad():
        texture = layer.texture().detach().clone()
    config = {**cfg.to_dict(), "closed_loop": ccfg.to_dict()}
    return StickerResult(texture, history, "dirt" if cfg.dirt else "sticker", config)


__all__ = [
    "DEFAULT_DRIVE",
    "OBJECTIVES",
    "ROLLOUT_COLUMNS",
    "Approaches",
    "ClosedLoopAttackConfig",
    "Rollout",
    "approach_sticker_s",
    "bicycle_poses",
    "lateral_offsets",
    "make_approaches",
    "optimize_closed_loop",
    "rollout",
    "rollout_road_length",
    "segment_sticker_s",
]
