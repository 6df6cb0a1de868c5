"""``pdn bench attack``: our sticker step vs ART's AdversarialPatchPyTorch step, side by side.

Both attacks optimise against the same model, on the same frames (world approach scenes), with
the same batch, optimiser (Adam), learning rate and number of optimiser steps, untargeted
(push the steering away from the clean prediction). ART's patch is a digital square pasted at
random places with ART's own EOT; it gets the same *pixel budget* as the sticker (its side is
the square root of the sticker's mean pixel coverage over the scenes). Deviation = mean
``|steering with patch - clean steering|`` over the scenes after the last step (ART's patch
pasted at seeded random places, at its fixed scale).
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from attacks.base import attack_mode
from attacks.evaluate import offline_eval


def model_pass_seconds(model: nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    """Median seconds of the model's forward and backward to its input (weights frozen), in
    channels-last as both attacks feed it, in :func:`~attacks.base.attack_mode` as our attack runs
    it: the part of a step no attack can avoid, so ``ART step / this`` bounds any attack's speed-up
    over ART at this batch."""
    x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with attack_mode(model):
        for i in range(repeats + 2):
            xi = x.detach().clone().requires_grad_(True)
            start = time.perf_counter()
            model(xi).sum().backward()
            if i >= 2:  # two warm-up passes
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_attack(model: nn.Module, steps: int = 40, batch: int = 16, lr: float = 0.1, seed: int = 0,
                 roads: int = 2, poses: int = 32, device: str = "cpu") -> dict[str, Any]:
    """Seconds per optimiser step and deviation after ``steps`` steps, ours vs ART.

    Returns:
        ``ours_s_per_step`` (median step, as ART's), ``ours_s_per_step_with_setup`` (the whole run over
        ``steps``), ``art_s_per_step`` (median step), ``speedup`` (ART / ours), ``ours_dev_deg``,
        ``art_dev_deg``, ``model_pass_s`` (the model's own forward and backward at ``batch``, see
        :func:`model_pass_seconds`) and ``speedup_bound`` (ART / that), and the settings (``steps``, ``batch``, ``frames``, ``art_patch_px``).
    """
    from attacks.approach import approach_scenes, world_placement
    from attacks.digital import art_patch_attack
    from attacks.scenes import ApproachConfig
    from attacks.sticker import StickerConfig, optimize_sticker
    from drivenet_patch.world.seeds import ATTACK_SEED_BASE

    scenes = approach_scenes(model, world_placement("road", (3.5, 2.0)), ApproachConfig().distance_m, roads, poses,
                             seed, ATTACK_SEED_BASE, device, rng_key=7)
    x = scenes.background
    model.eval()
    # Ours: the full step (EOT draw, compositing through the UV maps, forward, backward, Adam). ART's
    # figure below is the median of its steps alone, so ours is the median time between two consecutive
    # Adam updates: one whole loop iteration, without the one-off set-up before the loop (the clean
    # predictions of all scenes, the initial texture and its NPS; ~65 ms on the CPU).
    cfg = StickerConfig(steps=steps, batch=batch, lr=lr, target="away", seed=seed)
    stamps: list[float] = []
    hook = register_optimizer_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    start = time.perf_counter()
    try:
        ours = optimize_sticker(model, scenes, cfg, torch.Generator(device=device).manual_seed(seed))
    finally:
        hook.remove()
    with_setup = (time.perf_counter() - start) / steps
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    ours_s = statistics.median(gaps) if gaps else with_setup
    _, ours_eval = offline_eval(model, scenes, ours.texture, "away")

    # ART: one pass over ``batch`` frames is one optimiser step; ``steps`` passes over a batch-sized
    # set would show ART fewer frames than us, so it gets all the frames and proportionally fewer passes.
    side = int(max(4, round(math.sqrt(float(scenes.coverage().float().mean())))))
    scale = min(1.0, side / min(scenes.size))
    n_frames = batch * max(1, len(x) // batch)
    passes = max(1, round(steps * batch / n_frames))
    art = art_patch_attack(model, x[:n_frames], steps=passes, batch=batch, patch_shape=(3, side, side), lr=lr,
                           scale_min=scale, scale_max=scale, rotation_max=22.5,
                           generator=torch.Generator().manual_seed(seed))
    art_s = statistics.median(art.step_seconds)
    model_s = model_pass_seconds(model, x[:batch])
    with torch.no_grad():
        clean = model(x)
        patched = art.attack.overlay(x, scale=scale, generator=torch.Generator().manual_seed(seed + 1))
        art_dev = float((model(patched) - clean).abs().mean())
    return {
        "ours_s_per_step": ours_s,
        "ours_s_per_step_with_setup": with_setup,
        "art_s_per_step": art_s,
        "speedup": art_s / ours_s,
        "model_pass_s": model_s,
        "speedup_bound": art_s / model_s,
        "ours_dev_deg": float(ours_eval["mean_dev_deg"]),
        "art_dev_deg": art_dev,
        "steps": steps,
        "art_steps": len(art.step_seconds),
        "batch": batch,
        "frames": len(x),
        "sticker_mean_px": float(scenes.coverage().float().mean()),
        "art_patch_px": side * side,
    }


__all__ = ["bench_attack"]
