"""Kinematic bicycle model and the pure-pursuit expert.

Steering is the road-wheel angle in degrees, positive = left (ISO 8855). The pose (x, y, yaw)
is that of the rear-axle centre; yaw is counter-clockwise from the world x axis, in radians.

References:
    R. C. Coulter, "Implementation of the Pure Pursuit Path Tracking Algorithm", CMU-RI-TR-92-01, 1992.
    R. Rajamani, "Vehicle Dynamics and Control", ch. 2 (kinematic bicycle), 2012.
"""

from __future__ import annotations

import numpy as np

WHEELBASE_M = 2.7
MAX_STEER_DEG = 35.0


def pure_pursuit_deg(target_x: np.ndarray | float, target_y: np.ndarray | float, wheelbase: float = WHEELBASE_M) -> np.ndarray:
    """Road-wheel angle that drives the rear axle on a circle through a target point.

    Args:
        target_x, target_y: the target in the vehicle frame (X forward, Y left), metres.
        wheelbase: metres.

    Returns:
        Steering in degrees, positive = left: ``atan(2 L y / (x^2 + y^2))`` (Coulter 1992),
        clipped to +-MAX_STEER_DEG.
    """
    x = np.asarray(target_x, dtype=np.float64)
    y = np.asarray(target_y, dtype=np.float64)
    ld2 = np.maximum(x * x + y * y, 1e-6)
    delta = np.degrees(np.arctan(2.0 * wheelbase * y / ld2))
    return np.clip(delta, -MAX_STEER_DEG, MAX_STEER_DEG)


def bicycle_step(
    pose: np.ndarray, steer_deg: np.ndarray | float, speed: float, dt: float, wheelbase: float = WHEELBASE_M
) -> np.ndarray:
    """Advance poses (..., 3) = (x, y, yaw) by ``dt`` seconds at ``speed`` m/s (exact arc)."""
    pose = np.asarray(pose, dtype=np.float64)
    x, y, yaw = pose[..., 0], pose[..., 1], pose[..., 2]
    kappa = np.tan(np.radians(np.clip(steer_deg, -MAX_STEER_DEG, MAX_STEER_DEG))) / wheelbase
    dyaw = kappa * speed * dt
    # Exact integration on the arc; the straight-line limit for |dyaw| -> 0.
    small = np.abs(dyaw) < 1e-9
    safe = np.where(small, 1.0, dyaw)
    chord = np.where(small, 1.0, 2.0 * np.sin(safe / 2.0) / safe) * speed * dt
    mid = yaw + dyaw / 2.0
    return np.stack([x + chord * np.cos(mid), y + chord * np.sin(mid), yaw + dyaw], axis=-1)
