"""World geometry: camera, roads, vanishing point, ground distances, expert driving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import (
    EGO_LANE_D,
    WHEELBASE_M,
    Camera,
    Lighting,
    Renderer,
    Road,
    RoadStyle,
    StickerPlacement,
    bicycle_step,
)
from drivenet_patch.world.episodes import DriveConfig, drive_episode, expert_steer, lane_state, lateral_shift

CLEAR = dict(brightness=1.0, temperature=0.0, haze=0.0, shadow=0.0)


def clear_light(n: int) -> Lighting:
    return Lighting(*(torch.full((n,), v) for v in CLEAR.values()))


def test_ground_pixel_maps_to_expected_distance() -> None:
    cam = Camera(height=160, width=320, hfov_deg=60.0, mount_height_m=1.4, pitch_deg=7.0)
    X, Y, _dist, valid = cam.ground_points()
    f = cam.focal_px
    for v in (60, 100, 159):
        angle = math.radians(cam.pitch_deg) + math.atan((v - cam.cy) / f)
        expected = cam.forward_m + cam.mount_height_m / math.tan(angle)
        u = round(cam.cx)  # the centre column (cx is half-integer: check both neighbours)
        assert valid[v, u]
        assert X[v, u] == pytest.approx(expected, rel=2e-3)
    # Back-projection of every ground point lands on its own pixel.
    pts = np.stack([X[valid], Y[valid], np.zeros(valid.sum())], axis=1)
    uu, vv, depth = cam.project(pts)
    rows, cols = np.nonzero(valid)
    assert (depth > 0).all()
    np.testing.assert_allclose(uu, cols, atol=1e-6)
    np.testing.assert_allclose(vv, rows, atol=1e-6)
    # The homography agrees with the ray model.
    h = cam.ground_homography() @ np.stack([pts[:, 0], pts[:, 1], np.ones(len(pts))])
    np.testing.assert_allclose(h[0] / h[2], cols, atol=1e-6)
    assert not valid[: math.floor(cam.horizon_row)].any()


def test_lane_lines_of_a_straight_road_meet_at_the_vanishing_point() -> None:
    cam = Camera(height=160, width=320)
    road = Road.straight(style=RoadStyle(markings="solid_yellow", centre_rgb=(0.9, 0.75, 0.15)))
    img = Renderer(cam).render(road, road.pose_at(20.0, 0.0)[None], clear_light(1)).image[0]
    r, g, b = img
    white = (r > 0.8) & (g > 0.8) & (b > 0.8)  # the two solid white edge lines
    top = math.ceil(cam.horizon_row) + 12
    lines = []
    for side in (slice(0, cam.width // 2), slice(cam.width // 2, cam.width)):
        ys, xs = [], []
        for y in range(top, cam.height):
            cols = torch.nonzero(white[y, side]).flatten().float()
            if len(cols):
                ys.append(y)
                xs.append(float(cols.mean()) + side.start)
        assert len(ys) > 30
        lines.append(np.polyfit(ys, xs, 1))  # x = a y + b
    (a1, b1), (a2, b2) = lines
    y_vp = (b2 - b1) / (a1 - a2)
    x_vp = a1 * y_vp + b1
    assert y_vp == pytest.approx(cam.horizon_row, abs=1.5)
    assert x_vp == pytest.approx(cam.cx, abs=1.5)  # camera centred on the road: symmetric lines


def test_road_coordinates_roundtrip_and_geometry() -> None:
    road = Road.generate(5, 800.0)
    assert 1.0 / np.abs(road.kappa).max() >= 30.0 - 1e-6
    rng = np.random.default_rng(0)
    s = rng.uniform(0, road.length, 5000)
    d = rng.uniform(-12, 12, 5000)
    x, y = road.point(s, d)
    s2, d2 = road.to_road(x, y)
    np.testing.assert_allclose(s2, s, atol=1e-3)
    np.testing.assert_allclose(d2, d, atol=1e-3)
    # Consecutive centre-line samples are DS apart: the curve is parametrised by arc length.
    steps = np.hypot(np.diff(road.x), np.diff(road.y))
    np.testing.assert_allclose(steps, 0.1, rtol=1e-3)


def test_same_seed_same_road_and_different_seed_differs() -> None:
    a, b, c = Road.generate(3, 500.0), Road.generate(3, 500.0), Road.generate(4, 500.0)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.style == b.style
    assert a.length != c.length or not np.array_equal(a.x, c.x)


def test_left_curve_gives_positive_label_of_the_right_size() -> None:
    for left, sign in ((True, 1.0), (False, -1.0)):
        road = Road.arc(60.0, left=left, lead_m=10.0)
        pose = road.pose_at(80.0)  # well inside the arc, on the lane centre
        label = float(expert_steer(road, pose[None])[0])
        radius = 60.0 - sign * EGO_LANE_D  # ego lane is on the right: outer lane of a left curve
        expected = sign * math.degrees(math.atan(WHEELBASE_M / radius))
        assert label * sign > 0
        assert label == pytest.approx(expected, abs=0.3)


def test_side_cameras_are_labelled_to_steer_back() -> None:
    road = Road.straight()
    poses = np.stack([road.pose_at(s) for s in (20.0, 50.0)])
    left = expert_steer(road, lateral_shift(poses, 0.6))
    right = expert_steer(road, lateral_shift(poses, -0.6))
    assert (left < 0).all() and (right > 0).all()
    np.testing.assert_allclose(left, -right, atol=1e-9)


def test_bicycle_model_drives_the_exact_circle() -> None:
    pose = np.array([0.0, 0.0, 0.0])
    steer = 10.0
    radius = WHEELBASE_M / math.tan(math.radians(steer))
    for _ in range(100):
        pose = bicycle_step(pose, steer, speed=10.0, dt=0.1)
    # Centre of the circle is (0, R): every pose stays on it.
    assert math.hypot(pose[0], pose[1] - radius) == pytest.approx(radius, rel=1e-9)
    assert pose[2] == pytest.approx(100 * 1.0 / radius, rel=1e-9)


def test_expert_drives_20_random_roads_of_1km_in_its_lane() -> None:
    cfg = DriveConfig(noise_deg=0.0, start_offset_m=0.5, start_heading_deg=3.0)
    steps = int(1000.0 / (cfg.speed_mps * cfg.dt))
    worst = 0.0
    for seed in range(20):
        road = Road.generate(100 + seed, 1000.0)
        ep = drive_episode(road, np.random.default_rng(seed), steps, cfg, s0=5.0)
        st = lane_state(road, np.stack([ep["x"], ep["y"], ep["yaw"]], axis=1))
        assert st["s"][-1] - st["s"][0] > 990.0
        worst = max(worst, float(np.abs(st["offset_m"]).max()))
    # A 1.8 m wide car stays inside its 3.5 m lane when its centre is within 0.85 m of the lane centre.
    assert worst < 0.85


def test_noisy_episodes_contain_recoveries() -> None:
    road = Road.generate(9, 600.0)
    ep = drive_episode(road, np.random.default_rng(1), 300, DriveConfig(noise_deg=2.0))
    assert np.abs(ep["executed_deg"] - ep["steering_deg"]).std() > 0.5
    st = lane_state(road, np.stack([ep["x"], ep["y"], ep["yaw"]], axis=1))
    assert np.abs(st["offset_m"]).max() > 0.1


def test_bad_inputs_raise_one_line_errors() -> None:
    with pytest.raises(PDNError, match="size must be > 0"):
        StickerPlacement(s=10.0, width_m=0.0)
    with pytest.raises(PDNError, match="kind"):
        StickerPlacement(s=10.0, kind="wall")
    with pytest.raises(PDNError, match="poses"):
        Renderer(Camera(height=16, width=32)).render(Road.straight(), np.zeros((2, 2)))
    with pytest.raises(PDNError, match="hfov"):
        Camera(hfov_deg=1.0)
    with pytest.raises(PDNError, match="outside the road"):
        StickerPlacement(s=1e6).resolve(Road.straight())
    with pytest.raises(PDNError, match="speed"):
        DriveConfig(speed_mps=0.0)
