"""The sticker step's fused CPU path: the same EOT frames as the reference composition, the same gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attacks.composite import shift_maps
from attacks.eot import EOTConfig, draw_eot, eot_frames, photometric
from attacks.scenes import ApproachConfig, frame_scenes, world_scenes
from drivenet_patch.data.base import CropResize
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.composite import apply_sticker
from drivenet_patch.world.render import Renderer
from drivenet_patch.world.road import Road
from drivenet_patch.world.sticker import StickerPart, StickerPlacement


def reference(scenes, texture, params, cfg):
    """Maps of the drawn scenes, shifted, pasted densely, then the photometric transform on whole frames."""
    bg, uv, mask, gain, offset = scenes.maps(params.idx)
    if params.shift is not None:
        uv, mask = shift_maps(uv, mask, params.shift)
    frames = apply_sticker(bg, texture, uv, mask, gain, offset, sparse=False)
    return photometric(frames, params, math.ceil(3.0 * cfg.blur_sigma[1]))


def world(placement):
    road = Road.generate(3, 120.0)
    return world_scenes(Renderer(Camera().with_size(33, 100)), [road], placement,
                        ApproachConfig(poses_per_road=6, distance_m=(4.0, 14.0)), np.random.default_rng(0))


@pytest.mark.parametrize("cfg", [EOTConfig(), EOTConfig(blur_sigma=(0.0, 1.2), jitter_px=4), EOTConfig.identity()])
@pytest.mark.parametrize("kind", ["one", "group", "frames"])
def test_fused_eot_frames_equal_the_reference_and_carry_the_same_gradient(cfg, kind):
    if kind == "one":
        scenes, hw = world(StickerPlacement(s=40.0, width_m=2.0, length_m=3.5)), (8, 12)
    elif kind == "group":
        parts = (StickerPart(ds=-3.0, dd=0.5, width_m=1.0, length_m=1.5, yaw_deg=20.0),
                 StickerPart(ds=3.0, dd=-0.5, width_m=1.0, length_m=1.5))
        scenes, hw = world(StickerPlacement.group(parts, s=40.0)), (8, 24)
    else:  # real-frame scenes: one shared map for all frames
        cam = Camera(height=160, width=320, hfov_deg=70.0, mount_height_m=1.5, pitch_deg=5.0)
        crop = CropResize(top=60, bottom=20, size=(33, 100))
        img2ground = np.linalg.inv(crop.matrix((cam.height, cam.width)) @ cam.ground_homography())
        frames = torch.rand(5, 3, 33, 100, generator=torch.Generator().manual_seed(0))
        scenes, hw = frame_scenes(frames, img2ground, 8.0, 0.0, 2.0, 3.0), (8, 12)
    g = torch.Generator().manual_seed(1)
    texture = torch.rand(3, *hw, generator=g).requires_grad_(True)
    for _ in range(3):
        params = draw_eot(cfg, len(scenes), 7, scenes.size, g)
        fast = eot_frames(scenes, texture, params, cfg)
        ref = reference(scenes, texture, params, cfg)
        assert torch.equal(fast, ref)
        w = torch.rand(fast.shape, generator=g)
        (g_fast,) = torch.autograd.grad((fast * w).sum(), texture)
        (g_ref,) = torch.autograd.grad((ref * w).sum(), texture)
        assert torch.allclose(g_fast, g_ref, rtol=1e-5, atol=1e-6 * float(g_ref.abs().max()))
