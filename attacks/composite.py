"""The learnable sticker of the attacks and the placement jitter of its footprint.

* :class:`StickerLayer`: an unconstrained parameter mapped into a valid texture (``sigmoid``; in
  dirt mode a grey multiplier in :data:`DIRT_RANGE`), composited with the core's one compositing
  function (:func:`drivenet_patch.world.composite.apply_sticker` / ``apply_dirt``).
* :func:`shift_maps`: moves each frame's sticker footprint by whole pixels (EOT placement jitter).
"""

from __future__ import annotations

import torch
from torch import nn

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.composite import apply_dirt, apply_sticker

DIRT_RANGE = (0.3, 1.0)  # darkening multiplier of dirt mode (Sato et al. 2021 keep the road recognisable)


def shift_maps(uv: torch.Tensor, mask: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each frame's sticker footprint by whole pixels (placement jitter), exactly.

    Pixel (y, x) of the result sees the sticker texel that (y - dy, x - dx) saw; pixels whose
    source lies outside the frame see no sticker. The lighting (gain, offset) stays with the
    image position: a sticker laid a little elsewhere is lit like the road it now covers.

    Args:
        uv: (B, H, W, 2); mask: (B, H, W).
        shift: (B, 2) integer ``(dx, dy)`` in pixels (right, down).

    Returns:
        The shifted ``(uv, mask)``.
    """
    B, H, W = mask.shape
    dev = mask.device
    shift = shift.to(dev).long()
    rows = torch.arange(H, device=dev).view(1, H, 1) - shift[:, 1].view(B, 1, 1)  # (B, H, 1)
    cols = torch.arange(W, device=dev).view(1, 1, W) - shift[:, 0].view(B, 1, 1)  # (B, 1, W)
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)  # (B, H, W)
    src = (rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)).view(B, H * W)
    uv = torch.gather(uv.reshape(B, H * W, 2), 1, src.unsqueeze(-1).expand(-1, -1, 2)).view(B, H, W, 2)
    mask = torch.gather(mask.reshape(B, H * W), 1, src).view(B, H, W) & inside
    return uv, mask


class StickerLayer(nn.Module):
    """A learnable sticker: an unconstrained parameter mapped into the valid range, and its composite.

    ``texture = sigmoid(param)`` keeps every texel in [0, 1] without clipping (no dead
    gradients at the bounds). In dirt mode the parameter is one grey channel and
    ``texture = lo + (hi - lo) * sigmoid(param)``, a darkening multiplier in ``dirt_range``.

    Args:
        texture_hw: ``(h, w)`` texels.
        dirt: dirt mode (see :func:`apply_dirt`).
        dirt_range: ``(lo, hi)`` of the dirt multiplier, ``0 <= lo < hi <= 1``.
        generator: draws the initial parameter, ``N(0, init_std)`` (around mid grey; in dirt mode
            ``N(2, init_std)``, a light darkening). None: the deterministic mid point.
        init_std: spread of the initial parameter.

    Shape:
        forward: frames (B, 3, H, W), uv (B, H, W, 2), mask (B, H, W) -> (B, 3, H, W).
    """

    def __init__(self, texture_hw: tuple[int, int], dirt: bool = False,
                 dirt_range: tuple[float, float] = DIRT_RANGE, generator: torch.Generator | None = None,
                 init_std: float = 0.5) -> None:
        super().__init__()
        h, w = (int(x) for x in texture_hw)
        if h < 1 or w < 1:
            raise PDNError(f"texture_hw must be >= 1 x 1, got {texture_hw}")
        lo, hi = (float(x) for x in dirt_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise PDNError(f"dirt_range must satisfy 0 <= lo < hi <= 1, got {dirt_range}")
        self.dirt = bool(dirt)
        self.dirt_range = (lo, hi)
        shape = (1 if dirt else 3, h, w)
        dev = generator.device if generator is not None else None
        init = torch.zeros(shape, device=dev)
        if generator is not None:
            init = torch.randn(shape, generator=generator, device=dev) * init_std
        if dirt:
            init = init + 2.0
        self.param = nn.Parameter(init.cpu())

    def texture(self) -> torch.Tensor:
        """The sticker (3, h, w) in [0, 1]; in dirt mode the multiplier repeated over the channels."""
        t = torch.sigmoid(self.param)
        if self.dirt:
            lo, hi = self.dirt_range
            t = (lo + (hi - lo) * t).expand(3, -1, -1)
        return t

    def forward(self, frames: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor,
                gain: torch.Tensor | None = None, offset: torch.Tensor | None = None) -> torch.Tensor:
        if self.dirt:
            return apply_dirt(frames, self.texture()[:1], uv, mask, offset)
        return apply_sticker(frames, self.texture(), uv, mask, gain, offset)


__all__ = ["DIRT_RANGE", "StickerLayer", "shift_maps"]
