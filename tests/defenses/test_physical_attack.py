"""Adaptive physical stickers against the physical certificate: no violations, the attack really moves the
output, a wrong certificate is caught, the world placement matches the threat's camera-relative geometry,
same seed same table, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from defenses.physical import ImageGeometry, PhysicalThreat, PhysicalTouch, cell_boxes, footprint_mask
from defenses.physical_attack import attack_roads, draw_physical_runs, physical_attack, render_runs
from drivenet_patch.app.cli import main
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.world import Renderer

H, W = 66, 200
GEOM = ImageGeometry.world((H, W))
ROAD = PhysicalThreat(2.0, 3.5, distance_m=(10.0, 30.0))
NEAR = PhysicalThreat(2.0, 3.5, distance_m=(5.0, 15.0))
BOARD = PhysicalThreat(1.5, 1.0, place="billboard", distance_m=(10.0, 30.0), lateral_m=(-6.0, -4.0))


def _model() -> torch.nn.Module:
    return create_model("patchvote_tiny", generator=torch.Generator().manual_seed(0)).eval()


@pytest.mark.parametrize("threat", [ROAD, BOARD], ids=["road", "billboard"])
def test_no_violations_and_the_checks_bite(threat: PhysicalThreat) -> None:
    table, s = physical_attack(_model(), threat, 24, steps=8, seed=0, n_roads=2)
    assert len(table) == s["runs"] == 24
    assert s["violations"] == s["vote_violations"] == s["cell_violations"] == s["cell_vote_violations"] == 0
    assert s["outside_footprint_px"] == 0
    assert not table["violation"].any() and table["changed_votes_in_set"].all()
    # not vacuous: finite intervals to leave, and stickers that do move the output
    assert s["certified_runs"] + s["cell_certified_runs"] >= 12
    assert s["max_push_deg"] > 0.05
    assert set(table["objective"]) == {"aggregate_up", "aggregate_down", "votes_up", "votes_down"}


def test_the_attack_moves_the_output_and_a_wrong_certificate_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Certify against touch sets that touch nothing (an interval of one point): every run that moved the
    output must then count as a violation, and the optimised stickers move it much more than their random
    starts, each in its objective's direction."""
    import defenses.physical_attack as pa

    def nothing(threat: PhysicalThreat, geom: ImageGeometry, layout: object, spacing_m: float) -> PhysicalTouch:
        boxes, dist = cell_boxes(threat, spacing_m)
        return PhysicalTouch(torch.zeros(len(boxes), layout.n, dtype=torch.bool), dist, np.zeros(len(boxes)))

    monkeypatch.setattr(pa, "physical_touch", nothing)
    table, s = physical_attack(_model(), NEAR, 24, steps=8, seed=0, n_roads=2)
    push = table["attacked"] - table["clean"]
    start = (table["start"] - table["clean"]).abs()
    for objective, sign in (("aggregate_up", 1), ("aggregate_down", -1), ("votes_up", 1), ("votes_down", -1)):
        sel = table["objective"] == objective
        assert sign * push[sel].mean() > max(0.05, 5 * start[sel].mean()), (objective, push[sel].mean())
    moved = (table[["attacked_min", "attacked_max"]].sub(table["clean"], axis=0).abs() > 1e-4).any(axis=1)
    assert moved.sum() >= 12 and s["violations"] == moved.sum() == s["cell_violations"]
    assert s["vote_violations"] == (table["changed_votes"] != "").sum() > 0


