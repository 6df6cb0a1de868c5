"""How a patch-selecting model spends its patches, and what one image costs.

:func:`selection_stats` measures, over frames of a dataset, how many of its k patches a
:class:`~drivenet_patch.models.patchdrive.PatchDrive` really uses:

* ``effective_patches``: the perplexity (``exp`` of the entropy) of the driver's weights of the
  selected patches normalised to sum 1 (:func:`~drivenet_patch.models.patchdrive.effective_patches`).
  The weights are what each patch token is multiplied by: all 1 without the patch-selection loss
  (so exactly k), the sigmoid gates with it.
* ``effective_patches_fusion``: the same perplexity of ``w_i * a_i``, ``a_i`` the attention the
  fusion's global tokens pay to patch i (mean over tokens and heads). It is defined for every
  PatchDrive, gated or not, so it compares lambda = 0 with lambda > 0 on one scale: a patch
  counts in proportion to how much of it reaches the steering head.

:func:`inference_cost` gives multiply-accumulates, parameters and a measured time per image.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from drivenet_patch.models import SteeringModel, count_parameters, use_mode
from drivenet_patch.models.patchdrive import PatchDrive, effective_patches, has_patches, model_macs
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import to_tensor


def fusion_usage(weights: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Each patch's share of the fusion: ``w_i * mean_G a_{G,i}``, normalised over the k patches.

    Shape:
        weights (B, k), attention (B, G, k) -> (B, k) summing to 1 per image.
    """
    u = weights * attention.mean(dim=1)  # (B, k)
    return u / u.sum(dim=1, keepdim=True).clamp_min(1e-30)


@torch.no_grad()
def selection_stats(model: SteeringModel, dataset: Any, n: int | None = None, batch_size: int = 64) -> dict[str, Any]:
    """How concentrated a patch model's selection is, over ``n`` frames spread evenly over ``dataset``.

    Args:
        model: a patch-selecting model (``forward_details`` with ``attention=True``, e.g. PatchDrive).
        dataset: a :class:`~drivenet_patch.data.DriveDataset` at the model's input size.
        n: frames (default: all).
        batch_size: frames per model call.

    Returns:
        ``n_frames``, ``k``, ``effective_patches`` and ``effective_patches_fusion`` (means over
        frames; see the module notes), ``mean_patch_weight`` (mean weight of a selected patch),
        ``top_weight_share`` (the largest weight's share of the k weights), ``gated`` and
        ``selection_weight``; for a gated model also ``cells_on`` (mean number of grid cells
        whose gate exceeds 0.5) and ``selected_gate_share`` (the selected cells' share of all
        gate mass).

    Raises:
        PDNError: a model that does not select patches, or frames of another size.
    """
    if not has_patches(model) or not isinstance(model, PatchDrive):
        raise PDNError(f"selection statistics need a patch-selecting model (e.g. patchdrive), got {model.name!r}")
    if tuple(dataset.size) != tuple(model.input_size):
        raise PDNError(f"dataset frames are {dataset.size[0]}x{dataset.size[1]} but model {model.name!r} expects "
                       f"{model.input_size[0]}x{model.input_size[1]}")
    total = len(dataset)
    if total == 0:
        raise PDNError(f"{getattr(dataset, 'root', 'dataset')}: no frames")
    count = total if n is None else min(int(n), total)
    indices = np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))
    device = next(model.parameters()).device
    eff, fus, mean_w, top, on, share = [], [], [], [], [], []
    with use_mode(model, False):
        for start in range(0, len(indices), batch_size):
            x = to_tensor(dataset.frames(indices[start : start + batch_size]), device)
            out = model.forward_details(x, attention=True)
            w = out.weights.float()  # (b, k)
            eff.append(effective_patches(w))
            fus.append(effective_patches(fusion_usage(w, out.attention.float())))
            mean_w.append(w.mean(dim=1))
            top.append(w.amax(dim=1) / w.sum(dim=1).clamp_min(1e-30))
            if model.gated:
                gates = out.saliency.float().flatten(1).sigmoid()  # (b, cells)
                on.append((gates > 0.5).float().sum(dim=1))
                share.append(w.sum(dim=1) / gates.sum(dim=1).clamp_min(1e-30))
    result: dict[str, Any] = {
        "n_frames": len(indices), "k": int(model.k), "gated": bool(model.gated),
        "selection_weight": float(model.selection_weight),
        "effective_patches": float(torch.cat(eff).mean()),
        "effective_patches_fusion": float(torch.cat(fus).mean()),
        "mean_patch_weight": float(torch.cat(mean_w).mean()),
        "top_weight_share": float(torch.cat(top).mean()),
    }
    if model.gated:
        result["cells_on"] = float(torch.cat(on).mean())
        result["selected_gate_share"] = float(torch.cat(share).mean())
    return result


@torch.no_grad()
def inference_cost(model: SteeringModel, batch: int = 64, repeats: int = 7) -> dict[str, Any]:
    """Multiply-accumulates, parameters and the measured time per image of one batched forward pass.

    The time is the median over ``repeats`` timed calls after one warm-up call, on a batch of
    zeros in eval mode (the work does not depend on the pixel values), divided by ``batch``.

    Returns:
        ``macs``, ``parameters``, ``ms_per_image``, ``batch``, ``threads``.
    """
    if batch < 1 or repeats < 1:
        raise PDNError(f"inference cost: batch and repeats must be >= 1, got {batch} and {repeats}")
    macs = model_macs(model)
    param = next(model.parameters())
    x = torch.zeros(batch, 3, *model.input_size, dtype=param.dtype, device=param.device)
    x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with use_mode(model, False):
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            if param.device.type == "cuda":
                torch.cuda.synchronize(param.device)
            times.append(time.perf_counter() - t0)
    return {"macs": int(macs), "parameters": count_parameters(model), "ms_per_image": 1e3 * statistics.median(times) / batch,
            "batch": int(batch), "threads": torch.get_num_threads()}
