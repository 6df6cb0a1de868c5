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
- :func:`parse_patch` reads ``"16x16"`` (pixels) or ``"2%"`` (share of the image area).
- :func:`camera_box_to_model` / :func:`camera_patch_to_model` carry a patch given in
  camera pixels through a :class:`~drivenet_patch.data.base.CropResize` to model-input pixels,
  rounding outward, because a resize spreads one source pixel over neighbouring outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from drivenet_patch.data.base import CropResize
from drivenet_patch.errors import PDNError

#: The region layouts :func:`make_layout` knows.
LAYOUTS = ("bands", "grid")
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


def _pair(value: Any, where: str) -> tuple[int | None, int | None]:
    """An int ``s`` -> ``(s, s)``; a pair -> itself; ints only (``None`` allowed per item)."""
    if isinstance(value, str):
        parts: Any = value.lower().split("x") if "x" in value.lower() else [value, value]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parts = [value, value]
    else:
        parts = value
    try:
        if len(parts) != 2:
            raise ValueError
        out = []
        for p in parts:
            if p is None:
                out.append(None)
                continue
            if isinstance(p, bool) or (isinstance(p, float) and not p.is_integer()):
                raise ValueError
            out.append(int(p))
    except (TypeError, ValueError):
        raise PDNError(f"{where}: expected an integer or (h, w), got {value!r}") from None
    return out[0], out[1]


def make_layout(
    input_size: tuple[int, int] = (66, 200),
    layout: str = "bands",
    region: int | Sequence[int] | str | None = None,
    stride: int | Sequence[int] | str | None = None,
) -> RegionLayout:
    """Build a :class:`RegionLayout` from user-level settings.

    Args:
        input_size: ``(H, W)`` of the model input.
        layout: ``"bands"`` (full-height columns; ``region`` and ``stride`` are widths) or
            ``"grid"`` (``region`` and ``stride`` are ``(h, w)`` pairs, an int meaning a square).
        region: region size; ``None`` = the layout's default (bands 40 px wide; grid 33x50).
        stride: step between regions; ``None`` = the layout's default (bands 20 px, half
            overlapping; grid 33x25). ``stride < size`` makes regions overlap.

    Raises:
        PDNError: unknown layout or sizes that do not fit the image.
    """
    if layout not in LAYOUTS:
        raise PDNError(f"unknown region layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    h, w = int(input_size[0]), int(input_size[1])
    if layout == "bands":
        rw = DEFAULT_REGION["bands"][1] if region is None else _band_width(region, "region")
        sw = DEFAULT_STRIDE["bands"][1] if stride is None else _band_width(stride, "stride")
        return RegionLayout((h, w), (h, rw), (h, sw))
    rh, rw = DEFAULT_REGION["grid"] if region is None else _pair(region, "region")
    sh, sw = DEFAULT_STRIDE["grid"] if stride is None else _pair(stride, "stride")
    return RegionLayout((h, w), (rh, rw), (sh, sw))


def _band_width(value: Any, where: str) -> int:
    if isinstance(value, (list, tuple)):
        raise PDNError(f"{where}: bands take one width in pixels, got {value!r} (use layout 'grid' for (h, w))")
    return int(_pair(value, where)[1])  # type: ignore[arg-type]


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
            raise PDNError(f"--patch: expected 'HxW' or 'P%', got {spec!r}") from None
        if not (math.isfinite(share) and 0.0 < share <= 1.0):
            raise PDNError(f"--patch: a share must lie in (0%, 100%], got {spec!r}")
        area = share * h * w
        side = math.ceil(math.sqrt(area) - 1e-9)
        ph, pw = side, side
        if ph > h:
            ph, pw = h, math.ceil(area / h - 1e-9)
        if pw > w:
            ph, pw = min(h, math.ceil(area / w - 1e-9)), w
        return max(ph, 1), max(pw, 1)
    try:
        ph, pw = _pair(spec, "--patch")
    except PDNError:
        raise PDNError(f"--patch: expected 'HxW' or 'P%', got {spec!r}") from None
    if ph is None or pw is None or ph < 1 or pw < 1:
        raise PDNError(f"--patch: sizes must be positive, got {spec!r}")
    if ph > h or pw > w:
        raise PDNError(f"--patch: {ph}x{pw} does not fit the {h}x{w} model input")
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


def _axis_touch(starts: Sequence[int], size: int, length: int, psize: int) -> torch.Tensor:
    """(positions, windows) bool: patch ``[p, p + psize)`` overlaps window ``[s, s + size)``."""
    p = torch.arange(length - psize + 1)[:, None]
    s = torch.tensor(starts)[None, :]
    return (p < s + size) & (p + psize > s)


def touch_matrix(layout: RegionLayout, patch: tuple[int, int]) -> torch.Tensor:
    """Which regions each patch position touches.

    Args:
        layout: the regions.
        patch: ``(ph, pw)`` in model-input pixels.

    Returns:
        (P, N) bool; row ``p`` belongs to corner ``patch_positions(...)[p]``.
    """
    (h, w), (rh, rw) = layout.input_size, layout.size
    ph, pw = int(patch[0]), int(patch[1])
    if not (1 <= ph <= h and 1 <= pw <= w):
        raise PDNError(f"patch {ph}x{pw} does not fit the {h}x{w} model input")
    ty = _axis_touch(layout.ys, rh, h, ph)  # (Py, rows)
    tx = _axis_touch(layout.xs, rw, w, pw)  # (Px, cols)
    touch = ty[:, None, :, None] & tx[None, :, None, :]  # (Py, Px, rows, cols)
    return touch.reshape(ty.shape[0] * tx.shape[0], layout.n)


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
