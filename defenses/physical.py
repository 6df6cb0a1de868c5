"""Touch sets of a physical threat: any sticker of W x L metres on the road (or a billboard beside it),
anywhere in a range of distances, lateral offsets and yaws, seen by one camera.

The certificate bound itself is unchanged (:func:`defenses.certify.certify_votes`); this module is a
new *source of touch sets*: for every placement in the continuous threat space, the set of regions
whose votes the sticker can change.

Geometry (flat ground; exact for the built-in world, an assumption for real logs: on a hill or a
banked road the true ground is not the plane the camera model assumes, and a sticker can project
elsewhere than computed here). Coordinates are the vehicle frame of :mod:`drivenet_patch.world.camera`
shifted to the camera mount: ``d`` metres ahead of the camera, ``y`` metres to its left, ``z`` up.

The covering argument (why finitely many footprints cover every real one):

1. Grid. The distance range ``[d0, d1]`` is split into ``n = ceil((d1 - d0) / s) + 1`` grid points
   at spacing ``s' <= s`` (one point when ``d0 == d1``); every ``d`` in the range is within ``s'/2``
   of a grid point. The lateral range likewise.
2. Box. For grid point ``(d_i, y_j)``, every sticker whose centre lies within ``s'/2`` of it (in
   each axis) and whose yaw satisfies ``|psi| <= psi_max`` lies inside the axis-aligned box centred
   at ``(d_i, y_j)`` with half-extents ``s'/2 + a/2`` along and ``s'/2 + b/2`` across, where
   ``(a, b)`` bound the rotated sticker's extents: along = ``max_{|psi|<=psi_max} L cos psi + W sin psi``
   (``= sqrt(L^2 + W^2)`` once ``psi_max >= atan(W / L)``, else attained at ``psi_max``), across
   likewise with ``W`` and ``L`` swapped. A road sticker's box is flat (``z = 0``); a billboard's
   spans ``z`` from the ground (its posts are drawn too) to the top of its highest allowed board.
   Every sticker of the threat also lies in the threat's *extent*, the same box around the whole
   range of centres (``[d0 - a/2, d1 + a/2] x [y0 - b/2, y1 + b/2]``), so each cell's box is clipped
   to it: the union of the cells' boxes is then the extent itself at every grid spacing, and no cell
   reaches beyond what some real sticker can (:func:`threat_zone`).
3. Projection. Points of the box with positive depth project inside the convex hull of the
   projections of the box clipped to ``depth >= eps`` (a convex polyhedron's image under a
   perspective projection is the hull of its vertices' images). Points with depth below ``eps``
   cannot reach the image: the ground and a board are metres below or beside the optical centre.
4. Pixels. A pixel's value depends on the sticker only where its footprint reaches: in the world
   renderer a pixel shows the sticker iff its centre's ray hits it, so the pixel set is the pixel
   centres inside the hull; for a real dataset's crop-and-resize (``cv2.resize``: area or
   bilinear) a model pixel also reads camera pixels up to about one model pixel away. The mask is
   therefore every pixel centre within ``margin_px`` of the hull (``margin_px = 0.5`` in the world:
   a safety margin for rounding; ``1.5`` through a resize), computed as "inside every edge's
   half-plane moved out by ``margin_px``", a superset of the exact dilation. Not covered: lossy
   compression of the recorded frames (JPEG spreads a change over its 8x8 blocks, 16x16 with chroma
   subsampling, at camera resolution) and lens blur; for such logs the margin must grow by the block
   size (scaled to the model input) before the certificate is sound. The world's frames are lossless.
5. Regions. A region is the set of input pixels its vote may depend on (a rectangle for today's
   layouts); the sticker's touch set is every region whose pixel set meets the mask. Every real
   placement's touch set is thus a subset of one cell's, and certificates need only the maximal
   sets (:func:`defenses.regions.maximal_touch_sets`).

The sets depend on the camera, the threat and the layout only, not on the frame: compute them once
(:func:`physical_touch`) and certify any number of frames from votes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from defenses.regions import region_masks
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_CELLS
from drivenet_patch.world.camera import Camera

__all__ = ["PLACES", "ImageGeometry", "PhysicalThreat", "PhysicalTouch", "cell_boxes", "cell_count", "footprint_mask",
           "physical_touch", "region_masks", "rotated_extent", "threat_extent", "threat_zone"]

PLACES = ("road", "billboard")
#: Points closer than this (metres, along the optical axis) are clipped away (see the covering argument).
DEPTH_EPS_M = 0.05
#: Bounds that keep a threat physical (and the grid finite).
MAX_SIDE_M = 60.0
MAX_DISTANCE_M = 200.0
MAX_LATERAL_M = 30.0


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise PDNError(f"physical threat: {name} must be a (low, high) pair, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise PDNError(f"physical threat: {name} must be finite, got {value!r}")
    if a > b:
        raise PDNError(f"physical threat: {name} must have low <= high, got {a} > {b}")
    return a, b


@dataclass(frozen=True)
class PhysicalThreat:
    """One sticker of bounded physical size anywhere in a region ahead of the camera.

    Attributes:
        width_m: road: across the lane; billboard: the board's width.
        length_m: road: along the road; billboard: the board's height.
        place: ``"road"`` (flat on the ground) or ``"billboard"`` (upright, facing the car).
        distance_m: ``(d0, d1)``, forward distance from the camera to the sticker's centre.
        lateral_m: ``(y0, y1)``, the centre's offset to the left of the camera axis.
        yaw_deg: the sticker's rotation about the vertical axis is at most this in either direction.
        bottom_m: billboard only: ``(b0, b1)``, height of the board's lower edge above the ground.
    """

    width_m: float
    length_m: float
    place: str = "road"
    distance_m: tuple[float, float] = (5.0, 30.0)
    lateral_m: tuple[float, float] = (-2.5, 2.5)
    yaw_deg: float = 15.0
    bottom_m: tuple[float, float] = (1.5, 1.5)

    def __post_init__(self) -> None:
        if self.place not in PLACES:
            raise PDNError(f"physical threat: place must be one of {', '.join(PLACES)}, got {self.place!r}")
        for name in ("width_m", "length_m"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= MAX_SIDE_M):
                raise PDNError(f"physical threat: {name} must be in (0, {MAX_SIDE_M}] metres, got {v!r}")
        d0, d1 = _pair(self.distance_m, "distance_m")
        if d0 <= 0 or d1 > MAX_DISTANCE_M:
            raise PDNError(f"physical threat: distance_m must lie in (0, {MAX_DISTANCE_M}] metres, got {d0}-{d1}")
        y0, y1 = _pair(self.lateral_m, "lateral_m")
        if max(abs(y0), abs(y1)) > MAX_LATERAL_M:
            raise PDNError(f"physical threat: lateral_m must lie within +-{MAX_LATERAL_M} m, got {y0}:{y1}")
        if not (isinstance(self.yaw_deg, (int, float)) and math.isfinite(self.yaw_deg) and 0 <= self.yaw_deg <= 90):
            raise PDNError(f"physical threat: yaw_deg must lie in [0, 90], got {self.yaw_deg!r}")
        b0, b1 = _pair(self.bottom_m, "bottom_m")
        if b0 < 0 or b1 > MAX_SIDE_M:
            raise PDNError(f"physical threat: bottom_m must lie in [0, {MAX_SIDE_M}] metres, got {b0}-{b1}")
        object.__setattr__(self, "distance_m", (d0, d1))
        object.__setattr__(self, "lateral_m", (y0, y1))
        object.__setattr__(self, "bottom_m", (b0, b1))
        object.__setattr__(self, "width_m", float(self.width_m))
        object.__setattr__(self, "length_m", float(self.length_m))
        object.__setattr__(self, "yaw_deg", float(self.yaw_deg))

    @property
    def area_m2(self) -> float:
        return self.width_m * self.length_m

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(distance_m=list(self.distance_m), lateral_m=list(self.lateral_m), bottom_m=list(self.bottom_m),
                 area_m2=self.area_m2)
        if self.place == "road":
            d.pop("bottom_m")
        return d


def rotated_extent(side: float, other: float, yaw_max_deg: float) -> float:
    """``max over |psi| <= yaw_max`` of ``side * cos psi + other * sin psi``: the extent, along ``side``'s
    axis, of a ``side x other`` rectangle rotated by up to ``yaw_max`` (covering argument, step 2)."""
    psi = math.radians(yaw_max_deg)
    if psi >= math.atan2(other, side):
        return math.hypot(side, other)
    return side * math.cos(psi) + other * math.sin(psi)


def _grid(lo: float, hi: float, spacing: float) -> tuple[np.ndarray, float]:
    """Grid points covering ``[lo, hi]`` and their actual spacing (0 for a single point)."""
    if hi - lo <= 1e-12:
        return np.array([lo]), 0.0
    n = math.ceil((hi - lo) / spacing) + 1
    return np.linspace(lo, hi, n), (hi - lo) / (n - 1)


def cell_count(threat: PhysicalThreat, spacing_m: float = 0.25) -> int:
    """How many grid cells :func:`cell_boxes` makes for ``threat`` (its cost: each cell is one footprint raster),
    computed without building them."""
    if not (math.isfinite(spacing_m) and spacing_m > 0):
        raise PDNError(f"physical threat: grid spacing must be > 0 metres, got {spacing_m}")

    def points(lo: float, hi: float) -> int:
        return 1 if hi - lo <= 1e-12 else math.ceil((hi - lo) / spacing_m) + 1

    return points(*threat.distance_m) * points(*threat.lateral_m)


def cell_boxes(threat: PhysicalThreat, spacing_m: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Boxes that together contain every sticker of the threat (covering argument, steps 1-2).

    Returns:
        ``boxes`` (P, 6) as ``(d_lo, d_hi, y_lo, y_hi, z_lo, z_hi)`` in camera-relative metres, and
        ``centres`` (P,) the grid distance of each box (for certified accuracy by distance).
    """
    n = cell_count(threat, spacing_m)  # before any grid is built
    if n > MAX_CELLS:
        raise PDNError(f"physical threat: {n:,} grid cells at {spacing_m:g} m spacing, over the limit of {MAX_CELLS:,}; "
                       "use a coarser spacing or a smaller threat region")
    ds, sd = _grid(*threat.distance_m, spacing_m)
    ys, sy = _grid(*threat.lateral_m, spacing_m)
    half_d, half_y, z = _half_extents(threat)
    D, Y = np.meshgrid(ds, ys, indexing="ij")
    D, Y = D.ravel(), Y.ravel()
    hd, hy = half_d + sd / 2.0, half_y + sy / 2.0
    extent = threat_extent(threat)
    boxes = np.stack([np.maximum(D - hd, extent[0]), np.minimum(D + hd, extent[1]), np.maximum(Y - hy, extent[2]),
                      np.minimum(Y + hy, extent[3]), np.full_like(D, z[0]), np.full_like(D, z[1])], axis=1)
    return boxes, D


