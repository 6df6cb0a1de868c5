"""VisualBackProp saliency masks (Bojarski et al. 2018, ICRA; arXiv:1611.05418).

For an image, VisualBackProp:

1. averages the feature maps of every convolutional stage over channels (after the
   activation), giving one map per stage, and scales each map to [0, 1] per image (min-max);
2. takes the deepest averaged map and scales it up to the previous stage's resolution with a
   transposed convolution whose kernel is all ones and whose kernel size, stride and padding
   are the stage's own (no learning);
3. multiplies it pointwise with that previous stage's averaged map, and repeats 2-3 down to
   the input resolution;
4. normalises the result to [0, 1].

The per-map min-max scaling is the one choice beyond the paper. The paper's networks use
ReLU; wherever an averaged map's minimum is 0 (some place where every channel is inactive,
the usual case) the scaling only multiplies the map by a constant, which the final
normalisation removes, so the result is the paper's.
PilotNet here uses ELU, whose outputs go down to -1: clamping at 0 instead would leave many
images with an all-zero product, while shifting each map's minimum to 0 keeps "where is the
network most active" in every stage. A constant map (e.g. all zero) becomes 0. Any model
whose ``saliency_stages()`` lists its stages (:class:`~drivenet_patch.models.SaliencyStage`)
is supported.

A model that chooses where to look itself (PatchDrive, :mod:`drivenet_patch.models.patchdrive`:
it has ``forward_details``) is shown by its own decision instead: the driver's weight of each grid
cell (the softmax of its saliency logits, or with the patch-selection loss the sigmoid gates), and
the high-resolution patches it selected drawn as boxes, labelled with their weights when gated
(:func:`patch_saliency`, :func:`patch_weights_map`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from drivenet_patch.models import SaliencyStage, SteeringModel, use_mode
from drivenet_patch.models.patchdrive import has_patches
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import check_frames, to_tensor
from drivenet_patch.storage.atomic import atomic_path, write_json

OVERLAY_COLOR = (0, 255, 0)  # RGB tint of salient pixels
BOX_COLOR = (255, 40, 40)  # RGB outline of a selected patch


def upscale_mask(mask: torch.Tensor, stage: SaliencyStage, size: tuple[int, int]) -> torch.Tensor:
    """Spread each value of ``mask`` over the stage's input footprint (all-ones deconvolution).

    Args:
        mask: (B, h, w) map at the stage's output resolution.
        stage: kernel, stride and padding of the stage.
        size: ``(H, W)`` of the stage's input; rows/columns the convolution never reached
            (floor division) are zero.

    Returns:
        (B, H, W).
    """
    kh, kw = stage.kernel
    ones = torch.ones(1, 1, kh, kw, dtype=mask.dtype, device=mask.device)
    up = F.conv_transpose2d(mask[:, None], ones, stride=stage.stride, padding=stage.padding)[:, 0]
    dh, dw = size[0] - up.shape[-2], size[1] - up.shape[-1]
    if not (0 <= dh < stage.stride[0] and 0 <= dw < stage.stride[1]):
        raise ValueError(f"stage {stage.kernel}/{stage.stride} does not map {tuple(up.shape[-2:])} onto {size}")
    return F.pad(up, (0, dw, 0, dh))


def backprop_maps(maps: Sequence[torch.Tensor], stages: Sequence[SaliencyStage], input_size: tuple[int, int]) -> torch.Tensor:
    """VisualBackProp's core on precomputed channel-averaged maps.

    Args:
        maps: per stage, shallowest first, (B, h_i, w_i) non-negative maps (channel averages
            scaled by :func:`unit_range`).
        stages: the matching stages.
        input_size: ``(H, W)`` of the model input.

    Returns:
        (B, H, W) mask normalised to [0, 1] per image (all zeros where the product vanishes
        everywhere).
    """
    if len(maps) != len(stages) or not maps:
        raise ValueError("backprop_maps needs one map per stage")
    mask = maps[-1]
    for i in range(len(maps) - 1, -1, -1):
        target = tuple(maps[i - 1].shape[-2:]) if i > 0 else tuple(input_size)
        mask = upscale_mask(mask, stages[i], target)  # (B, h_{i-1}, w_{i-1})
        if i > 0:
            mask = mask * maps[i - 1]
    return unit_range(mask)


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (h, w) map of a (B, h, w) batch to [0, 1]; constant maps become 0."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    span = (flat.max(dim=1).values[:, None, None] - lo).clamp_min(torch.finfo(maps.dtype).tiny)
    return ((maps - lo) / span).clamp_(0.0, 1.0)


def visual_backprop(model: SteeringModel, x: torch.Tensor) -> torch.Tensor:
    """VisualBackProp masks for a batch.

    The model runs in eval mode without gradients; its train/eval state is restored after.

    Args:
        model: a model with ``saliency_stages()``.
        x: (B, 3, H, W) float images in [0, 1].

    Returns:
        (B, H, W) float masks in [0, 1] on ``x``'s device.

    Raises:
        PDNError: bad images or a model without conv stages.
    """
    return _masks_and_steering(model, x)[0]


def _masks_and_steering(model: SteeringModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: VisualBackProp masks (B, H, W) and the model's steering (B,)."""
    check_frames(x, "saliency frames")
    stages = model.saliency_stages()
    captured: dict[int, torch.Tensor] = {}

    def hook_for(i: int) -> Any:
        def hook(mod: torch.nn.Module, inputs: Any, out: torch.Tensor) -> None:
            captured[i] = unit_range(out.detach().float().mean(dim=1))  # (B, h_i, w_i) channel average

        return hook

    handles = [s.module.register_forward_hook(hook_for(i)) for i, s in enumerate(stages)]
    try:
        with use_mode(model, False), torch.no_grad():
            steering = model(x)  # (B,)
    finally:
        for h in handles:
            h.remove()
    if len(captured) != len(stages):
        raise PDNError(f"model {model.name!r}: {len(stages) - len(captured)} saliency stage(s) never ran")
    maps = [captured[i] for i in range(len(stages))]
    return backprop_maps(maps, stages, (x.shape[-2], x.shape[-1])), steering


