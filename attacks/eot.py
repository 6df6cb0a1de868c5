"""Expectation over Transformation for the sticker attack: the ranges, the draw and its application.

Each step of :func:`attacks.sticker.optimize_sticker` draws a batch of scenes and photometric
transforms (:func:`draw_eot`, from an explicit generator: replayable), composites the texture
into the drawn scenes and applies the transforms (:func:`eot_frames`); Athalye et al.,
"Synthesizing Robust Adversarial Examples", ICML 2018.

``T``: scene (with its lighting), brightness, contrast and colour temperature of the composited
frame, Gaussian blur, sensor noise, and a placement jitter of a few pixels. The jitter is
differentiable in the texture (:func:`photometric`), unlike the training augmentation of
:mod:`drivenet_patch.training.augment_batch`, with which it shares the noise fields
(:func:`~drivenet_patch.training.augment_batch.noise_bank`); the colour-temperature gain is the
renderer's own (:func:`drivenet_patch.world.render.temperature_rgb`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attacks.composite import shift_maps
from attacks.scenes import StickerScenes
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.training.augment_batch import noise_bank
from drivenet_patch.world.composite import apply_dirt, apply_sticker
from drivenet_patch.world.render import temperature_rgb


def check_range(name: str, value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    """Validate a ``(lo, hi)`` range inside ``[low, high]``; returns it as floats."""
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise PDNError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high):
        raise PDNError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class EOTConfig:
    """Ranges of the transformations drawn per EOT sample (each uniform in its range).

    Attributes:
        brightness: multiplicative gain of the composited frame.
        contrast: contrast about the frame's mean.
        temperature: colour temperature, -1 (cool) .. +1 (warm), as the renderer's lighting
            (red x (1 + 0.12 t), blue x (1 - 0.14 t)).
        blur_sigma: Gaussian blur sigma in pixels (defocus, motion, print softness).
        noise_std: standard deviation of additive Gaussian sensor noise.
        jitter_px: the sticker's footprint moves by up to this many whole pixels in x and y
            (placement error, vibration, pose noise beyond the scenes).
    """

    # Measured against the default-recipe PilotNet (2.0 x 3.5 m road sticker, 300 steps): blur up to
    # 1 px, noise up to 0.02 and 2 px jitter left 1.4-1.9 deg of held-out deviation; the ranges below
    # keep 2.2-2.8 deg. At 66x200 a road sticker 10 m ahead spans about 7 rows, so a 2-row jitter
    # moves it by a third of its height.
    brightness: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)
    temperature: tuple[float, float] = (-0.5, 0.5)
    blur_sigma: tuple[float, float] = (0.0, 0.5)
    noise_std: tuple[float, float] = (0.0, 0.01)
    jitter_px: int = 1

    def __post_init__(self) -> None:
        for name, low, high in (("brightness", 0.05, 5.0), ("contrast", 0.05, 5.0), ("temperature", -1.0, 1.0),
                                ("blur_sigma", 0.0, 5.0), ("noise_std", 0.0, 0.5)):
            object.__setattr__(self, name, check_range(f"eot.{name}", getattr(self, name), low, high))
        if isinstance(self.jitter_px, bool) or not isinstance(self.jitter_px, int) or not 0 <= self.jitter_px <= 32:
            raise PDNError(f"eot.jitter_px must be an integer in [0, 32], got {self.jitter_px!r}")

    @classmethod
    def identity(cls) -> EOTConfig:
        """No transformation: only the scenes vary."""
        return cls((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), 0)


@dataclass
class EOTParams:
    """One batch of drawn transformations (replayable: :func:`eot_frames` is deterministic given these).

    Shapes: idx, brightness, contrast, temperature, blur_sigma (B,); noise (B, 3, H, W) or None;
    shift (B, 2) integer ``(dx, dy)`` or None.
    """

    idx: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    temperature: torch.Tensor
    blur_sigma: torch.Tensor
    noise: torch.Tensor | None = None
    shift: torch.Tensor | None = None


def draw_eot(cfg: EOTConfig, n_scenes: int, batch: int, size: tuple[int, int], generator: torch.Generator,
             device: str | torch.device | None = None) -> EOTParams:
    """Draw scene indices and transformations for one step (on the generator's device, then moved).

    Args:
        cfg: the ranges.
        n_scenes: scenes to draw from (with replacement).
        batch: samples.
        size: frame ``(H, W)`` (for the noise).
        generator: the only source of randomness.
        device: where the parameters go (default: the generator's device).
    """
    g = generator
    gd = g.device

    def uniform(lo_hi: tuple[float, float]) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(batch, generator=g, device=gd)

    idx = torch.randint(0, n_scenes, (batch,), generator=g, device=gd)
    p = EOTParams(idx, uniform(cfg.brightness), uniform(cfg.contrast), uniform(cfg.temperature),
                  uniform(cfg.blur_sigma))
    if cfg.noise_std[1] > 0:  # fields drawn from a fixed bank of independent unit fields, scaled
        std = uniform(cfg.noise_std)
        bank = noise_bank((3, *size), torch.float32, gd)
        pick = torch.randint(0, len(bank) // 2, (batch,), generator=g, device=gd)
        p.noise = bank.index_select(0, pick).mul_(std.view(-1, 1, 1, 1))
    if cfg.jitter_px > 0:
        p.shift = torch.randint(-cfg.jitter_px, cfg.jitter_px + 1, (batch, 2), generator=g, device=gd)
    dev = torch.device(device) if device is not None else gd
    for name in ("idx", "brightness", "contrast", "temperature", "blur_sigma", "noise", "shift"):
        t = getattr(p, name)
        if t is not None:
            setattr(p, name, t.to(dev))
    return p


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with a sigma per image (replicate padding).

    Args:
        x: (B, C, H, W).
        sigma: (B,) in pixels (0 leaves the image unchanged).
        radius: kernel half-width (e.g. ``ceil(3 * max sigma)``); 0 returns ``x``.
    """
    if radius <= 0:
        return x
    B, C, H, W = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-3).view(B, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(C, dim=0)  # (B*C, K)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(B * C, 1, 1, -1), groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(B * C, 1, -1, 1), groups=B * C)
    return y.view(B, C, H, W)


def photometric(frames: torch.Tensor, params: EOTParams, blur_radius: int) -> torch.Tensor:
    """Contrast, brightness and colour temperature, blur, noise; clamped to [0, 1].

    Contrast scales about the frame's mean (taken as a constant: a sticker moves it by little,
    and no gradient has to flow through a whole-frame reduction); contrast, brightness and
    temperature then form one per-channel affine map ``x * a + b``.

    Shape:
        (B, 3, H, W) -> (B, 3, H, W).
    """
    mean = frames.detach().mean(dim=(1, 2, 3))
    return _photometric(frames, params, blur_radius, mean, params.noise)


def _photometric(frames: torch.Tensor, params: EOTParams, blur_radius: int, mean: torch.Tensor,
                 noise: torch.Tensor | None) -> torch.Tensor:
    """:func:`photometric` with the frames' means (B,) and the noise (matching ``frames``) given."""
    B = frames.shape[0]
    k = params.brightness.view(B, 1) * temperature_rgb(params.temperature)  # (B, 3)
    c = params.contrast.view(B, 1)
    a, b = (c * k).view(B, 3, 1, 1), (mean.view(B, 1) * (1.0 - c) * k).view(B, 3, 1, 1)
    x = torch.addcmul(b, frames, a)
    x = gaussian_blur(x, params.blur_sigma, blur_radius)
    if noise is not None:
        x = x + noise
    return x.clamp(0.0, 1.0)


def _photometric_near(frames: torch.Tensor, params: EOTParams, radius: int,
                      box: tuple[int, int, int, int] | None) -> torch.Tensor:
    """:func:`photometric`, the same values bit for bit, differentiable only where the sticker can reach.

    The whole frames are transformed without autograd; the pixels within ``radius`` (the blur's reach)
    of ``box`` (rows ``y0:y1``, columns ``x0:x1``: where any frame's sticker lies) are transformed again
    with autograd from a crop that extends ``radius`` further (the blur reads no pixel beyond it; at the
    frame's border the crop's replicate padding is the frame's), and written over them. Outside the box
    the frames do not depend on the texture, so the gradient is the same, and the backward pass touches
    the box only, not every pixel of every frame."""
    mean = frames.detach().mean(dim=(1, 2, 3))
    with torch.no_grad():
        out = _photometric(frames.detach(), params, radius, mean, params.noise)
    if box is None or not frames.requires_grad:
        return out
    H, W = frames.shape[-2:]
    y0, y1, x0, x1 = box
    oy0, oy1, ox0, ox1 = max(y0 - radius, 0), min(y1 + radius, H), max(x0 - radius, 0), min(x1 + radius, W)
    iy0, iy1, ix0, ix1 = max(oy0 - radius, 0), min(oy1 + radius, H), max(ox0 - radius, 0), min(ox1 + radius, W)
    noise = None if params.noise is None else params.noise[..., iy0:iy1, ix0:ix1]
    part = _photometric(frames[..., iy0:iy1, ix0:ix1], params, radius, mean, noise)
    out[..., oy0:oy1, ox0:ox1] = part[..., oy0 - iy0:oy1 - iy0, ox0 - ix0:ox1 - ix0]
    return out


def eot_frames(scenes: StickerScenes, texture: torch.Tensor, params: EOTParams, cfg: EOTConfig,
               dirt: bool = False) -> torch.Tensor:
    """Composite ``texture`` into the drawn scenes and apply the drawn transformations.

    Args:
        scenes: the scenes.
        texture: (3, h, w) sticker (or dirt multiplier) in [0, 1].
        params: from :func:`draw_eot`.
        cfg: the ranges the params were drawn from (fixes the blur kernel size).
        dirt: dirt mode.

    Returns:
        (B, 3, H, W) frames, differentiable in ``texture``.
    """
    if not dirt and texture.ndim == 3 and scenes.background.device.type == "cpu":
        frames, box = _sparse_sticker(scenes, texture, params)
        return _photometric_near(frames, params, math.ceil(3.0 * cfg.blur_sigma[1]), box)
    else:
        bg, uv, mask, gain, offset = scenes.maps(params.idx)
        if params.shift is not None:
            uv, mask = shift_maps(uv, mask, params.shift)
        if dirt:
            frames = apply_dirt(bg, texture[:1], uv, mask, offset)
        else:
            frames = apply_sticker(bg, texture, uv, mask, gain, offset)
    return photometric(frames, params, math.ceil(3.0 * cfg.blur_sigma[1]))


def _scene_rows(t: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
    """Row index into a scene map that may be shared by all scenes (leading dim 1)."""
    return torch.zeros_like(scene) if t.shape[0] == 1 else scene


def _sparse_sticker(scenes: StickerScenes, texture: torch.Tensor, params: EOTParams
                    ) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
    """:func:`shift_maps` then :func:`~drivenet_patch.world.composite.apply_sticker` (its sparse path), fused:
    the same values bit for bit, but only the covered pixels are touched. A pixel (y, x) of the unshifted
    footprint lands at (y + dy, x + dx) with the texel it saw, lit by the map at its new place; pixels
    shifted out of the frame are dropped. No whole-frame gather of the maps, and the lighting maps are
    read at the covered pixels straight from the scenes. Returns the frames and the box (rows y0:y1,
    columns x0:x1) holding every frame's sticker pixels (None when no frame sees it)."""
    idx = params.idx
    bg = scenes.background
    frames = bg[_scene_rows(bg, idx)]  # a new tensor: the output's base
    B, _, H, W = frames.shape
    mask = scenes.mask
    m = mask[_scene_rows(mask, idx)] if mask.ndim == 3 else mask.expand(B, H, W)
    b, y, x = m.nonzero(as_tuple=True)
    ty, tx = y, x
    if params.shift is not None:
        shift = params.shift.to(b.device).long()
        ty, tx = y + shift[b, 1], x + shift[b, 0]
        keep = (ty >= 0) & (ty < H) & (tx >= 0) & (tx < W)
        b, y, x, ty, tx = b[keep], y[keep], x[keep], ty[keep], tx[keep]
    scene = idx[b]
    uv = scenes.uv if scenes.uv.ndim == 4 else scenes.uv.unsqueeze(0)
    grid = uv[_scene_rows(uv, scene), y, x].to(texture.dtype).view(1, 1, -1, 2)
    texel = torch.nn.functional.grid_sample(texture.unsqueeze(0), grid, mode="bilinear", padding_mode="border",
                                            align_corners=False)[0, :, 0].t()  # (P, 3)

    def at(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        full = t.expand(t.shape[0], 3, H, W)
        return full[_scene_rows(t, scene), :, ty, tx]

    gain, offset = at(scenes.gain), at(scenes.offset)
    value = texel if gain is None else texel * gain
    value = (value if offset is None else value + offset).clamp(0.0, 1.0)
    frames[b, :, ty, tx] = value.to(frames.dtype)
    box = None if len(ty) == 0 else (int(ty.min()), int(ty.max()) + 1, int(tx.min()), int(tx.max()) + 1)
    return frames, box


def eot_footprint(scenes: StickerScenes, params: EOTParams) -> torch.Tensor:
    """Where the sticker lies in the frames :func:`eot_frames` makes from ``params`` (jitter included).

    Shape:
        -> (B, H, W) bool.
    """
    _, uv, mask, _, _ = scenes.maps(params.idx)
    if params.shift is not None:
        uv, mask = shift_maps(uv, mask, params.shift)
    return mask


__all__ = [
    "EOTConfig",
    "EOTParams",
    "check_range",
    "draw_eot",
    "eot_footprint",
    "eot_frames",
    "gaussian_blur",
    "photometric",
]
