"""The one compositing function: paste a texture into frames through per-pixel texture coordinates.

Holds :func:`apply_sticker` (a printed sticker, lit like the surface it covers), :func:`apply_dirt`
(a darkening multiplier on the road's own colour) and :func:`sample_texture` (the texel lookup
both use). A frame without the sticker plus, per pixel, the sticker coordinates it sees (``uv``,
``grid_sample``'s [-1, 1] convention), whether it sees the sticker (``mask``) and how the sticker
is lit there (``gain``, ``offset``) give

    frame = where(mask, clamp(texture(uv) * gain + offset, 0, 1), background)

The renderer returns exactly these maps (``Renderer.render(..., with_maps=True)``), and the
attacks' scenes (``attacks.scenes``) hold them for many poses, so the renderer's frames, the
attack's optimisation and its evaluation all composite through this one function. It lives in
the core because the core never imports ``attacks``.

Dirt mode (Sato et al., "Dirty Road Can Attack: Security of Deep Learning based Automated Lane
Centering under Physical-World Attack", USENIX Security 2021): the texture is a grey multiplier
on the road's own colour, ``frame = background - (background - offset) * (1 - m)``, so it can
only darken (:func:`apply_dirt`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texel lookup, border-clamped (the renderer's own lookup, via ``grid_sample``).

    Args:
        texture: (C, h, w) or (B, C, h, w).
        uv: (B, H, W, 2) or (H, W, 2) in ``grid_sample``'s [-1, 1] convention (x = column).

    Returns:
        (B, C, H, W) texels; gradients flow to ``texture``.
    """
    if uv.ndim == 3:
        uv = uv.unsqueeze(0)
    if texture.ndim == 3:
        texture = texture.unsqueeze(0)
    b = max(texture.shape[0], uv.shape[0])
    texture = texture.expand(b, -1, -1, -1)
    uv = uv.expand(b, -1, -1, -1).to(texture.dtype)
    return F.grid_sample(texture, uv, mode="bilinear", padding_mode="border", align_corners=False)


def mask4(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (H, W) bool -> (B|1, 1, H, W)."""
    return mask.reshape(-1, 1, *mask.shape[-2:]).bool()


def _paste(
    frames: torch.Tensor, texture: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor,
    gain: torch.Tensor | None, offset: torch.Tensor | None, sparse: bool | None, dirt: bool,
) -> torch.Tensor:
    """Shared body of :func:`apply_sticker` and :func:`apply_dirt`.

    Dense: ``grid_sample`` over the whole frame, then ``where``. Sparse: only the covered pixels
    are gathered, sampled and written into a copy of the frames (the same arithmetic per pixel,
    so the same values bit for bit); several times faster on a CPU, where a sticker covers a
    few percent of the frame, but ``nonzero`` waits for the device, so accelerators default to dense.
    """
    if sparse is None:
        sparse = frames.device.type == "cpu"
    B = frames.shape[0]
    if not sparse or texture.ndim == 4:
        texel = sample_texture(texture, uv)  # (B, C, H, W)
        lit = frames if offset is None else frames - offset
        if dirt:
            value = frames - lit.clamp(min=0.0) * (1.0 - texel)
        else:
            value = texel if gain is None else texel * gain
            value = (value if offset is None else value + offset).clamp(0.0, 1.0)
        return torch.where(mask4(mask), value, frames)
    H, W = frames.shape[-2:]
    b, y, x = mask.expand(B, H, W).nonzero(as_tuple=True)  # (P,) each
    grid = uv.expand(B, H, W, 2)[b, y, x].to(texture.dtype).view(1, 1, -1, 2)
    texel = F.grid_sample(texture.unsqueeze(0), grid, mode="bilinear", padding_mode="border",
                          align_corners=False)[0, :, 0].t()  # (P, C)

    def at(t: torch.Tensor) -> torch.Tensor:  # (N|1, 3, H|1, W|1) -> (P, 3)
        return t.expand(B, 3, H, W)[b, :, y, x]

    if dirt:
        here = frames[b, :, y, x]
        lit = here if offset is None else here - at(offset)
        value = here - lit.clamp(min=0.0) * (1.0 - texel)
    else:
        value = texel if gain is None else texel * at(gain)
        value = (value if offset is None else value + at(offset)).clamp(0.0, 1.0)
    out = frames.clone()
    out[b, :, y, x] = value.to(out.dtype)
    return out


def apply_sticker(
    frames: torch.Tensor, texture: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor,
    gain: torch.Tensor | None = None, offset: torch.Tensor | None = None, sparse: bool | None = None,
) -> torch.Tensor:
    """Paste a sticker texture into frames (the renderer's composite and the core of every sticker attack).

    Args:
        frames: (B, 3, H, W) frames without the sticker, in [0, 1].
        texture: (3, h, w) or (B, 3, h, w) sticker texture in [0, 1].
        uv: (B, H, W, 2) or (H, W, 2) sticker coordinates seen by each pixel (``grid_sample`` convention).
        mask: (B, H, W) or (H, W) bool, where the sticker is seen.
        gain: lighting of the sticker, broadcastable to (B, 3, H, W); None = 1.
        offset: additive haze, broadcastable to (B, 3, H, W); None = 0.
        sparse: compute only the covered pixels (same result); default: on a CPU.

    Returns:
        (B, 3, H, W) frames. Pixels outside ``mask`` are ``frames``' own values, bit for bit;
        inside, ``clamp(texel * gain + offset, 0, 1)`` (a saturating camera, as in the renderer).
        Differentiable in ``texture`` (and in ``frames`` outside the mask).
    """
    return _paste(frames, texture, uv, mask, gain, offset, sparse, dirt=False)


def apply_dirt(
    frames: torch.Tensor, multiplier: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor,
    offset: torch.Tensor | None = None, sparse: bool | None = None,
) -> torch.Tensor:
    """Darken the road under a dirt pattern (Sato et al. 2021): ``frames - (frames - offset) * (1 - m)``.

    The multiplier acts on the lit road colour without the haze (``frames - offset``), as paint
    or dirt on the asphalt would; with ``m <= 1`` no pixel gets brighter.

    Args:
        frames: (B, 3, H, W) frames without the pattern.
        multiplier: (1, h, w), (3, h, w) or batched (B, C, h, w), values in [0, 1].
        uv, mask, sparse: as in :func:`apply_sticker`.
        offset: the haze of each pixel (broadcastable to frames); None = 0.

    Returns:
        (B, 3, H, W) frames, unchanged bit for bit outside ``mask``.
    """
    return _paste(frames, multiplier, uv, mask, None, offset, sparse, dirt=True)


__all__ = ["apply_dirt", "apply_sticker", "mask4", "sample_texture"]
