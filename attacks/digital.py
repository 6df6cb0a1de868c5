"""Digital baselines through ART: FGSM, PGD (L-inf) and ART's adversarial patch, for steering.

These run adversarial-robustness-toolbox (ART) attacks on our steering models through
:func:`drivenet_patch.models.art.to_art_regressor`, so that the printable sticker attack can be
compared against the standard digital threat models:

- :func:`fgsm`: fast gradient sign method, ``x' = clip(x + eps * sign(grad_x L))`` (Goodfellow
  et al. 2015, "Explaining and Harnessing Adversarial Examples", ICLR), one step;
- :func:`pgd`: projected gradient descent in L-inf (Madry et al. 2018, "Towards Deep Learning
  Models Resistant to Adversarial Attacks", ICLR): ``steps`` sign steps of ``eps_step``, each
  projected onto the ``eps`` ball around ``x`` and onto [0, 1];
- :class:`RegressionAdversarialPatch` / :func:`art_patch_attack`: the adversarial patch of Brown
  et al. (2017, "Adversarial Patch", arXiv:1712.09665), i.e. ART's ``AdversarialPatchPyTorch``
  with a regression loss instead of its cross-entropy.

The loss is ``L = MSE(f(x'), y)`` in degrees squared. **Untargeted** attacks push the prediction
away from the labels ``y`` (maximise ``L``; pass the *true* steering, because ART's default
``y=None`` uses the model's own prediction, where the MSE gradient is exactly zero and
FGSM/PGD return ``x`` unchanged). **Targeted** attacks pull it towards ``target`` degrees
(minimise ``L`` with the target as label).

ART facts this module relies on (ART 1.20):

- ``ProjectedGradientDescent`` dispatches to its numpy implementation for regressors (the torch
  one is used only for ``PyTorchClassifier``); that implementation refuses random
  initialisation for non-classifiers, so PGD here always starts at ``x`` (deterministic).
- the regressor's ``loss_gradient`` is that of the batch-mean MSE, i.e. scaled by ``1/N``; the
  sign attacks are unaffected.
- ``AdversarialPatchPyTorch._loss`` applies cross-entropy to ``argmax(target)`` when the target
  is a tensor; :class:`RegressionAdversarialPatch` overrides ``_loss``. Its sign convention is
  kept: the returned loss is minimised by Adam and ascended by ``optimizer="pgd"``.
- the patch must be square; it is resized to the image's shorter side and then scaled by a
  random factor in ``[scale_min, scale_max]`` (so ``patch_shape`` only sets its resolution),
  rotated by up to ``rotation_max`` degrees and shifted anywhere in the image, per image, in
  a Python loop; the random draws use numpy's and torch's *global* generators.
  :func:`art_patch_attack` and :meth:`RegressionAdversarialPatch.overlay` seed them from the
  caller's generator for the duration of the call and restore their states afterwards.
- ART's ``predict`` iterates a torch ``DataLoader``, which draws a seed from torch's global
  generator even without shuffling; :func:`art_patch_attack` calls it inside the seeded block.
- ART's default learning rate (5.0 with Adam) saturates a [0, 1] patch in one step; the
  default here is 0.05.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.evasion import AdversarialPatchPyTorch, FastGradientMethod, ProjectedGradientDescent

from drivenet_patch.models.art import seeded_global_rng, to_art_regressor
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import check_frames

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _regressor(model: torch.nn.Module, x: torch.Tensor) -> Any:
    """An ART regressor for ``model`` at the input size of ``x``, on the model's device."""
    return to_art_regressor(model, input_size=(int(x.shape[2]), int(x.shape[3])), device=_model_device(model))


def _labels(value: Any, n: int, name: str) -> np.ndarray:
    """A number, or (N,) / (N, 1) tensor or array -> float32 (N,) numpy labels in degrees."""
    if isinstance(value, bool):
        raise PDNError(f"{name}: expected steering degrees, got {value!r}")
    if isinstance(value, int | float):
        arr = np.full(n, float(value), np.float32)
    elif isinstance(value, torch.Tensor | np.ndarray):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arr.ndim == 0:
            arr = np.full(n, float(arr), np.float32)
        elif arr.shape in ((n,), (n, 1)):
            arr = arr.reshape(n).astype(np.float32)
        else:
            raise PDNError(f"{name}: expected a number or shape ({n},) or ({n}, 1), got {tuple(arr.shape)}")
    else:
        raise PDNError(f"{name}: expected a number or a tensor of steering degrees, got {type(value).__name__}")
    if not np.isfinite(arr).all():
        raise PDNError(f"{name}: labels must be finite")
    return arr


