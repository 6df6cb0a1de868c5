"""Saliency grab: a sticker that pulls a patch-selecting model's high-resolution patches onto itself.

Against a model that chooses where to look (PatchDrive, :mod:`drivenet_patch.models.patchdrive`)
``StickerConfig.saliency_weight > 0`` adds ``w_sal * -log(saliency mass on the sticker's cells)``
(:func:`saliency_grab_loss`) to the attack's objective: the sticker learns to pull the selected
patches onto itself, so the model "follows the patch". :func:`saliency_capture` measures how
often it does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import attack_mode, model_device
from attacks.scenes import StickerScenes
from drivenet_patch.safety.errors import PDNError

# Softmax temperature of the saliency objective. A trained PatchDrive's saliency logits are flat
# (measured: a range of 0.63 over the 200 cells of the 16-px grid), so at temperature 1 the mass is
# nearly the share of cells the sticker covers and barely moves (0.061 -> 0.064 in 60 steps, even at
# weight 50); at 0.1 the loss is about the ranking the top-k selection uses (held-out top-1 share
# 0.53 -> 0.94 in the same 60 steps at weight 2).
GRAB_TEMPERATURE = 0.1


def sticker_cells(footprint: torch.Tensor, cell: int) -> torch.Tensor:
    """Which saliency-grid cells hold at least one sticker pixel.

    Shape:
        footprint (B, H, W) bool, H and W multiples of ``cell`` -> (B, H / cell, W / cell) bool.
    """
    return F.max_pool2d(footprint[:, None].float(), cell)[:, 0] > 0


def saliency_grab_loss(logits: torch.Tensor, footprint: torch.Tensor, cell: int,
                       temperature: float = GRAB_TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
    """``-log`` of the saliency probability mass that falls on the sticker's cells.

    The mass is the softmax of ``logits / temperature`` over the whole grid, summed over the
    cells the sticker touches; minimising ``-log mass`` raises those cells' logits against all
    others, which is what wins them a place among the top-k (a low temperature makes it about
    the ranking, see :data:`GRAB_TEMPERATURE`). Frames in which the sticker is not visible are
    left out (the loss is 0 when none shows it).

    Args:
        logits: (B, gh, gw) saliency logits.
        footprint: (B, H, W) bool sticker pixels, ``H = gh * cell``, ``W = gw * cell``.
        cell: grid cell side in pixels.
        temperature: softmax temperature (> 0).

    Returns:
        ``(loss, mass)``: the scalar loss and the mean mass (B,) -> () over the visible frames.
    """
    on = sticker_cells(footprint, cell).flatten(1)  # (B, N)
    visible = on.any(dim=1)  # (B,)
    if not bool(visible.any()):
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    on = on[visible]  # rows without the sticker would give logsumexp(-inf...) and NaN gradients
    logp = (logits.flatten(1)[visible] / temperature).log_softmax(dim=1)  # (V, N)
    log_mass = torch.logsumexp(logp.masked_fill(~on, float("-inf")), dim=1)  # (V,)
    return -log_mass.mean(), log_mass.detach().exp().mean()


@torch.no_grad()
def saliency_capture(model: nn.Module, scenes: StickerScenes, texture: torch.Tensor, dirt: bool = False,
                     chunk: int = 128) -> dict[str, Any]:
    """How often a patch-selecting model looks at the sticker, with and without it.

    A frame counts as *captured* when one of the model's k selected patches holds at least one
    sticker pixel; only frames in which the sticker is visible count. On the clean frame the
    same footprint is checked (the patches land where the sticker would be anyway: the baseline).

    Args:
        model: a patch-selecting model (``forward_details`` and ``patch``, e.g. PatchDrive).
        scenes: the frames and sticker maps.
        texture: (3, h, w) sticker (dirt mode: the multiplier).
        dirt: composite in dirt mode.
        chunk: frames per forward pass.

    Returns:
        ``in_topk_rate`` (share of frames with the sticker inside a selected patch),
        ``in_top1_rate`` (inside the most salient one), ``clean_in_topk_rate`` (the same footprint
        on the clean frame), ``patch_sticker_share`` (sticker pixels per selected-patch pixel,
        mean over frames), ``weight_on_sticker`` (the share of the driver's patch weights that
        falls on patches holding sticker pixels, mean over frames: with straight-through weights
        the share of the k patches; with the patch-selection loss's gates, how much the selected
        sticker patches count), ``clean_weight_on_sticker`` (the same on the clean frame) and
        ``n_visible``.
    """
    from drivenet_patch.models.patchdrive import has_patches, patch_coverage

    if not has_patches(model):
        raise PDNError(f"saliency capture needs a patch-selecting model (e.g. patchdrive), got "
                       f"{getattr(model, 'name', type(model).__name__)!r}")
    device = model_device(model)
    scenes = scenes.to(device)
    texture = texture.to(device, torch.float32)
    patch = int(model.patch)
    adv_cov, clean_cov, adv_w, clean_w, vis = [], [], [], [], []
    with attack_mode(model):
        for i in range(0, len(scenes), chunk):
            idx = torch.arange(i, min(i + chunk, len(scenes)), device=device)
            mask = scenes.maps(idx)[2]  # (b, H, W)
            adv = model.forward_details(scenes.apply(texture, idx, dirt))
            clean = model.forward_details(scenes.background[idx])
            adv_cov.append(patch_coverage(mask, adv.corners, patch))  # (b, k)
            clean_cov.append(patch_coverage(mask, clean.corners, patch))
            adv_w.append(adv.weights.float())  # (b, k) the driver's weight of each selected patch
            clean_w.append(clean.weights.float())
            vis.append(mask.flatten(1).any(dim=1))
    a, c, v = torch.cat(adv_cov), torch.cat(clean_cov), torch.cat(vis)
    n = int(v.sum())
    if n == 0:
        return {"in_topk_rate": None, "in_top1_rate": None, "clean_in_topk_rate": None,
                "patch_sticker_share": None, "weight_on_sticker": None, "clean_weight_on_sticker": None,
                "n_visible": 0}
    a, c = a[v], c[v]
    wa, wc = torch.cat(adv_w)[v], torch.cat(clean_w)[v]
    return {
        "in_topk_rate": float((a.sum(dim=1) > 0).float().mean()),
        "in_top1_rate": float((a[:, 0] > 0).float().mean()),
        "clean_in_topk_rate": float((c.sum(dim=1) > 0).float().mean()),
        "patch_sticker_share": float((a.sum(dim=1) / (a.shape[1] * patch * patch)).mean()),
        "weight_on_sticker": float(((wa * (a > 0)).sum(dim=1) / wa.sum(dim=1).clamp_min(1e-30)).mean()),
        "clean_weight_on_sticker": float(((wc * (c > 0)).sum(dim=1) / wc.sum(dim=1).clamp_min(1e-30)).mean()),
        "n_visible": n,
    }


__all__ = ["GRAB_TEMPERATURE", "saliency_capture", "saliency_grab_loss", "sticker_cells"]
