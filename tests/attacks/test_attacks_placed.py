"""Placed stickers: groups sharing a texture atlas, road segments, the placement search and the break bracket."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.placement_search import PlacementCandidate, part_size, random_candidates
from attacks.sweep import break_area, break_bracket, interpolated_break_area
from drivenet_patch.driving.drive import ClosedLoopConfig, sticker_positions
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.render import Renderer
from drivenet_patch.world.road import Road, Segment
from drivenet_patch.world.sticker import StickerPart, StickerPlacement, segment_positions
from drivenet_patch.world.sticker_file import load_sticker, save_sticker

K = 1.0 / 60.0


def curve_road(k: float = K) -> Road:
    """Straight 0-50 m, ramp in 50-70, arc 70-120, ramp out 120-140, straight to 400 m."""
    return Road([Segment(50.0, 0.0, 0.0), Segment(20.0, 0.0, k), Segment(50.0, k, k), Segment(20.0, k, 0.0),
                 Segment(260.0, 0.0, 0.0)])


def test_segment_positions_find_the_curve_entry_exit_and_its_turn():
    road = curve_road()
    entry = segment_positions(road, "curve_entry", 0.0, 390.0, 10.0)
    exit_ = segment_positions(road, "curve_exit", 0.0, 390.0, 10.0)
    assert entry.tolist() == pytest.approx([50.0], abs=1.0)
    assert exit_.tolist() == pytest.approx([140.0], abs=1.0)
    assert segment_positions(road, "curve_entry_left", 0.0, 390.0, 10.0).tolist() == pytest.approx([50.0], abs=1.0)
    assert len(segment_positions(road, "curve_entry_right", 0.0, 390.0, 10.0)) == 0
    assert len(segment_positions(curve_road(-K), "curve_exit_right", 0.0, 390.0, 10.0)) == 1
    straight = segment_positions(road, "straight", 0.0, 390.0, 50.0)
    assert len(straight) and all(s <= 30.0 or s >= 160.0 for s in straight)  # 20 m of straight road either side
    with pytest.raises(PDNError):
        segment_positions(road, "roundabout", 0.0, 390.0, 10.0)


def test_a_segment_placement_puts_the_drives_copies_on_that_segment():
    road = curve_road()
    placed = StickerPlacement.group([StickerPart()], segment="curve_exit")
    cfg = ClosedLoopConfig(sticker_start_m=20.0, sticker_every_m=100.0)
    assert sticker_positions(road, placed, cfg).tolist() == pytest.approx([140.0], abs=1.0)
    assert len(sticker_positions(road, StickerPlacement(s=0.0), cfg)) > 1  # anywhere: every 100 m


def test_each_part_of_a_group_renders_exactly_as_that_sticker_alone_from_its_atlas_slice():
    road = Road.straight(200.0)
    parts = [StickerPart(ds=-4.0, dd=0.4, width_m=1.2, length_m=2.0, yaw_deg=12.0),
             StickerPart(ds=4.0, dd=-0.3, width_m=1.2, length_m=2.0, yaw_deg=-8.0)]
    group = StickerPlacement.group(parts, s=40.0)
    ren = Renderer(Camera().with_size(66, 200))
    pose = road.pose_at(28.0)[None]
    tex = torch.rand(3, 8, 20, generator=torch.Generator().manual_seed(0))
    both = ren.render(road, pose, sticker=group, texture=tex, with_maps=True)
    covered = torch.zeros(66, 200, dtype=torch.bool)
    for k, p in enumerate(parts):
        alone = StickerPlacement(s=40.0 + p.ds, d=group.d + p.dd, width_m=p.width_m, length_m=p.length_m,
                                 yaw_deg=p.yaw_deg)
        one = ren.render(road, pose, sticker=alone, texture=tex[:, :, 10 * k:10 * (k + 1)], with_maps=True)
        m = one.mask[0]
        assert m.sum() > 20
        # the same pixels, the same texels (up to the half texel the atlas shares at a part's side edges)
        inner = m & ((one.uv[0, ..., 0] + 1) / 2 > 0.05) & ((one.uv[0, ..., 0] + 1) / 2 < 0.95)
        assert torch.equal(both.mask[0] & m, m)
        assert torch.allclose(both.image[0][:, inner], one.image[0][:, inner], atol=1e-5)
        covered |= m
    assert torch.equal(covered, both.mask[0])


def test_a_saved_group_placement_reads_back_identical_and_replays_the_same_rollout(tmp_path):
    from attacks.closed_loop import (
        DEFAULT_DRIVE,
        ClosedLoopAttackConfig,
        make_approaches,
        rollout,
        rollout_road_length,
    )
    from drivenet_patch.world.road import Road as R

    group = PlacementCandidate("curve_entry", shift_m=-3.0, gap_m=4.0, lateral_m=0.3, yaw_deg=10.0).placement(
        (1.0, 1.75), 2, "right")
    assert group.segment == "curve_entry_left"
    tex = torch.rand(3, 4, 16, generator=torch.Generator().manual_seed(1))
    save_sticker(tmp_path, tex, group, {"attack": {}})
    tex2, back = load_sticker(tmp_path)
    assert back == group
    ccfg = ClosedLoopAttackConfig(before_m=10.0, after_m=5.0, approaches_per_road=1)
    road = R([Segment(60.0, 0.0, 0.0), Segment(20.0, 0.0, K), Segment(300.0, K, K)])
    assert road.length > rollout_road_length(group, ccfg, DEFAULT_DRIVE)

    def policy(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)) * 20.0 - 5.0

    runs = []
    for placement, texture in ((group, tex), (back, tex2)):
        app = make_approaches([road], placement, ccfg, np.random.default_rng(0))
        runs.append(rollout(policy, app, texture, Renderer(Camera().with_size(33, 100))))
    assert app.placements[0].s == pytest.approx(60.0, abs=1.0)  # on the curve's entry
    assert np.abs(runs[0].offset_m - runs[1].offset_m).max() < 1e-2  # the PNG holds 8-bit texels
    assert runs[0].scenes is not None and len(runs[0].scenes) > 0


def test_n_stickers_share_the_area_each_printable_and_inside_its_own_placement():
    area, n = 7.0, 3
    size = part_size(area, n)
    assert size[0] * size[1] * n == pytest.approx(area)
    cand = PlacementCandidate(shift_m=2.0, gap_m=5.0, lateral_m=-0.4, yaw_deg=15.0)
    group = cand.placement(size, n, "left")
    assert len(group.parts) == n and group.area_m2 == pytest.approx(area)
    along = [p.ds for p in group.parts]
    assert all(b - a == pytest.approx(size[1] + 5.0) for a, b in itertools.pairwise(along))  # no overlap
    for p in group.parts:  # every part lies in the group's bounding box (drives space copies by it)
        a, c = p.extent()
        assert a <= 0.5 * group.length_m + 1e-9 and c <= 0.5 * group.width_m + 1e-9
    cands = random_candidates(6, np.random.default_rng(0))
    assert cands[0] == PlacementCandidate() and len(set(cands)) == 6
    with pytest.raises(PDNError):
        PlacementCandidate(segment="ramp")
    with pytest.raises(PDNError):  # a group lies on the road
        StickerPlacement(s=0.0, kind="billboard", parts=(StickerPart(),))


def test_break_bracket_and_interpolation_on_a_constructed_curve():
    areas = [2.0, 3.0, 4.5, 7.0, 10.0]
    # departures linear in log(area) between 4.5 m² (r0) and 7 m² (100%), crossing 90% at 5.6 m²
    f = math.log(5.6 / 4.5) / math.log(7.0 / 4.5)
    r0 = (0.9 - f * 1.0) / (1 - f)
    rates = [0.0, 0.1, r0, 1.0, 1.0]
    t = pd.DataFrame({"area_m2": areas, "departure_rate": rates})
    assert break_area(t) == 7.0
    assert break_bracket(t) == (4.5, 7.0)
    assert interpolated_break_area(t) == pytest.approx(5.6, rel=1e-9)
    # a non-monotone measurement below the break does not move the bracket past the break
    t2 = pd.DataFrame({"area_m2": [2.0, 4.0, 8.0], "departure_rate": [0.95, 0.2, 1.0]})
    assert break_bracket(t2) == (None, 2.0) and interpolated_break_area(t2) is None
    t3 = pd.DataFrame({"area_m2": [2.0, 4.0], "departure_rate": [0.1, 0.3]})
    assert break_bracket(t3) == (4.0, None)


def test_an_adaptive_placed_sticker_inside_the_certified_area_stays_in_the_certified_interval():
    """White-box against the defended model: the sticker optimised on it, placed off centre and turned, within
    the size and distances its certificate covers, never moves its output outside the certified interval."""
    from attacks.approach import approach_scenes
    from attacks.sticker import StickerConfig, optimize_sticker
    from defenses.certify import certify_votes
    from defenses.physical import ImageGeometry, PhysicalThreat, physical_touch
    from defenses.regions import maximal_touch_sets
    from drivenet_patch.models import create_model

    g = torch.Generator().manual_seed(0)
    model = create_model("patchvote_tiny", generator=g, layout="strips").eval()
    threat = PhysicalThreat(2.0, 3.5, distance_m=(5.0, 30.0), lateral_m=(-2.5, 2.5), yaw_deg=15.0)
    group = PlacementCandidate(lateral_m=0.6, yaw_deg=12.0).placement((1.8, 3.2), 1, "left")
    scenes = approach_scenes(model, group, (5.0, 15.0), 2, 12, 0, 5, "cpu")
    touch = physical_touch(threat, ImageGeometry.world(model.input_size), model.layout)
    with torch.no_grad():
        cert = certify_votes(model.votes(scenes.background), maximal_touch_sets(touch.touch), model.valid, "median")
    result = optimize_sticker(model, scenes, StickerConfig(steps=5, batch=8, target="left", texture_hw=(8, 14)), g)
    with torch.no_grad():
        out = model(scenes.apply(result.texture))
        moved = (out - model(scenes.background)).abs().max()
    ok = cert.certified
    assert ok.float().mean() > 0.2 and moved > 0
    assert bool(((out[ok] >= cert.lo[ok] - 1e-4) & (out[ok] <= cert.hi[ok] + 1e-4)).all())


def test_a_line_sticker_is_a_lane_marking_wide_until_it_is_40_m_long():
    from attacks.sweep import sticker_size

    assert sticker_size(7.0, "line") == pytest.approx((0.25, 28.0))
    assert sticker_size(2.0, "line") == pytest.approx((0.25, 8.0))
    w, length = sticker_size(28.0, "line")
    assert length == 40.0 and w * length == pytest.approx(28.0)
