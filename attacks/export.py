"""Print export: a sticker texture as a multi-page PDF at its physical size, and as PNG files.

:func:`export_print_pdf` lays a sticker of ``width_m x length_m`` out at 1:1 scale over
portrait pages (A4 210 x 297 mm, Letter 8.5 x 11 in, or A3), one tile per page:

- **exact tiling, no overlap**: the printable area of a page (the page less ``margin_mm`` on
  every side) holds one tile; tile (row r, col c) shows the sticker region
  ``x in [c * tw, min((c + 1) * tw, width)]``, ``y in [r * th, min((r + 1) * th, length)]``
  where ``tw x th`` is the printable area. So there are
  ``ceil(width / tw) * ceil(length / th)`` tiles, and the last column and row are narrower.
  Trim every page along its crop marks and butt the edges together; the label at each inner
  edge names the neighbouring tile.
- orientation: texture column 0 (the driver's left for a road sticker) is the left edge of
  column 1, texture row 0 (the far end on the road, the top of a billboard) is the top edge of
  row 1; sticker x runs across the page, y down the page.
- each tile page carries corner crop marks, a tile label ``R<row> C<col>`` (1-based) with the
  tile's sticker coordinates, neighbour labels at the inner edges, and a 50 mm bar to check
  that the printer did not scale the page (print at "actual size" / 100 %).
- page 1 is an overview: the whole sticker with the tile grid, its physical size, a scale bar
  at the overview's scale and a 100 mm bar at 1:1.

Each tile is rasterised at ``dpi`` by nearest-neighbour lookup of the texel under every print
pixel's centre (texel edges land on the nearest print pixel, colours are never blended) and
embedded unresampled, its extent set exactly to the tile's physical size in PDF points.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from attacks.printability import load_palette, quantize
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import to_uint8
from drivenet_patch.storage.atomic import atomic_path, write_bytes

#: Portrait page sizes in millimetres (width, height).
PAPER_MM: dict[str, tuple[float, float]] = {
    "A4": (210.0, 297.0),
    "Letter": (215.9, 279.4),  # 8.5 x 11 in
    "A3": (297.0, 420.0),
}
MM_PER_INCH = 25.4
MAX_TILES = 2000
_FONT = 6.0  # points
_CHECK_BAR_MM = 50.0  # 1:1 bar on every tile page
_NICE_BARS_M = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def _check_texture(texture: Any, name: str) -> torch.Tensor:
    """(3, h, w) float in [0, 1] -> the same tensor, detached, on the CPU."""
    if not isinstance(texture, torch.Tensor):
        raise PDNError(f"{name}: expected a torch.Tensor, got {type(texture).__name__}")
    if texture.ndim != 3 or texture.shape[0] != 3 or texture.shape[1] == 0 or texture.shape[2] == 0:
        raise PDNError(f"{name}: expected shape (3, h, w), got {tuple(texture.shape)}")
    if not texture.is_floating_point():
        raise PDNError(f"{name}: expected a float tensor in [0, 1], got {texture.dtype}")
    t = texture.detach().cpu()
    if not bool(torch.isfinite(t).all()) or float(t.min()) < 0.0 or float(t.max()) > 1.0:
        raise PDNError(f"{name}: values must be finite and lie in [0, 1]")
    return t


def _texture_uint8(texture: torch.Tensor) -> np.ndarray:
    """(3, h, w) float -> (h, w, 3) uint8 RGB."""
    return to_uint8(texture[None])[0]


def _positive(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PDNError(f"{name}: expected a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise PDNError(f"{name}: must be a finite number > 0, got {value!r}")
    return v


def paper_size(paper: str) -> tuple[str, float, float]:
    """``(name, width_mm, height_mm)`` of a portrait paper named case-insensitively; PDNError if unknown."""
    for key, (w, h) in PAPER_MM.items():
        if isinstance(paper, str) and paper.lower() == key.lower():
            return key, w, h
    raise PDNError(f"paper: expected one of {', '.join(PAPER_MM)}, got {paper!r}")


def _count(extent_mm: float, tile_mm: float) -> int:
    """Tiles along one axis; a remainder under a micrometre does not open another tile."""
    return max(1, math.ceil(extent_mm / tile_mm - 1e-6))


class _Page:
    """One PDF page with drawing helpers in millimetres from the top-left corner."""

    def __init__(self, width_mm: float, height_mm: float) -> None:
        self.w = width_mm
        self.h = height_mm
        self.fig = Figure(figsize=(width_mm / MM_PER_INCH, height_mm / MM_PER_INCH))

    def box(self, left: float, top: float, width: float, height: float) -> tuple[float, float, float, float]:
        """Figure-fraction rectangle (left, bottom, width, height) of a box given in mm."""
        return (left / self.w, 1.0 - (top + height) / self.h, width / self.w, height / self.h)

    def image(self, rgb: np.ndarray, left: float, top: float, width: float, height: float) -> Any:
        """Draw ``rgb`` (H, W, 3) uint8 unresampled, exactly filling the box; returns the axes."""
        ax = self.fig.add_axes(self.box(left, top, width, height))
        ax.set_axis_off()
        ax.imshow(rgb, interpolation="none", aspect="auto", extent=(0.0, 1.0, 1.0, 0.0), resample=False)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(1.0, 0.0)
        return ax

    def line(self, x0: float, y0: float, x1: float, y1: float, lw: float = 0.25, color: str = "black") -> None:
        self.fig.add_artist(
            Line2D([x0 / self.w, x1 / self.w], [1.0 - y0 / self.h, 1.0 - y1 / self.h],
                   transform=self.fig.transFigure, lw=lw, color=color, solid_capstyle="butt")
        )

    def rect(self, left: float, top: float, width: float, height: float, **kwargs: Any) -> None:
        x0, y0, w, h = self.box(left, top, width, height)
        self.fig.add_artist(Rectangle((x0, y0), w, h, transform=self.fig.transFigure, **kwargs))

    def text(self, x: float, y: float, s: str, size: float = _FONT, **kwargs: Any) -> None:
        self.fig.text(x / self.w, 1.0 - y / self.h, s, fontsize=size, **kwargs)

    def bar(self, left: float, y: float, length: float, label: str) -> None:
        """A black bar ``length`` mm long with end ticks, ``label`` centred above it."""
        self.rect(left, y - 0.6, length, 1.2, facecolor="black", edgecolor="none")
        self.line(left, y - 2.0, left, y + 2.0)
        self.line(left + length, y - 2.0, left + length, y + 2.0)
        self.text(left + length / 2, y - 1.5, label, ha="center", va="bottom")


def _crop_marks(page: _Page, left: float, top: float, width: float, height: float, margin: float) -> None:
    """Corner crop marks just outside the box, extending its edges into the margin."""
    gap, length = 0.15 * margin, 0.6 * margin
    right, bottom = left + width, top + height
    for x, sx in ((left, -1.0), (right, 1.0)):
        for y, sy in ((top, -1.0), (bottom, 1.0)):
            page.line(x + sx * gap, y, x + sx * (gap + length), y)  # horizontal, along the y edge
            page.line(x, y + sy * gap, x, y + sy * (gap + length))  # vertical, along the x edge


def _tile_raster(tex: np.ndarray, x_m: tuple[float, float], y_m: tuple[float, float],
                 size_m: tuple[float, float], px_per_m: float) -> np.ndarray:
    """Nearest-texel raster of the sticker region ``x_m x y_m`` at ``px_per_m``.

    Args:
        tex: (h, w, 3) uint8 texture covering ``size_m = (width, length)`` metres.

    Returns:
        (ny, nx, 3) uint8; ``nx = round((x1 - x0) * px_per_m)`` (at least 1), likewise ``ny``.
    """
    h, w = tex.shape[:2]

    def lookup(lo: float, hi: float, extent: float, n_tex: int) -> np.ndarray:
        n = max(1, round((hi - lo) * px_per_m))
        centres = lo + (np.arange(n) + 0.5) * (hi - lo) / n  # metres
        return np.clip(np.floor(centres / extent * n_tex).astype(np.int64), 0, n_tex - 1)

    ix = lookup(*x_m, size_m[0], w)
    iy = lookup(*y_m, size_m[1], h)
    # iy is sorted: build each distinct texel row once at print width, then repeat it down the runs
    # (a print raster is ~100x finer than the texels, so this copies rows instead of gathering pixels).
    rows, counts = np.unique(iy, return_counts=True)  # iy never decreases: runs in order
    return np.repeat(tex[rows][:, ix], counts, axis=0)


def _nice_bar(displayed_width_m: float) -> float:
    """Largest 1-2-5 length (metres) that is at most 40 % of the displayed sticker width."""
    fitting = [b for b in _NICE_BARS_M if b <= 0.4 * displayed_width_m]
    return fitting[-1] if fitting else _NICE_BARS_M[0]


def _fmt_len(m: float) -> str:
    return f"{m * 100:g} cm" if m < 1.0 else f"{m:g} m"


def export_print_pdf(
    texture: torch.Tensor,
    width_m: float,
    length_m: float,
    path: str | Path,
    paper: str = "A4",
    margin_mm: float = 10.0,
    dpi: float = 150.0,
    palette: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Write the sticker as a tiled, 1:1 scale print PDF (see the module docstring).

    Args:
        texture: (3, h, w) float RGB in [0, 1]; columns span ``width_m``, rows ``length_m``.
        width_m: physical width of the sticker (across the road / billboard width), metres.
        length_m: physical length (along the road / billboard height), metres.
        path: output ``.pdf``; written atomically.
        paper: ``"A4"``, ``"Letter"`` or ``"A3"`` (portrait).
        margin_mm: unprinted border on every side (it holds the crop marks and labels), 5 mm to
            a quarter of the shorter page side; most printers cannot print the outer 3-5 mm.
        dpi: resolution of each tile's raster, 30 to 1200.
        palette: optional (K, 3) palette; the texture is quantised to it before printing.

    Returns:
        A JSON-serialisable dict: ``path``, ``paper``, ``page_mm`` (w, h), ``margin_mm``, ``dpi``,
        ``pages`` (tiles + 1 overview), ``tiles``, ``rows``, ``cols``, ``tile_m`` (printable
        area w, h), ``extent_m`` (width, length of the sticker as drawn: the sum of the tile
        image widths along row 1 and heights along column 1, read back from the figure
        geometry), ``pixels_per_m`` (print raster), ``texels_per_m`` (x, y), ``overview_scale``
        (printed mm per sticker mm on page 1) and ``layout``: one dict per tile with ``page``
        (1-based), ``row``, ``col`` (0-based), ``x_m``, ``y_m`` (sticker region), ``box_mm``
        (left, top, width, height of the image on the page) and ``pixels`` (nx, ny).

    Raises:
        PDNError: bad texture, size, paper, margin or dpi, or more than 2000 tiles.
    """
    tex_t = _check_texture(texture, "export_print_pdf: texture")
    if palette is not None:
        tex_t = quantize(tex_t, palette)
    width_m = _positive(width_m, "export_print_pdf: width_m")
    length_m = _positive(length_m, "export_print_pdf: length_m")
    paper_name, page_w, page_h = paper_size(paper)
    margin = _positive(margin_mm, "export_print_pdf: margin_mm")
    if not 5.0 <= margin <= min(page_w, page_h) / 4:
        raise PDNError(f"export_print_pdf: margin_mm must lie in [5, {min(page_w, page_h) / 4:g}] for {paper_name}, got {margin_mm}")
    dpi = _positive(dpi, "export_print_pdf: dpi")
    if not 30.0 <= dpi <= 1200.0:
        raise PDNError(f"export_print_pdf: dpi must lie in [30, 1200], got {dpi}")

    tile_w, tile_h = page_w - 2 * margin, page_h - 2 * margin  # mm
    sticker_w, sticker_h = width_m * 1000.0, length_m * 1000.0  # mm
    cols, rows = _count(sticker_w, tile_w), _count(sticker_h, tile_h)
    if rows * cols > MAX_TILES:
        raise PDNError(
            f"export_print_pdf: {width_m} x {length_m} m needs {rows * cols} {paper_name} pages (more than {MAX_TILES}); "
            "use larger paper or a smaller sticker"
        )
    tex = _texture_uint8(tex_t)  # (h, w, 3)
    px_per_m = dpi / MM_PER_INCH * 1000.0
    layout: list[dict[str, Any]] = []
    drawn_w = drawn_h = 0.0

    with atomic_path(path) as tmp:
        with PdfPages(tmp, metadata={"Creator": "PatchDriveNet", "CreationDate": None}) as pdf:
            overview_scale = _overview_page(pdf, tex, paper_name, page_w, page_h, margin, dpi,
                                            width_m, length_m, rows, cols, tile_w, tile_h)
            for r in range(rows):
                for c in range(cols):
                    x0, y0 = c * tile_w, r * tile_h  # mm on the sticker
                    x1 = sticker_w if c == cols - 1 else x0 + tile_w
                    y1 = sticker_h if r == rows - 1 else y0 + tile_h
                    w_mm, h_mm = x1 - x0, y1 - y0
                    rgb = _tile_raster(tex, (x0 / 1000, x1 / 1000), (y0 / 1000, y1 / 1000), (width_m, length_m), px_per_m)
                    page = _Page(page_w, page_h)
                    ax = page.image(rgb, margin, margin, w_mm, h_mm)
                    pos = ax.get_position()  # as placed, figure fraction
                    placed_w, placed_h = float(pos.width) * page_w, float(pos.height) * page_h
                    if r == 0:
                        drawn_w += placed_w
                    if c == 0:
                        drawn_h += placed_h
                    _decorate_tile(page, r, c, rows, cols, margin, w_mm, h_mm, (x0, x1, y0, y1), width_m, length_m)
                    pdf.savefig(page.fig)
                    layout.append({
                        "page": len(layout) + 2,
                        "row": r,
                        "col": c,
                        "x_m": [x0 / 1000, x1 / 1000],
                        "y_m": [y0 / 1000, y1 / 1000],
                        "box_mm": [float(pos.x0) * page_w, (1.0 - float(pos.y1)) * page_h, placed_w, placed_h],
                        "pixels": [int(rgb.shape[1]), int(rgb.shape[0])],
                    })

    h_tex, w_tex = tex.shape[:2]
    return {
        "path": str(path),
        "paper": paper_name,
        "page_mm": [page_w, page_h],
        "margin_mm": margin,
        "dpi": dpi,
        "pages": rows * cols + 1,
        "tiles": rows * cols,
        "rows": rows,
        "cols": cols,
        "tile_m": [tile_w / 1000, tile_h / 1000],
        "extent_m": [drawn_w / 1000, drawn_h / 1000],
        "pixels_per_m": px_per_m,
        "texels_per_m": [w_tex / width_m, h_tex / length_m],
        "overview_scale": overview_scale,
        "layout": layout,
    }


