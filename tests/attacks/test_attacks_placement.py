"""Sticker placement: the composite core, world scenes, and the flat-ground homography for real frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attacks.composite import StickerLayer, shift_maps
from attacks.placement import homography_maps, local_gain
from attacks.scenes import (
    ApproachConfig,
    StickerScenes,
    approach_poses,
    frame_scenes,
    world_scene_split,
    world_scenes,
)
from drivenet_patch.data.base import CropResize
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import Camera, Lighting, Renderer, Road, StickerPlacement, apply_dirt, apply_sticker

H, W = 66, 200


def random_maps(gen: torch.Generator, b: int = 3) -> tuple[torch.Tensor, ...]:
    """Frames, uv, mask, gain, offset with random values (mask covers about a third)."""
    frames = torch.rand(b, 3, H, W, generator=gen)
    uv = torch.rand(b, H, W, 2, generator=gen) * 2 - 1
    mask = torch.rand(b, H, W, generator=gen) < 0.33
    gain = 0.5 + torch.rand(b, 3, H, W, generator=gen)
    offset = 0.1 * torch.rand(b, 3, H, W, generator=gen)
    return frames, uv, mask, gain, offset


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(Camera(height=H, width=W))


@pytest.fixture(scope="module")
def road() -> Road:
    return Road.generate(3, 150.0)


@pytest.fixture(scope="module")
def scenes(renderer: Renderer, road: Road) -> StickerScenes:
    cfg = ApproachConfig(poses_per_road=12, distance_m=(5.0, 14.0))
    return world_scenes(renderer, road, StickerPlacement(s=60.0), cfg, np.random.default_rng(0))


# ---------------------------------------------------------------------------- functional core
def test_apply_sticker_shapes_and_outside_mask_bit_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    frames, uv, mask, gain, offset = random_maps(gen)
    texture = torch.rand(3, 8, 12, generator=gen)
    out = apply_sticker(frames, texture, uv, mask, gain, offset)
    assert out.shape == frames.shape and out.dtype == frames.dtype
    outside = ~mask.unsqueeze(1).expand_as(frames)
    assert torch.equal(out[outside], frames[outside])
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out[~outside], frames[~outside])


def test_apply_sticker_defaults_and_shared_maps() -> None:
    """gain None = 1, offset None = 0; (H, W) maps broadcast over the batch; batched textures work."""
    gen = torch.Generator().manual_seed(1)
    frames, uv, mask, _, _ = random_maps(gen, 2)
    texture = torch.rand(3, 5, 7, generator=gen)
    ones, zeros = torch.ones(2, 3, H, W), torch.zeros(2, 3, H, W)
    assert torch.equal(apply_sticker(frames, texture, uv, mask), apply_sticker(frames, texture, uv, mask, ones, zeros))
    shared = apply_sticker(frames, texture, uv[0], mask[0])
    assert torch.equal(shared, apply_sticker(frames, texture, uv[:1].expand(2, -1, -1, -1), mask[:1].expand(2, -1, -1)))
    batched = apply_sticker(frames, texture.expand(2, -1, -1, -1), uv, mask)
    assert torch.equal(batched, apply_sticker(frames, texture, uv, mask))


def test_apply_sticker_gradient_reaches_texture() -> None:
    gen = torch.Generator().manual_seed(2)
    frames, uv, mask, gain, offset = random_maps(gen, 2)
    texture = torch.rand(3, 6, 6, generator=gen).requires_grad_(True)
    apply_sticker(frames, texture, uv, mask, gain * 0.5, offset).sum().backward()
    assert texture.grad is not None and texture.grad.abs().sum() > 0


def test_module_matches_functional() -> None:
    gen = torch.Generator().manual_seed(3)
    frames, uv, mask, gain, offset = random_maps(gen)
    layer = StickerLayer((8, 12), generator=torch.Generator().manual_seed(4))
    assert torch.equal(layer(frames, uv, mask, gain, offset), apply_sticker(frames, layer.texture(), uv, mask, gain, offset))
    dirt = StickerLayer((8, 12), dirt=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(dirt(frames, uv, mask, gain, offset), apply_dirt(frames, dirt.texture()[:1], uv, mask, offset))
    tex = dirt.texture()
    assert tex.shape == (3, 8, 12) and torch.equal(tex[0], tex[2]) and tex.min() >= 0.3 and tex.max() <= 1.0


def test_dirt_only_darkens_and_keeps_outside() -> None:
    gen = torch.Generator().manual_seed(5)
    frames, uv, mask, _, offset = random_maps(gen)
    multiplier = 0.3 + 0.7 * torch.rand(1, 8, 12, generator=gen)
    out = apply_dirt(frames, multiplier, uv, mask, offset)
    assert (out <= frames).all() and (out >= 0).all()
    outside = ~mask.unsqueeze(1).expand_as(frames)
    assert torch.equal(out[outside], frames[outside])
    clean = apply_dirt(frames, torch.ones(1, 4, 4), uv, mask, offset)  # m = 1: the clean road
    assert torch.allclose(clean, frames, atol=1e-6)


def test_shift_maps_moves_footprint_by_whole_pixels() -> None:
    gen = torch.Generator().manual_seed(6)
    _, uv, mask, _, _ = random_maps(gen, 2)
    mask[:, :3, :] = False
    mask[:, :, -5:] = False
    shift = torch.tensor([[4, 2], [0, 0]])
    uv2, mask2 = shift_maps(uv, mask, shift)
    assert torch.equal(mask2[0, 2:, 4:], mask[0, :-2, :-4]) and not mask2[0, :2].any() and not mask2[0, :, :4].any()
    assert torch.equal(uv2[0, 2:, 4:], uv[0, :-2, :-4])
    assert torch.equal(mask2[1], mask[1]) and torch.equal(uv2[1], uv[1])
    _, mask3 = shift_maps(uv, mask, torch.tensor([[-3, -1], [200, 0]]))
    assert torch.equal(mask3[0, :-1, :-3], mask[0, 1:, 3:]) and not mask3[1].any()


def test_sparse_and_dense_paths_agree() -> None:
    gen = torch.Generator().manual_seed(7)
    frames, uv, mask, gain, offset = random_maps(gen)
    texture = torch.rand(3, 8, 12, generator=gen, requires_grad=True)
    for g, o in ((gain, offset), (gain[:, :, :1, :1], None), (None, None)):
        dense = apply_sticker(frames, texture, uv, mask, g, o, sparse=False)
        sparse = apply_sticker(frames, texture, uv, mask, g, o, sparse=True)
        assert torch.equal(dense, sparse)
    grads = [torch.autograd.grad(apply_sticker(frames, texture, uv, mask, gain, offset, sparse=sp).square().sum(),
                                 texture)[0] for sp in (False, True)]
    assert torch.allclose(*grads, rtol=1e-4, atol=1e-5)
    m = texture[:1].detach()
    assert torch.equal(apply_dirt(frames, m, uv, mask, offset, sparse=False), apply_dirt(frames, m, uv, mask, offset, sparse=True))


# ---------------------------------------------------------------------------- world scenes
def test_world_scenes_shapes_and_poses(scenes: StickerScenes) -> None:
    n = len(scenes)
    assert 0 < n <= 12
    assert scenes.background.shape == (n, 3, H, W) and scenes.uv.shape == (n, H, W, 2)
    assert scenes.mask.dtype == torch.bool and scenes.gain.shape == (n, 3, H, W)
    assert scenes.info["distance_m"].between(5.0, 14.0).all()
    assert (scenes.coverage() >= 20).all()
    assert scenes.info["offset_m"].abs().max() < 1.5
    assert scenes.placement == StickerPlacement(s=60.0) and scenes.meta["source"] == "world"


def test_world_composite_equals_render(renderer: Renderer, road: Road, scenes: StickerScenes) -> None:
    """Re-rendering the scenes' poses with the texture gives the composite (within 1/255)."""
    texture = torch.rand(3, 16, 28, generator=torch.Generator().manual_seed(7))
    info = scenes.info
    light = Lighting(*(torch.tensor(info[k].to_numpy(), dtype=torch.float32)
                       for k in ("brightness", "temperature", "haze", "shadow", "sun_elevation_deg")))
    poses = info[["x", "y", "yaw"]].to_numpy()
    direct = renderer.render(road, poses, light, sticker=scenes.placement, texture=texture).image
    composite = scenes.apply(texture)
    assert (composite - direct).abs().max() <= 1.0 / 255.0
    assert torch.equal(scenes.apply(texture, [2, 0]), composite[[2, 0]])


