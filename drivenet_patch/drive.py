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

import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from drivenet_patch.errors import PDNError
from drivenet_patch.inputs import read_json
from drivenet_patch.io import atomic_path, write_json
from drivenet_patch.tensors import check_frames, to_uint8
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.episodes import DriveConfig, expert_steer, lane_state
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import EGO_LANE_D, LANE_WIDTH_M, VIEW_MARGIN_M, Road
from drivenet_patch.world.sticker import StickerPlacement
from drivenet_patch.world.vehicle import WHEELBASE_M, bicycle_step

CAR_CENTRE_M = WHEELBASE_M / 2.0  # car centre ahead of the rear axle
CAR_HALF_WIDTH_M = 0.9
LANE_DEPARTURE_M = LANE_WIDTH_M / 2.0 - CAR_HALF_WIDTH_M  # a wheel leaves the lane beyond this offset
#: Bounds of a closed-loop run (absurd values would otherwise build roads or logs until memory runs out).
MAX_ROADS = 1000
MAX_KM_PER_ROAD = 20.0
STICKER_PNG = "sticker.png"
ATTACK_JSON = "attack.json"

Policy = Callable[[torch.Tensor], torch.Tensor]
Sticker = tuple[torch.Tensor, StickerPlacement]

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
            raise PDNError(f"sticker spacing must be >= 10 m, got {self.sticker_every_m}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def steps_for(self, km: float) -> int:
        """Simulation steps that cover ``km`` kilometres (at least one)."""
        if not (math.isfinite(km) and 0 < km <= MAX_KM_PER_ROAD):
            raise PDNError(f"--km must lie in (0, {MAX_KM_PER_ROAD:g}] km per road, got {km}")
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
    """Arc lengths (K,) of the sticker copies on ``road``: every ``sticker_every_m`` from ``sticker_start_m``."""
    last = road.length - max(placement.width_m, placement.length_m)
    if last < cfg.sticker_start_m:
        return np.zeros(0)
    return np.arange(cfg.sticker_start_m, last + 1e-9, cfg.sticker_every_m)


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
        raise PDNError(f"--roads must lie in [1, {MAX_ROADS}], got {count}")
    length = cfg.road_length_m(steps_per_road)
    return [Road.generate(int(seed) + i, length) for i in range(count)]


# ---------------------------------------------------------------------------- stickers on disk
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
            raise PDNError(f"--sticker: {path} is a folder but has no {ATTACK_JSON}")
        meta = read_json(meta_path, "attack settings")
        placement = _placement_from_json(meta.get("placement") if isinstance(meta, dict) else None, meta_path)
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


def _placement_from_json(obj: Any, where: Path) -> StickerPlacement:
    if not isinstance(obj, dict):
        raise PDNError(f"--sticker: {where} needs a 'placement' object with StickerPlacement fields")
    known = {f.name for f in fields(StickerPlacement)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise PDNError(f"--sticker: {where}: unknown placement field {unknown[0]!r}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {"s": 0.0}
    for key, value in obj.items():
        if key == "kind":
            values[key] = str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PDNError(f"--sticker: {where}: placement field {key!r} must be a finite number, got {value!r}")
        values[key] = float(value)
    return StickerPlacement(**values)


def _read_texture(png: Path) -> torch.Tensor:
    if not png.is_file():
        raise PDNError(f"--sticker: {png} does not exist")
    img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise PDNError(f"--sticker: cannot read {png} as an image")
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    if img.dtype not in (np.uint8, np.uint16):
        raise PDNError(f"--sticker: {png} has unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise PDNError(f"--sticker: {png} has {img.shape[2]} channels; expected 1, 3 or 4")
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32) / scale)


# ---------------------------------------------------------------------------- video
def _probe_fourcc(folder: Path, code: str, suffix: str, size: tuple[int, int], fps: float) -> bool:
    """Whether this OpenCV build can open a writer for ``code`` (tried on a throw-away file)."""
    fd, name = tempfile.mkstemp(prefix=".probe.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*code), fps, size)
        ok = writer.isOpened()
        writer.release()
        return ok
    finally:
        Path(name).unlink(missing_ok=True)


def _open_video(path: Path, size: tuple[int, int], fps: float, stack: ExitStack) -> tuple[cv2.VideoWriter, Path]:
    """An open writer whose file is renamed into place when ``stack`` closes without error.

    ``.mp4`` uses the 'mp4v' codec and falls back, with a warning, to Motion-JPEG in an ``.avi``
    next to it when this OpenCV build cannot write it; ``.avi`` uses Motion-JPEG.
    """
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".avi"):
        raise PDNError(f"--video: expected a .mp4 or .avi file name, got {str(path)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PDNError(f"--video: cannot create the folder of {path} ({exc.strerror or exc})") from None
    code = "mp4v" if suffix == ".mp4" else "MJPG"
    if code == "mp4v" and not _probe_fourcc(path.parent, code, suffix, size, fps):
        warnings.warn(f"this OpenCV build cannot write mp4v; writing Motion-JPEG to {path.with_suffix('.avi')}",
                      RuntimeWarning, stacklevel=3)
        code, path = "MJPG", path.with_suffix(".avi")
    tmp = stack.enter_context(atomic_path(path))
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*code), fps, size)
    if not writer.isOpened():
        raise PDNError(f"--video: cannot open a {code} video writer for {path}")
    stack.callback(writer.release)  # runs before the rename (LIFO)
    return writer, path


def annotate_frame(frame: np.ndarray, scale: int, predicted: float, expert: float, offset_m: float, t: float,
                   intervention: bool = False, sticker_in_view: bool = False, road: int = 0) -> np.ndarray:
    """One video frame: the model's view upscaled, steering bars and a caption.

    The green bar is the policy's command and the white bar the expert's, drawn from the image
    centre toward the side they steer to (full width = 10 degrees); a red border marks an
    intervention.

    Args:
        frame: (H, W, 3) uint8 RGB, what the policy saw.
        scale: integer upscaling (nearest neighbour: the pixels stay those the model saw).

    Returns:
        (H', W', 3) uint8 BGR with even H' and W' (codecs want even sizes).
    """
    img = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), None, fx=scale, fy=scale,
                     interpolation=cv2.INTER_NEAREST)
    h, w = img.shape[:2]
    cx = w // 2
    px_per_deg = (w / 2 - 4) / 10.0
    for row, value, colour in ((h - 24, predicted, (40, 220, 40)), (h - 13, expert, (255, 255, 255))):
        end = round(cx - float(np.clip(value, -10.0, 10.0)) * px_per_deg)  # positive = left
        cv2.rectangle(img, (min(cx, end), row), (max(cx, end), row + 7), colour, -1)
    cv2.line(img, (cx, h - 28), (cx, h - 3), (0, 0, 255), 1)
    if intervention:
        cv2.rectangle(img, (1, 1), (w - 2, h - 2), (0, 0, 255), 4)
        cv2.putText(img, "INTERVENTION", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2, cv2.LINE_AA)
    if sticker_in_view:
        cv2.putText(img, "sticker", (w - 80, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 220, 255), 2, cv2.LINE_AA)
    caption = np.zeros((42, w, 3), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(caption, f"model {predicted:+6.2f} deg", (6, 16), font, 0.45, (40, 220, 40), 1, cv2.LINE_AA)
    cv2.putText(caption, f"expert {expert:+6.2f} deg", (w // 3, 16), font, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(caption, f"road {road}   t {t:6.1f} s   offset {offset_m:+5.2f} m", (6, 35), font, 0.45,
                (200, 200, 200), 1, cv2.LINE_AA)
    out = np.concatenate([img, caption], axis=0)
    return np.pad(out, ((0, out.shape[0] % 2), (0, out.shape[1] % 2), (0, 0)))


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
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise PDNError(f"threads must be a positive integer or None, got {threads!r}")
    max_threads = 4 * (os.cpu_count() or 1)
    if threads is not None and threads > max_threads:  # OpenMP would try to start them all (and run out of memory)
        raise PDNError(f"threads: at most {max_threads} (4 per CPU core of this machine), got {threads}")
    R = len(roads)
    renderer = Renderer(camera, device=device)

    lights = Lighting.sample(rng, R, device) if cfg.vary_lighting else Lighting.neutral(R, device)
    texture, copies, reach = None, [], 0.0
    if sticker is not None:
        texture, template = sticker
        if not isinstance(template, StickerPlacement):
            raise PDNError(f"sticker: expected (texture, StickerPlacement), got {type(template).__name__}")
        texture = check_frames(texture[None] if torch.is_tensor(texture) else texture, "sticker texture")[0]
        texture = texture.detach().to(device, torch.float32)
        copies = [sticker_positions(road, template, cfg) for road in roads]
        reach = _reach_m(template, camera)

    # (steps, R) logs
    cols = {k: np.zeros((steps, R)) for k in ("x", "y", "yaw", "s", "offset_m", "heading_err_deg",
                                               "predicted_deg", "expert_deg", "sticker_s")}
    inter = np.zeros((steps, R), bool)
    sticker_px = np.zeros((steps, R), np.int64)
    poses = np.stack([centred_pose(road, cfg.start_s_m) for road in roads])  # (R, 3) rear axles
    with ExitStack() as stack:
        bar = tqdm(total=steps, desc="drive", unit="step", disable=not progress, leave=False)
        stack.callback(bar.close)
        writer = None
        if video is not None:
            probe = annotate_frame(np.zeros((camera.height, camera.width, 3), np.uint8), video_scale, 0, 0, 0, 0)
            writer, video_path = _open_video(Path(video), (probe.shape[1], probe.shape[0]), 1.0 / cfg.dt, stack)
        if threads is not None and renderer.device.type == "cpu":
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
        for i in range(steps):
            frames = []
            for r, road in enumerate(roads):
                pose = poses[r : r + 1]
                state = centre_state(road, pose)
                cols["s"][i, r] = state["s"][0]
                cols["offset_m"][i, r] = state["offset_m"][0]
                cols["heading_err_deg"][i, r] = state["heading_err_deg"][0]
                cols["expert_deg"][i, r] = expert_steer(road, pose, cfg.lookahead_m)[0]
                light = lights.index(slice(r, r + 1))
                placement = None
                if texture is not None:
                    ahead = _next_copy(road, pose[0], camera, copies[r], reach)
                    cols["sticker_s"][i, r] = np.nan if ahead is None else ahead
                    placement = None if ahead is None else replace(template, s=ahead)
                if placement is None:
                    frames.append(renderer.render(road, pose, light).image)
                else:
                    out = renderer.render(road, pose, light, sticker=placement, texture=texture, with_maps=True)
                    sticker_px[i, r] = int(out.mask.sum())
                    frames.append(out.image)
            batch = torch.cat(frames)  # (R, 3, H, W)
            if policy is None:
                command = cols["expert_deg"][i].copy()
            else:
                with torch.no_grad():
                    command = _as_degrees(policy(batch), R)
            cols["predicted_deg"][i] = command
            cols["x"][i], cols["y"][i], cols["yaw"][i] = poses.T
            inter[i] = np.abs(cols["offset_m"][i]) > cfg.intervention_m
            if writer is not None:
                writer.write(annotate_frame(to_uint8(batch[:1])[0], video_scale, command[0],
                                            cols["expert_deg"][i, 0], cols["offset_m"][i, 0], i * cfg.dt,
                                            bool(inter[i, 0]), bool(sticker_px[i, 0] > 0)))
            poses = bicycle_step(poses, command, cfg.speed_mps, cfg.dt)
            for r in np.flatnonzero(inter[i]):  # the safety driver re-centres the car
                poses[r] = centred_pose(roads[r], cols["s"][i, r] + cfg.speed_mps * cfg.dt)
            bar.update(1)
    in_view = sticker_px > 0

    departures = np.abs(cols["offset_m"]) > LANE_DEPARTURE_M
    log = pd.DataFrame({
        "road": np.repeat(np.arange(R), steps),
        "step": np.tile(np.arange(steps), R),
        "t": np.tile(np.arange(steps) * cfg.dt, R),
        **{k: cols[k].T.ravel() for k in ("x", "y", "yaw", "s", "offset_m", "heading_err_deg", "predicted_deg",
                                           "expert_deg")},
        "intervention": inter.T.ravel(),
        "lane_departure": departures.T.ravel(),
    })
    if texture is not None:
        log["sticker_in_view"] = in_view.T.ravel()
        log["sticker_px"] = sticker_px.T.ravel()
        log["sticker_s"] = cols["sticker_s"].T.ravel()
    n_inter = int(inter.sum())
    elapsed = steps * cfg.dt * R
    metrics: dict[str, Any] = {
        "autonomy_pct": float(autonomy_pct(n_inter, elapsed, cfg.penalty_s)),
        "interventions": n_inter,
        "departures": n_inter,
        "departure_events": count_events(departures),
        "mean_abs_offset_m": float(np.abs(cols["offset_m"]).mean()),
        "max_abs_offset_m": float(np.abs(cols["offset_m"]).max()),
        "mean_abs_steer_error_deg": float(np.abs(cols["predicted_deg"] - cols["expert_deg"]).mean()),
        "elapsed_s": float(elapsed),
        "distance_km": float(R * steps * cfg.speed_mps * cfg.dt / 1000.0),
        "roads": R,
        "steps_per_road": steps,
    }
    if texture is not None:
        metrics["sticker_frames"] = int(in_view.sum())
    if video is not None:
        metrics["video"] = str(video_path)
    return metrics, log


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
