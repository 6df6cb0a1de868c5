"""PatchDrive: look at the whole road coarsely, then at a few places sharply, and steer.

A glimpse model in the line of Mnih et al. ("Recurrent Models of Visual Attention", NeurIPS
2014) and Elsayed et al. ("Saccader", NeurIPS 2019), with the driving-specific idea that a
steering network should attend to a few image regions (Kim & Canny, "Interpretable Learning for
Self-Driving Cars by Visualizing Causal Attention", ICCV 2017). Unlike those, the glimpses here
are all taken at once (no recurrence), so the whole model is one batched forward pass::

    x (B, 3, H, W) in [0, 1] ──────────────┬── avg-pool /ds, YUV ── global CNN ── (B, C, gh, gw)  cells
                                           │                      │               │
                                           │          1x1 conv: saliency logits   2x2/2 conv: global tokens
                                           │                      │  (B, gh, gw)      (B, G, d)  + position
                                           │     top-k cells (peak NMS) ─┐                 │ queries
                                           └── crop k patches P x P, YUV ◄┘                ▼
                                                 (B*k, 3, P, P) ── shared patch CNN ── patch tokens (B, k, d)
                                                                        + cell embedding, x straight-through
                                                                        weight ──► keys/values of multi-head
                                                                                   attention ──► + residual
                                                                                   ──► flatten ──► MLP ──► (B,)

* **Grid.** The global CNN downsamples the low-resolution frame by 4, so one cell of the
  saliency grid is ``cell = 4 * ds`` input pixels (16 at the default ``ds = 4``). A patch is
  centred on its cell and clamped into the frame, so it always lies wholly inside it.
* **Selection.** Hard top-k over the cells. With ``nms`` only local maxima of the saliency
  map (3x3 cells) compete first, so the k patches spread out instead of stacking on one blob;
  the rest fill in when there are fewer than k peaks. All of it is tensor ops on the batch.
* **Straight-through weights.** The crops are discrete, so the saliency head gets its
  gradient through the patch tokens: each is multiplied by ``w / stop_grad(w)`` (= 1 in value)
  where ``w`` is the cell's softmax probability over the grid. A patch whose features helped
  the loss pulls its cell's logit up (the straight-through estimator of Bengio et al. 2013).
* **Cost.** At the default 160x320 with k = 8 patches of 32x32: 32.5 M multiply-accumulates
  counted by :func:`~drivenet_patch.models.base.count_macs` (convolutions and linear layers:
  global CNN 15.9 M, patch CNN 8 x 1.86 M, tokens and head 1.6 M) plus 0.5 M in the
  attention's own projections (:func:`patchdrive_macs`): 33.0 M, 1.23x PilotNet's 26.9 M at
  66x200 and 0.23x its 144 M at 160x320. 565,352 parameters.
* **Patch-selection loss** (``selection_weight`` = lambda > 0): the design's Driver Module loss
  ``L_total = L_task + lambda * sum_i |w_i|``, an L1 penalty on the weights the driver gives
  the patches. Which tensor is ``w``: the straight-through weights above are 1 in value (their
  L1 is the constant k) and the softmax over the grid is a simplex (its L1 is the constant 1),
  so an L1 penalty on either has no gradient in the direction of sparsity (the reason
  Martins & Astudillo, ICML 2016, built sparsemax). With lambda > 0 the driver's weight of a
  cell is therefore a gate ``w = sigmoid(saliency logit)`` in (0, 1): each selected patch's
  token is multiplied by its gate *in value* (a patch whose gate is ~0 is ignored however it is
  selected), and the penalty sums ``w`` over every cell of the grid (every candidate patch, so
  background cells are pushed to 0 too), averaged over the batch (:func:`selection_penalty`).
  ``selection_weight = 0`` keeps the straight-through weights: today's model, bit for bit.
  The selection itself stays hard top-k, so the compute per image does not change with lambda.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from drivenet_patch.models.base import ColorNorm, SteeringModel, count_macs
from drivenet_patch.models.registry import register_model
from drivenet_patch.safety.errors import PDNError

GLOBAL_STRIDE = 4  # the global CNN's downsampling of the low-resolution frame


class PatchDriveOutput(NamedTuple):
    """Everything one forward pass decides.

    Attributes:
        steering: (B,) road-wheel degrees, positive = left.
        saliency: (B, gh, gw) saliency logits over the grid cells.
        index: (B, k) flat indices ``row * gw + col`` of the selected cells, most salient first.
        corners: (B, k, 2) integer ``(y0, x0)`` top-left input pixel of each selected patch.
        weights: (B, k) the driver's weight of each selected patch, the factor its token is
            multiplied by: 1 in value (straight-through) at ``selection_weight = 0``, else the
            sigmoid gate of its cell (:func:`gate_weights`).
        attention: (B, G, k) the fusion's attention of each global token over the patches
            (averaged over heads), or None unless ``forward_details(x, attention=True)``.
    """

    steering: torch.Tensor
    saliency: torch.Tensor
    index: torch.Tensor
    corners: torch.Tensor
    weights: torch.Tensor
    attention: torch.Tensor | None = None


# ---------------------------------------------------------------------------- functional core
def select_cells(logits: torch.Tensor, k: int, nms: bool = True) -> torch.Tensor:
    """Indices of the k most salient cells of each map.

    Args:
        logits: (B, gh, gw) saliency logits.
        k: cells to select (at most ``gh * gw``).
        nms: prefer local maxima (3x3 neighbourhood): a cell that has a strictly larger
            neighbour is ranked after every peak (its order among non-peaks is kept).

    Returns:
        (B, k) long flat indices ``row * gw + col``, in decreasing order of preference.
    """
    s = logits.detach()
    if nms:
        peak = s == F.max_pool2d(s[:, None], 3, stride=1, padding=1)[:, 0]  # (B, gh, gw)
        span = (s.amax(dim=(1, 2), keepdim=True) - s.amin(dim=(1, 2), keepdim=True)).clamp_min(1.0)
        s = torch.where(peak, s, s - 2.0 * span - 1.0)  # every non-peak ranks below every peak
    return s.flatten(1).topk(k, dim=1).indices


def cell_corners(index: torch.Tensor, grid_w: int, cell: int, patch: int, size: tuple[int, int]) -> torch.Tensor:
    """Top-left input pixels of patches centred on the given cells, clamped into the frame.

    Args:
        index: (B, k) flat cell indices.
        grid_w: cells per row.
        cell: cell side in input pixels.
        patch: patch side in input pixels.
        size: input ``(H, W)``.

    Returns:
        (B, k, 2) long ``(y0, x0)`` with ``0 <= y0 <= H - patch`` and ``0 <= x0 <= W - patch``.
    """
    row, col = index // grid_w, index % grid_w
    y0 = (row * cell + (cell - patch) // 2).clamp(0, size[0] - patch)
    x0 = (col * cell + (cell - patch) // 2).clamp(0, size[1] - patch)
    return torch.stack([y0, x0], dim=-1)


def crop_patches(x: torch.Tensor, corners: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut ``patch x patch`` windows out of a batch, all at once (differentiable in ``x``).

    One advanced-indexing gather on the channels-last view of ``x``: no loop over images or
    patches, and a channels-last input is read without a copy.

    Args:
        x: (B, C, H, W).
        corners: (B, k, 2) long top-left ``(y0, x0)``; windows must lie inside the frame.
        patch: window side.

    Returns:
        (B * k, C, patch, patch) in channels-last memory format, image-major (the k windows of
        image 0 first).
    """
    B, C = x.shape[:2]
    k = corners.shape[1]
    ar = torch.arange(patch, device=x.device)
    rows = (corners[..., 0, None] + ar)[:, :, :, None]  # (B, k, P, 1)
    cols = (corners[..., 1, None] + ar)[:, :, None, :]  # (B, k, 1, P)
    b = torch.arange(B, device=x.device).view(B, 1, 1, 1)
    crops = x.permute(0, 2, 3, 1)[b, rows, cols]  # (B, k, P, P, C)
    return crops.reshape(B * k, patch, patch, C).permute(0, 3, 1, 2)


