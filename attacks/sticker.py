"""The printable sticker attack: one texture, optimised over many views with printability penalties.

Each step draws a batch of precomputed scenes (poses on real approach trajectories, or real
frames) and photometric transforms, composites the current texture into them, and takes an
Adam step on the expected loss (Expectation over Transformation: Athalye et al., "Synthesizing
Robust Adversarial Examples", ICML 2018)::

    min_param  E_{scene, t ~ T} [ objective(f(t(composite(scene, sigmoid(param)))), f(scene)) ]
               + w_nps * NPS(texture) / NPS(texture_0) + w_tv * TV(texture)

* ``texture = sigmoid(param)`` keeps the sticker in [0, 1] without clipping (dirt mode: a grey
  multiplier in [0.3, 1] on the road colour, Sato et al. 2021, see :mod:`attacks.placement`).
* ``T``: scene (with its lighting), brightness, contrast and colour temperature of the
  composited frame, Gaussian blur, sensor noise, and a placement jitter of a few pixels.
* NPS and TV are the printability penalties of Sharif et al. ("Accessorize to a Crime", CCS
  2016), from :mod:`attacks.printability`. With ~30 palette colours the raw NPS, a product of
  distances, spans orders of magnitude, so it enters relative to the initial texture's score:
  ``nps_weight`` is then in the objective's units (degrees for the hinge). Not used in dirt mode.
* The objective is a parameter (:mod:`attacks.base`); the config's ``target``/``angle_deg``/
  ``loss`` name the built-in ones. ``f(scene)``, the clean prediction, is computed once on the
  untransformed scenes.
* Against a model that chooses where to look (PatchDrive, :mod:`drivenet_patch.models.patchdrive`)
  ``saliency_weight > 0`` adds ``w_sal * -log(saliency mass on the sticker's cells)``
  (:func:`saliency_grab_loss`): the sticker learns to pull the high-resolution patches onto
  itself, so the model "follows the patch". :func:`saliency_capture` measures how often it does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from attacks.base import (
    LOSSES,
    TARGETS,
    Objective,
    StickerResult,
    attack_mode,
    deviation,
    make_objective,
    model_device,
    predict,
)
from attacks.placement import DIRT_RANGE, StickerLayer, StickerScenes, apply_dirt, apply_sticker, shift_maps
from attacks.printability import load_palette, nps, total_variation
from drivenet_patch.augment_batch import noise_bank
from drivenet_patch.drive import save_sticker
from drivenet_patch.errors import PDNError
from drivenet_patch.world.sticker import StickerPlacement

MAX_STEPS = 500
HISTORY_COLUMNS = ("step", "loss", "objective", "deviation_deg", "nps", "tv")
SALIENCY_COLUMN = "saliency_mass"  # added to the history when saliency_weight > 0
# Softmax temperature of the saliency objective. A trained PatchDrive's saliency logits are flat
# (measured: a range of 0.63 over the 200 cells of the 16-px grid), so at temperature 1 the mass is
# nearly the share of cells the sticker covers and barely moves (0.061 -> 0.064 in 60 steps, even at
# weight 50); at 0.1 the loss is about the ranking the top-k selection uses (held-out top-1 share
# 0.53 -> 0.94 in the same 60 steps at weight 2).
GRAB_TEMPERATURE = 0.1


def _range(name: str, value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
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
            object.__setattr__(self, name, _range(f"eot.{name}", getattr(self, name), low, high))
        if isinstance(self.jitter_px, bool) or not isinstance(self.jitter_px, int) or not 0 <= self.jitter_px <= 32:
            raise PDNError(f"eot.jitter_px must be an integer in [0, 32], got {self.jitter_px!r}")

    @classmethod
    def identity(cls) -> EOTConfig:
        """No transformation: only the scenes vary."""
        return cls((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), 0)


@dataclass(frozen=True)
class StickerConfig:
    """Settings of :func:`optimize_sticker` (validated on construction).

    Attributes:
        steps: optimisation steps (1 .. 500).
        lr: Adam learning rate on the unconstrained parameter (logits of the texture).
        batch: EOT samples (scene + transform) per step.
        texture_hw: ``(h, w)`` texels of the sticker.
        target: ``"left"``, ``"right"`` or ``"away"`` (see :func:`attacks.base.make_objective`).
        angle_deg: size of the push in degrees (> 0).
        loss: ``"hinge"`` or ``"mse"``.
        nps_weight: weight of the non-printability score (relative to the initial texture's).
        tv_weight: weight of the total variation.
        dirt: dirt mode: a grey darkening multiplier on the road colour instead of a printed texture.
        dirt_range: ``(lo, hi)`` of the dirt multiplier.
        palette: printer palette CSV for the NPS; None = the packaged default.
        init_std: spread of the initial logits around mid grey.
        eot: the transformation ranges.
        seed: seeds the default generator when none is passed.
        saliency_weight: weight of :func:`saliency_grab_loss` (0 = off; > 0 needs a
            patch-selecting model such as ``patchdrive``).
    """

    steps: int = 300
    lr: float = 0.05
    batch: int = 16
    texture_hw: tuple[int, int] = (32, 56)
    target: str = "left"
    angle_deg: float = 10.0
    loss: str = "hinge"
    nps_weight: float = 0.5
    tv_weight: float = 2.0
    dirt: bool = False
    dirt_range: tuple[float, float] = DIRT_RANGE
    palette: str | None = None
    init_std: float = 0.5
    eot: EOTConfig = field(default_factory=EOTConfig)
    seed: int = 0
    saliency_weight: float = 0.0

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
                bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise PDNError(f"{name} must be an integer {bound}, got {v!r}")

        integer("steps", 1, MAX_STEPS)
        integer("batch", 1, 4096)
        integer("seed", 0)
        try:
            h, w = (int(x) for x in self.texture_hw)
        except (TypeError, ValueError):
            raise PDNError(f"texture_hw must be (h, w), got {self.texture_hw!r}") from None
        if not (1 <= h <= 4096 and 1 <= w <= 4096):
            raise PDNError(f"texture_hw must be between 1x1 and 4096x4096 texels, got {self.texture_hw!r}")
        object.__setattr__(self, "texture_hw", (h, w))
        for name in ("lr", "angle_deg"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise PDNError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("nps_weight", "tv_weight", "init_std", "saliency_weight"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise PDNError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.target not in TARGETS:
            raise PDNError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.loss not in LOSSES:
            raise PDNError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        lo, hi = _range("dirt_range", self.dirt_range, 0.0, 1.0)
        if lo == hi:
            raise PDNError(f"dirt_range must have low < high, got {self.dirt_range!r}")
        object.__setattr__(self, "dirt_range", (lo, hi))
        if not isinstance(self.eot, EOTConfig):
            raise PDNError(f"eot must be an EOTConfig, got {type(self.eot).__name__}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- EOT
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
    B = frames.shape[0]
    t = params.temperature
    rgb = torch.stack([1.0 + 0.12 * t, torch.ones_like(t), 1.0 - 0.14 * t], dim=1)  # (B, 3)
    k = params.brightness.view(B, 1) * rgb  # (B, 3)
    c = params.contrast.view(B, 1)
    mean = frames.detach().mean(dim=(1, 2, 3)).view(B, 1)
    a, b = (c * k).view(B, 3, 1, 1), (mean * (1.0 - c) * k).view(B, 3, 1, 1)
    x = torch.addcmul(b, frames, a)
    x = gaussian_blur(x, params.blur_sigma, blur_radius)
    if params.noise is not None:
        x = x + params.noise
    return x.clamp(0.0, 1.0)


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
    bg, uv, mask, gain, offset = scenes.maps(params.idx)
    if params.shift is not None:
        uv, mask = shift_maps(uv, mask, params.shift)
    if dirt:
        frames = apply_dirt(bg, texture[:1], uv, mask, offset)
    else:
        frames = apply_sticker(bg, texture, uv, mask, gain, offset)
    return photometric(frames, params, math.ceil(3.0 * cfg.blur_sigma[1]))


def eot_footprint(scenes: StickerScenes, params: EOTParams) -> torch.Tensor:
    """Where the sticker lies in the frames :func:`eot_frames` makes from ``params`` (jitter included).

    Shape:
        -> (B, H, W) bool.
    """
    _, uv, mask, _, _ = scenes.maps(params.idx)
    if params.shift is not None:
        uv, mask = shift_maps(uv, mask, params.shift)
    return mask


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


# ---------------------------------------------------------------------------- the attack
def optimize_sticker(
    model: nn.Module, scenes: StickerScenes, cfg: StickerConfig, generator: torch.Generator | None = None,
    progress: bool = False, objective: Objective | None = None, palette: torch.Tensor | None = None,
) -> StickerResult:
    """Optimise a sticker texture against a steering model over scenes with EOT.

    Args:
        model: images (B, 3, H, W) in [0, 1] -> steering (B,) in degrees. Put in eval mode
            with frozen weights during the attack; its modes and flags are restored after.
        scenes: where the sticker is seen (:func:`~attacks.placement.world_scenes` or
            :func:`~attacks.placement.frame_scenes`); moved to the model's device.
        cfg: the settings.
        generator: the only source of randomness (initial texture, EOT draws); default
            ``torch.Generator(model device).manual_seed(cfg.seed)``. Same generator state,
            same sticker.
        progress: show a tqdm bar.
        objective: ``(pred, clean) -> loss`` to minimise; default from ``cfg.target``,
            ``cfg.angle_deg`` and ``cfg.loss``.
        palette: (K, 3) printer colours; default ``load_palette(cfg.palette)``.

    Returns:
        :class:`~attacks.base.StickerResult`: the texture (3, h, w) on the model's device and
        the per-step history (``loss``, ``objective``, ``deviation_deg``: mean deviation of the
        batch in the attack's direction, raw ``nps``, ``tv``; with ``saliency_weight > 0`` also
        ``saliency_mass``, the saliency probability on the sticker's cells at :data:`GRAB_TEMPERATURE`).

    Raises:
        PDNError: scenes of another size than the model's input; ``saliency_weight > 0``
            against a model that does not select patches.
    """
    device = model_device(model)
    input_size = getattr(model, "input_size", None)
    if input_size is not None and tuple(input_size) != scenes.size:
        raise PDNError(f"scenes are {scenes.size[0]}x{scenes.size[1]} but the model expects "
                       f"{input_size[0]}x{input_size[1]}")
    grab = cfg.saliency_weight > 0
    if grab:
        from drivenet_patch.models.patchdrive import has_patches

        if not has_patches(model):
            raise PDNError(f"saliency_weight needs a patch-selecting model (e.g. patchdrive), got "
                           f"{getattr(model, 'name', type(model).__name__)!r}")
    scenes = scenes.to(device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    if objective is None:
        objective = make_objective(cfg.target, cfg.angle_deg, cfg.loss)
    use_nps = not cfg.dirt
    pal = (load_palette(cfg.palette) if palette is None else palette).to(device) if use_nps else None

    layer = StickerLayer(cfg.texture_hw, cfg.dirt, cfg.dirt_range, generator, cfg.init_std).to(device)
    opt = torch.optim.Adam(layer.parameters(), lr=cfg.lr)
    nan = torch.tensor(float("nan"), device=device)
    rows: list[torch.Tensor] = []
    with attack_mode(model):
        clean = predict(model, scenes.background)  # (N,)
        with torch.no_grad():
            nps_ref = nps(layer.texture(), pal).clamp(min=1e-30) if use_nps else None
        bar = tqdm(range(cfg.steps), desc="sticker", disable=not progress, leave=False)
        for step in bar:
            params = draw_eot(cfg.eot, len(scenes), cfg.batch, scenes.size, generator, device)
            texture = layer.texture()  # (3, h, w)
            frames = eot_frames(scenes, texture, params, cfg.eot, cfg.dirt)
            # channels-last input: mkldnn's faster convolution layout on CPU (measured 0.052 -> 0.046 s
            # per step at batch 16 for PilotNet); values and gradients are the same.
            frames = frames.contiguous(memory_format=torch.channels_last)
            if grab:  # one forward pass gives the steering and the saliency logits
                out = model.forward_details(frames)
                pred = out.steering  # (B,)
                grab_loss, mass = saliency_grab_loss(out.saliency, eot_footprint(scenes, params), model.cell)
            else:
                pred = model(frames)  # (B,)
            ref = clean[params.idx]
            obj = objective(pred, ref)
            tv = total_variation(texture)
            score = nps(texture, pal) if use_nps else nan
            loss = obj + cfg.tv_weight * tv
            if use_nps and cfg.nps_weight > 0:
                loss = loss + cfg.nps_weight * score / nps_ref
            if grab:
                loss = loss + cfg.saliency_weight * grab_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dev_deg = deviation(pred.detach(), ref, cfg.target).mean()
            row = [loss.detach(), obj.detach(), dev_deg, score.detach(), tv.detach()]
            rows.append(torch.stack([*row, mass] if grab else row))
            if progress and (step % 10 == 0 or step == cfg.steps - 1):
                bar.set_postfix(loss=f"{float(loss):.3g}", dev=f"{float(dev_deg):.2f}")
    values = torch.stack(rows).cpu().double().numpy()
    history = pd.DataFrame(values, columns=list(HISTORY_COLUMNS[1:]) + ([SALIENCY_COLUMN] if grab else []))
    history.insert(0, "step", range(len(history)))
    with torch.no_grad():
        texture = layer.texture().detach().clone()
    return StickerResult(texture, history, "dirt" if cfg.dirt else "sticker", cfg.to_dict())


def save_result(folder: str | Path, result: StickerResult, scenes: StickerScenes,
                extra: dict[str, Any] | None = None) -> Path:
    """Write an attack folder in the format :func:`drivenet_patch.drive.load_sticker` reads.

    ``sticker.png`` holds the texture (in dirt mode the grey multiplier); ``attack.json`` holds
    the placement (world scenes: theirs; real frames: a road sticker of the same size and yaw,
    centred on the ego lane), ``"mode"``, the attack settings, how the scenes were made and the
    last step's history row, plus ``extra``.

    Returns:
        The folder.
    """
    placement = scenes.placement
    if placement is None:
        meta = scenes.meta
        placement = StickerPlacement(s=0.0, width_m=float(meta.get("width_m", 3.5)),
                                     length_m=float(meta.get("length_m", 2.0)), yaw_deg=float(meta.get("yaw_deg", 0.0)))
    row = result.history.iloc[-1].items() if len(result.history) else ()
    last = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in row}  # JSON has no NaN
    info = {"mode": result.mode, "attack": result.config, "scenes": scenes.meta, "final": last, **(extra or {})}
    return save_sticker(folder, result.texture.detach().cpu(), placement, info)


class EOTStickerAttack:
    """The attack as an object (torchattacks style): settings and objective bound once, applied to any model.

    Example::

        attack = EOTStickerAttack(StickerConfig(target="left", angle_deg=10))
        result = attack(model, scenes, torch.Generator().manual_seed(0))
    """

    def __init__(self, cfg: StickerConfig | None = None, objective: Objective | None = None,
                 palette: torch.Tensor | None = None) -> None:
        self.cfg = cfg or StickerConfig()
        self.objective = objective
        self.palette = palette

    def __call__(self, model: nn.Module, scenes: StickerScenes, generator: torch.Generator | None = None,
                 progress: bool = False) -> StickerResult:
        return optimize_sticker(model, scenes, self.cfg, generator, progress, self.objective, self.palette)


__all__ = [
    "GRAB_TEMPERATURE",
    "HISTORY_COLUMNS",
    "MAX_STEPS",
    "SALIENCY_COLUMN",
    "EOTConfig",
    "EOTParams",
    "EOTStickerAttack",
    "StickerConfig",
    "draw_eot",
    "eot_footprint",
    "eot_frames",
    "gaussian_blur",
    "optimize_sticker",
    "photometric",
    "saliency_capture",
    "saliency_grab_loss",
    "save_result",
    "sticker_cells",
]
