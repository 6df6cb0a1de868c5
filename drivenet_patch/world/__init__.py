"""The built-in driving world: procedural roads, a batched dashcam renderer, stickers, expert driving."""

from __future__ import annotations

from drivenet_patch.world.camera import Camera, parse_size
from drivenet_patch.world.composite import apply_dirt, apply_sticker
from drivenet_patch.world.render import Lighting, Renderer, RenderOutput
from drivenet_patch.world.road import EGO_LANE_D, LANE_WIDTH_M, Road, RoadStyle, sample_style
from drivenet_patch.world.sticker import StickerPlacement
from drivenet_patch.world.vehicle import WHEELBASE_M, bicycle_step, pure_pursuit_deg

__all__ = [
    "EGO_LANE_D",
    "LANE_WIDTH_M",
    "WHEELBASE_M",
    "Camera",
    "Lighting",
    "RenderOutput",
    "Renderer",
    "Road",
    "RoadStyle",
    "StickerPlacement",
    "apply_dirt",
    "apply_sticker",
    "bicycle_step",
    "parse_size",
    "pure_pursuit_deg",
    "sample_style",
]
