"""Region geometry for PatchVote: where the regions lie and which ones a patch can touch.

Everything here is a pure function of integer geometry on the *model input* (``H x W``,
66x200 by default), in pixels, rows first (``(y, x)``, ``(h, w)``):

- :class:`RegionLayout` places N equally sized rectangular regions, as vertical **bands**
  (full-height columns, as in column ablation, Levine & Feizi 2020, "(De)Randomized
  Smoothing for Certifiable Defense against Patch Attacks") or as a **grid**; size and
  stride are free, so regions may overlap (stride < size).
- :func:`touch_matrix` lists, for every position of a ``ph x pw`` patch, which regions it
  overlaps: a boolean (P, N) matrix. ``k_max`` is the largest row sum. A region's vote depends
  only on its own pixels, so a patch can change at most the votes of the regions it touches
  (the counting argument of PatchGuard, Xiang et al. 2021).
- :class:`StripLayout` ("strips", made for the physical sticker threat): horizontal strips whose
  row edges sit at ground distances ahead of the camera, each optionally cut into column windows and
  resampled to one crop height so one network serves them all. A road sticker L metres long then
  touches the strips its ground extent meets, about L / strip length + 1 of them, at every distance.
- :func:`parse_patch` reads ``"16x16"`` (pixels) or ``"2%"`` (share of the image area).
- :func:`camera_box_to_model` / :func:`camera_patch_to_model` carry a patch given in
  camera pixels through a :class:`~drivenet_patch.data.base.CropResize` to model-input pixels,
  rounding outward, because a resize spreads one source pixel over neighbouring outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch

from drivenet_patch.data.base import CropResize
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import parse_hw

#: The region layouts :func:`make_layout` knows.
LAYOUTS = ("bands", "grid", "strips")
#: Default region size and stride per layout at the 66x200 model input (``(h, w)``; a band's
#: height is always the full image height).
DEFAULT_REGION = {"bands": (None, 40), "grid": (33, 50)}
DEFAULT_STRIDE = {"bands": (None, 20), "grid": (33, 25)}


def region_starts(length: int, size: int, stride: int) -> tuple[int, ...]:
    """Start offsets of windows of ``size`` every ``stride`` pixels along an axis of ``length``.

    If the last regular window stops short of the end, one more window is placed flush with
    the end, so every pixel lies in some window when ``stride <= size`` (that last window
    overlaps its neighbour more than the others do).

    Raises:
        PDNError: ``size`` not in ``[1, length]`` or ``stride < 1``.
    """
    if not 1 <= size <= length:
        raise PDNError(f"region size {size} must lie in [1, {length}] (the image side)")
    if stride < 1:
        raise PDNError(f"region stride must be >= 1, got {stride}")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return tuple(starts)


@dataclass(frozen=True)
class RegionLayout:
    """N equally sized axis-aligned regions on the model input, in row-major order.

    Attributes:
        input_size: ``(H, W)`` of the model input.
        size: ``(rh, rw)`` of every region.
        stride: ``(sh, sw)`` between neighbouring regions.
        ys, xs: start rows / columns (:func:`region_starts`); region ``i * len(xs) + j`` is
            ``[ys[i], ys[i] + rh) x [xs[j], xs[j] + rw)``.
    """

    input_size: tuple[int, int]
    size: tuple[int, int]
    stride: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("input_size", "size", "stride"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 2:
                raise PDNError(f"region layout: {name} must be (h, w), got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        region_starts(self.input_size[0], self.size[0], self.stride[0])  # validates
        region_starts(self.input_size[1], self.size[1], self.stride[1])

    @property
    def ys(self) -> tuple[int, ...]:
        return region_starts(self.input_size[0], self.size[0], self.stride[0])

    @property
    def xs(self) -> tuple[int, ...]:
        return region_starts(self.input_size[1], self.size[1], self.stride[1])

    @property
    def n(self) -> int:
        """Number of regions N."""
        return len(self.ys) * len(self.xs)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the region grid (bands: ``(1, N)``)."""
        return len(self.ys), len(self.xs)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """``(y0, x0, y1, x1)`` of every region, end-exclusive, in region order."""
        (rh, rw) = self.size
        return [(y, x, y + rh, x + rw) for y in self.ys for x in self.xs]

    def index_tensors(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column indices that cut every region out of an image.

        Returns:
            ``rows`` (N, rh, 1) and ``cols`` (N, 1, rw), int64, so that
            ``x[:, :, rows, cols]`` is (B, C, N, rh, rw).
        """
        (rh, rw) = self.size
        ys = torch.tensor(self.ys, dtype=torch.int64, device=device)
        xs = torch.tensor(self.xs, dtype=torch.int64, device=device)
        y0 = ys.repeat_interleave(len(xs))  # (N,)
        x0 = xs.repeat(len(ys))  # (N,)
        rows = y0[:, None, None] + torch.arange(rh, device=device)[None, :, None]
        cols = x0[:, None, None] + torch.arange(rw, device=device)[None, None, :]
        return rows, cols

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "size": list(self.size), "stride": list(self.stride), "n": self.n}


#: Ground distances (metres ahead of the camera) of the default strips' edges; the last strip runs
#: from the last distance to the horizon. Chosen by measurement (docs/patchvote.md, "Certified in metres").
DEFAULT_STRIP_EDGES_M = (6.0, 8.0, 10.5, 14.0, 19.0, 27.0, 40.0, 80.0)
#: Rows every strip is resampled to (the crop network needs at least 33).
STRIP_CROP_H = 33
#: Columns every strip window is resampled to by default: half of a 200 px window (pairs of columns
#: averaged), so nine strips cost the crop network about what nine 66x40 bands do.
STRIP_CROP_W = 100


def ground_row(input_size: tuple[int, int], distance_m: float, camera: Any = None) -> float:
    """Model-input row (pixel centres at integers) of the ground ``distance_m`` ahead of the camera
    on its axis, for ``camera`` (default: the world's) drawn at ``input_size``; ``-inf`` at infinity."""
    from drivenet_patch.world.camera import Camera

    cam = (camera or Camera()).with_size(int(input_size[0]), int(input_size[1]))
    if not math.isfinite(distance_m):
        return cam.horizon_row
    _, v, _ = cam.project([[cam.forward_m + float(distance_m), cam.lateral_m, 0.0]])
    return float(v[0])


def strip_edges(input_size: tuple[int, int], distances_m: Sequence[float] = DEFAULT_STRIP_EDGES_M,
                camera: Any = None) -> tuple[int, ...]:
    """Row edges of strips bounded by ground distances: the image bottom, the row of each distance
    (nearest first), and the first row below the horizon, as increasing integers."""
    h = int(input_size[0])
    rows = [h]
    for d in sorted(float(v) for v in distances_m):
        r = round(ground_row(input_size, d, camera) + 0.5)  # the edge between pixel rows
        if 0 < r < rows[-1]:
            rows.append(r)
    top = max(0, math.floor(ground_row(input_size, math.inf, camera) + 0.5))
    if top < rows[-1]:
        rows.append(top)
    return tuple(sorted(set(rows)))


@dataclass(frozen=True)
class StripLayout:
    """Horizontal strips (row edges ``edges``), each cut into column windows and resampled to ``crop_h x crop_w``.

    Region ``i * len(xs) + j`` is strip ``i`` (rows ``[edges[i], edges[i + 1])``) times column window
    ``j`` (``[xs[j], xs[j] + width)``). Its crop is the window linearly resampled, separably: output
    row ``k`` reads source rows ``floor(s)`` and ``floor(s) + 1`` at
    ``s = y0 + (k + 0.5) * (y1 - y0) / crop_h - 0.5``, both clamped into ``[y0, y1)`` (columns
    likewise into ``[x0, x0 + width)``), so the vote depends on its box's pixels alone, exactly as
    for :class:`RegionLayout` (the box is its dependency set; :func:`touch_matrix` and the physical
    certificate use it).

    Attributes:
        input_size: ``(H, W)``.
        edges: increasing row edges (at least two), within ``[0, H]``.
        width: column window width (``W``: one window per strip).
        stride: column step between windows.
        crop_h: rows of every resampled crop.
        crop_w: columns of every resampled crop (``None``: ``min(width, STRIP_CROP_W)``).
    """

    input_size: tuple[int, int]
    edges: tuple[int, ...]
    width: int
    stride: int
    crop_h: int = STRIP_CROP_H
    crop_w: int | None = None

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.input_size)
        object.__setattr__(self, "input_size", (h, w))
        edges = tuple(int(e) for e in self.edges)
        if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)) or edges[0] < 0 or edges[-1] > h:
            raise PDNError(f"strips: row edges must increase within [0, {h}], got {list(self.edges)}")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "stride", int(self.stride))
        object.__setattr__(self, "crop_h", int(self.crop_h))
        object.__setattr__(self, "crop_w", min(self.width, STRIP_CROP_W) if self.crop_w is None else int(self.crop_w))
        region_starts(w, self.width, self.stride)  # validates
        if self.crop_h < 1 or self.crop_w < 1:
            raise PDNError(f"strips: crop size must be >= 1, got {self.crop_h}x{self.crop_w}")

    @property
    def xs(self) -> tuple[int, ...]:
        return region_starts(self.input_size[1], self.width, self.stride)

    @property
    def n(self) -> int:
        return (len(self.edges) - 1) * len(self.xs)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.edges) - 1, len(self.xs)

    @property
    def size(self) -> tuple[int, int]:
        """``(crop_h, crop_w)``: the crop the network sees."""
        return self.crop_h, self.crop_w

    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [(y0, x, y1, x + self.width) for y0, y1 in pairwise(self.edges) for x in self.xs]

    def row_sources(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per strip and output row: source rows ``lo``, ``hi`` (S, crop_h) int64 and weight of ``hi`` (S, crop_h)."""
        parts = [_linear_sources(y0, y1, self.crop_h) for y0, y1 in pairwise(self.edges)]
        return tuple(torch.stack(p) for p in zip(*parts))  # type: ignore[return-value]

    def col_sources(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per column window and output column: source columns ``lo``, ``hi`` (C, crop_w) and weight of ``hi``."""
        parts = [_linear_sources(x, x + self.width, self.crop_w) for x in self.xs]
        return tuple(torch.stack(p) for p in zip(*parts))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "edges": list(self.edges), "width": self.width,
                "stride": self.stride, "crop": [self.crop_h, self.crop_w], "n": self.n}


