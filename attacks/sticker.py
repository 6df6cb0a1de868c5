"""The printable sticker attack: one texture, optimised over many views with printability penalties.

Each step draws a batch of precomputed scenes (poses on real approach trajectories, or real
frames) and photometric transforms, composites the current texture into them, and takes an
Adam step on the expected loss (Expectation over Transformation: Athalye et al., "Synthesizing
Robust Adversarial Examples", ICML 2018)::

    min_param  E_{scene, t ~ T} [ objective(f(t(composite(scene, sigmoid(param)))), f(scene)) ]
               + w_nps * NPS(texture) / NPS(texture_0) + w_tv * TV(texture)

* ``texture = sigmoid(param)`` keeps the sticker in [0, 1] without clipping (dirt mode: a grey
  multiplier in [0.3, 1] on the road colour, Sato et al. 2021, see :mod:`attacks.composite`).
* ``T``: scene (with its lighting), brightness, contrast and colour temperature of the
  composited frame, Gaussian blur, sensor noise, and a placement jitter of a few pixels
  (:mod:`attacks.eot`).
* NPS and TV are the printability penalties of Sharif et al. ("Accessorize to a Crime", CCS
  2016), from :mod:`attacks.printability`. With ~30 palette colours the raw NPS, a product of
  distances, spans orders of magnitude, so it enters relative to the initial texture's score:
  ``nps_weight`` is then in the objective's units (degrees for the hinge). Not used in dirt mode.
* The objective is a parameter (:mod:`attacks.base`); the config's ``target``/``angle_deg``/
  ``loss`` name the built-in ones. ``f(scene)``, the clean prediction, is computed once on the
  untransformed scenes.
* Against a model that chooses where to look (PatchDrive, :mod:`drivenet_patch.models.patchdrive`)
  ``saliency_weight > 0`` adds ``w_sal * -log(saliency mass on the sticker's cells)``
  (:func:`attacks.saliency_grab.saliency_grab_loss`): the sticker learns to pull the
  high-resolution patches onto itself, so the model "follows the patch".

This module holds the settings and the optimiser; the EOT draw and application are in
:mod:`attacks.eot`, the saliency objective in :mod:`attacks.saliency_grab`, writing the attack
folder in :mod:`attacks.artifact`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
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
from attacks.composite import DIRT_RANGE, StickerLayer
from attacks.eot import EOTConfig, check_range, draw_eot, eot_footprint, eot_frames
from attacks.printability import load_palette, nps, printable_loss
from attacks.saliency_grab import saliency_grab_loss
from attacks.scenes import StickerScenes
from drivenet_patch.safety.errors import PDNError

MAX_STEPS = 500
HISTORY_COLUMNS = ("step", "loss", "objective", "deviation_deg", "nps", "tv")
SALIENCY_COLUMN = "saliency_mass"  # added to the history when saliency_weight > 0


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
        lo, hi = check_range("dirt_range", self.dirt_range, 0.0, 1.0)
        if lo == hi:
            raise PDNError(f"dirt_range must have low < high, got {self.dirt_range!r}")
        object.__setattr__(self, "dirt_range", (lo, hi))
        if not isinstance(self.eot, EOTConfig):
            raise PDNError(f"eot must be an EOTConfig, got {type(self.eot).__name__}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- the attack
@dataclass
class TextureOptimiser:
    """The texture being optimised, its Adam optimiser and its printability terms: what the open-loop
    (:func:`optimize_sticker`) and the closed-loop (:mod:`attacks.closed_loop`) attacks share.

    Attributes:
        layer: the texture (``layer.texture()`` (3, h, w) in [0, 1]; dirt mode: a grey multiplier).
        opt: Adam on its logits.
        palette: (K, 3) printer colours, None in dirt mode (no NPS).
        nps_ref: the initial texture's NPS (the penalty is relative to it), None in dirt mode.
        cfg: the sticker settings (weights).
    """

    layer: StickerLayer
    opt: torch.optim.Optimizer
    palette: torch.Tensor | None
    nps_ref: torch.Tensor | None
    cfg: StickerConfig

    @classmethod
    def start(cls, cfg: StickerConfig, generator: torch.Generator, device: torch.device | str,
              palette: torch.Tensor | None = None) -> TextureOptimiser:
        """The initial texture from ``generator`` and ``palette`` (default ``load_palette(cfg.palette)``)."""
        pal = (load_palette(cfg.palette) if palette is None else palette).to(device) if not cfg.dirt else None
        layer = StickerLayer(cfg.texture_hw, cfg.dirt, cfg.dirt_range, generator, cfg.init_std).to(device)
        with torch.no_grad():
            nps_ref = nps(layer.texture(), pal).clamp(min=1e-30) if pal is not None else None
        return cls(layer, torch.optim.Adam(layer.parameters(), lr=cfg.lr), pal, nps_ref, cfg)

    def loss(self, obj: torch.Tensor, texture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(objective + printability, NPS or NaN, TV)`` (:func:`attacks.printability.printable_loss`)."""
        nan = torch.full((), float("nan"), device=texture.device)
        return printable_loss(obj, texture, self.palette, self.nps_ref, self.cfg.nps_weight, self.cfg.tv_weight, nan)

    def step(self, loss: torch.Tensor) -> None:
        """One Adam step on ``loss``."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def optimize_sticker(
    model: nn.Module, scenes: StickerScenes, cfg: StickerConfig, generator: torch.Generator | None = None,
    progress: bool = False, objective: Objective | None = None, palette: torch.Tensor | None = None,
) -> StickerResult:
    """Optimise a sticker texture against a steering model over scenes with EOT.

    Args:
        model: images (B, 3, H, W) in [0, 1] -> steering (B,) in degrees. Put in eval mode
            with frozen weights during the attack; its modes and flags are restored after.
        scenes: where the sticker is seen (:func:`~attacks.scenes.world_scenes` or
            :func:`~attacks.scenes.frame_scenes`); moved to the model's device.
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
        ``saliency_mass``, the saliency probability on the sticker's cells at
        :data:`attacks.saliency_grab.GRAB_TEMPERATURE`).

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
    tex = TextureOptimiser.start(cfg, generator, device, palette)
    rows: list[torch.Tensor] = []
    with attack_mode(model):
        clean = predict(model, scenes.background)  # (N,)
        bar = tqdm(range(cfg.steps), desc="sticker", disable=not progress, leave=False)
        for step in bar:
            params = draw_eot(cfg.eot, len(scenes), cfg.batch, scenes.size, generator, device)
            texture = tex.layer.texture()  # (3, h, w)
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
            loss, score, tv = tex.loss(obj, texture)
            if grab:
                loss = loss + cfg.saliency_weight * grab_loss
            tex.step(loss)
            dev_deg = deviation(pred.detach(), ref, cfg.target).mean()
            row = [loss.detach(), obj.detach(), dev_deg, score.detach(), tv.detach()]
            rows.append(torch.stack([*row, mass] if grab else row))
            if progress and (step % 10 == 0 or step == cfg.steps - 1):
                bar.set_postfix(loss=f"{float(loss):.3g}", dev=f"{float(dev_deg):.2f}")
    values = torch.stack(rows).cpu().double().numpy()
    history = pd.DataFrame(values, columns=list(HISTORY_COLUMNS[1:]) + ([SALIENCY_COLUMN] if grab else []))
    history.insert(0, "step", range(len(history)))
    with torch.no_grad():
        texture = tex.layer.texture().detach().clone()
    return StickerResult(texture, history, "dirt" if cfg.dirt else "sticker", cfg.to_dict())


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
    "HISTORY_COLUMNS",
    "MAX_STEPS",
    "SALIENCY_COLUMN",
    "EOTStickerAttack",
    "StickerConfig",
    "TextureOptimiser",
    "optimize_sticker",
]