def patch_saliency(model: SteeringModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A patch-selecting model's own saliency: one forward pass in eval mode, without gradients.

    Args:
        model: a model with ``forward_details(x)`` returning steering, saliency logits
            (B, gh, gw) and patch corners (B, k, 2), and a ``patch`` side (PatchDrive).
        x: (B, 3, H, W) float images in [0, 1].

    Returns:
        ``(masks, steering, corners)``: (B, H, W) the driver's weight of each cell (see
        :func:`patch_weights_map`), each cell filling its block of pixels; (B,) degrees;
        (B, k, 2) long top-left ``(y0, x0)`` of the selected patches, most salient first.
    """
    masks, steering, corners, _ = patch_weights_map(model, x)
    return masks, steering, corners


def patch_weights_map(
    model: SteeringModel, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`patch_saliency` plus the weights (B, k) the driver gives the selected patches.

    The mask is the driver's weight of every cell (``model.cell_weights``): for a model trained
    with the patch-selection loss (gated, ``selection_weight > 0``) the sigmoid gates, shown as
    they are (a cell the driver ignores stays untinted, so sparsity is visible); otherwise the
    softmax over the grid, scaled to [0, 1] per image. A model without ``cell_weights`` gets the
    softmax.

    Returns:
        ``(masks, steering, corners, weights)``: (B, H, W) in [0, 1], (B,), (B, k, 2), (B, k).
    """
    check_frames(x, "saliency frames")
    with use_mode(model, False), torch.no_grad():
        out = model.forward_details(x)
    logits = out.saliency.float()
    cell_weights = getattr(model, "cell_weights", None)
    gated = bool(getattr(model, "gated", False))
    prob = cell_weights(logits) if cell_weights is not None else logits.flatten(1).softmax(dim=1).view_as(logits)
    masks = F.interpolate(prob[:, None], size=tuple(x.shape[-2:]), mode="nearest")[:, 0]  # (B, H, W)
    weights = getattr(out, "weights", None)
    if weights is None:
        weights = torch.ones(out.corners.shape[:2])
    return (masks if gated else unit_range(masks)), out.steering, out.corners, weights.float()


