"""Closed-loop driving evaluation: a steering policy drives the world's roads; a safety driver intervenes.

Open-loop error on recorded frames says little about whether a model can drive: its own
mistakes move the car to poses the recordings never show. Here the policy's command moves the
car (kinematic bicycle), the next frame is rendered from where the car really is, and a safety
driver takes over whenever the car strays too far, as in PilotNet's simulation test.

Definitions (Bojarski et al., "End to End Learning for Self-Driving Cars", arXiv:1604.07316):

* **Car centre**: the midpoint of the wheelbase, ``CAR_CENTRE_M`` = 1.35 m ahead of the rear
  axle. Lane position (``s``, ``offset_m``, ``heading_err_deg``) is measured there, from the
  ego-lane centre line.
* **Intervention**: at a step where ``|offset_m| > intervention_m`` (1 m). That step's frame is
  still rendered and the policy still answers (both are logged), but its command is not executed:
  the safety driver puts the car back on the lane centre line, with the road's heading, where it
  would be one step later (``speed * dt`` further along the road). ``departures`` is the same
  count under the name used for the 1 m corridor.
* **Autonomy**: ``(1 - interventions * penalty_s / elapsed_s) * 100`` with a 6 s penalty per
  intervention (the time a human needs to take over, re-centre and hand back) and ``elapsed_s``
  the simulated time summed over all roads. It is not clipped: it goes below zero when the
  penalties exceed the driving time, so that bad models stay comparable.
* **Lane departure event**: a run of consecutive steps on one road in which a wheel is outside
  the lane, ``|offset_m| > 1.75 - 0.9`` = 0.85 m (lane half-width minus the half-width of a
  1.8 m wide car). Every intervention ends such a run, and runs that recover on their own
  count too, so ``departure_events >= interventions``.

Policies see frames only: ``policy(frames (R, 3, H, W)) -> (R,) degrees``, as a model would.
``policy=None`` is the oracle, the pure-pursuit expert driving from the true pose (the reference
run, and the "expert as the model" check); it needs no access to the simulator's state from a
closure, and frames are still rendered, so its logs, videos and timings compare with a model's.

Stickers: one sticker design (texture plus a template :class:`StickerPlacement`) is repeated
along every road at ``s = sticker_start_m, sticker_start_m + sticker_every_m, ...`` (the
template's own ``s`` is ignored; its ``d``, size, yaw, kind and height are kept). The renderer
draws one placement per call, so each frame shows the nearest copy that may still be in view
(a road sticker leaves the view once all of it is nearer than the closest ground the camera
sees, about 4.4 m ahead of a 66x200 camera); the copy after it, 100 m further at the default
spacing, would cover a pixel or two at most.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from drivenet_patch.driving.video import annotate_frame, open_video
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import check_frames, to_uint8
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.episodes import DriveConfig, expert_steer, lane_state
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import EGO_LANE_D, LANE_WIDTH_M, VIEW_MARGIN_M, Road
from drivenet_patch.world.sticker import StickerPlacement
from drivenet_patch.world.sticker_file import Sticker
from drivenet_patch.world.vehicle import WHEELBASE_M, bicycle_step

CAR_CENTRE_M = WHEELBASE_M / 2.0  # car centre ahead of the rear axle
CAR_HALF_WIDTH_M = 0.9
LANE_DEPARTURE_M = LANE_WIDTH_M / 2.0 - CAR_HALF_WIDTH_M  # a wheel leaves the lane beyond this offset
#: Bounds of a closed-loop run (absurd values would otherwise build roads or logs until memory runs out).
MAX_ROADS = 1000
MAX_KM_PER_ROAD = 20.0

Policy = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MonitorStep:
    """A runtime monitor's answer for one step; every array is (R,), one entry per car.

    Attributes:
        command_deg: the steering actually executed (the policy's, or a fallback's).
        speed_scale: multiplies the configured speed for this step, in (0, 1] (a fallback may slow down).
        record: extra per-car log columns for this step (e.g. a certified interval and a flag).
    """

    command_deg: np.ndarray
    speed_scale: np.ndarray
    record: dict[str, np.ndarray]


class StepMonitor(Protocol):
    """A per-step hook of :func:`drive_closed_loop`: sees the frames and the policy's steering, may
    change the steering and slow the car, and adds columns to the log. The core knows nothing more
    of it (a certified monitor lives in :mod:`defenses.monitor`)."""

    def step(self, frames: torch.Tensor, command_deg: np.ndarray, t: float) -> MonitorStep:
        """``frames`` (R, 3, H, W) the policy saw, ``command_deg`` (R,) its answer, ``t`` seconds since the start."""
        ...

LOG_COLUMNS = ("road", "step", "t", "x", "y", "yaw", "s", "offset_m", "heading_err_deg", "predicted_deg",
               "expert_deg", "intervention", "lane_departure")
STICKER_COLUMNS = ("sticker_in_view", "sticker_px", "sticker_s")


@dataclass(frozen=True)
class ClosedLoopConfig:
    """How the car is driven and judged.

    Attributes:
        speed_mps: constant speed.
        dt: simulation step (and the policy's control period), seconds.
        lookahead_m: pure-pursuit lookahead of the reference expert.
        intervention_m: the safety driver intervenes when the car centre is farther than this
            from the ego-lane centre (PilotNet: 1 m).
        penalty_s: time charged per intervention in the autonomy formula (PilotNet: 6 s).
        start_s_m: every car starts here, centred in its lane with the road's heading.
        vary_lighting: draw one lighting per road from the generator (else neutral daylight).
        sticker_start_m: arc length of the first sticker copy on each road.
        sticker_every_m: spacing of the sticker copies along each road.
    """

    # The world expert's own driving: closed-loop evaluation runs at the speed and step the data
    # was recorded at, and labels with the same lookahead.
    speed_mps: float = DriveConfig.speed_mps
    dt: float = DriveConfig.dt
    lookahead_m: float = DriveConfig.lookahead_m
    intervention_m: float = 1.0
    penalty_s: float = 6.0
    start_s_m: float = 10.0
    vary_lighting: bool = True
    sticker_start_m: float = 60.0
    sticker_every_m: float = 100.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "vary_lighting" and not math.isfinite(float(value)):
                raise PDNError(f"{f.name} must be a finite number, got {value}")
        if not self.speed_mps > 0:
            raise PDNError(f"speed_mps must be > 0, got {self.speed_mps}")
        if not 0 < self.dt <= 1.0:
            raise PDNError(f"dt must lie in (0, 1] s, got {self.dt}")
        if not self.lookahead_m > 0:
            raise PDNError(f"lookahead_m must be > 0, got {self.lookahead_m}")
        if not 0 < self.intervention_m < LANE_WIDTH_M:
            raise PDNError(f"intervention_m must lie in (0, {LANE_WIDTH_M}) m, got {self.intervention_m}")
        if self.penalty_s < 0:
            raise PDNError(f"penalty_s must be >= 0, got {self.penalty_s}")
        if self.start_s_m < CAR_CENTRE_M:
            raise PDNError(f"start_s_m must be >= {CAR_CENTRE_M} m, got {self.start_s_m}")
        if self.sticker_start_m < 0:
            raise PDNError(f"sticker_start_m must be >= 0, got {self.sticker_start_m}")
        if self.sticker_every_m < 10.0:
            raise PDNError(f"sticker_every_m must be >= 10 m (the sticker spacing), got {self.sticker_every_m}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def steps_for(self, km: float) -> int:
        """Simulation steps that cover ``km`` kilometres (at least one)."""
        if not (math.isfinite(km) and 0 < km <= MAX_KM_PER_ROAD):
            raise PDNError(f"km must lie in (0, {MAX_KM_PER_ROAD:g}] km per road, got {km}")
        return max(1, round(km * 1000.0 / (self.speed_mps * self.dt)))

    def road_length_m(self, steps: int) -> float:
        """Drivable road length that ``steps`` steps need from the start (10 % slack: on the inside
        of a curve the lane is shorter than the centre line, so ``s`` runs ahead of the odometer)."""
        return self.start_s_m + 1.1 * steps * self.speed_mps * self.dt + self.lookahead_m + 20.0


# ---------------------------------------------------------------------------- geometry
def car_centre(poses: np.ndarray) -> np.ndarray:
    """Car-centre poses (N, 3) of rear-axle poses (N, 3): ``CAR_CENTRE_M`` ahead, same heading."""
    p = np.array(poses, dtype=np.float64, ndmin=2, copy=True)
    p[:, 0] += CAR_CENTRE_M * np.cos(p[:, 2])
    p[:, 1] += CAR_CENTRE_M * np.sin(p[:, 2])
    return p


def centre_state(road: Road, poses: np.ndarray) -> dict[str, np.ndarray]:
    """Lane position of the car centre: ``s``, ``offset_m`` (+ = left of the ego-lane centre) and
    ``heading_err_deg``, each (N,), for rear-axle poses (N, 3)."""
    return lane_state(road, car_centre(poses), EGO_LANE_D)


def centred_pose(road: Road, s: float) -> np.ndarray:
    """The rear-axle pose (3,) that puts the car centre on the ego-lane centre at ``s`` with the road's heading."""
    x, y = road.point(s, EGO_LANE_D)
    h = float(road.centre(s)[2])
    return np.array([float(x) - CAR_CENTRE_M * math.cos(h), float(y) - CAR_CENTRE_M * math.sin(h), h])


def autonomy_pct(interventions: int, elapsed_s: float, penalty_s: float = 6.0) -> float:
    """PilotNet autonomy ``(1 - interventions * penalty_s / elapsed_s) * 100`` (not clipped)."""
    if not elapsed_s > 0:
        raise PDNError(f"elapsed time must be > 0 s, got {elapsed_s}")
    return (1.0 - interventions * penalty_s / elapsed_s) * 100.0


def count_events(flags: np.ndarray) -> int:
    """Number of runs of consecutive True values along axis 0 of (T, R) flags, summed over columns."""
    f = np.asarray(flags, dtype=bool)
    starts = f.copy()
    starts[1:] &= ~f[:-1]
    return int(starts.sum())


def sticker_positions(road: Road, placement: StickerPlacement, cfg: ClosedLoopConfig) -> np.ndarray:
    """Arc lengths (K,) of the sticker copies on ``road``: every ``sticker_every_m`` from ``sticker_start_m``;
    a placement on a kind of segment (``placement.segment``) goes where the road has one, at least
    ``sticker_every_m`` apart (:func:`~drivenet_patch.world.sticker.segment_positions`)."""
    from drivenet_patch.world.sticker import segment_positions

    last = road.length - max(placement.width_m, placement.length_m)
    if last < cfg.sticker_start_m:
        return np.zeros(0)
    return segment_positions(road, getattr(placement, "segment", "any"), cfg.sticker_start_m, last,
                             cfg.sticker_every_m)


def _reach_m(placement: StickerPlacement, camera: Camera) -> float:
    """How far (along the road) a copy's centre may fall behind the camera and still be drawn.

    A road sticker is out of view once all of it is nearer than the closest ground the camera
    sees (the bottom image row); a billboard is kept until the camera passes it. The bound is
    conservative by half a metre.
    """
    if placement.kind != "road":
        return 0.0
    X, _, _, valid = camera.ground_points()
    nearest = float(X[-1].min()) - camera.forward_m if valid[-1].all() else 0.0
    return 0.5 * math.hypot(placement.width_m, placement.length_m) + 0.5 - max(nearest, 0.0)


def make_roads(count: int, steps_per_road: int, cfg: ClosedLoopConfig, seed: int) -> list[Road]:
    """``count`` procedural roads long enough for ``steps_per_road`` steps; road ``i`` is
    ``Road.generate(seed + i)`` (the CLI's default seed 10 000 keeps them apart from the small seeds
    used in examples; training data draws its road seeds at random from 0 .. 2**31)."""
    if not 1 <= count <= MAX_ROADS:
        raise PDNError(f"count must lie in [1, {MAX_ROADS}], got {count}")
    length = cfg.road_length_m(steps_per_road)
    return [Road.generate(int(seed) + i, length) for i in range(count)]


# ---------------------------------------------------------------------------- the drive
def drive_closed_loop(
    policy: Policy | None,
    roads: Sequence[Road],
    steps_per_road: int,
    camera: Camera,
    cfg: ClosedLoopConfig,
    rng: np.random.Generator,
    sticker: Sticker | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    video: str | Path | None = None,
    video_scale: int = 3,
    threads: int | None = 1,
    monitor: StepMonitor | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Let ``policy`` drive every road at once for ``steps_per_road`` steps, with a safety driver.

    Each step renders the current pose of every car (one render call per road: the renderer
    draws one road per call), runs the policy once on the stacked batch, and moves every car
    with the kinematic bicycle by the policy's command; cars farther than ``intervention_m``
    from their lane centre are re-centred instead (see the module docstring). The expert's
    command at each pose is logged for reference; it never drives, except in oracle mode.

    Args:
        policy: frames (R, 3, H, W) float in [0, 1] on ``device`` -> (R,) steering in degrees,
            positive = left; called under ``torch.no_grad()`` (put a model in eval mode first).
            ``None`` is the oracle: the pure-pursuit expert at the car's true pose drives. Frames
            are rendered all the same, so logs, videos and timings compare with a model's.
        roads: the R roads, each long enough for the drive (see :meth:`ClosedLoopConfig.road_length_m`).
        steps_per_road: simulation steps; each road is driven ``steps_per_road * speed * dt`` metres.
        camera: the dashcam; its size must be the policy's input size.
        cfg: speeds, thresholds, sticker spacing.
        rng: draws one lighting per road (the only randomness).
        sticker: ``(texture (3, h, w) in [0, 1], template placement)``, repeated along every road.
        device: torch device for rendering and the policy.
        progress: show a progress bar on stderr.
        video: write road 0 as an ``.mp4`` (or ``.avi``) at ``1 / dt`` frames per second, upscaled
            ``video_scale`` times, with the policy's (green) and expert's (white) steering.
        threads: torch intra-op threads during the drive on a CPU device, restored afterwards
            (``None``: leave the setting alone). One frame per render call and one small batch
            per policy call are too little work to share: on 2 idle cores a second thread gained
            nothing for rendering, and on busy shared cores it made both rendering and a
            PilotNet forward pass 10 to 40 times slower. Raise it for large models on idle cores
            (at most 4 per CPU core).
        monitor: a :class:`StepMonitor` called after the policy at every step; its command and
            speed are what the car executes. The log then also has ``command_deg`` (executed),
            ``speed_mps`` and the monitor's record columns; ``distance_km`` is the distance driven.

    Returns:
        ``(metrics, log)``. ``metrics`` holds JSON-ready numbers: ``autonomy_pct``,
        ``interventions``, ``departures`` (= interventions), ``departure_events``,
        ``mean_abs_offset_m``, ``max_abs_offset_m``, ``mean_abs_steer_error_deg``, ``elapsed_s``,
        ``distance_km``, ``roads``, ``steps_per_road``; with a sticker also ``sticker_frames``;
        with a video also ``video`` (the path written, which may end in ``.avi``). ``log`` has
        one row per road and step (R * steps rows, road-major) with the columns
        ``LOG_COLUMNS`` (+ ``STICKER_COLUMNS`` with a sticker); ``x, y, yaw`` are the rear-axle
        pose the frame was rendered from, ``s, offset_m, heading_err_deg`` the car centre's
        lane position.
    """
    roads, steps = _check_drive(roads, steps_per_road, cfg, video_scale, threads)
    R = len(roads)
    renderer = Renderer(camera, device=device)
    lights = Lighting.sample(rng, R, device) if cfg.vary_lighting else Lighting.neutral(R, device)
    copies = _StickerCopies.of(sticker, roads, cfg, camera, device)
    trace = _Trace.empty(steps, R, cfg.speed_mps)
    poses = np.stack([centred_pose(road, cfg.start_s_m) for road in roads])  # (R, 3) rear axles
    with ExitStack() as stack:
        bar = tqdm(total=steps, desc="drive", unit="step", disable=not progress, leave=False)
        stack.callback(bar.close)
        writer = video_path = None
        if video is not None:
            probe = annotate_frame(np.zeros((camera.height, camera.width, 3), np.uint8), video_scale, 0, 0, 0, 0)
            writer, video_path = open_video(Path(video), (probe.shape[1], probe.shape[0]), 1.0 / cfg.dt, stack)
        stack.enter_context(cpu_threads(threads, renderer.device))
        for i in range(steps):
            batch = _render_step(renderer, roads, poses, lights, copies, camera, cfg, trace, i)
            if policy is None:
                command = trace.cols["expert_deg"][i].copy()
            else:
                with torch.no_grad():
                    command = _as_degrees(policy(batch), R)
            trace.cols["predicted_deg"][i] = command
            if monitor is not None:
                command, trace.speeds[i] = _monitor_step(monitor, batch, command, i * cfg.dt, cfg.speed_mps,
                                                         trace.records, i, steps)
            trace.executed[i] = command
            trace.cols["x"][i], trace.cols["y"][i], trace.cols["yaw"][i] = poses.T
            trace.inter[i] = np.abs(trace.cols["offset_m"][i]) > cfg.intervention_m
            if writer is not None:
                writer.write(annotate_frame(to_uint8(batch[:1])[0], video_scale, command[0],
                                            trace.cols["expert_deg"][i, 0], trace.cols["offset_m"][i, 0], i * cfg.dt,
                                            bool(trace.inter[i, 0]), bool(trace.sticker_px[i, 0] > 0)))
            poses = bicycle_step(poses, command, trace.speeds[i], cfg.dt)
            for r in np.flatnonzero(trace.inter[i]):  # the safety driver re-centres the car
                poses[r] = centred_pose(roads[r], trace.cols["s"][i, r] + trace.speeds[i, r] * cfg.dt)
            bar.update(1)
    log = trace.log(cfg, monitor is not None, copies is not None)
    metrics = trace.metrics(cfg)
    if copies is not None:
        metrics["sticker_frames"] = int((trace.sticker_px > 0).sum())
    if video_path is not None:
        metrics["video"] = str(video_path)
    return metrics, log


def _check_drive(roads: Sequence[Road], steps_per_road: int, cfg: ClosedLoopConfig, video_scale: int,
                 threads: int | None) -> tuple[list[Road], int]:
    """The arguments of :func:`drive_closed_loop` checked once: ``(roads, steps)``."""
    roads = list(roads)
    if not roads or not all(isinstance(r, Road) for r in roads):
        raise PDNError("roads: expected a non-empty list of Road")
    if isinstance(steps_per_road, bool) or int(steps_per_road) != steps_per_road or steps_per_road < 1:
        raise PDNError(f"steps_per_road must be a positive integer, got {steps_per_road}")
    steps = int(steps_per_road)
    need = cfg.road_length_m(steps)
    for i, road in enumerate(roads):
        if road.length - VIEW_MARGIN_M < need:
            raise PDNError(f"road {i} has {road.length - VIEW_MARGIN_M:.0f} drivable m; {steps} steps need {need:.0f} m")
    if isinstance(video_scale, bool) or not isinstance(video_scale, int) or not 1 <= video_scale <= 16:
        raise PDNError(f"video_scale must be an integer in [1, 16], got {video_scale!r}")
    check_threads(threads)
    return roads, steps


def check_threads(threads: int | None) -> int | None:
    """``threads`` checked: a positive integer up to 4 per CPU core, or None (leave the setting alone)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise PDNError(f"threads must be a positive integer or None, got {threads!r}")
    max_threads = 4 * (os.cpu_count() or 1)
    if threads is not None and threads > max_threads:  # OpenMP would try to start them all (and run out of memory)
        raise PDNError(f"threads: at most {max_threads} (4 per CPU core of this machine), got {threads}")
    return threads


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: str | torch.device) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for a block on a CPU ``device``, restored afterwards.

    Closed-loop work (one frame per render call, one small batch per policy call) is too little to
    share: on 2 idle cores a second thread gained nothing for rendering, and on busy shared cores it
    made rendering and a PilotNet forward pass 10 to 40 times slower. ``None`` leaves the setting alone.
    """
    check_threads(threads)
    if threads is None or torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _StickerCopies:
    """One sticker design repeated along every road: texture, template placement, copies' arc lengths."""

    texture: torch.Tensor
    template: StickerPlacement
    copies: list[np.ndarray]
    reach: float

    @classmethod
    def of(cls, sticker: Sticker | None, roads: list[Road], cfg: ClosedLoopConfig, camera: Camera,
           device: str | torch.device) -> _StickerCopies | None:
        if sticker is None:
            return None
        texture, template = sticker
        if not isinstance(template, StickerPlacement):
            raise PDNError(f"sticker: expected (texture, StickerPlacement), got {type(template).__name__}")
        texture = check_frames(texture[None] if torch.is_tensor(texture) else texture, "sticker texture")[0]
        return cls(texture.detach().to(device, torch.float32), template,
                   [sticker_positions(road, template, cfg) for road in roads], _reach_m(template, camera))


@dataclass
class _Trace:
    """Everything a drive records, (steps, R) arrays, and the log and metrics made from them."""

    cols: dict[str, np.ndarray]
    inter: np.ndarray
    executed: np.ndarray
    speeds: np.ndarray
    sticker_px: np.ndarray
    records: dict[str, np.ndarray]

    @classmethod
    def empty(cls, steps: int, R: int, speed: float) -> _Trace:
        cols = {k: np.zeros((steps, R)) for k in ("x", "y", "yaw", "s", "offset_m", "heading_err_deg",
                                                   "predicted_deg", "expert_deg", "sticker_s")}
        return cls(cols, np.zeros((steps, R), bool), np.zeros((steps, R)), np.full((steps, R), float(speed)),
                   np.zeros((steps, R), np.int64), {})

    def log(self, cfg: ClosedLoopConfig, monitored: bool, with_sticker: bool) -> pd.DataFrame:
        """One row per road and step (road-major): ``LOG_COLUMNS`` (+ monitor and ``STICKER_COLUMNS``)."""
        steps, R = self.inter.shape
        departures = np.abs(self.cols["offset_m"]) > LANE_DEPARTURE_M
        log = pd.DataFrame({
            "road": np.repeat(np.arange(R), steps),
            "step": np.tile(np.arange(steps), R),
            "t": np.tile(np.arange(steps) * cfg.dt, R),
            **{k: self.cols[k].T.ravel() for k in ("x", "y", "yaw", "s", "offset_m", "heading_err_deg",
                                                    "predicted_deg", "expert_deg")},
            "intervention": self.inter.T.ravel(),
            "lane_departure": departures.T.ravel(),
        })
        if monitored:
            log["command_deg"] = self.executed.T.ravel()
            log["speed_mps"] = self.speeds.T.ravel()
            for k, v in self.records.items():
                log[k] = v.T.ravel()
        if with_sticker:
            log["sticker_in_view"] = (self.sticker_px > 0).T.ravel()
            log["sticker_px"] = self.sticker_px.T.ravel()
            log["sticker_s"] = self.cols["sticker_s"].T.ravel()
        return log

    def metrics(self, cfg: ClosedLoopConfig) -> dict[str, Any]:
        """PilotNet autonomy and the lane-keeping numbers (see the module docstring)."""
        steps, R = self.inter.shape
        n_inter = int(self.inter.sum())
        elapsed = steps * cfg.dt * R
        offset = self.cols["offset_m"]
        return {
            "autonomy_pct": float(autonomy_pct(n_inter, elapsed, cfg.penalty_s)),
            "interventions": n_inter,
            "departures": n_inter,
            "departure_events": count_events(np.abs(offset) > LANE_DEPARTURE_M),
            "mean_abs_offset_m": float(np.abs(offset).mean()),
            "max_abs_offset_m": float(np.abs(offset).max()),
            "mean_abs_steer_error_deg": float(np.abs(self.cols["predicted_deg"] - self.cols["expert_deg"]).mean()),
            "elapsed_s": float(elapsed),
            "distance_km": float(self.speeds.sum() * cfg.dt / 1000.0),
            "roads": R,
            "steps_per_road": steps,
        }


def _render_step(renderer: Renderer, roads: list[Road], poses: np.ndarray, lights: Lighting,
                 copies: _StickerCopies | None, camera: Camera, cfg: ClosedLoopConfig, trace: _Trace,
                 i: int) -> torch.Tensor:
    """Every car's frame at step ``i`` (one render call per road), with its lane state logged: (R, 3, H, W)."""
    frames = []
    cols = trace.cols
    for r, road in enumerate(roads):
        pose = poses[r : r + 1]
        state = centre_state(road, pose)
        cols["s"][i, r] = state["s"][0]
        cols["offset_m"][i, r] = state["offset_m"][0]
        cols["heading_err_deg"][i, r] = state["heading_err_deg"][0]
        cols["expert_deg"][i, r] = expert_steer(road, pose, cfg.lookahead_m)[0]
        light = lights.index(slice(r, r + 1))
        placement = None
        if copies is not None:
            ahead = _next_copy(road, pose[0], camera, copies.copies[r], copies.reach)
            cols["sticker_s"][i, r] = np.nan if ahead is None else ahead
            placement = None if ahead is None else replace(copies.template, s=ahead)
        if placement is None:
            frames.append(renderer.render(road, pose, light).image)
        else:
            out = renderer.render(road, pose, light, sticker=placement, texture=copies.texture, with_maps=True)
            trace.sticker_px[i, r] = int(out.mask.sum())
            frames.append(out.image)
    return torch.cat(frames)


def _monitor_step(monitor: StepMonitor, batch: torch.Tensor, command: np.ndarray, t: float, speed: float,
                  records: dict[str, np.ndarray], i: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the monitor once, check its answer, store its record row ``i``; -> (command, speed) (R,)."""
    n = command.shape[0]
    out = monitor.step(batch, command.copy(), t)
    cmd = _as_degrees(out.command_deg, n)
    scale = np.asarray(out.speed_scale, dtype=np.float64).reshape(-1)
    if scale.shape != (n,) or not ((scale > 0) & (scale <= 1)).all():
        raise PDNError(f"monitor returned speed scales {scale.tolist()}; expected ({n},) values in (0, 1]")
    for k, v in out.record.items():
        if k in LOG_COLUMNS or k in STICKER_COLUMNS or k in ("command_deg", "speed_mps"):
            raise PDNError(f"monitor record column {k!r} clashes with a drive log column")
        arr = np.asarray(v).reshape(-1)
        if arr.shape != (n,):
            raise PDNError(f"monitor record {k!r} has shape {np.shape(v)}; expected ({n},)")
        if k not in records:
            records[k] = np.zeros((steps, n), dtype=arr.dtype)
        records[k][i] = arr
    return cmd, speed * scale


def _next_copy(road: Road, pose: np.ndarray, camera: Camera, copies: np.ndarray, reach: float) -> float | None:
    """Arc length of the first sticker copy not yet out of view behind the camera of the car at
    rear-axle ``pose`` (3,) (see :func:`_reach_m`), or None when all copies are past."""
    c, sn = math.cos(pose[2]), math.sin(pose[2])
    cam_s = float(road.to_road(pose[0] + camera.forward_m * c - camera.lateral_m * sn,
                               pose[1] + camera.forward_m * sn + camera.lateral_m * c)[0])
    k = int(np.searchsorted(copies + reach, cam_s))
    return float(copies[k]) if k < len(copies) else None


def _as_degrees(out: Any, n: int) -> np.ndarray:
    """The policy's answer as a float64 (n,) array, checked once per step."""
    arr = out.detach().cpu().numpy() if torch.is_tensor(out) else np.asarray(out)
    arr = arr.astype(np.float64).reshape(-1) if arr.size == n else arr
    if arr.shape != (n,):
        raise PDNError(f"policy returned shape {tuple(np.shape(out))}; expected ({n},) steering angles in degrees")
    if not np.isfinite(arr).all():
        raise PDNError("policy returned a non-finite steering angle")
    return arr