def _decorate_tile(page: _Page, r: int, c: int, rows: int, cols: int, margin: float, w_mm: float, h_mm: float,
                   region_mm: tuple[float, float, float, float], width_m: float, length_m: float) -> None:
    """Crop marks, tile label, neighbour labels and the 1:1 check bar of one tile page."""
    x0, x1, y0, y1 = region_mm
    _crop_marks(page, margin, margin, w_mm, h_mm, margin)
    page.text(
        margin + 1.5, margin * 0.3,
        f"R{r + 1} C{c + 1}  (row {r + 1}/{rows}, col {c + 1}/{cols})   sticker x {x0 / 1000:.3f}-{x1 / 1000:.3f} m, "
        f"y {y0 / 1000:.3f}-{y1 / 1000:.3f} m of {width_m:g} x {length_m:g} m   print at 100 %, trim at the crop marks",
        size=_FONT, va="center", ha="left",
    )
    mid_x, mid_y = margin + w_mm / 2, margin + h_mm / 2
    small = _FONT * 0.9
    if c + 1 < cols:
        page.text(margin + w_mm + 0.3 * margin, mid_y, f"R{r + 1} C{c + 2}", size=small, rotation=90, ha="center", va="center")
    if c > 0:
        page.text(margin - 0.3 * margin, mid_y, f"R{r + 1} C{c}", size=small, rotation=90, ha="center", va="center")
    if r > 0:
        page.text(mid_x, margin * 0.75, f"R{r} C{c + 1}", size=small, ha="center", va="center")
    if r + 1 < rows:
        page.text(mid_x, margin + h_mm + 0.3 * margin, f"R{r + 2} C{c + 1}", size=small, ha="center", va="center")
    right = page.w - margin
    page.bar(right - _CHECK_BAR_MM - 5.0, page.h - margin * 0.45, _CHECK_BAR_MM, f"{_CHECK_BAR_MM:g} mm at 100 %")


