"""The small base every attack builds on: objectives, the result type, and safe model handling.

Steering is regression, so an attack is defined by a loss on the model's prediction, not by a
class label: a *targeted* attack pulls the steering to ``clean + angle`` (left, positive) or
``clean - angle`` (right); an *untargeted* one (``"away"``) pushes it away from the clean
prediction in either direction. Each is an :data:`Objective`, a plain function
``(pred (B,), clean (B,)) -> scalar loss`` that the optimiser *minimises*, so callers can pass
their own (the gap left open by classification-only toolkits).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from drivenet_patch.models.base import use_mode
from drivenet_patch.safety.errors import PDNError

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``objective(pred (B,), clean (B,)) -> scalar`` loss to minimise; both in degrees, + = left."""

TrajectoryObjective = Callable[[torch.Tensor], torch.Tensor]
"""``objective(offsets (T, A)) -> scalar`` loss to minimise: lane offsets (metres, + = left) of A
approaches over T steps of a closed-loop rollout (:mod:`attacks.closed_loop`)."""

TARGETS = ("left", "right", "away")
LOSSES = ("mse", "hinge")


def _check_angle(angle_deg: float) -> float:
    if not (math.isfinite(angle_deg) and angle_deg > 0):
        raise PDNError(f"angle_deg must be a finite number > 0, got {angle_deg}")
    return float(angle_deg)


def target_sign(target: str) -> float:
    """+1 for ``"left"``, -1 for ``"right"`` (the direction steering is pushed)."""
    if target not in ("left", "right"):
        raise PDNError(f"target must be 'left' or 'right' for a targeted attack, got {target!r}")
    return 1.0 if target == "left" else -1.0


def targeted_mse(offset_deg: float) -> Objective:
    """Squared error to the target ``clean + offset_deg``: ``mean((pred - clean - offset)^2)``.

    Overshooting the target is penalised too, so the push stays near ``offset_deg``.
    """

    def objective(pred: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return (pred - (clean + offset_deg)).square().mean()

    return objective


def targeted_hinge(offset_deg: float) -> Objective:
    """Hinge toward ``clean + offset_deg``: ``mean(relu(sign * (clean + offset - pred)))``.

    Frames already pushed past the target cost nothing, so the gradient goes to the poses and
    photometric draws that still resist (Carlini and Wagner 2017, objective f6, for regression).
    """
    sign = 1.0 if offset_deg >= 0 else -1.0

    def objective(pred: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return F.relu(sign * (clean + offset_deg - pred)).mean()

    return objective


def away_mse() -> Objective:
    """Untargeted, unbounded: ``-mean((pred - clean)^2)`` (maximise the squared deviation)."""

    def objective(pred: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return -(pred - clean).square().mean()

    return objective


def away_hinge(cap_deg: float) -> Objective:
    """Untargeted, capped: ``mean(relu(cap - |pred - clean|))``, zero once every frame deviates by ``cap_deg``."""

    def objective(pred: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return F.relu(cap_deg - (pred - clean).abs()).mean()

    return objective


def make_objective(target: str, angle_deg: float, loss: str = "hinge") -> Objective:
    """The objective a :class:`~attacks.sticker.StickerConfig` names.

    Args:
        target: ``"left"`` (push to ``clean + angle``), ``"right"`` (``clean - angle``) or
            ``"away"`` (either direction).
        angle_deg: size of the push in degrees (> 0); for ``"away"`` with ``"hinge"`` the cap.
        loss: ``"mse"`` or ``"hinge"`` (see the functions above).

    Raises:
        PDNError: unknown target or loss, or a non-positive angle.
    """
    if target not in TARGETS:
        raise PDNError(f"target must be one of {TARGETS}, got {target!r}")
    if loss not in LOSSES:
        raise PDNError(f"loss must be one of {LOSSES}, got {loss!r}")
    angle = _check_angle(angle_deg)
    if target == "away":
        return away_mse() if loss == "mse" else away_hinge(angle)
    offset = target_sign(target) * angle
    return targeted_mse(offset) if loss == "mse" else targeted_hinge(offset)


def lateral_hinge(target: str, goal_m: float = 1.2) -> TrajectoryObjective:
    """Displacement toward the target side, capped: ``mean(relu(goal - sign * offset))`` over steps and approaches.

    DRP's objective (Sato et al., USENIX Security 2021) is the lateral deviation the car accumulates
    over the attack window; the hinge stops rewarding a step once the car is ``goal_m`` toward the
    target side (a wheel leaves a 3.5 m lane at 0.85 m), so the gradient goes to the approaches
    and moments that still hold the lane.

    Shape:
        offsets (T, A) -> scalar.
    """
    sign = target_sign(target)
    if not (math.isfinite(goal_m) and goal_m > 0):
        raise PDNError(f"goal_m must be a finite number > 0, got {goal_m}")

    def objective(offsets: torch.Tensor) -> torch.Tensor:
        return F.relu(goal_m - sign * offsets).mean()

    return objective


def deviation(pred: torch.Tensor, clean: torch.Tensor, target: str) -> torch.Tensor:
    """Per-frame deviation in the attack's direction (degrees, larger = more successful).

    ``pred - clean`` for ``"left"``, ``clean - pred`` for ``"right"``, ``|pred - clean|`` for ``"away"``.

    Shape:
        pred, clean (B,) -> (B,).
    """
    if target == "away":
        return (pred - clean).abs()
    return target_sign(target) * (pred - clean)


# ---------------------------------------------------------------------------- models
def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen weights for the duration of an attack; both restored afterwards.

    Freezing the weights (``requires_grad = False``) skips their gradients in every backward
    pass: only the input's gradient is needed.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with use_mode(model, False):
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


@torch.no_grad()
def predict(model: nn.Module, frames: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Steering (N,) for frames (N, 3, H, W) in chunks, without gradients, in the model's current mode."""
    if len(frames) == 0:
        return torch.zeros(0, device=frames.device)
    return torch.cat([model(frames[i : i + chunk]) for i in range(0, len(frames), chunk)])


# ---------------------------------------------------------------------------- results
@dataclass
class StickerResult:
    """What a sticker attack returns.

    Attributes:
        texture: (3, h, w) sticker in [0, 1] on the model's device. In dirt mode, the grey
            darkening multiplier (the same in all three channels), in [0.3, 1] by default.
        history: one row per optimisation step (``step``, ``loss``, ``objective``,
            ``deviation_deg``, ``nps``, ``tv``).
        mode: ``"sticker"`` (the texture replaces the surface) or ``"dirt"`` (it multiplies it).
        config: the attack's settings as a JSON-serialisable dict.
    """

    texture: torch.Tensor
    history: pd.DataFrame
    mode: str = "sticker"
    config: dict = field(default_factory=dict)


class StickerAttack(Protocol):
    """Anything that turns a model and a set of scenes into a sticker."""

    def __call__(self, model: nn.Module, scenes: object, generator: torch.Generator | None = None,
                 progress: bool = False) -> StickerResult: ...
