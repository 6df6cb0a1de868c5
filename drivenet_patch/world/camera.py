"""Pinhole dashcam model shared by the renderer, viewpoint augmentation and sticker placement.

Frames and units
----------------
* Vehicle frame: origin on the ground under the rear axle, X forward, Y left, Z up (ISO 8855).
* Camera: mounted ``forward_m`` ahead of the rear axle, ``lateral_m`` to the left (PilotNet's
  left/right cameras are ``lateral_m = +-0.6``), ``mount_height_m`` above the ground, pitched
  down by ``pitch_deg``; no roll.
* Pixels: OpenCV convention, the centre of pixel (row v, column u) is at integer (u, v); the
  principal point is the image centre ``((W - 1) / 2, (H - 1) / 2)``; square pixels.

A ray through pixel (u, v) in the vehicle frame, with a = (u - cx) / f and b = (v - cy) / f, is
``(cos p - b sin p, -a, -sin p - b cos p)``; it meets the flat ground where its Z component is
negative, at ``t = h / (sin p + b cos p)``. Rows above ``cy - f tan p`` see the sky.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_IMAGE_SIDE as MAX_CAMERA_SIDE
from drivenet_patch.safety.values import parse_hw


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on the car.

    Attributes:
        height: image rows.
        width: image columns.
        hfov_deg: horizontal field of view in degrees.
        mount_height_m: optical centre above the ground.
        pitch_deg: downward pitch of the optical axis (positive = looking down).
        lateral_m: mount offset to the left of the car's centre line (negative = right).
        forward_m: mount offset ahead of the rear axle.
    """

    height: int = 66
    width: int = 200
    hfov_deg: float = 60.0
    mount_height_m: float = 1.4
    pitch_deg: float = 7.0
    lateral_m: float = 0.0
    forward_m: float = 1.6

    def __post_init__(self) -> None:
        if self.height < 2 or self.width < 2:
            raise PDNError(f"camera size must be at least 2x2, got {self.height}x{self.width}")
        if self.height > MAX_CAMERA_SIDE or self.width > MAX_CAMERA_SIDE:
            raise PDNError(f"camera size must be at most {MAX_CAMERA_SIDE} pixels a side, got {self.height}x{self.width}")
        if not 5.0 <= self.hfov_deg <= 170.0:
            raise PDNError(f"camera hfov_deg must lie in [5, 170], got {self.hfov_deg}")
        if not 0 < self.mount_height_m <= 100.0:
            raise PDNError(f"camera mount_height_m must lie in (0, 100], got {self.mount_height_m}")
        for key in ("lateral_m", "forward_m"):
            if not abs(getattr(self, key)) <= 100.0:  # also refuses NaN
                raise PDNError(f"camera {key} must lie in [-100, 100], got {getattr(self, key)}")
        if not -30.0 <= self.pitch_deg <= 60.0:
            raise PDNError(f"camera pitch_deg must lie in [-30, 60], got {self.pitch_deg}")

    # ------------------------------------------------------------------ intrinsics
    @property
    def focal_px(self) -> float:
        """Focal length in pixels (square pixels)."""
        return (self.width / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0

    @property
    def horizon_row(self) -> float:
        """Image row (may be fractional or outside the image) where the ground meets the sky."""
        return self.cy - self.focal_px * math.tan(math.radians(self.pitch_deg))

    def intrinsics(self) -> np.ndarray:
        """The 3x3 intrinsic matrix K (OpenCV convention)."""
        f = self.focal_px
        return np.array([[f, 0.0, self.cx], [0.0, f, self.cy], [0.0, 0.0, 1.0]])

    def with_size(self, height: int, width: int) -> Camera:
        """The same camera at another resolution (same field of view)."""
        return replace(self, height=int(height), width=int(width))

    def shifted(self, lateral_m: float) -> Camera:
        """The same camera mounted at another lateral offset."""
        return replace(self, lateral_m=float(lateral_m))

    # ------------------------------------------------------------------ geometry
    def ray_dirs(self) -> np.ndarray:
        """Unnormalised ray directions in the vehicle frame, shape (H, W, 3), float64."""
        f = self.focal_px
        p = math.radians(self.pitch_deg)
        a = (np.arange(self.width) - self.cx) / f  # (W,) right
        b = (np.arange(self.height) - self.cy) / f  # (H,) down
        a, b = np.meshgrid(a, b)  # (H, W)
        return np.stack([math.cos(p) - b * math.sin(p), -a, -math.sin(p) - b * math.cos(p)], axis=-1)

    def ground_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Where each pixel's ray meets the flat ground, in the vehicle frame.

        Returns:
            ``(X, Y, dist, valid)``, each (H, W): forward and left coordinates in metres,
            the ray length from the optical centre, and whether the ray hits the ground
            at all (rows below the horizon). Invalid pixels hold ``inf``.
        """
        d = self.ray_dirs()
        down = -d[..., 2]
        valid = down > 1e-9
        t = np.where(valid, self.mount_height_m / np.where(valid, down, 1.0), np.inf)
        X = np.where(valid, self.forward_m + t * d[..., 0], np.inf)
        Y = np.where(valid, self.lateral_m + t * d[..., 1], np.inf)
        dist = np.where(valid, t * np.linalg.norm(d, axis=-1), np.inf)
        return X, Y, dist, valid

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project vehicle-frame points (..., 3) to pixels.

        Returns:
            ``(u, v, depth)``: column, row (OpenCV convention) and depth along the optical
            axis; points with ``depth <= 0`` are behind the camera.
        """
        pts = np.asarray(points, dtype=np.float64)
        p = math.radians(self.pitch_deg)
        dx = pts[..., 0] - self.forward_m
        dy = pts[..., 1] - self.lateral_m
        dz = pts[..., 2] - self.mount_height_m
        depth = dx * math.cos(p) - dz * math.sin(p)
        right = -dy
        down = -(dx * math.sin(p) + dz * math.cos(p))
        f = self.focal_px
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.cx + f * right / depth
            v = self.cy + f * down / depth
        return u, v, depth

    def ground_homography(self) -> np.ndarray:
        """3x3 homography from vehicle-frame ground points (X, Y, 1) to pixels (u, v, 1)."""
        p = math.radians(self.pitch_deg)
        h = self.mount_height_m
        # Camera coordinates of a ground point (X, Y, 0), written as a linear map of (X, Y, 1):
        #   right = -(Y - lat), down = -((X - fwd) sin p - h cos p), depth = (X - fwd) cos p + h sin p
        m = np.array(
            [
                [0.0, -1.0, self.lateral_m],
                [-math.sin(p), 0.0, self.forward_m * math.sin(p) + h * math.cos(p)],
                [math.cos(p), 0.0, -self.forward_m * math.cos(p) + h * math.sin(p)],
            ]
        )
        return self.intrinsics() @ m

    def to_dict(self) -> dict[str, float | int]:
        return {
            "height": self.height,
            "width": self.width,
            "hfov_deg": self.hfov_deg,
            "mount_height_m": self.mount_height_m,
            "pitch_deg": self.pitch_deg,
            "lateral_m": self.lateral_m,
            "forward_m": self.forward_m,
        }


def parse_size(text: str, name: str = "size") -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``66x200``) into ``(H, W)``, each side in [8, 4096], with a one-line error on bad input."""
    return parse_hw(name, text, low=8, high=4096)
