"""The physical (metres) certificate: geometry properties, the covering against the renderer's exact
sticker masks, the certificate against rendered stickers, and bad threats refused in one line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from defenses.certify import certify_votes
from defenses.physical import (
    ImageGeometry,
    PhysicalThreat,
    cell_boxes,
    footprint_mask,
    physical_touch,
    rotated_extent,
)
from defenses.regions import maximal_touch_sets
from drivenet_patch.app.cli import main
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import Camera, Renderer, Road, StickerPlacement
from drivenet_patch.world.road import EGO_LANE_D

H, W = 66, 200
GEOM = ImageGeometry.world((H, W))
THREAT = PhysicalThreat(2.0, 3.5, distance_m=(5.0, 30.0), lateral_m=(-2.5, 2.5), yaw_deg=15.0)


def _box(d: float, y: float, w: float, length: float) -> np.ndarray:
    return np.array([d - length / 2, d + length / 2, y - w / 2, y + w / 2, 0.0, 0.0])


def test_footprint_grows_with_the_sticker_and_shrinks_with_distance() -> None:
    for d in (6.0, 12.0, 25.0):
        small, big = footprint_mask(_box(d, 0.0, 1.0, 2.0), GEOM), footprint_mask(_box(d, 0.0, 2.0, 3.5), GEOM)
        assert small.any() and (big | small).sum() == big.sum() and big.sum() > small.sum()
    sizes = [footprint_mask(_box(d, 0.0, 2.0, 3.5), GEOM).sum() for d in (6.0, 9.0, 14.0, 20.0, 30.0)]
    assert all(a > b for a, b in itertools.pairwise(sizes)), sizes


def test_footprint_is_empty_behind_the_camera_and_outside_the_view() -> None:
    assert not footprint_mask(_box(-10.0, 0.0, 2.0, 3.5), GEOM).any()
    assert not footprint_mask(_box(10.0, 40.0, 2.0, 3.5), GEOM).any()  # far to the left of the field of view


def test_rotated_extent_bounds_every_yaw() -> None:
    for w, length, yaw in ((2.0, 3.5, 15.0), (2.0, 3.5, 80.0), (5.0, 1.0, 30.0)):
        psis = np.radians(np.linspace(-yaw, yaw, 721))
        along = np.max(length * np.abs(np.cos(psis)) + w * np.abs(np.sin(psis)))
        assert rotated_extent(length, w, yaw) >= along - 1e-9
        assert rotated_extent(length, w, yaw) <= along + 1e-3


def relative_poses(road: Road, s: float, d: float, dist: np.ndarray, lat: np.ndarray, yaw_deg: np.ndarray,
                    cam: Camera) -> np.ndarray:
    """Car poses that see a sticker at road (s, d) with camera-relative centre (dist, lat) and relative yaw."""
    xs, ys = road.point(np.array([s]), np.array([d]))
    h = np.radians(-yaw_deg)  # the sticker lies along the road, so its yaw relative to the car is -heading
    x, y = dist + cam.forward_m, lat + cam.lateral_m
    px = float(xs[0]) - (np.cos(h) * x - np.sin(h) * y)
    py = float(ys[0]) - (np.sin(h) * x + np.cos(h) * y)
    return np.stack([px, py, h], 1)


def _brute_force(n: int) -> None:
    cam = Camera().with_size(H, W)
    road = Road.straight(200.0)
    rng = np.random.default_rng(7)
    dist, lat, yaw = rng.uniform(5, 30, n), rng.uniform(-2.5, 2.5, n), rng.uniform(-15, 15, n)
    place = StickerPlacement(s=100.0, d=EGO_LANE_D, width_m=THREAT.width_m, length_m=THREAT.length_m)
    masks = Renderer(cam).render(road, relative_poses(road, 100.0, EGO_LANE_D, dist, lat, yaw, cam), sticker=place,
                                 with_maps=True).mask.numpy()
    boxes, _ = cell_boxes(THREAT, 0.25)
    nd = len(np.unique(boxes[:, 0] + boxes[:, 1]))
    ny = len(boxes) // nd
    sd, sy = 25.0 / (nd - 1), 5.0 / (ny - 1)
    assert masks.any(axis=(1, 2)).mean() > 0.9  # the placements are really in view
    for k in range(n):
        cell = round((dist[k] - 5.0) / sd) * ny + round((lat[k] + 2.5) / sy)
        outside = masks[k] & ~footprint_mask(boxes[cell], GEOM)
        assert not outside.any(), (dist[k], lat[k], yaw[k], int(outside.sum()))


def test_covering_contains_the_renderers_exact_masks() -> None:
    _brute_force(120)


@pytest.mark.slow
def test_covering_contains_the_renderers_exact_masks_1000() -> None:
    _brute_force(1000)


@pytest.mark.parametrize(("cfg", "threat"), [
    # 4 x 16 overlapping 33x33 px regions: far stickers touch few of them, so frames certify
    ({"layout": "grid", "region": (33, 33), "stride": (11, 11)},
     PhysicalThreat(1.0, 1.5, distance_m=(15.0, 30.0), lateral_m=(-2.5, 2.5), yaw_deg=15.0)),
    # the default distance strips against the sticker: at most 3 of 9 touched, always bounded
    ({"layout": "strips"}, PhysicalThreat(2.0, 3.5, distance_m=(5.0, 30.0), lateral_m=(-2.5, 2.5), yaw_deg=15.0)),
])
def test_certificate_holds_against_rendered_stickers(cfg: dict, threat: PhysicalThreat) -> None:
    g = torch.Generator().manual_seed(0)
    model = create_model("patchvote_tiny", generator=g, **cfg).eval()
    cam = Camera().with_size(H, W)
    road = Road.straight(200.0)
    rng = np.random.default_rng(3)
    n = 48
    d0, d1 = threat.distance_m
    dist, lat, yaw = rng.uniform(d0, d1, n), rng.uniform(-2.5, 2.5, n), rng.uniform(-15, 15, n)
    poses = relative_poses(road, 100.0, EGO_LANE_D, dist, lat, yaw, cam)
    place = StickerPlacement(s=100.0, d=EGO_LANE_D, width_m=threat.width_m, length_m=threat.length_m)
    r = Renderer(cam)
    clean = r.render(road, poses).image
    touch = physical_touch(threat, GEOM, model.layout)
    with torch.no_grad():
        cert = certify_votes(model.votes(clean), maximal_touch_sets(touch.touch), model.valid, "median")
        for texture in (torch.zeros(3, 8, 8), torch.ones(3, 8, 8), torch.rand(3, 16, 28, generator=g)):
            out = model(r.render(road, poses, sticker=place, texture=texture).image)
            ok = cert.certified
            assert ok.float().mean() > 0.2
            assert (out - model(clean)).abs().max() > 0  # the sticker does move the output
            assert bool(((out[ok] >= cert.lo[ok] - 1e-4) & (out[ok] <= cert.hi[ok] + 1e-4)).all())


@pytest.mark.parametrize("kwargs", [dict(width_m=0.0, length_m=2.0), dict(width_m=2.0, length_m=-1.0),
                                    dict(width_m=2.0, length_m=2.0, distance_m=(30.0, 5.0)),
                                    dict(width_m=2.0, length_m=2.0, place="sky"),
                                    dict(width_m=2.0, length_m=2.0, yaw_deg=float("nan"))])
def test_bad_threats_are_refused(kwargs: dict) -> None:
    with pytest.raises(PDNError, match="physical threat"):
        PhysicalThreat(**kwargs)


def test_a_threat_below_the_first_visible_row_names_it() -> None:
    with pytest.raises(PDNError, match=r"first visible ground row \(row 65 .* 4\.4"):
        physical_touch(PhysicalThreat(2.0, 3.5, distance_m=(2.0, 20.0)), GEOM, create_model("patchvote_tiny").layout)


def test_cli_certify_physical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "pv"
    save_model(run, create_model("patchvote_tiny", generator=torch.Generator().manual_seed(0)))
    code = main(["certify", "--model", str(run), "--world", "--frames", "48", "--physical", "2.0x3.5",
                 "--distance", "5-30", "--out", str(tmp_path / "c"), "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["threat"]["area_m2"] == pytest.approx(7.0) and r["n"] == 48
    assert 1 <= r["k_max"] <= r["n_regions"] and r["n_sets"] >= 1
    assert 0.0 <= r["certified_acc"] <= r["clean_acc"] <= 1.0
    assert set(r["certified_acc_by_distance"]) == {"5-10", "10-15", "15-20", "20-25", "25-30", "30-35"}
    # nearer stickers touch more regions: the certificate can only get weaker with distance falling
    shares = list(r["certified_acc_by_distance"].values())
    assert shares[0] <= shares[-1]
    for bad, msg in ((["--physical", "2x"], "--physical must be WIDTHxLENGTH"),
                     (["--physical", "2x3", "--lateral", "3:1"], "--lateral must be LO:HI"),
                     (["--physical", "2x3", "--distance", "1-20"], "first visible ground row"),
                     (["--physical", "2x3", "--place", "sky"], "--place must be road or billboard")):
        assert main(["certify", "--model", str(run), "--world", "--frames", "8", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