def _objective(y: Any, target: Any, n: int, where: str) -> tuple[np.ndarray, bool]:
    """(labels, targeted) from the true labels ``y`` or a ``target`` (which wins)."""
    if target is not None:
        return _labels(target, n, f"{where}: target"), True
    if y is None:
        raise PDNError(
            f"{where}: pass the true steering labels y (untargeted) or a target angle (targeted); "
            "with neither, ART attacks the model's own prediction, where the regression loss gradient is zero"
        )
    return _labels(y, n, f"{where}: y"), False


def _eps(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PDNError(f"{name}: expected a number, got {value!r}") from None
    if not (math.isfinite(v) and 0.0 < v <= 1.0):
        raise PDNError(f"{name}: must lie in (0, 1] (pixel values are in [0, 1]), got {value!r}")
    return v


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise PDNError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def _back(adv: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(adv, dtype=np.float32)).to(device=like.device, dtype=like.dtype)


def fgsm(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    eps: float = 8 / 255,
    target: float | torch.Tensor | None = None,
    batch_size: int = 128,
) -> torch.Tensor:
    """FGSM in L-inf through ART's ``FastGradientMethod``.

    Args:
        model: steering model, (N, 3, H, W) in [0, 1] -> (N,) degrees (left positive).
        x: (N, 3, H, W) float images in [0, 1].
        y: (N,) true steering, degrees: untargeted, the prediction moves away from it.
        eps: L-inf budget in pixel units, (0, 1].
        target: steering angle in degrees (number or (N,) tensor): targeted, the prediction moves
            towards it (``y`` is then ignored).
        batch_size: ART's batch size.

    Returns:
        (N, 3, H, W) adversarial images with ``|x' - x|_inf <= eps`` and values in [0, 1], with
        the dtype and device of ``x``.

    Raises:
        PDNError: bad images, eps, labels, or neither ``y`` nor ``target``.
    """
    check_frames(x, "fgsm: x")
    labels, targeted = _objective(y, target, len(x), "fgsm")
    eps = _eps(eps, "fgsm: eps")
    attack = FastGradientMethod(
        _regressor(model, x), norm=np.inf, eps=eps, eps_step=eps, targeted=targeted,
        batch_size=_positive_int(batch_size, "fgsm: batch_size"),
    )
    return _back(attack.generate(x.detach().cpu().numpy().astype(np.float32), y=labels), x)


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    eps: float = 8 / 255,
    eps_step: float = 2 / 255,
    steps: int = 10,
    target: float | torch.Tensor | None = None,
    batch_size: int = 128,
) -> torch.Tensor:
    """PGD in L-inf through ART's ``ProjectedGradientDescent`` (starts at ``x``, no random init).

    Args:
        model: steering model, (N, 3, H, W) in [0, 1] -> (N,) degrees.
        x: (N, 3, H, W) float images in [0, 1].
        y: (N,) true steering, degrees (untargeted).
        eps: L-inf budget, (0, 1].
        eps_step: step size of each sign step, (0, 1].
        steps: number of steps (ART's ``max_iter``).
        target: steering angle(s) in degrees (targeted; ``y`` is then ignored).
        batch_size: ART's batch size.

    Returns:
        (N, 3, H, W) adversarial images within ``eps`` of ``x`` in L-inf and in [0, 1].

    Raises:
        PDNError: bad images, eps, eps_step, steps, labels, or neither ``y`` nor ``target``.
    """
    check_frames(x, "pgd: x")
    labels, targeted = _objective(y, target, len(x), "pgd")
    attack = ProjectedGradientDescent(
        _regressor(model, x), norm=np.inf, eps=_eps(eps, "pgd: eps"), eps_step=_eps(eps_step, "pgd: eps_step"),
        max_iter=_positive_int(steps, "pgd: steps"), targeted=targeted, num_random_init=0,
        batch_size=_positive_int(batch_size, "pgd: batch_size"), verbose=False,
    )
    return _back(attack.generate(x.detach().cpu().numpy().astype(np.float32), y=labels), x)