def straight_through_weights(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``w / stop_grad(w)`` for the selected cells, ``w`` = softmax over the whole grid.

    Equal to 1 in value; its gradient reaches every logit of the map.

    Shape:
        logits (B, gh, gw), index (B, k) -> (B, k).
    """
    w = logits.flatten(1).softmax(dim=1).gather(1, index)  # (B, k)
    return w / w.detach()


def gate_weights(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The driver's gate of the selected cells, ``sigmoid(logit)``, used in value.

    Shape:
        logits (B, gh, gw), index (B, k) -> (B, k) in (0, 1).
    """
    return logits.flatten(1).sigmoid().gather(1, index)


def selection_penalty(logits: torch.Tensor) -> torch.Tensor:
    """The patch-selection loss term ``sum_i |w_i|`` per image, ``w = sigmoid(logits)`` over all cells.

    The gates are positive, so ``|w_i| = w_i``; the gradient ``sigmoid'(logit)`` reaches every
    cell's logit, i.e. the saliency head, for every cell whether selected or not.

    Shape:
        logits (B, gh, gw) -> (B,).
    """
    return logits.flatten(1).sigmoid().sum(dim=1)


def effective_patches(weights: torch.Tensor) -> torch.Tensor:
    """The effective number of patches: ``exp`` of the entropy of the normalised weights.

    k equal weights give k; all weight on one patch gives 1 (the perplexity of ``w / sum w``).

    Shape:
        weights (B, k) >= 0 -> (B,) in [1, k].
    """
    p = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-30)
    return torch.exp(-(p * p.clamp_min(1e-30).log()).sum(dim=1))


