"""Stickers at fixed world poses: flat on the road surface, or a billboard beside the road.

A sticker is a rectangle with a texture (3, h, w). On the road, texture column 0 is at the
driver's left and row 0 at the far end, so an approaching driver sees it upright. On a
billboard, row 0 is the top edge and the face looks at oncoming traffic. Placement is given
in road coordinates and resolved against a :class:`~drivenet_patch.world.road.Road` into an
exact planar rectangle in the world, so its perspective is right from every pose.

Several road stickers can share one placement (:meth:`StickerPlacement.group`): each
:class:`StickerPart` sits at its own offset along and across the road and its own yaw, and they
share one texture *atlas*: part ``k`` of ``n`` reads the columns ``k/n .. (k+1)/n`` of the texture,
so the renderer, the compositing and the attacks handle a group exactly as one sticker. A
placement may also name the kind of road segment it sits on (:data:`SEGMENTS`): closed-loop drives
then put its copies where the road has that kind of segment (:func:`segment_positions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.road import EGO_LANE_D, Road

KINDS = ("road", "billboard")
POST_WIDTH_M = 0.15
#: Where a placement's copies go: anywhere (every ``sticker_every_m``), on straights, where a curve
#: starts or where it ends; a curve's kind may add its turn (``curve_entry_left``: a left curve's start).
SEGMENTS = ("any", "straight", "curve_entry", "curve_exit", "curve_entry_left", "curve_entry_right",
            "curve_exit_left", "curve_exit_right")
#: Most stickers in one group.
MAX_PARTS = 16
_STRAIGHT_KAPPA = 1e-6  # the world's straights have curvature exactly 0
_STRAIGHT_HALF_M = 20.0  # a "straight" position has straight road this far on both sides


@dataclass(frozen=True)
class StickerPart:
    """One road sticker of a group, relative to its group's placement.

    Attributes:
        ds: offset of its centre along the road from the group's ``s``, metres (+ = ahead).
        dd: offset of its centre across the road from the group's ``d``, metres (+ = left).
        width_m: extent across the road; length_m: extent along it.
        yaw_deg: rotation relative to the road direction at its centre (counter-clockwise).
    """

    ds: float = 0.0
    dd: float = 0.0
    width_m: float = 2.0
    length_m: float = 3.5
    yaw_deg: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ds", "dd", "width_m", "length_m", "yaw_deg"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise PDNError(f"sticker part {name} must be a finite number, got {v!r}")
        if not (self.width_m > 0 and self.length_m > 0):
            raise PDNError(f"sticker part size must be > 0, got {self.width_m} x {self.length_m} m")
        if abs(self.yaw_deg) > 90.0:
            raise PDNError(f"sticker part yaw_deg must lie in [-90, 90], got {self.yaw_deg}")

    @property
    def area_m2(self) -> float:
        return self.width_m * self.length_m

    def extent(self) -> tuple[float, float]:
        """Farthest reach of its corners from the group centre: (along the road, across it), metres."""
        c, s = math.cos(math.radians(self.yaw_deg)), math.sin(math.radians(self.yaw_deg))
        hl, hw = 0.5 * self.length_m, 0.5 * self.width_m
        along = abs(self.ds) + abs(hl * c) + abs(hw * s)
        across = abs(self.dd) + abs(hl * s) + abs(hw * c)
        return along, across


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
    parts: tuple[StickerPart, ...] = field(default=())
    segment: str = "any"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PDNError(f"sticker kind must be one of {KINDS}, got {self.kind!r}")
        if self.segment not in SEGMENTS:
            raise PDNError(f"sticker segment must be one of {', '.join(SEGMENTS)}, got {self.segment!r}")
        object.__setattr__(self, "parts", tuple(self.parts))
        if self.parts:
            if self.kind != "road":
                raise PDNError("a group of stickers lies on the road (kind 'road')")
            if len(self.parts) > MAX_PARTS or not all(isinstance(p, StickerPart) for p in self.parts):
                raise PDNError(f"parts must be 1 to {MAX_PARTS} StickerPart entries")
        if self.segment != "any" and self.kind != "road":
            raise PDNError("a segment placement needs a road sticker")
        if not (self.width_m > 0 and self.length_m > 0):
            raise PDNError(f"sticker size must be > 0, got {self.width_m} x {self.length_m} m")
        if self.bottom_m < 0:
            raise PDNError(f"billboard bottom_m must be >= 0, got {self.bottom_m}")

    @classmethod
    def billboard(cls, s: float, d: float = -6.5, width_m: float = 4.0, height_m: float = 2.5,
                  bottom_m: float = 1.5, yaw_deg: float = 0.0) -> StickerPlacement:
        return cls(s=s, d=d, width_m=width_m, length_m=height_m, yaw_deg=yaw_deg, kind="billboard", bottom_m=bottom_m)

    @classmethod
    def group(cls, parts: tuple[StickerPart, ...] | list[StickerPart], s: float = 0.0, d: float = EGO_LANE_D,
              segment: str = "any") -> StickerPlacement:
        """Several road stickers around ``(s, d)``; ``width_m`` x ``length_m`` is the group's bounding box,
        centred there (closed-loop drives space and clip copies by it)."""
        parts = tuple(parts)
        if not parts:
            raise PDNError("a group needs at least one sticker part")
        along = max(p.extent()[0] for p in parts)
        across = max(p.extent()[1] for p in parts)
        return cls(s=s, d=d, width_m=2.0 * across, length_m=2.0 * along, parts=parts, segment=segment)

    @property
    def area_m2(self) -> float:
        """Paint area: the parts' total, or the rectangle's."""
        return sum(p.area_m2 for p in self.parts) if self.parts else self.width_m * self.length_m

    def resolve(self, road: Road) -> ResolvedSticker:
        if not 0.0 <= self.s <= road.length:
            raise PDNError(f"sticker s = {self.s} m lies outside the road (0 .. {road.length:.0f} m)")
        x, y = road.point(self.s, self.d)
        h = float(road.centre(self.s)[2]) + math.radians(self.yaw_deg)
        rects = []
        for p in self.parts:
            sp = min(max(self.s + p.ds, 0.0), road.length)
            px, py = road.point(sp, self.d + p.dd)
            rects.append((float(px), float(py), float(road.centre(sp)[2]) + math.radians(p.yaw_deg),
                          p.width_m, p.length_m))
        return ResolvedSticker(self, float(x), float(y), h, tuple(rects))


def segment_positions(road: Road, segment: str, start_m: float, end_m: float, spacing_m: float) -> np.ndarray:
    """Arc lengths (K,) on ``road`` within ``[start_m, end_m]`` where it has a ``segment`` (:data:`SEGMENTS`),
    at least ``spacing_m`` apart (the first ones kept).

    * ``curve_entry``: where the curvature leaves 0 (a curve's clothoid ramp begins);
    * ``curve_exit``: where it returns to 0 (the ramp out ends); a ``_left`` / ``_right`` suffix keeps
      curves turning that way only;
    * ``straight``: points with straight road ``_STRAIGHT_HALF_M`` on both sides, every ``spacing_m``;
    * ``any``: every ``spacing_m`` from ``start_m``.
    """
    if segment not in SEGMENTS:
        raise PDNError(f"segment must be one of {', '.join(SEGMENTS)}, got {segment!r}")
    if not (spacing_m > 0 and math.isfinite(spacing_m)):
        raise PDNError(f"spacing_m must be > 0, got {spacing_m}")
    if end_m < start_m:
        return np.zeros(0)
    if segment == "any":
        return np.arange(start_m, end_m + 1e-9, spacing_m)
    k, s = road.kappa, road.s
    straight = np.abs(k) < _STRAIGHT_KAPPA
    if segment == "straight":
        ds = float(s[1] - s[0]) if len(s) > 1 else 1.0
        half = max(round(_STRAIGHT_HALF_M / ds), 1)
        # a position is good when the whole window around it is straight
        ok = np.array([straight[max(i - half, 0): i + half + 1].all() for i in range(len(s))])
        cand = s[ok]
    else:
        turn = "left" if segment.endswith("_left") else "right" if segment.endswith("_right") else ""
        kind = segment[: len(segment) - len(turn) - 1] if turn else segment
        if kind == "curve_entry":
            idx = np.flatnonzero(straight[:-1] & ~straight[1:])  # last straight sample before the ramp
            sign = np.sign(k[np.minimum(idx + 2, len(k) - 1)])
        else:
            idx = np.flatnonzero(~straight[:-1] & straight[1:]) + 1  # first straight sample after the ramp
            sign = np.sign(k[np.maximum(idx - 2, 0)])
        if turn:
            idx = idx[sign == (1.0 if turn == "left" else -1.0)]
        cand = s[idx]
    cand = cand[(cand >= start_m) & (cand <= end_m)]
    out: list[float] = []
    for c in cand:
        if not out or c - out[-1] >= spacing_m:
            out.append(float(c))
    return np.array(out)


@dataclass(frozen=True)
class ResolvedSticker:
    """A placement turned into a world rectangle: centre (x, y) and heading h."""

    placement: StickerPlacement
    x: float
    y: float
    heading: float
    parts: tuple[tuple[float, float, float, float, float], ...] = ()  # (x, y, heading, width, length) per part

    @property
    def kind(self) -> str:
        return self.placement.kind

    def road_uv(self, wx: torch.Tensor, wy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Texture coordinates (u, v in [0, 1]) and coverage of ground points (B, P).

        A group's part ``k`` of ``n`` maps to ``u`` in ``[k/n, (k+1)/n]`` of the shared texture atlas
        (where parts overlap, the later one is on top)."""
        p = self.placement
        if not self.parts:
            return _rect_uv(wx, wy, self.x, self.y, self.heading, p.width_m, p.length_m)
        n = len(self.parts)
        u_all, v_all = torch.zeros_like(wx), torch.zeros_like(wx)
        m_all = torch.zeros_like(wx, dtype=torch.bool)
        for k, (x, y, h, w, length) in enumerate(self.parts):
            u, v, m = _rect_uv(wx, wy, x, y, h, w, length)
            u_all = torch.where(m, (k + u) / n, u_all)
            v_all = torch.where(m, v, v_all)
            m_all = m_all | m
        return u_all, v_all, m_all

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


def _rect_uv(wx: torch.Tensor, wy: torch.Tensor, x: float, y: float, heading: float, width_m: float,
             length_m: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, v, mask) of ground points on a rectangle centred at (x, y) facing ``heading``."""
    c, s = math.cos(heading), math.sin(heading)
    rx, ry = wx - x, wy - y
    u = (rx * s - ry * c) * (1.0 / width_m) + 0.5  # along the driver's right
    v = 0.5 - (rx * c + ry * s) * (1.0 / length_m)  # row 0 at the far end
    mask = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    return u, v, mask