def _overview_page(pdf: PdfPages, tex: np.ndarray, paper: str, page_w: float, page_h: float, margin: float,
                   dpi: float, width_m: float, length_m: float, rows: int, cols: int,
                   tile_w: float, tile_h: float) -> float:
    """Page 1: the whole sticker with its tile grid and scale bars; returns the overview scale."""
    page = _Page(page_w, page_h)
    head, foot = 28.0, 42.0  # mm reserved for text above and bars/text below the image
    avail_w, avail_h = page_w - 2 * margin, page_h - 2 * margin - head - foot
    scale = min(avail_w / (width_m * 1000), avail_h / (length_m * 1000))  # page mm per sticker mm
    disp_w, disp_h = width_m * 1000 * scale, length_m * 1000 * scale
    left, top = margin + (avail_w - disp_w) / 2, margin + head
    page.image(tex, left, top, disp_w, disp_h)
    page.rect(left, top, disp_w, disp_h, facecolor="none", edgecolor="black", lw=0.4)
    for c in range(1, cols):
        x = left + c * tile_w * scale
        page.line(x, top, x, top + disp_h, lw=0.3, color="white")
    for r in range(1, rows):
        y = top + r * tile_h * scale
        page.line(left, y, left + disp_w, y, lw=0.3, color="white")
    if tile_w * scale >= 8.0 and tile_h * scale >= 5.0:  # room for a label in every cell
        for r in range(rows):
            cy = (r * tile_h * scale + min((r + 1) * tile_h * scale, disp_h)) / 2
            for c in range(cols):
                cx = (c * tile_w * scale + min((c + 1) * tile_w * scale, disp_w)) / 2
                page.text(left + cx, top + cy, f"R{r + 1}C{c + 1}", size=_FONT * 0.8, ha="center", va="center",
                          color="white", bbox={"facecolor": "black", "alpha": 0.4, "pad": 0.5, "edgecolor": "none"})
    h_tex, w_tex = tex.shape[:2]
    page.text(margin, margin + 4.0, "PatchDriveNet adversarial sticker: print overview", size=11, va="top")
    lines = [
        f"Physical size: {width_m:g} m wide x {length_m:g} m long ({width_m * 1000:.0f} x {length_m * 1000:.0f} mm); "
        f"texture {w_tex} x {h_tex} texels ({w_tex / width_m:.1f} x {h_tex / length_m:.1f} texels/m).",
        f"Printed 1:1 on {rows} rows x {cols} columns = {rows * cols} {paper} pages ({page_w:g} x {page_h:g} mm, "
        f"{margin:g} mm margins, {dpi:g} dpi); pages 2-{rows * cols + 1} in row order.",
        "Exact tiling: trim each page at its crop marks and butt the edges together. Row 1 = texture top "
        "(far end on the road), column 1 = texture left (driver's left).",
    ]
    for i, s in enumerate(lines):
        page.text(margin, margin + 11.0 + 4.0 * i, s, size=_FONT, va="top")
    bar_m = _nice_bar(width_m)
    y_bar = top + disp_h + 10.0
    page.bar(left, y_bar, bar_m * 1000 * scale, f"{_fmt_len(bar_m)} on the sticker (this page 1:{1 / scale:.3g})")
    page.bar(margin, y_bar + 16.0, 100.0, "100 mm at 100 %: measure to check the printer did not scale the pages")
    pdf.savefig(page.fig)
    return scale


