"""Attacks on steering models: sticker placement, the printable EOT sticker attack, printability.

Where things live: :mod:`attacks.scenes` (the scenes a sticker is optimised on),
:mod:`attacks.placement` (flat-ground homography for real frames), :mod:`attacks.composite`
(the learnable sticker layer; the compositing itself is the core's
:mod:`drivenet_patch.world.composite`), :mod:`attacks.eot` (the EOT draw and jitter),
:mod:`attacks.sticker` (the optimiser), :mod:`attacks.closed_loop` (the closed-loop-aware
optimiser: DRP-style rollouts and the displacement objective), :mod:`attacks.sweep` (the break size), :mod:`attacks.saliency_grab`, :mod:`attacks.artifact`
(the attack folder).

    >>> from attacks import StickerConfig, world_scenes, optimize_sticker  # doctest: +SKIP
    >>> result = optimize_sticker(model, scenes, StickerConfig(target="left"))  # doctest: +SKIP
"""

from __future__ import annotations

from attacks.artifact import save_result
from attacks.base import (
    LOSSES,
    TARGETS,
    Objective,
    StickerAttack,
    StickerResult,
    attack_mode,
    away_hinge,
    away_mse,
    deviation,
    lateral_hinge,
    make_objective,
    model_device,
    predict,
    target_sign,
    targeted_hinge,
    targeted_mse,
)
from attacks.closed_loop import ClosedLoopAttackConfig, make_approaches, optimize_closed_loop, rollout
from attacks.composite import DIRT_RANGE, StickerLayer, shift_maps
from attacks.eot import EOTConfig, EOTParams, draw_eot, eot_frames, gaussian_blur, photometric
from attacks.placement import homography_maps, local_gain
from attacks.printability import default_palette, load_palette, nps, quantize, total_variation
from attacks.scenes import (
    ApproachConfig,
    StickerScenes,
    approach_poses,
    frame_scenes,
    world_scene_split,
    world_scenes,
)
from attacks.sticker import EOTStickerAttack, StickerConfig, optimize_sticker
from drivenet_patch.world.composite import apply_dirt, apply_sticker, sample_texture

__all__ = [
    "DIRT_RANGE",
    "LOSSES",
    "TARGETS",
    "ApproachConfig",
    "ClosedLoopAttackConfig",
    "EOTConfig",
    "EOTParams",
    "EOTStickerAttack",
    "Objective",
    "StickerAttack",
    "StickerConfig",
    "StickerLayer",
    "StickerResult",
    "StickerScenes",
    "apply_dirt",
    "apply_sticker",
    "approach_poses",
    "attack_mode",
    "away_hinge",
    "away_mse",
    "default_palette",
    "deviation",
    "draw_eot",
    "eot_frames",
    "frame_scenes",
    "gaussian_blur",
    "homography_maps",
    "lateral_hinge",
    "load_palette",
    "local_gain",
    "make_approaches",
    "make_objective",
    "model_device",
    "nps",
    "optimize_closed_loop",
    "optimize_sticker",
    "photometric",
    "predict",
    "quantize",
    "rollout",
    "sample_texture",
    "save_result",
    "shift_maps",
    "target_sign",
    "targeted_hinge",
    "targeted_mse",
    "total_variation",
    "world_scene_split",
    "world_scenes",
]