def _seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


class RegressionAdversarialPatch(AdversarialPatchPyTorch):
    """ART's ``AdversarialPatchPyTorch`` with a regression objective (Brown et al. 2017).

    Overrides ``_loss`` (ART's applies cross-entropy to ``argmax(target)``): the loss is
    ``loss_fn(prediction, target)`` on the randomly patched batch, negated as ART expects
    (untargeted: Adam minimises ``-loss``; targeted: Adam minimises ``loss``; with
    ``optimizer="pgd"`` the signs flip because that optimiser ascends). ``_train_step`` is
    wrapped to record the seconds and the (unsigned) loss of every optimiser step.

    Args:
        estimator: from :func:`drivenet_patch.models.art.to_art_regressor`.
        loss_fn: ``(pred (B,), target (B,)) -> scalar``; default mean squared error in degrees^2.
        **kwargs: ``AdversarialPatchPyTorch`` arguments (``verbose`` defaults to ``False``).

    Attributes:
        step_seconds: wall-clock seconds of each optimiser step (forward, backward, update).
        step_losses: the objective ``loss_fn`` at each step, before the update.
    """

    def __init__(self, estimator: Any, loss_fn: LossFn | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("verbose", False)
        super().__init__(estimator, **kwargs)
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else F.mse_loss
        self.step_seconds: list[float] = []
        self.step_losses: list[float] = []
        self._last_loss = float("nan")

    def _loss(self, images: torch.Tensor, target: Any, mask: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(target, torch.Tensor):
            raise PDNError("RegressionAdversarialPatch: targets must be a tensor of steering angles")
        predictions, target = self._predictions(images, mask, target)
        loss = self.loss_fn(predictions.reshape(-1), target.reshape(-1).to(predictions.dtype))
        self._last_loss = float(loss.detach())
        ascend = self._optimizer_string == "pgd"
        # ART's convention: Adam descends and pgd ascends the returned value.
        if (not self.targeted and not ascend) or (self.targeted and ascend):
            loss = -loss
        return loss

    def _train_step(self, images: torch.Tensor, target: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        start = time.perf_counter()
        loss = super()._train_step(images, target, mask)
        self.step_seconds.append(time.perf_counter() - start)
        self.step_losses.append(self._last_loss)
        return loss

    @torch.no_grad()
    def overlay(
        self,
        x: torch.Tensor,
        patch: torch.Tensor | None = None,
        scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Paste a patch at ART's random positions/rotations/scales, reproducibly.

        Args:
            x: (N, 3, H, W) images in [0, 1].
            patch: (3, s, s) in [0, 1]; default the attack's current patch.
            scale: fixed patch scale (share of the image's shorter side); default random in
                ``[scale_min, scale_max]``.
            generator: seeds the random placements (same generator state -> same placements).

        Returns:
            (N, 3, H, W) patched images in [0, 1] on the device of ``x``.
        """
        check_frames(x, "overlay: x")
        p = self._patch.detach() if patch is None else patch
        if tuple(p.shape) != tuple(self.patch_shape):
            raise PDNError(f"overlay: patch must have shape {tuple(self.patch_shape)}, got {tuple(p.shape)}")
        dev = self.estimator.device
        with seeded_global_rng(_seed(generator)):
            out = self._random_overlay(x.detach().to(dev, torch.float32), p.detach().to(dev), scale=scale)
        return out.clamp(0.0, 1.0).to(device=x.device, dtype=x.dtype)


@dataclass(frozen=True)
class ArtPatchResult:
    """What :func:`art_patch_attack` returns.

    Attributes:
        patch: (3, s, s) float32 in [0, 1] on the device of ``x``.
        mask: (3, s, s) the patch's shape mask (all ones for ``patch_type="square"``).
        step_seconds: seconds per optimiser step.
        step_losses: the regression loss per step (rises when untargeted, falls when targeted).
        targeted: whether a target was given.
        attack: the ART attack object (for :meth:`RegressionAdversarialPatch.overlay`).
    """

    patch: torch.Tensor
    mask: torch.Tensor
    step_seconds: list[float]
    step_losses: list[float]
    targeted: bool
    attack: RegressionAdversarialPatch = field(repr=False)


def art_patch_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    target: float | torch.Tensor | None = None,
    steps: int = 100,
    batch: int = 16,
    patch_shape: tuple[int, int, int] = (3, 32, 32),
    lr: float = 0.05,
    optimizer: str = "Adam",
    rotation_max: float = 22.5,
    scale_min: float = 0.1,
    scale_max: float = 1.0,
    patch_type: str = "square",
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
) -> ArtPatchResult:
    """Train an adversarial patch with ART (Brown et al. 2017) against a steering model.

    Args:
        model: steering model, (N, 3, H, W) in [0, 1] -> (N,) degrees.
        x: (N, 3, H, W) training images in [0, 1].
        y: (N,) labels to push away from (untargeted); default the model's clean predictions
            (unlike FGSM/PGD this works: the patched input differs from ``x``).
        target: steering angle(s) in degrees to pull towards (targeted; ``y`` is ignored).
        steps: passes over ``x`` (ART's ``max_iter``); each pass makes ``ceil(N / batch)``
            optimiser steps, so ``N == batch`` gives exactly ``steps`` steps.
        batch: images per optimiser step.
        patch_shape: ``(3, s, s)``; ART requires a square patch.
        lr: Adam learning rate, or the sign-step size for ``optimizer="pgd"``.
        optimizer: ``"Adam"`` or ``"pgd"``.
        rotation_max: maximum random rotation, degrees, [0, 180].
        scale_min: minimum random scale (share of the image's shorter side), (0, 1].
        scale_max: maximum random scale, [scale_min, 1].
        patch_type: ``"square"`` or ``"circle"``.
        loss_fn: regression loss, default mean squared error.
        generator: seeds ART's random shuffling and placements (same seed -> same patch).

    Returns:
        :class:`ArtPatchResult`.

    Raises:
        PDNError: bad images, labels or attack parameters.
    """
    check_frames(x, "art_patch_attack: x")
    steps = _positive_int(steps, "art_patch_attack: steps")
    batch = _positive_int(batch, "art_patch_attack: batch")
    shape = tuple(patch_shape) if isinstance(patch_shape, tuple | list) else ()
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise PDNError(f"art_patch_attack: patch_shape must be (3, s, s) with s > 0 (ART needs a square patch), got {patch_shape!r}")
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise PDNError(f"art_patch_attack: lr must be > 0, got {lr}")
    if optimizer not in ("Adam", "pgd"):
        raise PDNError(f"art_patch_attack: optimizer must be 'Adam' or 'pgd', got {optimizer!r}")
    if patch_type not in ("square", "circle"):
        raise PDNError(f"art_patch_attack: patch_type must be 'square' or 'circle', got {patch_type!r}")
    if not 0.0 <= float(rotation_max) <= 180.0:
        raise PDNError(f"art_patch_attack: rotation_max must lie in [0, 180], got {rotation_max}")
    if not 0.0 < float(scale_min) <= float(scale_max) <= 1.0:
        raise PDNError(f"art_patch_attack: need 0 < scale_min <= scale_max <= 1, got {scale_min}, {scale_max}")

    reg = _regressor(model, x)
    x_np = x.detach().cpu().numpy().astype(np.float32)
    if target is not None:
        labels, targeted = _labels(target, len(x), "art_patch_attack: target"), True
    elif y is not None:
        labels, targeted = _labels(y, len(x), "art_patch_attack: y"), False
    else:
        labels, targeted = None, False

    attack = RegressionAdversarialPatch(
        reg, loss_fn=loss_fn, rotation_max=float(rotation_max), scale_min=float(scale_min), scale_max=float(scale_max),
        learning_rate=lr, max_iter=steps, batch_size=batch, patch_shape=tuple(int(s) for s in shape),
        patch_type=patch_type, optimizer=optimizer, targeted=targeted, verbose=False,
    )
    with seeded_global_rng(_seed(generator)):
        if labels is None:  # ART's predict iterates a DataLoader, which draws from the global RNG
            labels = reg.predict(x_np, batch_size=batch).reshape(-1)
        patch, mask = attack.generate(x_np, y=labels)
    return ArtPatchResult(
        patch=torch.from_numpy(np.asarray(patch, dtype=np.float32)).to(x.device),
        mask=torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(x.device),
        step_seconds=list(attack.step_seconds),
        step_losses=list(attack.step_losses),
        targeted=targeted,
        attack=attack,
    )
