"""Tests for drivenet_patch.training.augment: photometric jitter, flip, viewpoint shift and the composed Augmenter."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from drivenet_patch.data.base import CropResize, DriveDataset
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.training.augment import (
    Augmenter,
    AugmentParams,
    PhotometricAugment,
    PhotometricParams,
    hflip,
)
from drivenet_patch.training.viewshift import (
    ViewGeometry,
    shift_frame,
    steering_correction_deg,
    viewpoint_homographies,
)
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.vehicle import WHEELBASE_M, bicycle_step

CAM = Camera()  # 66x200, pitch 7 deg, 1.4 m high, 1.6 m ahead of the rear axle
VIEW = ViewGeometry.from_camera(CAM)
SKY, ROAD, LANE = (135, 180, 235), (90, 90, 90), (255, 255, 255)


# ------------------------------------------------------------------------------ helpers
def to_new_frame(points: np.ndarray, dy: float, dpsi: float) -> np.ndarray:
    """Vehicle-frame points (..., 3) of the original pose, seen from the pose (0, dy, dpsi); written out by hand."""
    psi = math.radians(dpsi)
    x, y = points[..., 0], points[..., 1] - dy
    return np.stack(
        [math.cos(psi) * x + math.sin(psi) * y, -math.sin(psi) * x + math.cos(psi) * y, points[..., 2]], -1
    )


def render_road(cam: Camera = CAM, dy: float = 0.0, dpsi: float = 0.0) -> np.ndarray:
    """Sky, grey road and two lane lines (y = +-1.75 m, x in [3, 60] m) seen from the pose (0, dy, dpsi)."""
    img = np.empty((cam.height, cam.width, 3), np.uint8)
    img[:] = ROAD
    img[: max(0, math.ceil(cam.horizon_row))] = SKY
    xs = np.linspace(3.0, 60.0, 600)
    for lane_y in (-1.75, 1.75):
        pts = to_new_frame(np.stack([xs, np.full_like(xs, lane_y), np.zeros_like(xs)], -1), dy, dpsi)
        u, v, depth = cam.project(pts)
        assert np.all(depth > 0)
        poly = np.round(np.stack([u, v], -1) * 16).astype(np.int32)
        cv2.polylines(img, [poly], False, LANE, thickness=1, lineType=cv2.LINE_AA, shift=4)
    return img


def lane_signal(img: np.ndarray) -> np.ndarray:
    g = img.astype(np.float64).mean(-1) - np.mean(ROAD)
    return cv2.GaussianBlur(np.clip(g, 0, None), (0, 0), 1.0)


def texture(seed: int = 0, size: tuple[int, int] = (66, 200)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def batch(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    frames = np.stack([render_road()] * n)
    frames[:, 40:] = texture(1, (26, 200))  # some texture on the road so that jitter shows
    return frames, np.linspace(-4.0, 4.0, n)


# ------------------------------------------------------------------------------ photometric
def test_photometric_same_seed_same_output_different_seed_different():
    aug = PhotometricAugment(strength=1.0, p=1.0)
    frame = batch(1)[0][0]
    a = aug(frame, np.random.default_rng(7))
    b = aug(frame, np.random.default_rng(7))
    assert a.shape == frame.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    outs = [aug(frame, np.random.default_rng(s)) for s in range(8)]
    assert sum(not np.array_equal(outs[0], o) for o in outs[1:]) >= 6


def test_photometric_draw_then_apply_replays():
    aug = PhotometricAugment()
    frame = batch(1)[0][0]
    params = aug.draw(np.random.default_rng(3))
    assert isinstance(params, PhotometricParams)
    first = aug.apply(frame, params)
    aug(frame, np.random.default_rng(99))  # other use of the pipeline in between
    np.testing.assert_array_equal(aug.apply(frame, params), first)
    np.testing.assert_array_equal(aug(frame, np.random.default_rng(3)), first)
    # a second instance replays the same draw identically
    np.testing.assert_array_equal(PhotometricAugment().apply(frame, params), first)


def test_photometric_changes_pixels_and_is_identity_when_off():
    frame = batch(1)[0][0]
    aug = PhotometricAugment(strength=1.0, p=1.0)
    changed = [not np.array_equal(aug(frame, np.random.default_rng(s)), frame) for s in range(10)]
    assert sum(changed) >= 8
    for off in (PhotometricAugment(strength=0.0), PhotometricAugment(p=0.0)):
        out = off(frame, np.random.default_rng(0))
        np.testing.assert_array_equal(out, frame)
        assert out is not frame


# ------------------------------------------------------------------------------ flip
def test_hflip_mirrors_and_negates():
    frames, labels = batch(3)
    out, lab = hflip(frames, labels)
    np.testing.assert_array_equal(out, frames[:, :, ::-1])
    np.testing.assert_array_equal(lab, -labels)
    aug = Augmenter(CAM, photometric=False, flip_p=1.0, shift_m=0.0, rot_deg=0.0)
    out2, lab2 = aug(frames, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(out2, frames[:, :, ::-1])
    np.testing.assert_allclose(lab2, -labels)


# ------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("dy", [-1.0, 0.6, 1.5])
def test_ground_homography_matches_shifted_camera(dy):
    pts = np.array([[6.0, 1.75, 0.0], [12.0, -1.75, 0.0], [30.0, 0.5, 0.0], [8.0, -3.0, 0.0]])
    u0, v0, _ = CAM.project(pts)
    u1, v1, _ = CAM.shifted(dy).project(pts)
    h_ground, _ = viewpoint_homographies(VIEW, dy, 0.0)
    q = h_ground @ np.stack([u0, v0, np.ones_like(u0)])
    np.testing.assert_allclose(q[:2] / q[2], np.stack([u1, v1]), atol=1e-9)
    # also through the camera's own ground homography
    g1 = CAM.shifted(dy).ground_homography() @ np.stack([pts[:, 0], pts[:, 1], np.ones(4)])
    np.testing.assert_allclose(q[:2] / q[2], g1[:2] / g1[2], atol=1e-9)
    # camera moved left -> the scene moves right in the image
    assert np.all((q[0] / q[2] > u0) == (dy > 0))


@pytest.mark.parametrize(("dy", "dpsi"), [(0.0, 8.0), (0.7, -5.0), (-1.2, 10.0)])
def test_homographies_with_rotation_match_projection(dy, dpsi):
    ground = np.array([[6.0, 1.75, 0.0], [15.0, -1.75, 0.0], [40.0, 3.0, 0.0]])
    far = np.array([[1e7, 2e6, 3e5], [1e7, -1e6, 1e5]])  # effectively at infinity, above the horizon
    h_ground, h_sky = viewpoint_homographies(VIEW, dy, dpsi)
    for pts, hom, tol in ((ground, h_ground, 1e-9), (far, h_sky, 1e-3)):
        u0, v0, _ = CAM.project(pts)
        u1, v1, _ = CAM.project(to_new_frame(pts, dy, dpsi))
        q = hom @ np.stack([u0, v0, np.ones_like(u0)])
        np.testing.assert_allclose(q[:2] / q[2], np.stack([u1, v1]), atol=tol)


def test_crop_geometry_and_dataset_contract():
    src = Camera(height=160, width=320, hfov_deg=70.0, pitch_deg=5.0, forward_m=1.2)
    crop = CropResize(top=60, bottom=25, size=(66, 200))
    view = ViewGeometry.from_camera(src, crop)
    c = crop.matrix((160, 320))
    # horizon row and image->ground agree with the dataset's own contract
    assert view.horizon_row == pytest.approx((c @ [0.0, src.horizon_row, 1.0])[1])
    ds = DriveDataset("unused", pd.DataFrame({"steering_deg": [0.0]}), src, crop)
    i2g = ds.image_to_ground()
    np.testing.assert_allclose(
        view.image_to_ground() / view.image_to_ground()[2, 2], i2g / i2g[2, 2], atol=1e-9
    )
    # the homography maps model pixels to where the shifted source camera + crop sees the point
    pts = np.array([[8.0, 1.75, 0.0], [20.0, -1.75, 0.0]])
    dy, dpsi = 0.8, 4.0
    u0, v0, _ = src.project(pts)
    u1, v1, _ = src.project(to_new_frame(pts, dy, dpsi))
    p0 = c @ np.stack([u0, v0, np.ones(2)])
    p1 = c @ np.stack([u1, v1, np.ones(2)])
    h_ground, _ = viewpoint_homographies(src, dy, dpsi, crop=crop)
    q = h_ground @ p0
    np.testing.assert_allclose(q[:2] / q[2], p1[:2], atol=1e-9)
    # the same geometry recovered from image->ground plus model intrinsics
    alt = ViewGeometry.from_homography(i2g, c @ src.intrinsics(), crop.size)
    np.testing.assert_allclose(alt.ray_to_image, view.ray_to_image, atol=1e-9)
    for a, b in zip(viewpoint_homographies(alt, dy, dpsi), viewpoint_homographies(view, dy, dpsi)):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_no_tear_at_horizon():
    """Sky and ground maps agree on the horizon; the switch row differs by well under a pixel."""
    r0 = VIEW.ground_start_row
    assert r0 - 1 < VIEW.horizon_row <= r0
    u = np.arange(200.0)
    for dy, dpsi in ((1.5, 0.0), (1.5, 10.0), (-1.5, -10.0)):
        h_ground, h_sky = viewpoint_homographies(VIEW, dy, dpsi)
        for row, tol in ((VIEW.horizon_row, 1e-6), (r0, 1.2), (r0 - 1, 0.5)):
            p = np.stack([u, np.full_like(u, row), np.ones_like(u)])
            a, b = np.linalg.solve(h_ground, p), np.linalg.solve(h_sky, p)
            assert np.abs(a[:2] / a[2] - b[:2] / b[2]).max() < tol


def test_shift_frame_zero_is_identity_and_preserves_shape():
    frame = texture(2)
    out = shift_frame(frame, VIEW, 0.0, 0.0)
    np.testing.assert_array_equal(out, frame)
    assert out is not frame
    tiny = shift_frame(frame, VIEW, 1e-9, 1e-9)  # goes through the warp
    assert tiny.shape == frame.shape and tiny.dtype == np.uint8
    assert np.abs(tiny.astype(int) - frame).max() <= 1
    moved = shift_frame(frame, CAM, 0.5, 3.0)
    assert moved.shape == frame.shape and moved.dtype == np.uint8 and not np.array_equal(moved, frame)


@pytest.mark.parametrize(("dy", "dpsi"), [(0.8, 0.0), (-0.8, 0.0), (0.0, 6.0), (0.6, -4.0)])
def test_warped_lanes_match_rendering_from_shifted_pose(dy, dpsi):
    original = render_road()
    expected = render_road(dy=dy, dpsi=dpsi)
    warped = shift_frame(original, VIEW, dy, dpsi)
    # compare ground pixels whose source lies inside the original frame
    h_ground, _ = viewpoint_homographies(VIEW, dy, dpsi)
    vv, uu = np.mgrid[VIEW.ground_start_row + 1 : 66, 0:200].astype(np.float64)
    src = np.linalg.solve(h_ground, np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)]))
    su, sv = src[0] / src[2], src[1] / src[2]
    valid = ((su >= 0) & (su <= 199) & (sv >= 0) & (sv <= 65)).reshape(uu.shape)
    rows = slice(VIEW.ground_start_row + 1, 66)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        x, y = lane_signal(a)[rows][valid], lane_signal(b)[rows][valid]
        return float(np.corrcoef(x, y)[0, 1])

    assert valid.mean() > 0.6
    assert corr(warped, expected) > 0.9
    assert corr(original, expected) < 0.6  # the check can tell a shifted view from an unshifted one
    # the sky stays sky
    np.testing.assert_array_equal(warped[: VIEW.ground_start_row - 1], expected[: VIEW.ground_start_row - 1])


# ------------------------------------------------------------------------------ steering correction
def test_correction_sign_and_hand_computed_magnitude():
    lookahead = 10.0 * 2.0
    # dy = 1 m left, no yaw: target (20, -1) in the new frame
    assert steering_correction_deg(1.0, 0.0) == pytest.approx(
        -math.degrees(math.atan(2 * WHEELBASE_M * 1.0 / 401.0))
    )
    assert steering_correction_deg(-1.0, 0.0) == pytest.approx(
        math.degrees(math.atan(2 * WHEELBASE_M / 401.0))
    )
    # yaw 5 deg left, no shift: target (L cos 5, -L sin 5)
    y = -lookahead * math.sin(math.radians(5.0))
    assert steering_correction_deg(0.0, 5.0) == pytest.approx(
        math.degrees(math.atan(2 * WHEELBASE_M * y / lookahead**2))
    )
    assert steering_correction_deg(0.0, -5.0) > 0
    # slower speed -> shorter lookahead -> stronger correction
    assert steering_correction_deg(1.0, 0.0, speed=5.0) < steering_correction_deg(1.0, 0.0) < 0
    assert steering_correction_deg(0.0, 0.0) == 0.0
    np.testing.assert_allclose(
        steering_correction_deg(np.array([0.5, -0.5]), np.array([2.0, -2.0])).sum(), 0.0, atol=1e-12
    )


@pytest.mark.parametrize(("dy", "dpsi"), [(1.0, 0.0), (-0.5, 6.0), (0.8, -3.0)])
def test_correction_rejoins_path_in_about_two_seconds(dy, dpsi):
    """Holding the correction on a kinematic bicycle from the shifted pose reaches the path point (L, 0)."""
    speed, dt = 10.0, 0.005
    steer = float(steering_correction_deg(dy, dpsi, speed=speed))
    pose = np.array([0.0, dy, math.radians(dpsi)])
    track = [pose]
    for _ in range(int(3.0 / dt)):
        track.append(bicycle_step(track[-1], steer, speed, dt))
    track = np.array(track)
    dist = np.hypot(track[:, 0] - speed * 2.0, track[:, 1])
    assert dist.min() < 0.05
    assert 1.8 < dist.argmin() * dt < 2.2


# ------------------------------------------------------------------------------ Augmenter
def test_augmenter_seeded_shapes_and_labels():
    frames, labels = batch(6)
    aug = Augmenter(CAM, photometric=True, flip_p=0.5, shift_m=1.0, rot_deg=5.0, speed=10.0)
    out_a, lab_a = aug(frames, labels, np.random.default_rng(11))
    out_b, lab_b = aug(frames, labels, np.random.default_rng(11))
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(lab_a, lab_b)
    out_c, lab_c = aug(frames, labels, np.random.default_rng(12))
    assert not np.array_equal(out_a, out_c) and not np.array_equal(lab_a, lab_c)
    assert out_a.shape == frames.shape and out_a.dtype == np.uint8 and lab_a.shape == labels.shape
    # labels follow (label + correction) * (+-1)
    params = aug.draw(np.random.default_rng(11), 6)
    sign = np.where(params.flip, -1.0, 1.0)
    np.testing.assert_allclose(lab_a, (labels + steering_correction_deg(params.dy, params.dpsi)) * sign)
    assert np.all(np.abs(params.dy) <= 1.0) and np.all(np.abs(params.dpsi) <= 5.0)
    # replaying a logged draw gives the same batch; inputs are left untouched
    before = frames.copy()
    out_d, _ = aug.apply(frames, labels, params)
    np.testing.assert_array_equal(out_d, out_a)
    np.testing.assert_array_equal(frames, before)


def test_augmenter_pieces_agree_with_functions():
    frames, labels = batch(2)
    aug = Augmenter(CAM, photometric=False, flip_p=0.0)
    params = AugmentParams(
        flip=np.array([False, True]),
        dy=np.array([0.7, -0.4]),
        dpsi=np.array([2.0, -3.0]),
        photo_active=np.zeros(2, bool),
        photo_seed=np.zeros(2, np.int64),
    )
    out, lab = aug.apply(frames, labels.astype(np.float32), params)
    assert lab.dtype == np.float32
    np.testing.assert_array_equal(out[0], shift_frame(frames[0], VIEW, 0.7, 2.0))
    np.testing.assert_array_equal(out[1], shift_frame(frames[1], VIEW, -0.4, -3.0)[:, ::-1])
    assert lab[0] < labels[0]  # moved and turned left -> steer more to the right
    assert lab[1] == pytest.approx(-(labels[1] + steering_correction_deg(-0.4, -3.0)), abs=1e-5)
    # no shift, no flip, no jitter -> identity
    still = Augmenter(CAM, photometric=False, flip_p=0.0, shift_m=0.0, rot_deg=0.0)
    out2, lab2 = still(frames, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(out2, frames)
    np.testing.assert_array_equal(lab2, labels)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "make",
    [
        lambda: PhotometricAugment(strength=-1.0),
        lambda: PhotometricAugment(p=1.5),
        lambda: PhotometricAugment(strength=float("nan")),
        lambda: Augmenter(CAM, shift_m=-1.0),
        lambda: Augmenter(CAM, rot_deg=60.0),
        lambda: Augmenter(CAM, flip_p=2.0),
        lambda: Augmenter(CAM, speed=0.0),
        lambda: Augmenter(VIEW, crop=CropResize()),
        lambda: ViewGeometry.from_camera(CAM, crop="top"),
        lambda: ViewGeometry(np.zeros((3, 3)), np.eye(3), (66, 200)),
        lambda: steering_correction_deg(1.0, 0.0, speed=-1.0),
        lambda: viewpoint_homographies(VIEW, float("inf"), 0.0),
        lambda: AugmentParams(
            np.zeros(2, bool), np.array([0.0, np.nan]), np.zeros(2), np.zeros(2, bool), np.zeros(2)
        ),
        lambda: AugmentParams(np.zeros(2, bool), np.zeros(3), np.zeros(2), np.zeros(2, bool), np.zeros(2)),
    ],
)
def test_bad_arguments_raise(make):
    with pytest.raises(PDNError):
        make()


def test_bad_frames_and_params_raise():
    aug = Augmenter(CAM)
    frames, labels = batch(2)
    rng = np.random.default_rng(0)
    bad_frames = [
        frames.astype(np.float32),
        frames.transpose(0, 3, 1, 2),
        frames[..., :2],
        frames[:, :60],
        frames[0],
    ]
    for bad in bad_frames:
        with pytest.raises(PDNError):
            aug(bad, labels, rng)
    for bad_labels in (labels[:1], np.array([0.0, np.nan]), np.array(["a", "b"])):
        with pytest.raises(PDNError):
            aug(frames, bad_labels, rng)
    with pytest.raises(PDNError):
        aug.apply(frames, labels, aug.draw(rng, 3))
    with pytest.raises(PDNError):
        aug.draw(np.random.RandomState(0), 2)  # legacy global-style RNG is refused
    with pytest.raises(PDNError):
        aug.draw(rng, -1)
    photo = PhotometricAugment()
    with pytest.raises(PDNError):
        photo.apply(frames[0].astype(np.float32), photo.draw(rng))
    with pytest.raises(PDNError):
        photo.apply(frames[0], {"seed": 1})
    with pytest.raises(PDNError):
        shift_frame(frames[0][:, :100], VIEW, 0.5, 0.0)