def _inside(points: np.ndarray, poly: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """Pixel centres (P, 2) within ``margin`` of the convex polygon ``poly`` (K, 2), either orientation."""
    area = sum(poly[i - 1, 0] * poly[i, 1] - poly[i, 0] * poly[i - 1, 1] for i in range(len(poly)))
    ok = np.ones(len(points), bool)
    for i in range(len(poly)):
        a, b = poly[i - 1], poly[i]
        e = b - a
        cross = e[0] * (points[:, 1] - a[1]) - e[1] * (points[:, 0] - a[0])
        ok &= np.sign(area) * cross >= -margin * math.hypot(*e)
    return ok


@pytest.mark.parametrize("threat", [PhysicalThreat(2.0, 3.5, yaw_deg=30.0),
                                    PhysicalThreat(2.5, 1.5, place="billboard", distance_m=(8.0, 30.0),
                                                   lateral_m=(-7.0, 3.0), yaw_deg=40.0, bottom_m=(0.5, 2.0))],
                         ids=["road", "billboard"])
def test_rendered_sticker_lies_in_its_cells_footprint_and_where_drawn(threat: PhysicalThreat) -> None:
    """On curved held-out roads: every pixel the sticker can change (a billboard's posts too) lies in the
    footprint of the covering cell nearest its centre, and the sticker's pixels lie in the image of the exact
    rectangle drawn in camera-relative metres (so distance, lateral offset and yaw, with their signs, match)."""
    n = 40
    roads = attack_roads(3, seed=5)
    runs = draw_physical_runs(threat, n, roads, GEOM.camera, np.random.default_rng(1))
    d, y, psi = runs.distance_m, runs.lateral_m, runs.yaw_deg
    assert ((d >= threat.distance_m[0] - 1e-3) & (d <= threat.distance_m[1] + 1e-3)).all()
    assert ((y >= threat.lateral_m[0] - 1e-3) & (y <= threat.lateral_m[1] + 1e-3)).all()
    assert (np.abs(psi) <= threat.yaw_deg + 1e-6).all() and np.abs(psi).max() > threat.yaw_deg / 2
    sc = render_runs(Renderer(GEOM.camera), roads, runs, np.arange(n))
    px = sc.mask.flatten(1).sum(1)
    assert (px > 0).float().mean() > 0.9 and px.float().median() > 20  # the stickers are really in view
    boxes, _ = cell_boxes(threat, 0.25)
    ds = np.linspace(*threat.distance_m, math.ceil((threat.distance_m[1] - threat.distance_m[0]) / 0.25) + 1)
    ys = np.linspace(*threat.lateral_m, math.ceil((threat.lateral_m[1] - threat.lateral_m[0]) / 0.25) + 1)
    can = sc.changeable().numpy()
    vv, uu = np.mgrid[0:H, 0:W]
    for k in range(n):
        cell = int(np.abs(ds - d[k]).argmin()) * len(ys) + int(np.abs(ys - y[k]).argmin())
        outside = can[k] & ~footprint_mask(boxes[cell], GEOM)
        assert not outside.any(), (k, d[k], y[k], psi[k], int(outside.sum()))
        c, s = math.cos(math.radians(psi[k])), math.sin(math.radians(psi[k]))
        if threat.place == "road":  # corners: +-L/2 along the heading, +-W/2 across it, on the ground
            a, b = threat.length_m / 2, threat.width_m / 2
            corners = [(d[k] + i * a * c - j * b * s, y[k] + i * a * s + j * b * c, 0.0)
                       for i, j in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
        else:  # the board spans +-W/2 across its heading, from its bottom to bottom + height
            b, z0 = threat.width_m / 2, runs.bottom_m[k]
            corners = [(d[k] + j * b * s, y[k] - j * b * c, z) for j, z in ((1, z0), (-1, z0), (-1, z0 + threat.length_m),
                                                                            (1, z0 + threat.length_m))]
        u, v, depth = GEOM.project(np.array(corners))
        assert (depth > 0).all()
        pix = np.stack([uu[sc.mask[k].numpy()], vv[sc.mask[k].numpy()]], 1).astype(float)
        assert _inside(pix, np.stack([u, v], 1)).all(), (k, d[k], y[k], psi[k])


def test_same_seed_same_table() -> None:
    threat = PhysicalThreat(2.0, 3.5, distance_m=(8.0, 20.0))
    a, sa = physical_attack(_model(), threat, 6, steps=3, seed=3, n_roads=2, batch=4)
    b, sb = physical_attack(_model(), threat, 6, steps=3, seed=3, n_roads=2, batch=4)
    assert a.equals(b)
    assert {k: v for k, v in sa.items() if k not in ("seconds", "runs_per_s")} == \
        {k: v for k, v in sb.items() if k not in ("seconds", "runs_per_s")}
    c, _ = physical_attack(_model(), threat, 6, steps=3, seed=4, n_roads=2, batch=4)
    assert not np.allclose(a["distance_m"], c["distance_m"])


def test_cli_certify_physical_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "pv"
    save_model(run, _model())
    out = tmp_path / "c"
    code = main(["certify", "--model", str(run), "--world", "--frames", "8", "--physical", "2.0x3.5",
                 "--attack", "4", "--attack-steps", "2", "--out", str(out), "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["attack_runs"] == 4 and r["violations"] == 0 and r["vote_violations"] == 0
    assert r["max_push_deg"] >= 0.0 and r["attack_outside_footprint_px"] == 0
    lines = (out / "attacks_physical.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("run,road_seed,distance_m,lateral_m,yaw_deg,objective")
    assert json.loads((out / "certify.json").read_text())["attack_runs"] == 4
    for bad, msg in ((["--attack", "-1"], "argument --attack: '-1' is outside 0..100000"),
                     (["--attack", "2", "--data", str(tmp_path)], "--physical --attack renders its own world"),
                     (["--attack", "2", "--camera-patch"], "--camera-patch does not apply with --physical"),
                     (["--attack", "100", "--attack-steps", "10000"], "over the limit of 100,000")):
        assert main(["certify", "--model", str(run), "--physical", "2.0x3.5", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