def patch_coverage(mask: torch.Tensor, corners: torch.Tensor, patch: int) -> torch.Tensor:
    """How many pixels of ``mask`` each selected patch holds (e.g. a sticker's footprint).

    Shape:
        mask (B, H, W) bool or float, corners (B, k, 2) -> (B, k) float pixel counts.
    """
    B, k = corners.shape[:2]
    crops = crop_patches(mask[:, None].float(), corners, patch)  # (B*k, 1, P, P)
    return crops.sum(dim=(1, 2, 3)).view(B, k)


def has_patches(model: object) -> bool:
    """Whether ``model`` selects image patches itself: it has ``forward_details`` (returning a
    :class:`PatchDriveOutput`) and a ``patch`` side, as :class:`PatchDrive`."""
    return callable(getattr(model, "forward_details", None)) and isinstance(getattr(model, "patch", None), int)


# ---------------------------------------------------------------------------- the model
def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ELU())


class PatchDrive(SteeringModel):
    """Global low-resolution stream + top-k high-resolution patches + attention fusion.

    Args:
        input_size: ``(H, W)``; both must be multiples of the cell (``4 * downscale``).
        k: patches per frame.
        patch: patch side in input pixels (a multiple of 8, at most min(H, W)).
        downscale: the global stream sees the frame average-pooled by this factor.
        nms: spread the patches over distinct saliency peaks (see :func:`select_cells`).
        global_channels: widths of the global CNN's four 3x3 convolutions (strides 1, 2, 2, 1).
        patch_channels: widths of the patch CNN's four 3x3 convolutions (strides 2, 2, 2, 1).
        dim: token width.
        heads: attention heads (must divide ``dim``).
        hidden: widths of the head's hidden layers.
        dropout: dropout before every layer of the head.
        out_scale: the head's output is multiplied by this (as in PilotNet).
        selection_weight: lambda of the patch-selection loss (see the module notes); 0 keeps
            the straight-through weights, > 0 gates the patches with ``sigmoid(logit)``.

    Shape:
        (B, 3, H, W) float in [0, 1] -> (B,) road-wheel degrees, positive = left.
    """

    def __init__(
        self,
        input_size: tuple[int, int] = (160, 320),
        k: int = 8,
        patch: int = 32,
        downscale: int = 4,
        nms: bool = True,
        global_channels: Sequence[int] = (24, 32, 48, 64),
        patch_channels: Sequence[int] = (24, 48, 64, 64),
        dim: int = 64,
        heads: int = 4,
        hidden: Sequence[int] = (100, 50, 10),
        dropout: float = 0.0,
        out_scale: float = 10.0,
        selection_weight: float = 0.0,
    ) -> None:
        super().__init__(input_size)
        self.selection_weight = float(selection_weight)
        H, W = self.input_size
        self.downscale, self.k, self.patch, self.nms = int(downscale), int(k), int(patch), bool(nms)
        self.cell = GLOBAL_STRIDE * self.downscale
        if H % (2 * self.cell) or W % (2 * self.cell):
            raise PDNError(f"patchdrive: input_size {H}x{W} must be a multiple of {2 * self.cell} on both sides "
                           f"(twice the saliency cell of {self.cell} px at downscale {self.downscale})")
        if self.patch % 8 or not 8 <= self.patch <= min(H, W):
            raise PDNError(f"patchdrive: patch must be a multiple of 8 between 8 and {min(H, W)}, got {self.patch}")
        self.grid = (H // self.cell, W // self.cell)
        n_cells = self.grid[0] * self.grid[1]
        if not 1 <= self.k <= n_cells:
            raise PDNError(f"patchdrive: k must lie in [1, {n_cells}] (cells of the {self.grid[0]}x{self.grid[1]} "
                           f"saliency grid), got {self.k}")
        if len(global_channels) != 4 or len(patch_channels) != 4:
            raise PDNError("patchdrive: global_channels and patch_channels need 4 widths each")
        if dim % heads:
            raise PDNError(f"patchdrive: heads ({heads}) must divide dim ({dim})")
        self.out_scale = float(out_scale)
        self.norm = ColorNorm.pilotnet_yuv()

        g = list(global_channels)
        self.global_net = nn.Sequential(_conv(3, g[0], 1), _conv(g[0], g[1], 2), _conv(g[1], g[2], 2),
                                        _conv(g[2], g[3], 1))  # (B, g3, gh, gw)
        self.saliency_head = nn.Conv2d(g[3], 1, 1)
        self.global_tokens = nn.Conv2d(g[3], dim, 2, stride=2)  # (B, dim, gh/2, gw/2)
        n_tokens = (self.grid[0] // 2) * (self.grid[1] // 2)
        self.global_pos = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)

        p = list(patch_channels)
        self.patch_net = nn.Sequential(_conv(3, p[0], 2), _conv(p[0], p[1], 2), _conv(p[1], p[2], 2),
                                       _conv(p[2], p[3], 1), nn.Flatten())
        self.patch_proj = nn.Linear(p[3] * (self.patch // 8) ** 2, dim)
        self.cell_embed = nn.Embedding(n_cells, dim)
        nn.init.normal_(self.cell_embed.weight, std=0.02)
        # No normalisation after the residual fusion: a per-token LayerNorm there kept the model at
        # the mean steering (measured: no fit of 256 frames in 60 Adam steps; without it, MSE 8.0 -> 0.6).
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

        layers: list[nn.Module] = [nn.Flatten()]
        width = n_tokens * dim
        for h_out in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h_out), nn.ELU()]
            width = h_out
        layers += [nn.Dropout(dropout), nn.Linear(width, 1)]
        self.head = nn.Sequential(*layers)

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """Saliency logits (B, gh, gw) of images (B, 3, H, W) (the global stream only)."""
        self.check_input(x)
        return self.saliency_head(self.global_net(self.norm(F.avg_pool2d(x, self.downscale))))[:, 0]

    def forward_details(self, x: torch.Tensor, attention: bool = False) -> PatchDriveOutput:
        """One forward pass, returning the steering and the selection behind it.

        Args:
            x: (B, 3, H, W) images in [0, 1].
            attention: also return the fusion's attention weights (a slower attention path).

        Returns:
            :class:`PatchDriveOutput` (steering, saliency logits, selected cells, patch corners).
        """
        self.check_input(x)
        B = x.shape[0]
        # The colour map is per pixel and affine, so it commutes with pooling and cropping: it is
        # applied to the pooled frame and to the crops only, never to the full-resolution frame.
        feat = self.global_net(self.norm(F.avg_pool2d(x, self.downscale)))  # (B, Cg, gh, gw)
        logits = self.saliency_head(feat)[:, 0]  # (B, gh, gw)
        index = select_cells(logits, self.k, self.nms)  # (B, k)
        corners = cell_corners(index, self.grid[1], self.cell, self.patch, self.input_size)  # (B, k, 2)
        crops = self.norm(crop_patches(x, corners, self.patch))  # (B*k, 3, P, P) YUV in [-1, 1]
        tokens = self.patch_proj(self.patch_net(crops)).view(B, self.k, -1)  # (B, k, d)
        weights = self.patch_weights(logits, index)  # (B, k)
        tokens = (tokens + self.cell_embed(index)) * weights[..., None]
        query = self.global_tokens(feat).flatten(2).transpose(1, 2) + self.global_pos  # (B, G, d)
        fused, attn = self.attn(query, tokens, tokens, need_weights=attention)  # (B, G, d), (B, G, k) or None
        steering = self.head(query + fused)[:, 0] * self.out_scale  # (B,)
        return PatchDriveOutput(steering, logits, index, corners, weights, attn)

    @property
    def gated(self) -> bool:
        """Whether the patches are gated by ``sigmoid(logit)`` (``selection_weight > 0``)."""
        return self.selection_weight > 0

    def patch_weights(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The driver's weights (B, k) of the selected cells: gates if :attr:`gated`, else straight-through 1s."""
        return gate_weights(logits, index) if self.gated else straight_through_weights(logits, index)

    def cell_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """The driver's weight of every cell (B, gh, gw): the gate, or the softmax over the grid
        (the ``w`` of the straight-through weights) when not gated."""
        if self.gated:
            return logits.sigmoid()
        return logits.flatten(1).softmax(dim=1).view_as(logits)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, loss_name: str = "mse") -> torch.Tensor:
        """``L_task + selection_weight * mean_b sum_i w_i`` (the design's Driver Module loss).

        ``L_task`` is ``pdn train``'s MSE or Huber (delta 1 degree); with ``selection_weight = 0``
        it is computed exactly as for any other model (same operations, same values).

        Args:
            x: (B, 3, H, W) images in [0, 1].
            y: (B,) road-wheel degrees.
            loss_name: ``mse`` or ``huber``.
        """
        out = self.forward_details(x)
        if loss_name == "mse":
            loss = F.mse_loss(out.steering, y)
        elif loss_name == "huber":
            loss = F.huber_loss(out.steering, y, delta=1.0)
        else:
            raise PDNError(f"{self.name}: unknown loss {loss_name!r} (mse or huber)")
        if self.gated:
            loss = loss + self.selection_weight * selection_penalty(out.saliency).mean()
        return loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Steering (B,) in degrees for images (B, 3, H, W) in [0, 1]."""
        return self.forward_details(x).steering


def attention_macs(model: PatchDrive) -> int:
    """Multiply-accumulates of the attention that :func:`count_macs` cannot see, per image.

    ``nn.MultiheadAttention`` applies its input and output projections as raw weights, so no
    layer hook fires: query projection ``G d^2``, key and value projections ``2 k d^2``, scores
    and weighted sum ``2 G k d``, output projection ``G d^2``.
    """
    d = model.attn.embed_dim
    G = model.global_pos.shape[0]
    return 2 * G * d * d + 2 * model.k * d * d + 2 * G * model.k * d


def patchdrive_macs(model: PatchDrive) -> int:
    """All multiply-accumulates of one image: :func:`count_macs` plus :func:`attention_macs`."""
    return count_macs(model) + attention_macs(model)


def model_macs(model: nn.Module) -> int:
    """Multiply-accumulates of one image of any steering model: :func:`patchdrive_macs` for a PatchDrive
    (its attention too), :func:`count_macs` (convolutions and linear layers) otherwise."""
    return patchdrive_macs(model) if isinstance(model, PatchDrive) else count_macs(model)


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PDNError(f"model 'patchdrive': {name} must be an integer, got {value!r}")
    return value


def _check_selection_weight(model: str, value: object) -> float:
    """``selection_weight`` must be a finite number >= 0 (one-line error naming the model)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PDNError(f"model '{model}': selection_weight must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_sizes(model: str, **values: object) -> None:
    """Each of ``values`` must be an integer >= 1 (one-line error naming the model and the key)."""
    for name, v in values.items():
        if _check_int(name, v) < 1:
            raise PDNError(f"model '{model}': {name} must be >= 1, got {v}")


@register_model("patchdrive")
def patchdrive(
    *,
    input_size: tuple[int, int] = (160, 320),
    k: int = 8,
    patch: int = 32,
    downscale: int = 4,
    nms: bool = True,
    dropout: float = 0.0,
    out_scale: float = 10.0,
    selection_weight: float = 0.0,
) -> PatchDrive:
    """Global 1/4-resolution CNN, saliency top-k 32x32 high-resolution patches, attention fusion."""
    _check_sizes("patchdrive", k=k, patch=patch, downscale=downscale)
    return PatchDrive(input_size, k=k, patch=patch, downscale=downscale, nms=bool(nms), dropout=dropout,
                      out_scale=out_scale,
                      selection_weight=_check_selection_weight("patchdrive", selection_weight))


@register_model("patchdrive_tiny")
def patchdrive_tiny(
    *,
    input_size: tuple[int, int] = (64, 128),
    k: int = 3,
    patch: int = 16,
    downscale: int = 2,
    nms: bool = True,
    dropout: float = 0.0,
    out_scale: float = 10.0,
    selection_weight: float = 0.0,
) -> PatchDrive:
    """PatchDrive's structure with tiny widths (4-6-8-8 / 4-6-8-8, 16-dim tokens) for fast tests."""
    _check_sizes("patchdrive_tiny", k=k, patch=patch, downscale=downscale)
    return PatchDrive(input_size, k=k, patch=patch, downscale=downscale, nms=bool(nms),
                      global_channels=(4, 6, 8, 8), patch_channels=(4, 6, 8, 8), dim=16, heads=2, hidden=(16, 8),
                      dropout=dropout, out_scale=out_scale,
                      selection_weight=_check_selection_weight("patchdrive_tiny", selection_weight))
