"""Procedural roads: a centre line from a curvature profile, a visual style, road coordinates.

A road is a centre line built from a piecewise curvature profile (straights, clothoid ramps,
constant-radius arcs down to 30 m), integrated at ``DS`` metres. Road coordinates of a world
point are ``(s, d)``: arc length along the centre line and signed offset from it, positive to
the left. Two lanes of 3.5 m; traffic drives on the right, so the ego lane centre is d = -1.75.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivenet_patch.safety.errors import PDNError

DS = 0.1  # centre-line sampling step, metres
LANE_WIDTH_M = 3.5
EGO_LANE_D = -LANE_WIDTH_M / 2.0  # right-hand traffic
GRID_CELL_M = 2.0  # coarse lookup grid for the initial s guess
TAYLOR_CELL_M = 1.0  # renderer lookup grid (first-order extrapolation from cell centres)
GRID_REACH_M = 40.0  # the grid covers points this far from the centre line
VIEW_MARGIN_M = 250.0  # road beyond the drivable length, so the horizon always sees road
CLEARANCE_M = 50.0  # parts of a road far apart along it stay this far apart in the world

MARKINGS = ("dashed", "double_yellow", "solid_yellow")


@dataclass(frozen=True)
class RoadStyle:
    """Per-road appearance (all colours linear RGB in [0, 1])."""

    markings: str = "dashed"
    asphalt_rgb: tuple[float, float, float] = (0.33, 0.33, 0.34)
    asphalt_noise: float = 0.12
    edge_rgb: tuple[float, float, float] = (0.92, 0.92, 0.90)
    centre_rgb: tuple[float, float, float] = (0.92, 0.92, 0.90)
    marking_wear: float = 0.0
    shoulder_m: float = 1.0
    shoulder_rgb: tuple[float, float, float] = (0.50, 0.46, 0.40)
    ground_rgb: tuple[float, float, float] = (0.25, 0.42, 0.16)
    ground_noise: float = 0.25
    sky_rgb: tuple[float, float, float] = (0.55, 0.70, 0.92)
    horizon_rgb: tuple[float, float, float] = (0.82, 0.86, 0.90)
    tree_rgb: tuple[float, float, float] = (0.13, 0.24, 0.11)
    tree_height_deg: float = 3.0
    shadow_density: float = 0.0  # casters per 100 m
    sun_azimuth_deg: float = 30.0  # shadow direction relative to the road

    def __post_init__(self) -> None:
        if self.markings not in MARKINGS:
            raise PDNError(f"road markings must be one of {MARKINGS}, got {self.markings!r}")


def sample_style(rng: np.random.Generator, shadows: bool | None = None) -> RoadStyle:
    """Draw a varied but plausible road appearance."""
    grey = rng.uniform(0.22, 0.45)
    tint = rng.normal(0.0, 0.015, 3)
    dirt = rng.random() < 0.3
    ground = (rng.uniform(0.38, 0.52), rng.uniform(0.32, 0.42), rng.uniform(0.22, 0.30)) if dirt else (
        rng.uniform(0.15, 0.32), rng.uniform(0.32, 0.50), rng.uniform(0.10, 0.20))
    shoulder = grey + rng.uniform(0.05, 0.2)
    markings = MARKINGS[int(rng.choice(3, p=[0.55, 0.3, 0.15]))]
    yellow = (0.90, 0.75, 0.15)
    has_shadows = (rng.random() < 0.5) if shadows is None else shadows
    return RoadStyle(
        markings=markings,
        asphalt_rgb=tuple(float(np.clip(grey + t, 0.05, 0.95)) for t in tint),
        asphalt_noise=float(rng.uniform(0.05, 0.2)),
        centre_rgb=yellow if markings != "dashed" else (0.92, 0.92, 0.90),
        marking_wear=float(rng.uniform(0.0, 0.4)),
        shoulder_m=float(rng.uniform(0.3, 2.0)),
        shoulder_rgb=(float(shoulder + 0.05), float(shoulder), float(shoulder - 0.04)),
        ground_rgb=tuple(float(g) for g in ground),
        ground_noise=float(rng.uniform(0.15, 0.35)),
        sky_rgb=(float(rng.uniform(0.45, 0.65)), float(rng.uniform(0.62, 0.78)), float(rng.uniform(0.85, 0.98))),
        horizon_rgb=(float(rng.uniform(0.75, 0.9)),) * 2 + (float(rng.uniform(0.85, 0.95)),),
        tree_rgb=(float(rng.uniform(0.08, 0.2)), float(rng.uniform(0.18, 0.3)), float(rng.uniform(0.06, 0.14))),
        tree_height_deg=float(rng.uniform(0.5, 5.0)),
        shadow_density=float(rng.uniform(2.0, 8.0)) if has_shadows else 0.0,
        sun_azimuth_deg=float(rng.uniform(-60.0, 60.0)),
    )


@dataclass(frozen=True)
class Segment:
    """One piece of the curvature profile: curvature goes linearly from k0 to k1 over length."""

    length: float
    k0: float
    k1: float


def sample_segments(rng: np.random.Generator, length_m: float, min_radius_m: float = 30.0) -> list[Segment]:
    """Straights, clothoid ramps and arcs (radius >= ``min_radius_m``) until ``length_m`` is covered."""
    segs: list[Segment] = [Segment(float(rng.uniform(20.0, 60.0)), 0.0, 0.0)]
    total = segs[0].length
    while total < length_m:
        if rng.random() < 0.35:
            segs.append(Segment(float(rng.uniform(20.0, 120.0)), 0.0, 0.0))
        else:
            # Radii biased toward gentle curves, but down to the minimum.
            radius = min_radius_m + (400.0 - min_radius_m) * float(rng.random()) ** 2
            k = math.copysign(1.0 / radius, rng.random() - 0.5)
            turn = math.radians(float(rng.uniform(15.0, 100.0)))
            ramp = float(rng.uniform(8.0, 35.0))
            arc = max(turn / abs(k) - ramp, 5.0)  # the two ramps turn as much as `ramp` of arc
            segs += [Segment(ramp, 0.0, k), Segment(arc, k, k), Segment(ramp, k, 0.0)]
        total = sum(s.length for s in segs)
    return segs


def _centre_points(segments: list[Segment], step: float = 1.0) -> np.ndarray:
    """Centre-line points every ``step`` metres, (N, 2)."""
    kappa = np.concatenate([np.linspace(s.k0, s.k1, max(round(s.length / step), 1), endpoint=False)
                            for s in segments])
    heading = np.concatenate([[0.0], np.cumsum(kappa * step)])
    mid = (heading[:-1] + heading[1:]) / 2.0
    return np.stack([np.concatenate([[0.0], np.cumsum(np.cos(mid) * step)]),
                     np.concatenate([[0.0], np.cumsum(np.sin(mid) * step)])], axis=1)


def _keeps_clear(segments: list[Segment], clearance_m: float = CLEARANCE_M, apart_m: float = 150.0) -> bool:
    """True when no two centre-line points more than ``apart_m`` apart along the road come closer
    than ``clearance_m``: lookups never confuse two branches and the road never crosses itself."""
    pts = _centre_points(segments, 2.0)
    n = len(pts)
    gap = int(apart_m / 2.0)
    for i in range(0, n, 256):  # blocks keep memory small
        block = pts[i : i + 256]
        d2 = ((block[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        idx = np.arange(i, i + len(block))[:, None]
        far = np.abs(idx - np.arange(n)[None, :]) > gap
        if (d2[far] < clearance_m**2).any():
            return False
    return True


class Road:
    """A centre line sampled every ``DS`` metres, its style, and fast road-coordinate lookups.

    Attributes:
        s, x, y, heading, kappa: (N,) samples of arc length, world position, heading (rad)
            and curvature (1/m, positive = turning left).
        length: total length in metres (drivable length plus a view margin).
        style: the :class:`RoadStyle`.
        seed: the seed it was generated from (None for hand-made roads).
    """

    def __init__(self, segments: list[Segment], style: RoadStyle | None = None, seed: int | None = None,
                 shadow_rng: np.random.Generator | None = None) -> None:
        if not segments:
            raise PDNError("a road needs at least one segment")
        kappa = np.concatenate(
            [np.linspace(seg.k0, seg.k1, max(round(seg.length / DS), 1), endpoint=False) for seg in segments]
        )
        n = len(kappa) + 1
        self.kappa = np.append(kappa, kappa[-1])
        self.s = np.arange(n) * DS
        heading = np.concatenate([[0.0], np.cumsum(kappa * DS)])
        mid = (heading[:-1] + heading[1:]) / 2.0
        self.heading = heading
        self.x = np.concatenate([[0.0], np.cumsum(np.cos(mid) * DS)])
        self.y = np.concatenate([[0.0], np.cumsum(np.sin(mid) * DS)])
        self.length = float(self.s[-1])
        self.segments = list(segments)
        self.style = style or RoadStyle()
        self.seed = seed
        self.shadows = self._make_shadows(shadow_rng or np.random.default_rng(0))
        self._build_grid()
        self._device_cache: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def generate(cls, seed: int, length_m: float = 1000.0, min_radius_m: float = 30.0,
                 style: RoadStyle | None = None) -> Road:
        """A random road with ``length_m`` drivable metres (plus a view margin) from ``seed``."""
        if length_m <= 0:
            raise PDNError(f"road length must be > 0, got {length_m}")
        if min_radius_m < 10:
            raise PDNError(f"minimum radius must be >= 10 m, got {min_radius_m}")
        # A flat world has no overpasses: redraw (deterministically) until the road keeps clear of itself.
        for attempt in range(100):
            rng = np.random.default_rng([int(seed), 0xD21E, attempt])
            segs = sample_segments(rng, length_m + VIEW_MARGIN_M, min_radius_m)
            if _keeps_clear(segs):
                return cls(segs, style or sample_style(rng), seed=int(seed), shadow_rng=rng)
        raise PDNError(f"could not draw a road of {length_m} m that keeps clear of itself (seed {seed})")

    @classmethod
    def straight(cls, length_m: float = 400.0, style: RoadStyle | None = None) -> Road:
        return cls([Segment(length_m + VIEW_MARGIN_M, 0.0, 0.0)], style)

    @classmethod
    def arc(cls, radius_m: float, left: bool = True, lead_m: float = 30.0, length_m: float = 400.0,
            style: RoadStyle | None = None) -> Road:
        """A short straight, then a constant-radius arc (for previews and tests)."""
        k = (1.0 if left else -1.0) / radius_m
        return cls([Segment(lead_m, 0.0, 0.0), Segment(length_m + VIEW_MARGIN_M, k, k)], style)

    def _make_shadows(self, rng: np.random.Generator) -> np.ndarray:
        """Shadow table over the skewed coordinate u = s - d tan(sun): (M, 4) = opacity, d_lo, d_hi, half-width.

        Each caster (pole or tree beside the road) darkens a band of u between two lateral
        limits; trees have soft, lumpy edges, poles are thin and sharp.
        """
        m = int(self.length / 0.1) + 1
        table = np.zeros((m, 4), np.float32)
        table[:, 1] = 1.0
        table[:, 2] = -1.0  # empty interval: no shadow
        table[:, 3] = 1.0
        n = rng.poisson(self.style.shadow_density * self.length / 100.0)
        u = np.arange(m) * 0.1
        for _ in range(int(n)):
            centre = rng.uniform(0.0, self.length)
            side = rng.choice([-1.0, 1.0])
            if rng.random() < 0.4:  # pole
                half, soft, opacity = rng.uniform(0.15, 0.3), 0.15, rng.uniform(0.6, 0.9)  # penumbra ~0.15 m
            else:  # tree
                half, soft, opacity = rng.uniform(1.5, 5.0), rng.uniform(0.5, 1.5), rng.uniform(0.5, 0.85)
            lo, hi = int(max((centre - half - 3 * soft) / 0.1, 0)), int(min((centre + half + 3 * soft) / 0.1, m - 1))
            if hi <= lo:
                continue
            seg = u[lo:hi]
            edge = np.clip((half - np.abs(seg - centre)) / soft + 0.5, 0.0, 1.0)
            if soft > 0.1:
                edge = edge * (0.75 + 0.25 * np.sin(seg * rng.uniform(1.0, 3.0) + rng.uniform(0, 6.28)))
            reach = rng.uniform(3.0, 14.0)
            d_lo, d_hi = (6.0 - reach, 9.0) if side > 0 else (-9.0, -6.0 + reach)
            stronger = opacity * edge > table[lo:hi, 0]
            table[lo:hi, 0] = np.where(stronger, opacity * edge, table[lo:hi, 0])
            table[lo:hi, 1] = np.where(stronger, d_lo, table[lo:hi, 1])
            table[lo:hi, 2] = np.where(stronger, d_hi, table[lo:hi, 2])
            table[lo:hi, 3] = np.where(stronger, half + soft, table[lo:hi, 3])
        return table

    def _build_grid(self) -> None:
        """Coarse world grids for road-coordinate lookups.

        ``grid`` holds the nearest centre-line sample per ``GRID_CELL_M`` cell (the initial guess
        of :meth:`to_road`); ``taylor`` holds, per ``TAYLOR_CELL_M`` cell centre, the exact
        road coordinates and direction (s, d, cos h, sin h), from which the renderer
        extrapolates to first order (error below 1 cm for radii of 30 m and more).
        """
        step = max(round(1.0 / DS), 1)
        idx = np.arange(0, len(self.s), step)
        offsets = np.arange(-GRID_REACH_M, GRID_REACH_M + 1e-9, GRID_CELL_M / 2.0)
        nx, ny = -np.sin(self.heading[idx]), np.cos(self.heading[idx])
        px = self.x[idx, None] + offsets[None, :] * nx[:, None]
        py = self.y[idx, None] + offsets[None, :] * ny[:, None]
        self.grid_origin = (float(px.min()) - GRID_CELL_M, float(py.min()) - GRID_CELL_M)
        ci = ((px - self.grid_origin[0]) / GRID_CELL_M).astype(np.int64)
        cj = ((py - self.grid_origin[1]) / GRID_CELL_M).astype(np.int64)
        self.grid_shape = (int(ci.max()) + 2, int(cj.max()) + 2)
        cell = (ci * self.grid_shape[1] + cj).ravel()
        dist = np.broadcast_to(np.abs(offsets)[None, :], ci.shape).ravel()
        sample = np.broadcast_to(idx[:, None], ci.shape).ravel()
        order = np.lexsort((dist, cell))  # by cell, nearest first
        first = np.unique(cell[order], return_index=True)[1]
        grid = np.full(self.grid_shape[0] * self.grid_shape[1], -1, np.int64)
        grid[cell[order][first]] = sample[order][first]
        self.grid = grid.reshape(self.grid_shape)
        # Taylor table on a finer grid over the same extent.
        ratio = round(GRID_CELL_M / TAYLOR_CELL_M)
        self.taylor_shape = (self.grid_shape[0] * ratio, self.grid_shape[1] * ratio)
        ti, tj = np.meshgrid(np.arange(self.taylor_shape[0]), np.arange(self.taylor_shape[1]), indexing="ij")
        known = self.grid[ti // ratio, tj // ratio] >= 0
        cx = self.grid_origin[0] + (ti[known] + 0.5) * TAYLOR_CELL_M
        cy = self.grid_origin[1] + (tj[known] + 0.5) * TAYLOR_CELL_M
        s, d = self.to_road(cx, cy, iters=3)
        h = self.centre(s)[2]
        table = np.zeros((*self.taylor_shape, 4), np.float32)
        table[..., 1] = 1e3  # unknown cells: far from the road
        table[known] = np.stack([s, d, np.cos(h), np.sin(h)], axis=1)
        self.taylor = table

    # ------------------------------------------------------------------ queries
    def centre(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World position and heading of the centre line at arc length ``s`` (clamped)."""
        f = np.clip(np.asarray(s, dtype=np.float64) / DS, 0.0, len(self.s) - 1.000001)
        i = np.floor(f).astype(np.int64)
        w = f - i
        x = self.x[i] * (1 - w) + self.x[i + 1] * w
        y = self.y[i] * (1 - w) + self.y[i + 1] * w
        h = self.heading[i] * (1 - w) + self.heading[i + 1] * w
        return x, y, h

    def point(self, s: np.ndarray | float, d: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """World position of road coordinates (s, d)."""
        x, y, h = self.centre(s)
        d = np.asarray(d, dtype=np.float64)
        return x - d * np.sin(h), y + d * np.cos(h)

    def pose_at(self, s: float, d: float = EGO_LANE_D, heading_err_rad: float = 0.0) -> np.ndarray:
        """A vehicle pose (x, y, yaw) at road coordinates (s, d) with a heading error."""
        x, y = self.point(s, d)
        return np.array([float(x), float(y), float(self.centre(s)[2]) + heading_err_rad])

    def to_road(self, x: np.ndarray, y: np.ndarray, iters: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (s, d) of world points; points beyond the grid's reach get d = inf."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ci = np.floor((x - self.grid_origin[0]) / GRID_CELL_M).astype(np.int64)
        cj = np.floor((y - self.grid_origin[1]) / GRID_CELL_M).astype(np.int64)
        inside = (ci >= 0) & (ci < self.grid_shape[0]) & (cj >= 0) & (cj < self.grid_shape[1])
        k = np.where(inside, self.grid[np.clip(ci, 0, self.grid_shape[0] - 1), np.clip(cj, 0, self.grid_shape[1] - 1)], -1)
        known = k >= 0
        s = np.where(known, k * DS, 0.0)
        for _ in range(iters):
            i = np.clip(np.rint(s / DS), 0, len(self.s) - 1).astype(np.int64)
            dx, dy = x - self.x[i], y - self.y[i]
            c, sn = np.cos(self.heading[i]), np.sin(self.heading[i])
            d = -dx * sn + dy * c
            # Arc length on the centre line shrinks by (1 - kappa d) at offset d.
            scale = 1.0 / np.maximum(1.0 - self.kappa[i] * d, 0.2)
            s = np.clip(self.s[i] + (dx * c + dy * sn) * scale, 0.0, self.length)
        return s, np.where(known, d, np.inf)

    def lookahead_point(self, s: float, distance: float, d: float = EGO_LANE_D) -> tuple[float, float]:
        x, y = self.point(s + distance, d)
        return float(x), float(y)