def test_world_scenes_reproducible(renderer: Renderer, road: Road) -> None:
    cfg = ApproachConfig(poses_per_road=4, distance_m=(6.0, 12.0))
    pl = StickerPlacement(s=60.0)
    a, _ = approach_poses(road, pl, renderer.camera, cfg, np.random.default_rng(11))
    b, info = approach_poses(road, pl, renderer.camera, cfg, np.random.default_rng(11))
    c, _ = approach_poses(road, pl, renderer.camera, cfg, np.random.default_rng(12))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    # The camera really is `distance_m` before the sticker centre, along the road.
    cam_x = a[:, 0] + renderer.camera.forward_m * np.cos(a[:, 2])
    cam_y = a[:, 1] + renderer.camera.forward_m * np.sin(a[:, 2])
    s_cam = road.to_road(cam_x, cam_y)[0]
    assert np.allclose(60.0 - s_cam, info["distance_m"], atol=0.05)


def test_world_scene_split_uses_other_roads(renderer: Renderer) -> None:
    roads = [Road.straight(120.0), Road.arc(200.0, lead_m=30.0, length_m=120.0)]
    cfg = ApproachConfig(poses_per_road=3, distance_m=(6.0, 10.0), vary_lighting=False)
    train, held = world_scene_split(renderer, StickerPlacement(s=40.0), roads[:1], roads[1:], cfg, seed=0)
    assert len(train) == 3 and len(held) == 3
    assert not torch.equal(train.background, held.background)
    a, b = train.split(1 / 3, np.random.default_rng(0))
    assert len(a) == 2 and len(b) == 1


