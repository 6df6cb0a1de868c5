"""Expert driving episodes: pure pursuit on the ego-lane centre, a kinematic bicycle, noise.

Episodes inject an Ornstein-Uhlenbeck steering disturbance into the executed command and
start off-centre with a heading error, so the recorded data contains recoveries; the label
is always the clean expert command at the recorded pose (DAgger-style labelling). A camera
mounted ``lateral_m`` to the side is labelled with the expert's command for a car standing
where that camera is (PilotNet's left/right cameras, but exact).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.road import EGO_LANE_D, VIEW_MARGIN_M, Road
from drivenet_patch.world.vehicle import WHEELBASE_M, bicycle_step, pure_pursuit_deg


@dataclass(frozen=True)
class DriveConfig:
    """How the expert drives and how episodes are perturbed.

    Attributes:
        speed_mps: constant speed.
        dt: simulation step, seconds.
        lookahead_m: pure-pursuit lookahead distance along the lane.
        noise_deg: standard deviation of the injected steering disturbance.
        noise_tau_s: correlation time of the disturbance.
        start_offset_m: episodes start up to this far off the lane centre.
        start_heading_deg: and with up to this heading error.
    """

    speed_mps: float = 10.0
    dt: float = 0.1
    lookahead_m: float = 8.0
    noise_deg: float = 1.5
    noise_tau_s: float = 1.0
    start_offset_m: float = 0.8
    start_heading_deg: float = 4.0

    def __post_init__(self) -> None:
        if not self.speed_mps > 0:
            raise PDNError(f"speed must be > 0 m/s, got {self.speed_mps}")
        if not 0 < self.dt <= 1.0:
            raise PDNError(f"dt must lie in (0, 1] s, got {self.dt}")
        if not self.lookahead_m > 0:
            raise PDNError(f"lookahead must be > 0 m, got {self.lookahead_m}")
        if self.noise_deg < 0 or self.noise_tau_s <= 0:
            raise PDNError("noise_deg must be >= 0 and noise_tau_s > 0")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def lateral_shift(poses: np.ndarray, lateral_m: float) -> np.ndarray:
    """Poses (N, 3) moved ``lateral_m`` to their left (same heading)."""
    p = np.array(poses, dtype=np.float64, copy=True)
    p[:, 0] -= lateral_m * np.sin(p[:, 2])
    p[:, 1] += lateral_m * np.cos(p[:, 2])
    return p


def expert_steer(road: Road, poses: np.ndarray, lookahead_m: float = 8.0, lane_d: float = EGO_LANE_D,
                 wheelbase: float = WHEELBASE_M) -> np.ndarray:
    """Pure-pursuit steering (degrees, positive = left) toward the lane centre ``lookahead_m`` ahead.

    Args:
        road: the road.
        poses: (N, 3) rear-axle poses.

    Returns:
        (N,) road-wheel angles in degrees.
    """
    poses = np.atleast_2d(np.asarray(poses, dtype=np.float64))
    s, _ = road.to_road(poses[:, 0], poses[:, 1])
    tx, ty = road.point(s + lookahead_m, lane_d)
    dx, dy = tx - poses[:, 0], ty - poses[:, 1]
    c, sn = np.cos(poses[:, 2]), np.sin(poses[:, 2])
    return pure_pursuit_deg(dx * c + dy * sn, -dx * sn + dy * c, wheelbase)


def lane_state(road: Road, poses: np.ndarray, lane_d: float = EGO_LANE_D) -> dict[str, np.ndarray]:
    """Road position of poses: s, offset from the lane centre (m, + = left), heading error (deg)."""
    poses = np.atleast_2d(np.asarray(poses, dtype=np.float64))
    s, d = road.to_road(poses[:, 0], poses[:, 1])
    h = road.centre(s)[2]
    err = np.degrees(np.angle(np.exp(1j * (poses[:, 2] - h))))
    return {"s": s, "offset_m": d - lane_d, "heading_err_deg": err}


def drive_episode(road: Road, rng: np.random.Generator, steps: int, cfg: DriveConfig = DriveConfig(),
                  s0: float | None = None) -> dict[str, np.ndarray]:
    """Drive the expert with injected noise for ``steps`` steps.

    Returns:
        dict of (steps,) arrays: ``t``, ``x``, ``y``, ``yaw`` (recorded poses), ``steering_deg``
        (clean expert label at that pose), ``executed_deg`` (what the car did).
    """
    distance = steps * cfg.speed_mps * cfg.dt
    if s0 is None:
        max_s = road.length - VIEW_MARGIN_M - distance
        if max_s < 5.0:
            raise PDNError(f"road of {road.length:.0f} m is too short for {steps} steps at {cfg.speed_mps} m/s")
        s_start = float(rng.uniform(5.0, max_s))
    else:
        s_start = float(s0)
        if s_start < 0 or s_start + distance > road.length - cfg.lookahead_m - 1.0:
            raise PDNError(f"episode from s = {s_start} m over {distance:.0f} m runs off the {road.length:.0f} m road")
    offset = float(rng.uniform(-cfg.start_offset_m, cfg.start_offset_m))
    heading = np.radians(float(rng.uniform(-cfg.start_heading_deg, cfg.start_heading_deg)))
    pose = road.pose_at(s_start, EGO_LANE_D + offset, heading)
    a = np.exp(-cfg.dt / cfg.noise_tau_s)
    noise = 0.0
    out = {k: np.zeros(steps) for k in ("t", "x", "y", "yaw", "steering_deg", "executed_deg")}
    for i in range(steps):
        label = float(expert_steer(road, pose[None], cfg.lookahead_m)[0])
        noise = a * noise + np.sqrt(1 - a * a) * cfg.noise_deg * float(rng.standard_normal())
        executed = label + noise
        out["t"][i] = i * cfg.dt
        out["x"][i], out["y"][i], out["yaw"][i] = pose
        out["steering_deg"][i] = label
        out["executed_deg"][i] = executed
        pose = bicycle_step(pose, executed, cfg.speed_mps, cfg.dt)
    return out