def save_texture_png(texture: torch.Tensor, path: str | Path, scale: int = 1) -> Path:
    """Write a texture as an RGB PNG, each texel a ``scale x scale`` block (atomic write).

    Args:
        texture: (3, h, w) float RGB in [0, 1].
        path: output ``.png``.
        scale: integer nearest-neighbour magnification, 1 to 64.

    Returns:
        ``Path(path)``; the image is (h * scale, w * scale) pixels.

    Raises:
        PDNError: bad texture or scale.
    """
    tex = _check_texture(texture, "save_texture_png: texture")
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or not 1 <= scale <= 64:
        raise PDNError(f"save_texture_png: scale must be an integer in [1, 64], got {scale!r}")
    rgb = _texture_uint8(tex)
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise PDNError(f"{path}: PNG encoding failed")
    write_bytes(path, buf.tobytes())
    return Path(path)


def save_palette_png(texture: torch.Tensor, palette: torch.Tensor | None, path: str | Path, scale: int = 1) -> Path:
    """Write the texture quantised to ``palette`` (nearest colour per texel) as a PNG.

    Args:
        texture: (3, h, w) float RGB in [0, 1].
        palette: (K, 3) in [0, 1]; ``None`` for the packaged default (:func:`load_palette`).
        path: output ``.png``.
        scale: integer nearest-neighbour magnification, 1 to 64.

    Returns:
        ``Path(path)``.
    """
    tex = _check_texture(texture, "save_palette_png: texture")
    pal = load_palette() if palette is None else palette
    return save_texture_png(quantize(tex, pal), path, scale=scale)
