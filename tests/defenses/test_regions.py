"""Region geometry: layouts, the touch matrix against a pixel-level brute force, patch specs, camera mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defenses.regions import (
    RegionLayout,
    StripLayout,
    camera_box_to_model,
    camera_patch_to_model,
    ground_row,
    k_max,
    make_layout,
    maximal_touch_sets,
    parse_patch,
    patch_positions,
    region_starts,
    strip_edges,
    touch_matrix,
)
from drivenet_patch.data.base import CropResize
from drivenet_patch.safety.errors import PDNError


def test_region_starts_cover_the_axis_with_a_flush_last_window() -> None:
    assert region_starts(200, 40, 20) == (0, 20, 40, 60, 80, 100, 120, 140, 160)
    assert region_starts(66, 33, 33) == (0, 33)
    assert region_starts(20, 6, 4) == (0, 4, 8, 12, 14)  # 12 + 6 < 20: one more, flush with the end
    assert region_starts(10, 10, 3) == (0,)
    for bad in ((10, 11, 1), (10, 0, 1), (10, 3, 0)):
        with pytest.raises(PDNError, match="region"):
            region_starts(*bad)


def test_default_layouts_and_validation() -> None:
    bands = make_layout((66, 200))
    assert (bands.size, bands.stride, bands.n, bands.shape) == ((66, 40), (66, 20), 9, (1, 9))
    grid = make_layout((66, 200), "grid")
    assert (grid.size, grid.n, grid.shape) == ((33, 50), 14, (2, 7))
    assert make_layout((66, 200), "grid", 33, "33x40").stride == (33, 40)
    assert make_layout((66, 200), "bands", "50", 25).size == (66, 50)
    with pytest.raises(PDNError, match="valid layouts: bands, grid"):
        make_layout((66, 200), "hexagons")
    with pytest.raises(PDNError, match="bands take one width"):
        make_layout((66, 200), "bands", (30, 40))
    with pytest.raises(PDNError, match="region size 300"):
        make_layout((66, 200), "bands", 300)
    with pytest.raises(PDNError, match="integer"):
        make_layout((66, 200), "grid", 33.5)


def test_index_tensors_cut_out_exactly_the_boxes() -> None:
    lay = RegionLayout((12, 16), (5, 6), (3, 4))
    x = torch.arange(2 * 3 * 12 * 16, dtype=torch.float32).view(2, 3, 12, 16)
    rows, cols = lay.index_tensors()
    crops = x[:, :, rows, cols]  # (B, C, N, rh, rw)
    for r, (y0, x0, y1, x1) in enumerate(lay.boxes()):
        assert torch.equal(crops[:, :, r], x[:, :, y0:y1, x0:x1])


def _brute_touch(lay: RegionLayout, patch: tuple[int, int]) -> torch.Tensor:
    h, w = lay.input_size
    masks = torch.zeros(lay.n, h, w, dtype=torch.bool)
    for r, (y0, x0, y1, x1) in enumerate(lay.boxes()):
        masks[r, y0:y1, x0:x1] = True
    rows = []
    for py, px in patch_positions(lay.input_size, patch).tolist():
        pm = torch.zeros(h, w, dtype=torch.bool)
        pm[py : py + patch[0], px : px + patch[1]] = True
        rows.append((masks & pm).flatten(1).any(1))
    return torch.stack(rows)


@pytest.mark.parametrize(
    ("lay", "patch"),
    [
        (RegionLayout((12, 20), (12, 6), (12, 3)), (4, 5)),  # overlapping bands
        (RegionLayout((12, 20), (5, 6), (3, 4)), (3, 4)),  # overlapping grid with a flush last row/col
        (RegionLayout((12, 20), (4, 4), (6, 7)), (2, 2)),  # gaps between regions
        (RegionLayout((9, 9), (3, 3), (3, 3)), (9, 9)),  # the patch is the whole image
        (StripLayout((12, 20), (2, 3, 7, 12), 20, 20), (3, 4)),  # strips of unequal heights, sky rows uncovered
        (StripLayout((12, 20), (0, 5, 12), 8, 6), (2, 3)),  # strips x overlapping column windows (flush last)
    ],
)
def test_touch_matrix_matches_a_pixel_brute_force(lay: RegionLayout, patch: tuple[int, int]) -> None:
    touch = touch_matrix(lay, patch)
    assert touch.shape == ((lay.input_size[0] - patch[0] + 1) * (lay.input_size[1] - patch[1] + 1), lay.n)
    assert torch.equal(touch, _brute_touch(lay, patch))
    sets = maximal_touch_sets(touch)
    # Every row is inside some maximal set, and the maximal sets are rows of the matrix.
    assert ((touch.float() @ sets.float().T) == touch.sum(1, keepdim=True)).any(1).all()
    assert all((touch == s).all(1).any() for s in sets)
    assert k_max(touch) == int(touch.sum(1).max()) == int(sets.sum(1).max())


def test_strip_edges_follow_the_ground_distance() -> None:
    edges = strip_edges((66, 200))
    assert edges[-1] == 66 and list(edges) == sorted(set(edges)) and len(edges) == 10
    # nearer ground lies lower in the image, the horizon above every ground row
    rows = [ground_row((66, 200), d) for d in (5.0, 10.0, 20.0, 40.0, float("inf"))]
    assert rows == sorted(rows, reverse=True)
    assert edges[0] == math.floor(rows[-1] + 0.5)
    lay = make_layout((66, 200), "strips")
    assert (lay.n, lay.shape, lay.size) == (9, (9, 1), (33, 100))
    lo, hi, w = lay.row_sources()
    for i, (y0, y1) in enumerate(zip(lay.edges, lay.edges[1:])):  # every source row inside its strip
        assert lo[i].min() >= y0 and hi[i].max() < y1 and (w[i] >= 0).all() and (w[i] < 1).all()
    # the sources are torch's bilinear resize (half-pixel centres), which PatchVote runs on each cropped box
    y0, y1 = lay.edges[-2:]
    img = torch.rand(1, 1, 66, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = torch.nn.functional.interpolate(img[:, :, y0:y1, :], size=lay.size, mode="bilinear", align_corners=False)
    clo, chi, cw = lay.col_sources()
    rows = torch.lerp(img[0, 0, lo[-1]], img[0, 0, hi[-1]], w[-1][:, None].double())  # (crop_h, W)
    got = torch.lerp(rows[:, clo[0]], rows[:, chi[0]], cw[0][None, :].double())
    torch.testing.assert_close(got, want[0, 0])
    with pytest.raises(PDNError, match="row edges must increase"):
        StripLayout((66, 200), (20, 10), 200, 200)
    with pytest.raises(PDNError, match="takes no strips"):
        make_layout((66, 200), "bands", strips=[0, 66])


def test_k_max_of_the_default_bands_and_abstention() -> None:
    touch = touch_matrix(make_layout((66, 200)), parse_patch("2%"))
    assert k_max(touch) == 3  # a 17 px wide patch meets at most 3 bands of 40 px every 20 px
    valid = torch.ones(9, dtype=torch.bool)
    valid[[1, 4, 7]] = False  # every run of 3 neighbouring bands holds one of these
    assert k_max(touch, valid) == 2
    assert maximal_touch_sets(torch.zeros(5, 4, dtype=torch.bool)).shape == (1, 4)


def test_parse_patch_pixels_and_area_shares() -> None:
    assert parse_patch("16x16") == (16, 16)
    assert parse_patch("10x30") == (10, 30)
    assert parse_patch(12) == (12, 12)
    assert parse_patch("2%") == (17, 17)  # 264 px -> the smallest covering square
    assert parse_patch("100%") == (66, 200)
    assert parse_patch("50%") == (66, 100)  # a square would be taller than the image
    for spec in ("1%", "2.5%", "7%"):
        ph, pw = parse_patch(spec)
        assert ph * pw >= float(spec[:-1]) / 100 * 66 * 200
    for bad in ("0%", "101%", "x%", "abc", "16x", "70x10", "0x5", "-3x4", "4.5x4"):
        with pytest.raises(PDNError, match=r"^patch: "):  # the parameter; pdn certify names it --patch
            parse_patch(bad)


@pytest.mark.parametrize(
    "crop",
    [
        CropResize(5, 3, 4, 6, size=(20, 30)),  # shrink, non-integer scale (INTER_AREA)
        CropResize(5, 3, 4, 6, size=(50, 80)),  # enlarge (INTER_LINEAR)
        CropResize(5, 3, 4, 6, size=(20, 80)),  # mixed
        CropResize(5, 3, 4, 6, size=(32, 50)),  # crop only: a pure shift
    ],
)
def test_camera_box_covers_every_model_pixel_cv2_changes(crop: CropResize) -> None:
    rng = np.random.default_rng(3)
    src = (40, 60)
    for _ in range(60):
        img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
        y0, x0 = int(rng.integers(0, src[0])), int(rng.integers(0, src[1]))
        y1, x1 = int(rng.integers(y0 + 1, src[0] + 1)), int(rng.integers(x0 + 1, src[1] + 1))
        base = crop.apply(img).astype(int)
        changed = np.zeros(base.shape[:2], dtype=bool)
        for value in (0, 255):
            attacked = img.copy()
            attacked[y0:y1, x0:x1] = value
            changed |= (crop.apply(attacked).astype(int) != base).any(2)
        box = camera_box_to_model((y0, x0, y1, x1), crop, src)
        if box is None:
            assert not changed.any()
            continue
        inside = np.zeros_like(changed)
        inside[box[0] : box[2], box[1] : box[3]] = True
        assert not (changed & ~inside).any()  # sound: rounded outward
        if changed.any():  # and not loose: at most one extra pixel per side
            ys, xs = np.nonzero(changed)
            assert ys.min() - box[0] <= 1 and box[2] - 1 - ys.max() <= 1
            assert xs.min() - box[1] <= 1 and box[3] - 1 - xs.max() <= 1


def test_camera_patch_size_is_the_largest_footprint() -> None:
    crop = CropResize(5, 3, 4, 6, size=(20, 30))
    ph, pw = camera_patch_to_model((8, 10), crop, (40, 60))
    best = (0, 0)
    for y in range(40 - 8 + 1):
        for x in range(60 - 10 + 1):
            box = camera_box_to_model((y, x, y + 8, x + 10), crop, (40, 60))
            if box is not None:
                best = (max(best[0], box[2] - box[0]), max(best[1], box[3] - box[1]))
    assert (ph, pw) == best
    assert camera_patch_to_model((8, 10), CropResize(0, 0, 0, 0, size=(40, 60)), (40, 60)) == (8, 10)
    with pytest.raises(PDNError, match="does not fit"):
        camera_patch_to_model((50, 10), crop, (40, 60))
