"""Votes that read the threat's context (model ``patchvote_road``): each vote depends on its mask alone, the
context adds no touch for its own threat, a threat that reaches the context touches every vote, mask touch
matrices match brute force, and the certificate holds against rendered stickers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_physical import relative_poses

from defenses.certify import certify_votes
from defenses.context import ROAD_THREAT, ContextLayout, ContextVote
from defenses.physical import ImageGeometry, PhysicalThreat, physical_touch, threat_zone
from defenses.regions import StripLayout, maximal_touch_sets, region_masks, touch_matrix
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import Camera, Renderer, Road, StickerPlacement
from drivenet_patch.world.road import EGO_LANE_D

H, W = 66, 200
GEOM = ImageGeometry.world((H, W))
TINY = {"channels": [4, 6, 8, 8], "hidden": [8], "context_channels": [4, 6, 8, 8, 8], "context_hidden": 8,
        "joint": 8}


def _model(**cfg: object) -> ContextVote:
    return create_model("patchvote_road", generator=torch.Generator().manual_seed(0), **{**TINY, **cfg}).eval()


def test_each_vote_reads_its_mask_alone_and_does_read_it() -> None:
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, H, W, generator=g)
    masks = region_masks(model.layout)
    assert masks.shape == (model.n_regions, H, W)
    with torch.no_grad():
        v = model.votes(x)
        for r in range(model.n_regions):
            other = torch.where(masks[r], x, torch.rand(3, 3, H, W, generator=g))  # every pixel outside r's mask
            assert torch.equal(model.votes(other)[:, r], v[:, r]), r
            inside = torch.where(masks[r], torch.rand(3, 3, H, W, generator=g), x)
            assert not torch.equal(model.votes(inside)[:, r], v[:, r]), r  # not vacuous: the mask is read
        # the context alone moves every vote
        ctx = torch.where(model.layout.context, torch.rand(3, 3, H, W, generator=g), x)
        assert bool((model.votes(ctx) != v).all())


def test_the_context_adds_no_touch_for_its_own_threat() -> None:
    model = _model()
    layout = model.layout
    assert isinstance(layout, ContextLayout)
    zone = torch.from_numpy(threat_zone(ROAD_THREAT, GEOM))
    assert torch.equal(layout.context, ~zone)
    assert 0.3 < float(layout.context.float().mean()) < 0.7  # the sky, the far road and the shoulders
    with_context = physical_touch(ROAD_THREAT, GEOM, layout).touch
    pieces_only = physical_touch(ROAD_THREAT, GEOM, layout.pieces).touch
    assert torch.equal(with_context, pieces_only)
    k = int(with_context.sum(1).max())
    assert 1 <= k < model.n_regions / 2  # a median can be certified
    assert model.config["threat_m"] == [2.0, 3.5] or tuple(model.config["threat_m"]) == (2.0, 3.5)


@pytest.mark.parametrize("threat", [
    PhysicalThreat(1.5, 1.0, place="billboard", distance_m=(10.0, 30.0), lateral_m=(4.0, 6.0)),
    PhysicalThreat(2.0, 3.5, distance_m=(5.0, 60.0)),
], ids=["billboard", "farther"])
def test_a_threat_that_reaches_the_context_touches_every_vote(threat: PhysicalThreat) -> None:
    model = _model()
    touch = physical_touch(threat, GEOM, model.layout, spacing_m=0.5)
    context = model.layout.context.flatten()
    # rows of cells whose footprint meets the context: all of them touch every vote
    from defenses.physical import cell_boxes, footprint_mask

    boxes, _ = cell_boxes(threat, 0.5)
    reach = np.array([bool((torch.from_numpy(footprint_mask(b, GEOM)).flatten() & context).any()) for b in boxes])
    assert reach.any()
    assert bool(touch.touch[torch.from_numpy(reach)].all())


def test_mask_touch_matrix_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(2)
    pieces = StripLayout((20, 30), (4, 9, 15, 20), 10, 10, crop_h=4, crop_w=4)
    context = torch.rand(20, 30, generator=g) < 0.1
    context[9:15] = False
    layout = ContextLayout(pieces, context, {})
    masks = layout.masks()
    for patch in ((1, 1), (3, 5), (6, 2)):
        t = touch_matrix(layout, patch)
        ph, pw = patch
        brute = torch.stack([masks[:, y:y + ph, x:x + pw].flatten(1).any(1)
                             for y in range(20 - ph + 1) for x in range(30 - pw + 1)])
        assert torch.equal(t, brute), patch


def test_overlapping_pieces_and_a_wrong_mask_are_refused() -> None:
    with pytest.raises(PDNError, match="must not overlap"):
        ContextLayout(StripLayout((66, 200), (19, 40, 66), 100, 50), torch.zeros(66, 200, dtype=torch.bool))
    with pytest.raises(PDNError, match="context mask"):
        ContextLayout(StripLayout((66, 200), (19, 40, 66), 100, 100), torch.zeros(60, 200, dtype=torch.bool))
    with pytest.raises(PDNError, match="piece width"):
        _model(piece_width=33)


def test_the_threat_is_a_config_key_and_survives_save_and_load(tmp_path: Path) -> None:
    model = _model(threat_m=[1.0, 2.0], piece_width=100)
    assert model.context_threat() == PhysicalThreat(1.0, 2.0, "road", (5.0, 30.0), (-2.5, 2.5), 15.0)
    assert model.n_regions == 2 * (len(model.layout.edges) - 1)
    bigger = _model()
    assert int(model.layout.context.sum()) > int(bigger.layout.context.sum())  # a smaller sticker reaches less
    save_model(tmp_path / "run", model)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert cfg["name"] == "patchvote_road" and cfg["threat_m"] == [1.0, 2.0] and cfg["threat_yaw_deg"] == 15.0
    again = load_model(tmp_path / "run").eval()
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(again.votes(x), model.votes(x))


def test_certificate_holds_against_rendered_stickers() -> None:
    """Stickers of the road threat rendered by the world at random continuous placements: the output stays in
    the certified interval of every certified frame, and the sticker does move it."""
    model = _model()
    cam = Camera().with_size(H, W)
    road = Road.straight(200.0)
    rng = np.random.default_rng(4)
    n = 48
    dist, lat, yaw = rng.uniform(5, 30, n), rng.uniform(-2.5, 2.5, n), rng.uniform(-15, 15, n)
    poses = relative_poses(road, 100.0, EGO_LANE_D, dist, lat, yaw, cam)
    place = StickerPlacement(s=100.0, d=EGO_LANE_D, width_m=2.0, length_m=3.5)
    r = Renderer(cam)
    clean = r.render(road, poses).image
    touch = physical_touch(ROAD_THREAT, GEOM, model.layout)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        cert = certify_votes(model.votes(clean), maximal_touch_sets(touch.touch), model.valid, "median")
        ok = cert.certified
        assert ok.float().mean() > 0.5
        for texture in (torch.zeros(3, 8, 8), torch.ones(3, 8, 8), torch.rand(3, 16, 28, generator=g)):
            out = model(r.render(road, poses, sticker=place, texture=texture).image)
            assert (out - model(clean)).abs().max() > 0
            assert bool(((out[ok] >= cert.lo[ok] - 1e-4) & (out[ok] <= cert.hi[ok] + 1e-4)).all())


@pytest.mark.parametrize("threat", [ROAD_THREAT, PhysicalThreat(1.5, 1.0, place="billboard", distance_m=(10.0, 30.0),
                                                                lateral_m=(-6.0, -4.0))], ids=["road", "billboard"])
def test_every_cells_footprint_lies_in_the_zone_at_any_spacing(threat: PhysicalThreat) -> None:
    """The zone is the footprint of the threat's extent; cells are clipped to it, so no grid spacing a
    certificate may use reaches the context."""
    from defenses.physical import cell_boxes, footprint_mask

    zone = threat_zone(threat, GEOM)
    for spacing in (0.2, 0.5, 2.5):
        union = np.zeros_like(zone)
        for box in cell_boxes(threat, spacing)[0]:
            union |= footprint_mask(box, GEOM)
        assert union.any() and not (union & ~zone).any(), spacing


def test_the_exported_metadata_and_the_monitor_hold_the_road_threats_touch_sets() -> None:
    from defenses.monitor import CertifiedMonitor
    from drivenet_patch.deploy.onboard import CERT_KEY, Certifier

    model = _model()
    meta = json.loads(model.export_metadata()[CERT_KEY])
    assert meta["default_threat"] == "road_2x3.5m"
    road = meta["threats"]["road_2x3.5m"]
    assert road["kind"] == "physical_sticker" and road["threat"]["length_m"] == 3.5
    touch = physical_touch(ROAD_THREAT, GEOM, model.layout).touch
    sets = {tuple(map(int, r.nonzero()[:, 0])) for r in maximal_touch_sets(touch)}
    assert {tuple(s) for s in road["touch_sets"]} == sets
    assert Certifier.from_metadata(meta).n_regions == model.n_regions
    assert CertifiedMonitor(model, delta_deg=1.0).threat == "road_2x3.5m"


def test_onnx_votes_read_their_masks_alone_and_the_car_certifies_the_road_threat(tmp_path: Path) -> None:
    from defenses.physical import physical_touch as touch_of
    from drivenet_patch.deploy import onboard
    from drivenet_patch.deploy.export import export_onnx, run_session, session, world_frames

    model = _model(out_scale=100.0)
    export_onnx(model, tmp_path / "road.onnx")
    sess = session(tmp_path / "road.onnx")
    x = world_frames((H, W), 4)
    out = run_session(sess, x)
    masks = region_masks(model.layout)
    g = torch.Generator().manual_seed(6)
    for r in range(model.n_regions):
        moved = run_session(sess, torch.where(masks[r], x, torch.rand(x.shape, generator=g)))["votes"]
        assert np.array_equal(moved[:, r], out["votes"][:, r])  # bit for bit in ONNX Runtime too
    cert = onboard.Certifier.from_onnx_session(sess)(out["votes"], out["valid"])
    ref = certify_votes(torch.from_numpy(out["votes"]), touch_of(ROAD_THREAT, GEOM, model.layout).touch,
                        torch.from_numpy(out["valid"]), "median")
    np.testing.assert_array_equal(cert.lo, ref.lo.numpy())
    np.testing.assert_array_equal(cert.hi, ref.hi.numpy())


def test_context_votes_read_the_context_alone_and_are_never_touched() -> None:
    model = _model(context_votes=3, abstain=[1])
    n_pieces = model.layout.pieces.n
    assert model.n_regions == n_pieces + 3
    masks = region_masks(model.layout)
    assert all(torch.equal(masks[n_pieces + i], model.layout.context) for i in range(3))
    touch = physical_touch(ROAD_THREAT, GEOM, model.layout).touch
    assert not touch[:, n_pieces:].any() and touch[:, :n_pieces].any()
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        v = model.votes(x)
        assert bool((v[:, 1] == 0).all())  # the abstaining piece
        zone = torch.where(model.layout.context, x, torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(8)))
        assert torch.equal(model.votes(zone)[:, n_pieces:], v[:, n_pieces:])  # the zone never reaches them
        assert len(set(v[0, n_pieces:].tolist())) == 3  # three different votes, not copies