def _half_extents(threat: PhysicalThreat) -> tuple[float, float, tuple[float, float]]:
    """Half-extents along and across of any sticker of the threat about its centre, and its height range."""
    w, length, yaw = threat.width_m, threat.length_m, threat.yaw_deg
    if threat.place == "road":
        return rotated_extent(length, w, yaw) / 2.0, rotated_extent(w, length, yaw) / 2.0, (0.0, 0.0)
    # an upright board of width w facing the car, rotated about the vertical axis by <= yaw
    return 0.5 * w * math.sin(math.radians(min(yaw, 90.0))), 0.5 * w, (0.0, threat.bottom_m[1] + length)


def threat_extent(threat: PhysicalThreat) -> np.ndarray:
    """The box ``(d_lo, d_hi, y_lo, y_hi, z_lo, z_hi)`` (camera-relative metres) that holds every sticker of the
    threat: its range of centres grown by the rotated sticker's half-extents (covering argument, step 2)."""
    (d0, d1), (y0, y1) = threat.distance_m, threat.lateral_m
    half_d, half_y, z = _half_extents(threat)
    return np.array([d0 - half_d, d1 + half_d, y0 - half_y, y1 + half_y, z[0], z[1]])


@dataclass(frozen=True)
class ImageGeometry:
    """A camera and the map from its pixels to the model input's.

    Attributes:
        camera: the pinhole camera (its own resolution).
        to_model: 3x3 map from camera pixels to model pixels (a dataset's crop and resize).
        size: ``(H, W)`` of the model input.
        margin_px: pixel centres within this many model pixels of a footprint count as touched.
    """

    camera: Camera
    to_model: tuple[tuple[float, ...], ...]
    size: tuple[int, int]
    margin_px: float = 0.5

    @classmethod
    def world(cls, size: tuple[int, int], camera: Camera | None = None) -> ImageGeometry:
        """The world renderer's camera drawn directly at the model size (exact point sampling)."""
        cam = (camera or Camera()).with_size(int(size[0]), int(size[1]))
        return cls(cam, tuple(map(tuple, np.eye(3))), (int(size[0]), int(size[1])), 0.5)

    @classmethod
    def from_dataset(cls, dataset: Any) -> ImageGeometry:
        """A dataset's camera preset through its crop and resize (``cv2.resize`` reads neighbours: margin 1.5)."""
        cam = dataset.camera
        m = dataset.crop.matrix((cam.height, cam.width))
        return cls(cam, tuple(map(tuple, m)), tuple(int(v) for v in dataset.size), 1.5)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera-relative points (..., 3) ``(d, y, z)`` -> model pixels ``(u, v)`` and depth."""
        cam = self.camera
        pts = np.asarray(points, np.float64)
        veh = np.stack([pts[..., 0] + cam.forward_m, pts[..., 1] + cam.lateral_m, pts[..., 2]], axis=-1)
        u, v, depth = cam.project(veh)
        m = np.asarray(self.to_model)
        return m[0, 0] * u + m[0, 1] * v + m[0, 2], m[1, 0] * u + m[1, 1] * v + m[1, 2], depth

    def first_visible_m(self) -> float:
        """Forward distance from the camera of the nearest ground point seen by the model input
        (centre column, bottom row)."""
        m = np.asarray(self.to_model)
        cam = self.camera
        src = np.linalg.inv(m) @ np.array([(self.size[1] - 1) / 2.0, self.size[0] - 1.0, 1.0])
        g = np.linalg.inv(cam.ground_homography()) @ src
        if g[2] == 0 or not np.isfinite(g).all():
            return math.inf
        x = g[0] / g[2]
        return float(x - cam.forward_m) if x > cam.forward_m else math.inf

    def check(self, threat: PhysicalThreat) -> None:
        """Refuse a road threat whose nearest sticker centre is on ground the model never sees."""
        near = self.first_visible_m()
        if threat.place == "road" and threat.distance_m[0] < near - 1e-9:
            raise PDNError(f"physical threat: distance {threat.distance_m[0]:g} m is below the first visible ground "
                           f"row (row {self.size[0] - 1} of the model input sees the ground {near:.2f} m ahead)")


_EDGES = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7))


def _box_vertices(box: np.ndarray, geom: ImageGeometry) -> np.ndarray:
    """Model-pixel vertices (K, 2) of ``box`` clipped to depth >= ``DEPTH_EPS_M`` (covering step 3)."""
    d0, d1, y0, y1, z0, z1 = box
    corners = np.array([[d, y, z] for d in (d0, d1) for y in (y0, y1) for z in (z0, z1)])
    u, v, depth = geom.project(corners)
    keep = [np.array([u[i], v[i]]) for i in range(8) if depth[i] >= DEPTH_EPS_M]
    for a, b in _EDGES:  # where an edge crosses the clipping plane
        da, db = depth[a] - DEPTH_EPS_M, depth[b] - DEPTH_EPS_M
        if (da < 0) != (db < 0):
            t = da / (da - db)
            p = corners[a] + t * (corners[b] - corners[a])
            pu, pv, _ = geom.project(p[None])
            keep.append(np.array([pu[0], pv[0]]))
    return np.array(keep) if keep else np.zeros((0, 2))


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise in (u, v)) by the monotone chain."""
    pts = np.unique(np.round(points, 9), axis=0)
    if len(pts) <= 2:
        return pts

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    lower: list[np.ndarray] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[np.ndarray] = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def footprint_mask(box: np.ndarray, geom: ImageGeometry) -> np.ndarray:
    """(H, W) bool: model pixels whose centre lies within ``geom.margin_px`` of the box's projection."""
    h, w = geom.size
    verts = _box_vertices(np.asarray(box, np.float64), geom)
    if len(verts) == 0:
        return np.zeros((h, w), bool)
    hull = _hull(verts)
    vv, uu = np.mgrid[0:h, 0:w]
    pu, pv = uu.astype(np.float64), vv.astype(np.float64)
    m = geom.margin_px
    if len(hull) <= 2:  # a point or a segment: distance to it
        a, b = hull[0], hull[-1]
        ab = b - a
        t = np.clip(((pu - a[0]) * ab[0] + (pv - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        return (pu - a[0] - t * ab[0]) ** 2 + (pv - a[1] - t * ab[1]) ** 2 <= m * m
    inside = np.ones((h, w), bool)
    for i in range(len(hull)):
        a, b = hull[i], hull[(i + 1) % len(hull)]
        ex, ey = b - a
        norm = math.hypot(ex, ey)
        # left of a->b (counter-clockwise hull): cross >= 0; moved out by the margin
        inside &= (ex * (pv - a[1]) - ey * (pu - a[0])) >= -m * norm
    return inside


def threat_zone(threat: PhysicalThreat, geom: ImageGeometry) -> np.ndarray:
    """(H, W) bool: every model pixel some sticker of ``threat`` can touch, the footprint of its extent
    (:func:`threat_extent`). Every cell's box of the covering lies in the extent at any grid spacing, so every
    footprint of :func:`physical_touch` lies in this mask. Its complement is the threat's *context*: pixels no
    sticker of the threat reaches, which every vote may read without being touched
    (:class:`defenses.context.ContextLayout`)."""
    return footprint_mask(threat_extent(threat), geom)


@dataclass(frozen=True)
class PhysicalTouch:
    """The touch sets of a threat for one camera and layout.

    Attributes:
        touch: (P, N) bool, one row per grid cell (``cells``).
        distance_m: (P,) grid distance of each row.
        footprint_px: (P,) pixels in each cell's footprint mask.
    """

    touch: torch.Tensor
    distance_m: np.ndarray
    footprint_px: np.ndarray


def physical_touch(threat: PhysicalThreat, geom: ImageGeometry, layout: Any, spacing_m: float = 0.25) -> PhysicalTouch:
    """Which regions each cell of the threat's covering can touch (module docstring, steps 1-5)."""
    geom.check(threat)
    if tuple(layout.input_size) != tuple(geom.size):
        raise PDNError(f"physical threat: the layout is for {layout.input_size}, the camera gives {geom.size}")
    boxes, dist = cell_boxes(threat, spacing_m)
    regions = region_masks(layout).reshape(layout.n, -1).to(torch.float32)  # (N, HW)
    rows, sizes = [], []
    for start in range(0, len(boxes), 256):
        masks = np.stack([footprint_mask(b, geom) for b in boxes[start:start + 256]])  # (p, H, W)
        flat = torch.from_numpy(masks.reshape(len(masks), -1)).to(torch.float32)
        rows.append((flat @ regions.T) > 0)
        sizes.append(masks.reshape(len(masks), -1).sum(1))
    return PhysicalTouch(torch.cat(rows), dist, np.concatenate(sizes))