def _linear_sources(a: int, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear resampling of ``[a, b)`` to ``n`` samples (pixel centres): source ``lo``, ``hi`` and the weight of
    ``hi``, with both sources clamped into ``[a, b)``."""
    k = torch.arange(n, dtype=torch.float64)
    src = (a + (k + 0.5) * (b - a) / n - 0.5).clamp(a, b - 1)
    lo = src.floor()
    return lo.to(torch.int64), (lo + 1).clamp(max=b - 1).to(torch.int64), (src - lo).to(torch.float32)


def make_layout(
    input_size: tuple[int, int] = (66, 200),
    layout: str = "bands",
    region: int | Sequence[int] | str | None = None,
    stride: int | Sequence[int] | str | None = None,
    strips: Sequence[int] | None = None,
) -> RegionLayout | StripLayout:
    """Build a region layout from user-level settings.

    Args:
        input_size: ``(H, W)`` of the model input.
        layout: ``"bands"`` (full-height columns; ``region`` and ``stride`` are widths),
            ``"grid"`` (``region`` and ``stride`` are ``(h, w)`` pairs, an int meaning a square) or
            ``"strips"`` (:class:`StripLayout`; ``region`` and ``stride`` are the column window's
            width and step, default the full width).
        region: region size; ``None`` = the layout's default (bands 40 px wide; grid 33x50).
        stride: step between regions; ``None`` = the layout's default (bands 20 px, half
            overlapping; grid 33x25). ``stride < size`` makes regions overlap.
        strips: ``"strips"`` only: row edges in pixels; ``None`` = :func:`strip_edges` of
            :data:`DEFAULT_STRIP_EDGES_M` for the world camera.

    Raises:
        PDNError: unknown layout or sizes that do not fit the image.
    """
    if layout not in LAYOUTS:
        raise PDNError(f"unknown region layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    h, w = int(input_size[0]), int(input_size[1])
    if strips is not None and layout != "strips":
        raise PDNError(f"region layout {layout!r} takes no strips (row edges); use layout 'strips'")
    if layout == "strips":
        cw = w if region is None else _band_width(region, "region")
        cs = cw if stride is None else _band_width(stride, "stride")
        if strips is None:
            edges = strip_edges((h, w))
        elif isinstance(strips, (str, bytes)) or not isinstance(strips, Sequence):
            raise PDNError(f"strips: expected a list of row edges, got {strips!r}")
        else:
            edges = tuple(strips)
        return StripLayout((h, w), edges, cw, cs)
    if layout == "bands":
        rw = DEFAULT_REGION["bands"][1] if region is None else _band_width(region, "region")
        sw = DEFAULT_STRIDE["bands"][1] if stride is None else _band_width(stride, "stride")
        return RegionLayout((h, w), (h, rw), (h, sw))
    rh, rw = DEFAULT_REGION["grid"] if region is None else parse_hw("region", region, square=True)
    sh, sw = DEFAULT_STRIDE["grid"] if stride is None else parse_hw("stride", stride, square=True)
    return RegionLayout((h, w), (rh, rw), (sh, sw))


def _band_width(value: Any, where: str) -> int:
    if isinstance(value, (list, tuple)):
        raise PDNError(f"{where}: bands take one width in pixels, got {value!r} (use layout 'grid' for (h, w))")
    return parse_hw(where, value, square=True)[1]


# ---------------------------------------------------------------------------- patches
def parse_patch(spec: str | int | Sequence[int], image_size: tuple[int, int] = (66, 200)) -> tuple[int, int]:
    """A patch size ``(ph, pw)`` in pixels from ``"16x16"`` (h x w), ``16`` or ``"2%"``.

    A share of the image area ``s`` gives the smallest square that covers at least that area:
    side ``ceil(sqrt(s * H * W))``. If the side exceeds the image height (or width), the patch
    is as tall (wide) as the image and the other side grows to ``ceil(s * H * W / H)`` so the
    area still reaches the share. Rounding up keeps the certified patch at least as large as
    asked. Example: ``"2%"`` of 66x200 (264 px) -> 17x17 (289 px).

    Args:
        spec: ``"HxW"``, an int (square), a pair, or ``"P%"`` with ``0 < P <= 100``.
        image_size: ``(H, W)`` of the image the patch lies on.

    Raises:
        PDNError: unreadable spec, non-positive sizes, or a patch larger than the image.
    """
    h, w = int(image_size[0]), int(image_size[1])
    if isinstance(spec, str) and spec.strip().endswith("%"):
        text = spec.strip()[:-1]
        try:
            share = float(text) / 100.0
        except ValueError:
            raise PDNError(f"patch: expected 'HxW' or 'P%', got {spec!r}") from None
        if not (math.isfinite(share) and 0.0 < share <= 1.0):
            raise PDNError(f"patch: a share must lie in (0%, 100%], got {spec!r}")
        area = share * h * w
        side = math.ceil(math.sqrt(area) - 1e-9)
        ph, pw = side, side
        if ph > h:
            ph, pw = h, math.ceil(area / h - 1e-9)
        if pw > w:
            ph, pw = min(h, math.ceil(area / w - 1e-9)), w
        return max(ph, 1), max(pw, 1)
    ph, pw = parse_hw("patch", spec, square=True, hint="give HxW pixels or a share P% such as 2%")
    if ph > h or pw > w:
        raise PDNError(f"patch: {ph}x{pw} does not fit the {h}x{w} model input")
    return ph, pw


def patch_positions(input_size: tuple[int, int], patch: tuple[int, int]) -> torch.Tensor:
    """Top-left corners of every patch position that lies inside the image.

    Positions sticking out of the image need no separate treatment: such a patch covers a
    subset of the pixels of some inside position, so it touches a subset of its regions.

    Returns:
        (P, 2) int64 ``(py, px)``, row-major, ``P = (H - ph + 1) * (W - pw + 1)``.
    """
    (h, w), (ph, pw) = input_size, patch
    if not (1 <= ph <= h and 1 <= pw <= w):
        raise PDNError(f"patch {ph}x{pw} does not fit the {h}x{w} model input")
    py, px = torch.meshgrid(torch.arange(h - ph + 1), torch.arange(w - pw + 1), indexing="ij")
    return torch.stack([py.reshape(-1), px.reshape(-1)], dim=1)


def region_masks(layout: Any) -> torch.Tensor:
    """(N, H, W) bool: the input pixels each region's vote may depend on, its *dependency set*.

    A layout with a ``masks()`` method (:class:`defenses.context.ContextLayout`: a piece's box plus
    the context every vote reads) gives its own; for the rectangle layouts it is each box.
    """
    if hasattr(layout, "masks"):
        return layout.masks()
    return box_masks(layout.input_size, layout.boxes())


def box_masks(input_size: tuple[int, int], boxes: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
    """(N, H, W) bool: each ``(y0, x0, y1, x1)`` box (end-exclusive) as a mask of an ``H x W`` input."""
    h, w = input_size
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return masks


def touch_matrix(layout: Any, patch: tuple[int, int]) -> torch.Tensor:
    """Which regions each patch position touches.

    A patch ``[py, py + ph) x [px, px + pw)`` touches a region when it meets the region's
    dependency box (``layout.boxes()``: the pixels its vote may depend on) along both axes;
    for a layout of dependency masks (``layout.masks()``), when the patch covers at least one
    pixel of the region's mask (counted exactly from the mask's summed-area table).

    Args:
        layout: the regions (:class:`RegionLayout` or :class:`StripLayout`).
        patch: ``(ph, pw)`` in model-input pixels.

    Returns:
        (P, N) bool; row ``p`` belongs to corner ``patch_positions(...)[p]``.
    """
    h, w = layout.input_size
    ph, pw = int(patch[0]), int(patch[1])
    if not (1 <= ph <= h and 1 <= pw <= w):
        raise PDNError(f"patch {ph}x{pw} does not fit the {h}x{w} model input")
    if hasattr(layout, "masks"):
        m = layout.masks().to(torch.int64)  # (N, H, W)
        sat = torch.zeros(m.shape[0], h + 1, w + 1, dtype=torch.int64)
        sat[:, 1:, 1:] = m.cumsum(1).cumsum(2)
        inside = sat[:, ph:, pw:] - sat[:, :-ph, pw:] - sat[:, ph:, :-pw] + sat[:, :-ph, :-pw]  # (N, Py, Px)
        return (inside > 0).reshape(m.shape[0], -1).T.contiguous()
    b = torch.tensor(layout.boxes(), dtype=torch.int64)  # (N, 4) y0, x0, y1, x1
    py = torch.arange(h - ph + 1)[:, None]
    px = torch.arange(w - pw + 1)[:, None]
    ty = (py < b[None, :, 2]) & (py + ph > b[None, :, 0])  # (Py, N)
    tx = (px < b[None, :, 3]) & (px + pw > b[None, :, 1])  # (Px, N)
    return (ty[:, None, :] & tx[None, :, :]).reshape(ty.shape[0] * tx.shape[0], layout.n)


def maximal_touch_sets(touch: torch.Tensor) -> torch.Tensor:
    """The distinct rows of a touch matrix that are not contained in another row.

    An attacker who controls the votes of a set S can do anything one controlling a subset
    of S can (leave the rest clean), so certificates need only these rows. For bands this
    shrinks thousands of positions to about N rows.

    Args:
        touch: (P, N) bool.

    Returns:
        (Q, N) bool, Q <= P, at least one row.
    """
    t = touch.to(torch.bool)
    n = t.shape[1]
    if n <= 62:  # pack each row into one int64 and dedupe 1-D (much faster than unique(dim=0))
        bits = 2 ** torch.arange(n, dtype=torch.int64, device=t.device)
        codes = torch.unique((t.to(torch.int64) * bits).sum(1))
        rows = (codes[:, None] & bits) != 0  # (U, N)
    else:
        rows = torch.unique(t, dim=0)  # (U, N)
    if rows.shape[0] == 1:
        return rows
    r = rows.to(torch.float32)
    inter = r @ r.T  # (U, U) |S_i & S_j|
    size = r.sum(1)
    # j strictly contains i: |S_i & S_j| == |S_i| and |S_j| > |S_i|.
    contained = (inter == size[:, None]) & (size[None, :] > size[:, None])
    return rows[~contained.any(1)]


def k_max(touch: torch.Tensor, valid: torch.Tensor | None = None) -> int:
    """Most regions one patch touches (counting only ``valid``, shape (N,), regions if given)."""
    t = touch.to(torch.bool)
    if valid is not None:
        t = t & valid.to(torch.bool)[None, :]
    return int(t.sum(1).max()) if t.numel() else 0


# ---------------------------------------------------------------------------- camera -> model
def _axis_map(a: int, b: int, margin_lo: int, src_len: int, out_len: int) -> tuple[int, int] | None:
    """Model pixels ``[j0, j1]`` that source pixels ``[a, b]`` (inclusive) can change along one axis.

    ``src_len`` is the cropped length. With ``s = out_len / src_len``, pixel edges map as
    ``x_out = x_src * s``. cv2's INTER_AREA (shrinking) averages source pixels over each output
    pixel's span; INTER_LINEAR samples at ``(j + 0.5) / s - 0.5`` from the two neighbours. Both
    are covered by: output pixel ``[j, j + 1]`` meets ``[a s - s/2, (b + 1) s + s/2]``.
    """
    a, b = a - margin_lo, b - margin_lo
    a, b = max(a, 0), min(b, src_len - 1)
    if a > b:
        return None
    if src_len == out_len:
        return a, b
    s = out_len / src_len
    lo, hi = a * s - s / 2, (b + 1) * s + s / 2
    j0 = math.ceil(lo - 1 - 1e-9)
    j1 = math.floor(hi + 1e-9)
    j0, j1 = max(j0, 0), min(j1, out_len - 1)
    return (j0, j1) if j0 <= j1 else None


def camera_box_to_model(
    box: tuple[int, int, int, int], crop: CropResize, source_size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The model-input pixels a camera-pixel box can change after ``crop`` (crop + resize).

    Args:
        box: ``(y0, x0, y1, x1)`` in source (camera) pixels, end-exclusive.
        crop: the dataset's crop and resize.
        source_size: ``(h, w)`` of the camera image.

    Returns:
        ``(y0, x0, y1, x1)`` in model pixels, end-exclusive, rounded outward; ``None`` if
        the box lies entirely in the cropped-away margins. When the cropped image already
        has the model size there is no resize and the box maps one to one.
    """
    h, w = int(source_size[0]), int(source_size[1])
    ch, cw = h - crop.top - crop.bottom, w - crop.left - crop.right
    if ch < 1 or cw < 1:
        raise PDNError(f"crop {crop.top, crop.bottom, crop.left, crop.right} leaves nothing of a {h}x{w} image")
    y0, x0, y1, x1 = (int(v) for v in box)
    if y1 <= y0 or x1 <= x0:
        return None
    oh, ow = crop.size
    if (ch, cw) == (oh, ow):  # CropResize.apply skips the resize: a pure shift
        ry = _axis_map(y0, y1 - 1, crop.top, ch, ch)
        rx = _axis_map(x0, x1 - 1, crop.left, cw, cw)
    else:
        ry = _axis_map(y0, y1 - 1, crop.top, ch, oh)
        rx = _axis_map(x0, x1 - 1, crop.left, cw, ow)
    if ry is None or rx is None:
        return None
    return ry[0], rx[0], ry[1] + 1, rx[1] + 1