def test_world_scenes_errors(renderer: Renderer, road: Road) -> None:
    with pytest.raises(PDNError, match="too close to the road start"):
        world_scenes(renderer, road, StickerPlacement(s=10.0), ApproachConfig(), np.random.default_rng(0))
    with pytest.raises(PDNError, match="distance_m"):
        ApproachConfig(distance_m=(10.0, 5.0))
    with pytest.raises(PDNError, match="poses_per_road"):
        ApproachConfig(poses_per_road=0)
    with pytest.raises(PDNError, match="uv must be"):
        StickerScenes(torch.zeros(2, 3, H, W), torch.zeros(2, H, W + 1, 2), torch.zeros(2, H, W, dtype=torch.bool))


# ---------------------------------------------------------------------------- real frames
def dataset_geometry() -> tuple[Camera, CropResize, np.ndarray]:
    """A 160x320 source camera cropped and resized to 66x200, as a real dataset is."""
    cam = Camera(height=160, width=320, hfov_deg=70.0, mount_height_m=1.5, pitch_deg=5.0)
    crop = CropResize(top=60, bottom=20, size=(H, W))
    image_to_ground = np.linalg.inv(crop.matrix((cam.height, cam.width)) @ cam.ground_homography())
    return cam, crop, image_to_ground


@pytest.mark.parametrize("distance", [7.3, 12.6])
def test_homography_near_edge_on_projected_row(distance: float) -> None:
    cam, crop, g = dataset_geometry()
    uv, mask = homography_maps(g, (H, W), distance, lateral_m=0.0, width_m=3.5, length_m=2.0)
    u, v, _ = cam.project(np.array([distance, 0.0, 0.0]))
    col, row = (crop.matrix((cam.height, cam.width)) @ np.array([u, v, 1.0]))[:2]
    rows = torch.nonzero(mask[:, round(col)]).flatten()
    assert int(rows.max()) == math.floor(row)  # pixel centres at or beyond the near edge
    assert uv.shape == (H, W, 2) and (uv[mask].abs() <= 1).all()
    # The far edge is higher in the image, and nothing above the horizon is covered.
    far = (crop.matrix((cam.height, cam.width)) @ np.array([*cam.project(np.array([distance + 2.0, 0, 0]))[:2], 1]))[1]
    assert int(rows.min()) == math.ceil(far)


