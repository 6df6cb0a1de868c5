"""Printability (palette, NPS, TV, quantisation) and print export (tiled 1:1 PDF, PNGs)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from attacks.export import PAPER_MM, _tile_raster, export_print_pdf, save_palette_png, save_texture_png
from attacks.printability import (
    DEFAULT_PALETTE,
    DEFAULT_PALETTE_CSV,
    load_palette,
    nps,
    quantize,
    total_variation,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import to_uint8

PT_PER_MM = 72 / 25.4


def rand_texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- palette


def test_default_palette_equals_the_csv_in_data() -> None:
    pal = load_palette()
    assert pal.dtype == torch.float32 and pal.shape == (len(DEFAULT_PALETTE), 3)
    assert DEFAULT_PALETTE_CSV.is_file()
    torch.testing.assert_close(load_palette(DEFAULT_PALETTE_CSV), pal, rtol=0, atol=0)
    names = [line.split(",")[0] for line in DEFAULT_PALETTE_CSV.read_text().splitlines()[4:]]
    assert names == [n for n, *_ in DEFAULT_PALETTE]


def test_default_palette_is_a_matte_print_gamut() -> None:
    pal = load_palette() * 255
    assert 25 <= len(pal) <= 40
    assert len({tuple(c) for c in pal.round().int().tolist()}) == len(pal)  # no duplicates
    # Paper white and ink black: no pure white/black, no saturated sRGB primaries.
    assert pal.min() >= 40 and pal.max() <= 240
    chroma = pal.max(dim=1).values - pal.min(dim=1).values
    assert chroma.max() <= 0.75 * 255
    # A neutral ramp of 7 greys from black to white.
    greys = sorted(c[0] for c in pal.round().int().tolist() if c[0] == c[1] == c[2])
    assert len(greys) == 7 and greys[0] == 40 and greys[-1] == 240


def write(tmp_path: Path, text: str, name: str = "pal.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_palette_reads_csv_with_and_without_names(tmp_path: Path) -> None:
    pal = load_palette(write(tmp_path, "# comment\nR, G ,b\n255,0,0\n\n0,127.5,255\n"))
    torch.testing.assert_close(pal, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]]))
    pal = load_palette(write(tmp_path, "b,name,g,r\n10,a,20,30\n40,\"b, c\",50,60\n"))
    torch.testing.assert_close(pal * 255, torch.tensor([[30.0, 20.0, 10.0], [60.0, 50.0, 40.0]]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty palette"),
        ("r,g\n1,2\n3,4\n", r"line 1: header must have the columns r, g, b"),
        ("r,g,b,alpha\n1,2,3,4\n5,6,7,8\n", r"line 1: header"),
        ("r,g,b\n1,2,3\n4,x,6\n", r"line 3: column g: not a number: 'x'"),
        ("r,g,b\n1,2,3\n# skipped\n4,5,256\n", r"line 4: column b: 256 is outside 0-255"),
        ("r,g,b\n1,2,3\n4,5,nan\n", r"line 3: column b: nan is outside 0-255"),
        ("r,g,b\n1,2,-1\n4,5,6\n", r"line 2: column b: -1 is outside 0-255"),
        ("r,g,b\n1,2,3\n4,5\n", r"line 3: expected 3 fields, got 2"),
        ("r,g,b\n1,2,3\n", r"at least 2 colours, got 1"),
    ],
)
def test_load_palette_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PDNError, match=message) as info:
        load_palette(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_palette_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PDNError, match=r"nope\.csv: palette file not found"):
        load_palette(tmp_path / "nope.csv")


# ---------------------------------------------------------------- NPS, TV, quantise


def test_nps_matches_the_formula_of_sharif_et_al() -> None:
    pal = load_palette()[:5]
    tex = rand_texture(3, 4)
    expected = 0.0
    for i in range(3):
        for j in range(4):
            prod = 1.0
            for c in pal:
                prod *= math.sqrt(float(((tex[:, i, j] - c) ** 2).sum()) + 1e-12)
            expected += prod
    expected /= 12
    assert nps(tex, pal).ndim == 0
    assert nps(tex, pal).item() == pytest.approx(expected, rel=1e-5)
    # A batch gives the mean over all its texels.
    batch = torch.stack([tex, rand_texture(3, 4, seed=1)])
    assert nps(batch, pal).item() == pytest.approx((nps(batch[0], pal) + nps(batch[1], pal)).item() / 2, rel=1e-5)


def test_nps_is_near_zero_on_the_palette_and_differentiable() -> None:
    pal = load_palette()
    tex = rand_texture(8, 8)
    on_palette = quantize(tex, pal)
    assert 0.0 <= nps(on_palette, pal).item() < 1e-6 * nps(tex, pal).item()
    # Gradient descent on the NPS alone makes the texture more printable.
    t = tex.clone().requires_grad_(True)
    opt = torch.optim.Adam([t], lr=0.01)
    before = nps(t, pal).item()
    for _ in range(20):
        opt.zero_grad()
        loss = nps(t, pal)
        loss.backward()
        assert torch.isfinite(t.grad).all()
        opt.step()
    assert nps(t, pal).item() < 0.5 * before
    # Finite gradient exactly on a palette colour.
    exact = pal[:2].T.reshape(3, 1, 2).clone().requires_grad_(True)
    nps(exact, pal).backward()
    assert torch.isfinite(exact.grad).all()


def test_total_variation_values_and_gradient() -> None:
    assert total_variation(torch.full((3, 5, 7), 0.3)).item() == 0.0
    checker = (torch.arange(4)[:, None] + torch.arange(6)[None, :]) % 2
    tex = checker.float().expand(3, 4, 6)
    assert total_variation(tex).item() == pytest.approx(1.0)
    ramp = torch.linspace(0, 1, 11).expand(3, 5, 11)  # horizontal steps of 0.1, none vertical
    assert total_variation(ramp).item() == pytest.approx(0.05)
    assert total_variation(torch.linspace(0, 1, 11).expand(2, 3, 1, 11)).item() == pytest.approx(0.05)
    t = rand_texture(6, 6).requires_grad_(True)
    total_variation(t).backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_quantize_picks_the_nearest_palette_colour() -> None:
    pal = load_palette()
    tex = rand_texture(5, 6)
    q = quantize(tex, pal)
    assert q.shape == tex.shape and q.dtype == tex.dtype
    texels = tex.permute(1, 2, 0).reshape(-1, 3)
    brute = torch.stack([pal[((pal - p) ** 2).sum(1).argmin()] for p in texels])
    torch.testing.assert_close(q.permute(1, 2, 0).reshape(-1, 3), brute, rtol=0, atol=0)
    torch.testing.assert_close(quantize(q, pal), q, rtol=0, atol=0)  # idempotent
    batch = torch.stack([tex, tex.flip(-1)])
    torch.testing.assert_close(quantize(batch, pal)[1], quantize(tex.flip(-1), pal), rtol=0, atol=0)
    assert not quantize(tex.requires_grad_(True), pal).requires_grad


@pytest.mark.parametrize("fn", [lambda t: nps(t, load_palette()), total_variation, lambda t: quantize(t, load_palette())])
def test_printability_bad_input(fn) -> None:
    with pytest.raises(PDNError, match=r"expected shape \(3, h, w\) or \(N, 3, h, w\), got \(4, 5, 5\)"):
        fn(torch.rand(4, 5, 5))
    with pytest.raises(PDNError, match="float tensor"):
        fn(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(PDNError, match=r"torch\.Tensor"):
        fn(np.zeros((3, 2, 2)))


def test_bad_palette_tensor() -> None:
    with pytest.raises(PDNError, match=r"palette: expected a \(K, 3\) tensor"):
        nps(rand_texture(2, 2), torch.rand(4, 4))


# ---------------------------------------------------------------- PDF helpers


def _drop_strings(content: bytes) -> bytes:
    content = re.sub(rb"\((?:[^()\\]|\\.)*\)", b" ", content, flags=re.S)
    return re.sub(rb"<[0-9A-Fa-f\s]*>", b" ", content)


def parse_pdf(data: bytes) -> list[dict]:
    """Minimal reader for matplotlib's PDFs: per page its MediaBox and image placements (points).

    Image placements are found by interpreting the q / Q / cm / Do operators of each page's
    (Flate-compressed) content stream: the unit square of each image XObject mapped through the
    current transformation matrix.
    """
    objects = {int(m.group(1)): m.end() for m in re.finditer(rb"(?m)^(\d+) 0 obj", data)}

    def obj_text(num: int) -> bytes:
        start = objects[num]
        return data[start:data.index(b"endobj", start)]

    def stream(num: int) -> bytes:
        start = objects[num]
        m = re.compile(rb"stream\r?\n").search(data, start)
        return zlib.decompressobj().decompress(data[m.end():])

    kids = re.search(rb"/Type /Pages\s*/Kids \[([^\]]*)\]", data).group(1)
    images = {}
    xobjects = re.search(rb"/XObject (\d+) 0 R", data)
    if xobjects:
        for name, num in re.findall(rb"/(I\d+) (\d+) 0 R", obj_text(int(xobjects.group(1)))):
            head = obj_text(int(num))
            images[name.decode()] = (int(re.search(rb"/Width (\d+)", head).group(1)),
                                     int(re.search(rb"/Height (\d+)", head).group(1)))
    token = re.compile(
        rb"(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+cm\b|/(I\d+)\s+Do\b|\bq\b|\bQ\b"
    )
    pages = []
    for num in re.findall(rb"(\d+) 0 R", kids):
        page = obj_text(int(num))
        box = [float(v) for v in re.search(rb"/MediaBox \[\s*([^\]]*)\]", page).group(1).split()]
        content = _drop_strings(stream(int(re.search(rb"/Contents (\d+) 0 R", page).group(1))))
        ctm, stack, placed = np.eye(3), [], []
        for m in token.finditer(content):
            tok = m.group(0)
            if tok == b"q":
                stack.append(ctm.copy())
            elif tok == b"Q":
                ctm = stack.pop()
            elif m.group(7):
                corners = np.array([[0, 0, 1], [1, 1, 1]]) @ ctm
                (x0, y0), (x1, y1) = corners[0, :2], corners[1, :2]
                placed.append({"name": m.group(7).decode(), "x": min(x0, x1), "y": min(y0, y1),
                               "w": abs(x1 - x0), "h": abs(y1 - y0), "pixels": images[m.group(7).decode()]})
            else:
                a, b, c, d, e, f = (float(v) for v in m.groups()[:6])
                ctm = np.array([[a, b, 0], [c, d, 0], [e, f, 1]]) @ ctm
        pages.append({"mediabox": box, "images": placed})
    return pages


@pytest.fixture(scope="module")
def a4_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], Path]:
    path = tmp_path_factory.mktemp("pdf") / "sticker.pdf"
    info = export_print_pdf(rand_texture(40, 60), 0.5, 0.6, path)  # 3 x 3 tiles of 190 x 277 mm
    return info, parse_pdf(path.read_bytes()), path


# ---------------------------------------------------------------- PDF export


def test_pdf_pages_are_exactly_a4(a4_export: tuple[dict, list[dict], Path]) -> None:
    info, pages, path = a4_export
    assert info["paper"] == "A4" and info["page_mm"] == [210.0, 297.0]
    assert info["pages"] == len(pages) == 10
    for page in pages:
        x0, y0, w, h = page["mediabox"]
        assert (x0, y0) == (0.0, 0.0)
        assert w == pytest.approx(210 * PT_PER_MM, abs=1e-6) and h == pytest.approx(297 * PT_PER_MM, abs=1e-6)
    assert not [p for p in path.parent.iterdir() if p.name != "sticker.pdf"]  # no temporary left


@pytest.mark.parametrize(
    ("paper", "margin", "size_m", "grid"),
    [("Letter", 12.0, (0.45, 0.30), (2, 3)), ("A4", 10.0, (0.19, 0.277), (1, 1)), ("a4", 20.0, (0.171, 0.258), (2, 2))],
)
def test_tile_count_and_letter_size(tmp_path: Path, paper: str, margin: float, size_m: tuple, grid: tuple) -> None:
    info = export_print_pdf(rand_texture(8, 8), *size_m, tmp_path / "s.pdf", paper=paper, margin_mm=margin, dpi=50)
    pw, ph = PAPER_MM[info["paper"]]
    cols = math.ceil(size_m[0] * 1000 / (pw - 2 * margin) - 1e-9)
    rows = math.ceil(size_m[1] * 1000 / (ph - 2 * margin) - 1e-9)
    assert (info["rows"], info["cols"]) == (rows, cols) == grid
    assert info["tiles"] == rows * cols and info["pages"] == rows * cols + 1
    pages = parse_pdf((tmp_path / "s.pdf").read_bytes())
    assert len(pages) == info["pages"]
    expect = (612.0, 792.0) if info["paper"] == "Letter" else (210 * PT_PER_MM, 297 * PT_PER_MM)
    for page in pages:
        assert page["mediabox"][2:] == pytest.approx(expect, abs=1e-6)


def test_printed_extent_equals_the_requested_size(a4_export: tuple[dict, list[dict], Path]) -> None:
    info, pages, _ = a4_export
    assert info["extent_m"] == pytest.approx([0.5, 0.6], abs=1e-9)
    assert json.loads(json.dumps(info)) == info  # plain JSON types
    rows, cols = info["rows"], info["cols"]
    tiles = pages[1:]
    assert all(len(p["images"]) == 1 for p in tiles)
    # Independently of the returned dict: the image boxes in the PDF's content streams.
    boxes = [p["images"][0] for p in tiles]  # row-major
    width_mm = sum(boxes[c]["w"] for c in range(cols)) / PT_PER_MM
    length_mm = sum(boxes[r * cols]["h"] for r in range(rows)) / PT_PER_MM
    assert width_mm == pytest.approx(500.0, abs=1e-3) and length_mm == pytest.approx(600.0, abs=1e-3)
    page_h = 297 * PT_PER_MM
    for box, tile in zip(boxes, info["layout"]):
        # Every tile sits at the top-left corner of the printable area, 10 mm in.
        assert box["x"] / PT_PER_MM == pytest.approx(10.0, abs=1e-3)
        assert (page_h - box["y"] - box["h"]) / PT_PER_MM == pytest.approx(10.0, abs=1e-3)
        assert [box["w"] / PT_PER_MM, box["h"] / PT_PER_MM] == pytest.approx(tile["box_mm"][2:], abs=1e-3)
        # Full tiles are the printable area; the raster resolution is the requested dpi.
        assert box["w"] / PT_PER_MM <= 190.0 + 1e-6 and box["h"] / PT_PER_MM <= 277.0 + 1e-6
        nx, ny = box["pixels"]
        assert (nx, ny) == tuple(tile["pixels"])
        assert nx / (box["w"] / 72) == pytest.approx(150.0, abs=1.0)
        assert ny / (box["h"] / 72) == pytest.approx(150.0, abs=1.0)
    assert [(t["row"], t["col"]) for t in info["layout"]] == [(r, c) for r in range(3) for c in range(3)]
    assert info["layout"][-1]["x_m"] == pytest.approx([0.38, 0.5]) and info["layout"][-1]["y_m"] == pytest.approx([0.554, 0.6])
    # The overview page shows the whole texture at its native resolution, scaled to fit.
    (over,) = pages[0]["images"]
    assert over["pixels"] == (60, 40)
    assert over["w"] / over["h"] == pytest.approx(0.5 / 0.6, rel=1e-6)
    assert over["w"] / PT_PER_MM == pytest.approx(500 * info["overview_scale"], abs=1e-3)


def test_tile_rasters_are_nearest_texel_and_cover_the_sticker() -> None:
    tex = to_uint8(rand_texture(4, 6)[None])[0]  # (4, 6, 3)
    # A 0.6 x 0.4 m sticker at 100 px/m: texels of 10 cm = 10 px; tiles split at x = 0.25 m.
    left = _tile_raster(tex, (0.0, 0.25), (0.0, 0.4), (0.6, 0.4), 100.0)
    right = _tile_raster(tex, (0.25, 0.6), (0.0, 0.4), (0.6, 0.4), 100.0)
    assert left.shape == (40, 25, 3) and right.shape == (40, 35, 3)
    full = np.concatenate([left, right], axis=1)
    np.testing.assert_array_equal(full, np.repeat(np.repeat(tex, 10, axis=0), 10, axis=1))


def test_tile_raster_matches_a_per_pixel_texel_lookup_at_unaligned_sizes() -> None:
    """Every print pixel takes the texel under its centre, also where texels and pixels do not align."""
    tex = to_uint8(rand_texture(7, 5, seed=3)[None])[0]  # (7, 5, 3)
    size_m, px_per_m = (0.37, 0.53), 91.7
    x_m, y_m = (0.051, 0.33), (0.12, 0.5)
    got = _tile_raster(tex, x_m, y_m, size_m, px_per_m)
    nx, ny = round((x_m[1] - x_m[0]) * px_per_m), round((y_m[1] - y_m[0]) * px_per_m)
    want = np.empty((ny, nx, 3), np.uint8)
    for j in range(ny):
        yc = y_m[0] + (j + 0.5) * (y_m[1] - y_m[0]) / ny
        for i in range(nx):
            xc = x_m[0] + (i + 0.5) * (x_m[1] - x_m[0]) / nx
            want[j, i] = tex[min(int(yc / size_m[1] * 7), 6), min(int(xc / size_m[0] * 5), 4)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) is not installed")
def test_rendered_pages_show_the_physical_size(tmp_path: Path) -> None:
    """Render the tiles with poppler at a known DPI and measure the drawn sticker in pixels."""
    red = torch.tensor([200.0, 30.0, 30.0])[:, None, None].expand(3, 6, 6) / 255
    info = export_print_pdf(red.contiguous(), 0.25, 0.3, tmp_path / "s.pdf", dpi=100)  # 2 x 2 tiles
    render_dpi = 100
    subprocess.run(["pdftoppm", "-r", str(render_dpi), "-png", str(tmp_path / "s.pdf"), str(tmp_path / "page")],
                   check=True, capture_output=True, timeout=120)
    rendered = sorted(tmp_path.glob("page-*.png"))
    assert len(rendered) == info["pages"]
    extents = []
    for png in rendered[1:]:
        rgb = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB).astype(int)
        mask = (abs(rgb[..., 0] - 200) < 20) & (rgb[..., 1] < 70) & (rgb[..., 2] < 70)
        ys, xs = np.nonzero(mask)
        extents.append(((xs.max() - xs.min() + 1) * 25.4 / render_dpi, (ys.max() - ys.min() + 1) * 25.4 / render_dpi))
    cols = info["cols"]
    width_mm = sum(extents[c][0] for c in range(cols))
    length_mm = sum(extents[r * cols][1] for r in range(info["rows"]))
    px_mm = 25.4 / render_dpi
    assert width_mm == pytest.approx(250.0, abs=2 * cols * px_mm)
    assert length_mm == pytest.approx(300.0, abs=2 * info["rows"] * px_mm)


def test_pdf_palette_option_and_atomic_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.pdf"
    path.write_bytes(b"old")
    info = export_print_pdf(rand_texture(4, 4), 0.1, 0.1, path, dpi=40, palette=load_palette())
    assert path.read_bytes().startswith(b"%PDF") and info["pages"] == 2
    with pytest.raises(PDNError):
        export_print_pdf(rand_texture(4, 4), 0.1, -1.0, path)
    assert path.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pdf"]
    # Same input -> same bytes (no creation date in the file).
    first = path.read_bytes()
    export_print_pdf(rand_texture(4, 4), 0.1, 0.1, path, dpi=40, palette=load_palette())
    assert path.read_bytes() == first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texture": torch.rand(4, 4)}, r"texture: expected shape \(3, h, w\), got \(4, 4\)"),
        ({"texture": torch.full((3, 2, 2), 1.5)}, r"texture: values must be finite and lie in \[0, 1\]"),
        ({"texture": torch.full((3, 2, 2), float("nan"))}, r"finite"),
        ({"width_m": 0.0}, r"width_m: must be a finite number > 0"),
        ({"length_m": "long"}, r"length_m: expected a number"),
        ({"paper": "A5"}, r"paper: expected one of A4, Letter, A3, got 'A5'"),
        ({"margin_mm": 2.0}, r"margin_mm must lie in \[5, 52.5\] for A4"),
        ({"dpi": 5}, r"dpi must lie in \[30, 1200\]"),
        ({"width_m": 100.0, "length_m": 100.0}, r"needs \d+ A4 pages \(more than 2000\)"),
    ],
)
def test_pdf_bad_input(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"texture": rand_texture(4, 4), "width_m": 0.1, "length_m": 0.1, "path": tmp_path / "s.pdf", **kwargs}
    with pytest.raises(PDNError, match=message):
        export_print_pdf(**args)
    assert not (tmp_path / "s.pdf").exists()


# ---------------------------------------------------------------- PNGs


def test_save_texture_png_round_trip(tmp_path: Path) -> None:
    tex = rand_texture(5, 7)
    path = save_texture_png(tex, tmp_path / "t.png", scale=3)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    expected = np.repeat(np.repeat(to_uint8(tex[None])[0], 3, axis=0), 3, axis=1)
    np.testing.assert_array_equal(rgb, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png"]


def test_save_palette_png_uses_only_palette_colours(tmp_path: Path) -> None:
    pal = load_palette()
    path = save_palette_png(rand_texture(6, 6), pal, tmp_path / "q.png", scale=2)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).reshape(-1, 3)
    allowed = {tuple(c) for c in (pal * 255).round().int().tolist()}
    assert rgb.shape == (144, 3) and {tuple(c) for c in rgb.tolist()} <= allowed
    default = save_palette_png(rand_texture(6, 6), None, tmp_path / "d.png")
    np.testing.assert_array_equal(cv2.imread(str(default)), cv2.imread(str(path))[::2, ::2])


@pytest.mark.parametrize("scale", [0, 65, 1.5, True])
def test_png_bad_scale(tmp_path: Path, scale: object) -> None:
    with pytest.raises(PDNError, match="scale must be an integer in"):
        save_texture_png(rand_texture(2, 2), tmp_path / "t.png", scale=scale)