def camera_patch_to_model(
    patch: tuple[int, int], crop: CropResize, source_size: tuple[int, int]
) -> tuple[int, int]:
    """Largest model-input extent ``(ph, pw)`` of a ``patch`` (camera pixels) over all positions.

    Certifying this model-input patch size covers every placement of the camera patch.
    Computed by trying every offset along each axis (the map is separable).
    """
    h, w = int(source_size[0]), int(source_size[1])
    ph, pw = int(patch[0]), int(patch[1])
    if not (1 <= ph <= h and 1 <= pw <= w):
        raise PDNError(f"patch {ph}x{pw} does not fit the {h}x{w} camera image")
    ch, cw = h - crop.top - crop.bottom, w - crop.left - crop.right
    oh, ow = crop.size
    same = (ch, cw) == (oh, ow)
    best = [0, 0]
    for axis, (length, plen, margin, out_len) in enumerate(
        ((h, ph, crop.top, oh), (w, pw, crop.left, ow))
    ):
        src = ch if axis == 0 else cw
        for a in range(length - plen + 1):
            r = _axis_map(a, a + plen - 1, margin, src, src if same else out_len)
            if r is not None:
                best[axis] = max(best[axis], r[1] - r[0] + 1)
    if min(best) == 0:
        raise PDNError(f"patch {ph}x{pw}: no placement reaches the model input through the crop")
    return best[0], best[1]