def test_homography_matches_world_render(renderer: Renderer) -> None:
    """On a straight road the homography maps equal the renderer's, also for a turned sticker."""
    cam = renderer.camera
    road = Road.straight(120.0)
    pose = road.pose_at(30.0, -1.75)[None]
    g = np.linalg.inv(cam.ground_homography())
    for yaw in (0.0, 20.0):
        out = renderer.render(road, pose, sticker=StickerPlacement(s=40.0, width_m=2.0, length_m=3.0, yaw_deg=yaw),
                              with_maps=True)
        psi = math.radians(yaw)
        uv, mask = homography_maps(g, (H, W), 10.0 - 1.5 * math.cos(psi), -1.5 * math.sin(psi), 2.0, 3.0, yaw)
        assert mask.sum() > 100 and (mask != out.mask[0]).sum() <= 2
        both = mask & out.mask[0]
        assert (uv[both] - out.uv[0][both]).abs().max() < 1e-4


def test_homography_scale_and_bad_input() -> None:
    _, _, g = dataset_geometry()
    uv, mask = homography_maps(g, (H, W), 8.0)
    uv2, mask2 = homography_maps(-3.0 * g, (H, W), 8.0)  # a homography is defined up to scale
    assert torch.equal(mask, mask2) and torch.allclose(uv, uv2, atol=1e-6)
    with pytest.raises(PDNError, match="size must be > 0"):
        homography_maps(g, (H, W), 8.0, width_m=0.0)
    with pytest.raises(PDNError, match="3x3"):
        homography_maps(np.eye(2), (H, W), 8.0)
    with pytest.raises(PDNError, match="size"):
        homography_maps(g, (0, W), 8.0)


def test_local_gain_from_road_ring() -> None:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[40:50, 80:120] = True
    frames = torch.full((2, 3, H, W), 0.35)
    frames[1] = 0.7
    frames[:, :, 40:50, 80:120] = 1.0  # what is under the sticker does not count
    gain, colour = local_gain(frames, mask, road_albedo=0.35)
    assert gain.shape == (2, 3, 1, 1)
    assert torch.allclose(gain.flatten(), torch.tensor([1.0] * 3 + [2.0] * 3))
    assert torch.allclose(colour[1], torch.full((3,), 0.7))


def test_frame_scenes_shared_maps_and_lighting() -> None:
    _, _, g = dataset_geometry()
    frames = torch.rand(4, 3, H, W, generator=torch.Generator().manual_seed(8)) * 0.5
    sc = frame_scenes(frames, g, distance_m=8.0, lighting="local")
    assert len(sc) == 4 and sc.uv.shape == (1, H, W, 2) and sc.gain.shape == (4, 3, 1, 1)
    texture = torch.rand(3, 8, 14, generator=torch.Generator().manual_seed(9))
    out = sc.apply(texture)
    outside = ~sc.mask.expand(4, -1, -1).unsqueeze(1).expand_as(frames)
    assert torch.equal(out[outside], frames[outside])
    plain = frame_scenes(frames, g, distance_m=8.0, lighting="none")
    assert plain.gain is None
    with pytest.raises(PDNError, match="outside"):
        frame_scenes(frames, g, distance_m=500.0, lateral_m=300.0)
    with pytest.raises(PDNError, match="lighting"):
        frame_scenes(frames, g, distance_m=8.0, lighting="sun")
