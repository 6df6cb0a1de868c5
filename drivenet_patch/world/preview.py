"""A labelled grid of world views, to check by eye that the world reads as a dashcam road."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch

from drivenet_patch.safety.tensors import to_uint8
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.episodes import expert_steer
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import Road, sample_style
from drivenet_patch.world.sticker import StickerPlacement


def demo_texture(h: int = 64, w: int = 112, seed: int = 0) -> torch.Tensor:
    """A loud, easy-to-spot sticker texture (3, h, w): coloured blocks with a diagonal band."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(0.0, 1.0, (3, 4, 7))
    tex = np.kron(blocks, np.ones((h // 4 + 1, w // 7 + 1)))[:, :h, :w]
    yy, xx = np.mgrid[:h, :w]
    band = np.abs((xx / w) - (yy / h)) < 0.12
    tex[:, band] = np.array([1.0, 0.9, 0.0])[:, None]
    return torch.tensor(tex, dtype=torch.float32)


def preview_grid(seed: int = 0, size: tuple[int, int] = (132, 400), cols: int = 4) -> np.ndarray:
    """Render the standard views and tile them with captions.

    Views: straight, left curve, right curve, cast shadows, road sticker at 5 m and 15 m
    ahead of the camera, a billboard, and a random road from ``seed``.

    Returns:
        uint8 (H', W', 3) RGB image.
    """
    rng = np.random.default_rng([seed, 0xC0FFEE])
    style = dataclasses.replace(sample_style(rng, shadows=False), markings="dashed")
    cam = Camera().with_size(*size)
    renderer = Renderer(cam)
    tex = demo_texture(seed=seed)
    shadow_style = dataclasses.replace(style, shadow_density=10.0, sun_azimuth_deg=35.0)
    straight = Road.straight(style=style)
    s0 = 40.0
    ahead = s0 + cam.forward_m
    views = [
        ("straight", straight, None),
        ("left curve R=60 m", Road.arc(60.0, left=True, lead_m=10.0, style=style), None),
        ("right curve R=40 m", Road.arc(40.0, left=False, lead_m=10.0, style=style), None),
        ("cast shadows", Road([*straight.segments], style=shadow_style, shadow_rng=np.random.default_rng(seed)), None),
        ("road sticker at 5 m", straight, StickerPlacement(s=ahead + 5.0)),
        ("road sticker at 15 m", straight, StickerPlacement(s=ahead + 15.0)),
        ("billboard at 25 m", straight, StickerPlacement.billboard(s=ahead + 25.0)),
        (f"random road, seed {seed}", Road.generate(seed, 400.0), None),
    ]
    tiles = []
    for title, road, placement in views:
        pose = road.pose_at(s0)
        light = Lighting.neutral(1)
        if title.startswith("random"):
            light = Lighting.sample(rng, 1)
        img = renderer.render(road, pose[None], light, sticker=placement, texture=tex).image
        label = float(expert_steer(road, pose[None])[0])
        tile = to_uint8(img)[0]
        caption = np.zeros((22, tile.shape[1], 3), np.uint8)
        cv2.putText(caption, f"{title}  |  expert {label:+.2f} deg", (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([tile, caption], axis=0))
    rows = []
    for r in range(0, len(tiles), cols):
        row = tiles[r : r + cols]
        row += [np.zeros_like(tiles[0])] * (cols - len(row))
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in row], axis=1))
    return np.concatenate(rows, axis=0)
