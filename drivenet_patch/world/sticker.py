"""Stickers at fixed world poses: flat on the road surface, or a billboard beside the road.

A sticker is a rectangle with a texture (3, h, w). On the road, texture column 0 is at the
driver's left and row 0 at the far end, so an approaching driver sees it upright. On a
billboard, row 0 is the top edge and the face looks at oncoming traffic. Placement is given
in road coordinates and resolved against a :class:`~drivenet_patch.world.road.Road` into an
exact planar rectangle in the world, so its perspective is right from every pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.road import EGO_LANE_D, Road

KINDS = ("road", "billboard")
POST_WIDTH_M = 0.15


@dataclass(frozen=True)
class StickerPlacement:
    """Where a sticker sits.

    Attributes:
        s: arc length of the sticker centre along the road, metres.
        d: lateral offset of the centre from the road centre line (positive = left).
        width_m: extent across the road (road) or horizontal width (billboard).
        length_m: extent along the road (road) or height (billboard).
        yaw_deg: rotation relative to the road direction (counter-clockwise).
        kind: ``"road"`` or ``"billboard"``.
        bottom_m: height of a billboard's lower edge above the ground.
    """

    s: float
    d: float = EGO_LANE_D
    width_m: float = 3.5
    length_m: float = 2.0
    yaw_deg: float = 0.0
    kind: str = "road"
    bottom_m: float = 1.5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PDNError(f"sticker kind must be one of {KINDS}, got {self.kind!r}")
        if not (self.width_m > 0 and self.length_m > 0):
            raise PDNError(f"sticker size must be > 0, got {self.width_m} x {self.length_m} m")
        if self.bottom_m < 0:
            raise PDNError(f"billboard bottom_m must be >= 0, got {self.bottom_m}")

    @classmethod
    def billboard(cls, s: float, d: float = -6.5, width_m: float = 4.0, height_m: float = 2.5,
                  bottom_m: float = 1.5, yaw_deg: float = 0.0) -> StickerPlacement:
        return cls(s=s, d=d, width_m=width_m, length_m=height_m, yaw_deg=yaw_deg, kind="billboard", bottom_m=bottom_m)

    def resolve(self, road: Road) -> ResolvedSticker:
        if not 0.0 <= self.s <= road.length:
            raise PDNError(f"sticker s = {self.s} m lies outside the road (0 .. {road.length:.0f} m)")
        x, y = road.point(self.s, self.d)
        h = float(road.centre(self.s)[2]) + math.radians(self.yaw_deg)
        return ResolvedSticker(self, float(x), float(y), h)


@dataclass(frozen=True)
class ResolvedSticker:
    """A placement turned into a world rectangle: centre (x, y) and heading h."""

    placement: StickerPlacement
    x: float
    y: float
    heading: float

    @property
    def kind(self) -> str:
        return self.placement.kind

    def road_uv(self, wx: torch.Tensor, wy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Texture coordinates (u, v in [0, 1]) and coverage of ground points (B, P)."""
        p = self.placement
        c, s = math.cos(self.heading), math.sin(self.heading)
        rx, ry = wx - self.x, wy - self.y
        u = (rx * s - ry * c) * (1.0 / p.width_m) + 0.5  # along the driver's right
        v = 0.5 - (rx * c + ry * s) * (1.0 / p.length_m)  # row 0 at the far end
        mask = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
        return u, v, mask

    def billboard_uv(
        self, rays: torch.Tensor, px: torch.Tensor, py: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
        camera: Camera, haze: torch.Tensor, light_rgb: torch.Tensor, haze_rgb: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Ray-plane intersection with the billboard for every pixel.

        Args:
            rays: (P, 3) vehicle-frame ray directions; px, py, cos, sin: (B, 1) poses.

        Returns:
            u, v, mask, gain, offset, post: (B, P) texture coordinates and coverage, the
            (B, P, 3) lighting of the board, and the coverage of its two posts.
        """
        p = self.placement
        tc, ts = math.cos(self.heading), math.sin(self.heading)
        camx = px + cos * camera.forward_m - sin * camera.lateral_m
        camy = py + sin * camera.forward_m + cos * camera.lateral_m
        rx, ry, rz = rays[None, :, 0], rays[None, :, 1], rays[None, :, 2]
        dx = rx * cos - ry * sin  # (B, P) world ray direction
        dy = rx * sin + ry * cos
        denom = dx * tc + dy * ts
        num = (self.x - camx) * tc + (self.y - camy) * ts
        ok = denom > 1e-6
        t = torch.where(ok, num / torch.where(ok, denom, torch.ones_like(denom)), torch.full_like(denom, -1.0))
        hx = camx + t * dx - self.x
        hy = camy + t * dy - self.y
        hz_ = camera.mount_height_m + t * rz
        u = (hx * ts - hy * tc) * (1.0 / p.width_m) + 0.5
        v = (p.bottom_m + p.length_m - hz_) * (1.0 / p.length_m)
        front = ok & (t > 0)
        mask = front & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
        half_post = 0.5 * POST_WIDTH_M / p.width_m
        post = front & (hz_ >= 0) & (hz_ < p.bottom_m) & (((u - 0.15).abs() < half_post) | ((u - 0.85).abs() < half_post))
        dist = t.clamp(min=0.0) * torch.sqrt(rx * rx + ry * ry + rz * rz)
        hz = 1.0 - torch.exp(-haze[:, None] * dist)
        gain = light_rgb[:, None, :] * (1.0 - hz).unsqueeze(-1)
        offset = hz.unsqueeze(-1) * haze_rgb[:, None, :]
        return u, v, mask, gain, offset, post