def draw_boxes(images: np.ndarray, corners: np.ndarray | torch.Tensor, size: int,
               weights: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Outline square boxes on uint8 RGB images (a copy); the first box of each image is drawn thicker.

    Args:
        images: (N, H, W, 3) uint8.
        corners: (N, k, 2) top-left ``(y0, x0)``.
        size: box side in pixels.
        weights: optional (N, k) weight of each box, written inside its top-left corner (two
            decimals, e.g. ``.83``).
    """
    c = corners.detach().cpu().numpy() if isinstance(corners, torch.Tensor) else np.asarray(corners)
    w = None
    if weights is not None:
        w = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    out = np.ascontiguousarray(images).copy()
    for i, (img, boxes) in enumerate(zip(out, c)):
        for rank, (y0, x0) in reversed(list(enumerate(boxes.tolist()))):  # the most salient drawn last, on top
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0) + size - 1, int(y0) + size - 1), BOX_COLOR,
                          2 if rank == 0 else 1)
            if w is not None:
                label = f"{float(w[i, rank]):.2f}".lstrip("0") or "0"
                cv2.putText(img, label, (int(x0) + 2, int(y0) + 9), cv2.FONT_HERSHEY_PLAIN, 0.6, BOX_COLOR, 1,
                            cv2.LINE_AA)
    return out


def overlay(frames: np.ndarray, masks: np.ndarray | torch.Tensor, alpha: float = 0.7) -> np.ndarray:
    """Tint salient pixels green: ``out = (1 - a m) frame + a m green`` with ``a = alpha``.

    Args:
        frames: uint8 (N, H, W, 3) or (H, W, 3) RGB.
        masks: (N, H, W) or (H, W) values in [0, 1] (numpy or torch).
        alpha: strength of the tint where the mask is 1.

    Returns:
        uint8 RGB images shaped like ``frames``.
    """
    f = np.asarray(frames)
    m = masks.detach().float().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks, np.float32)
    if f.dtype != np.uint8 or f.shape[-1] != 3 or f.shape[:-1] != m.shape:
        raise PDNError(f"overlay: expected uint8 frames (..., H, W, 3) and masks (..., H, W), got {f.shape} and {m.shape}")
    w = (alpha * np.clip(m, 0.0, 1.0))[..., None]
    out = (1.0 - w) * f + w * np.asarray(OVERLAY_COLOR, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_saliency(
    model: SteeringModel, dataset: Any, out_dir: str | Path, n: int = 16, batch_size: int = 64, cols: int = 4
) -> dict[str, Any]:
    """Write VisualBackProp overlays of ``n`` frames spread evenly over a dataset.

    Writes, each atomically: ``saliency_{index:06d}.png`` per frame (the overlay), a captioned
    grid ``saliency_grid.png`` and ``saliency.json`` (indices, labels, predictions). For a
    patch-selecting model (``has_patches``) the overlay is its saliency map with the
    selected patches outlined (a gated model's boxes carry their weights), and ``saliency.json``
    also lists them (``patches``: per frame, ``[y0, x0]`` of each, most salient first;
    ``patch_weights``: the driver's weight of each; ``patch_size``).

    Args:
        model: steering model with conv stages; its input size must match the frames.
        dataset: a :class:`~drivenet_patch.data.DriveDataset` (``frames(indices)`` and ``labels``).
        out_dir: output folder (created).
        n: number of frames (all frames if the dataset is smaller).
        batch_size: frames per model call.
        cols: grid columns.

    Returns:
        ``{"out", "grid", "frames", "indices", "files", "steering_deg", "prediction_deg", "method"}``
        (plus ``"patches"``, ``"patch_weights"`` and ``"patch_size"`` for a patch-selecting model).
    """
    if n <= 0:
        raise PDNError(f"n: expected a positive number of frames, got {n}")
    total = len(dataset)
    if total == 0:
        raise PDNError(f"{getattr(dataset, 'root', 'dataset')}: no frames")
    size = tuple(dataset.size)
    if size != tuple(model.input_size):
        raise PDNError(
            f"dataset frames are {size[0]}x{size[1]} but model {model.name!r} expects "
            f"{model.input_size[0]}x{model.input_size[1]}"
        )
    indices = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(np.int64))
    device = next(model.parameters()).device
    out = Path(out_dir)
    patches = has_patches(model)
    overlays, preds, boxes, box_weights = [], [], [], []
    for start in range(0, len(indices), batch_size):
        frames = dataset.frames(indices[start : start + batch_size])  # (b, H, W, 3) uint8
        x = to_tensor(frames, device)
        if patches:
            masks, steering, corners, weights = patch_weights_map(model, x)
            boxes.append(corners.cpu().numpy())
            box_weights.append(weights.cpu().numpy())
            labels_on = weights if getattr(model, "gated", False) else None  # straight-through weights are all 1
            overlays.append(draw_boxes(overlay(frames, masks, alpha=0.5), corners, int(model.patch), labels_on))
        else:
            masks, steering = _masks_and_steering(model, x)
            overlays.append(overlay(frames, masks))
        preds.append(steering.float().cpu().numpy())
    images = np.concatenate(overlays)
    prediction = np.concatenate(preds).astype(float)
    labels = np.asarray([float(dataset.steering(int(i))) for i in indices])
    files = []
    for i, img in zip(indices, images):
        files.append(_write_png(out / f"saliency_{int(i):06d}.png", img))
    captions = [f"#{int(i)} true {t:+.1f} pred {p:+.1f}" for i, t, p in zip(indices, labels, prediction)]
    grid = _write_png(out / "saliency_grid.png", _grid(images, captions, cols))
    result = {
        "out": str(out),
        "grid": str(grid),
        "frames": len(indices),
        "indices": [int(i) for i in indices],
        "files": [str(f) for f in files],
        "steering_deg": [round(float(v), 4) for v in labels],
        "prediction_deg": [round(float(v), 4) for v in prediction],
        "method": "patches" if patches else "visualbackprop",
    }
    if patches:
        result["patch_size"] = int(model.patch)
        result["patches"] = np.concatenate(boxes).astype(int).tolist()
        result["patch_weights"] = np.round(np.concatenate(box_weights).astype(float), 4).tolist()
    write_json(out / "saliency.json", result)
    return result


def _grid(images: np.ndarray, captions: Sequence[str], cols: int, pad: int = 2, caption_h: int = 14) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 images with a caption strip under each, ``cols`` per row."""
    n, h, w, _ = images.shape
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    th, tw = h + caption_h + pad, w + pad
    canvas = np.zeros((rows * th + pad, cols * tw + pad, 3), np.uint8)
    scale = 0.3 if w < 260 else 0.4
    for k, (img, text) in enumerate(zip(images, captions)):
        y, x = pad + (k // cols) * th, pad + (k % cols) * tw
        canvas[y : y + h, x : x + w] = img
        cv2.putText(canvas, text, (x + 1, y + h + caption_h - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return canvas


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise PDNError(f"{path}: could not write image")
    return path
