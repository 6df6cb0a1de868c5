"""Steering models as ART regressors (adversarial-robustness-toolbox ``PyTorchRegressor``).

Shapes in and out of the returned estimator:

- ``x``: (N, 3, H, W) float32 in [0, 1], numpy or torch (numpy float64 is cast to float32).
- the wrapped torch module returns steering of shape **(N,)** in degrees;
- ``predict(x)`` returns **(N, 1)** float32: ART's regressor contract (it adds the column);
- labels ``y`` for ``loss_gradient`` / ``compute_loss`` / ``fit`` may be (N,) or (N, 1); they
  are flattened to (N,) before ART's loss sees them. Plain ART 1.20 compares its flattened
  (N,) predictions with the labels as given, so (N, 1) labels - exactly what ``predict``
  returns, and what FGSM/PGD use when called with ``y=None`` - broadcast to an (N, N) loss
  and yield wrong gradients with only a warning;
- ``loss_gradient(x, y)`` returns d/dx of ``MSELoss(reduction="mean")`` over the batch:
  ``2 / N * (f(x_i) - y_i) * df(x_i)/dx_i`` for image i (the mean divides by N, so
  per-image gradients shrink with the batch size; sign-based attacks do not care).

Untargeted ART attacks on a regressor called with ``y=None`` use the model's own prediction
as the label, where the MSE gradient is exactly zero: pass the true steering labels (or a
target and ``targeted=True``).

ART calls ``model.train(mode)`` on every call and never restores it; here the estimator sees a
thin view whose mode is its own, and the wrapped model's train/eval state (per submodule) is
set only for the duration of each forward pass and then restored.

ART's patch attack and its derandomized-smoothing training draw from the *global* generators;
:func:`seeded_global_rng` confines that to one reproducible block (used by ``attacks.digital``
and ``defenses.art_ds``, which must not import each other).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from art.estimators.regression import PyTorchRegressor
from torch import nn

from drivenet_patch.models import SteeringModel, parse_input_size, use_mode
from drivenet_patch.safety.errors import PDNError


class SteeringView(nn.Module):
    """What ART sees: the model with (N,) outputs and a train/eval flag of its own.

    ``view.train(mode)`` only records ``mode``; each forward runs the wrapped model in that
    mode and restores the model's own modes afterwards.

    Shape:
        (N, 3, H, W) -> (N,).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = False

    def train(self, mode: bool = True) -> SteeringView:
        self.training = bool(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with use_mode(self.model, self.training):
            return self.model(x).reshape(-1)  # (N,)


class SteeringRegressor(PyTorchRegressor):
    """``PyTorchRegressor`` that flattens (N, 1) labels to (N,) and casts inputs to float32."""

    def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs: Any) -> Any:
        return super().loss_gradient(_as_f32(x), _flat_labels(y, x), training_mode=training_mode, **kwargs)

    def compute_loss(self, x: Any, y: Any, reduction: str = "none", **kwargs: Any) -> Any:
        return super().compute_loss(_as_f32(x), _flat_labels(y, x), reduction=reduction, **kwargs)

    def compute_loss_from_predictions(self, pred: Any, y: Any, reduction: str = "none", **kwargs: Any) -> Any:
        return super().compute_loss_from_predictions(pred, _flat_labels(y, None), reduction=reduction, **kwargs)

    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs: Any) -> np.ndarray:
        return super().predict(_as_f32(x), batch_size=batch_size, training_mode=training_mode, **kwargs)

    def fit(self, x: np.ndarray, y: np.ndarray, batch_size: int = 128, nb_epochs: int = 10, **kwargs: Any) -> None:
        super().fit(_as_f32(x), _flat_labels(y, x), batch_size=batch_size, nb_epochs=nb_epochs, **kwargs)


def to_art_regressor(
    model: SteeringModel,
    input_size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    optimizer: torch.optim.Optimizer | None = None,
    loss: nn.modules.loss._Loss | None = None,
) -> PyTorchRegressor:
    """Wrap a steering model as an ART regressor for ART's evasion attacks (FGSM, PGD, ...).

    Args:
        model: images (N, 3, H, W) in [0, 1] -> steering (N,) in degrees.
        input_size: ``(H, W)``; defaults to ``model.input_size``.
        device: ``"cpu"`` or a CUDA device; ART moves the model there (ART only knows "the
            current CUDA device", so ``"cuda:1"`` works only if that is the current device).
        optimizer: needed only for ART's ``fit``.
        loss: defaults to ``nn.MSELoss()`` (mean over the batch).

    Returns:
        A :class:`SteeringRegressor` (a ``PyTorchRegressor``) with ``input_shape=(3, H, W)``,
        ``clip_values=(0, 1)``, ``channels_first=True`` and no extra preprocessing
        (normalisation is inside the model). See the module docstring for shapes.

    Raises:
        PDNError: bad ``input_size`` or a device ART cannot use.
    """
    if input_size is None:
        input_size = getattr(model, "input_size", None)
        if input_size is None:
            raise PDNError("to_art_regressor: the model has no input_size; pass input_size=(H, W)")
    h, w = parse_input_size(input_size, "to_art_regressor: input_size")
    dev = torch.device(device)
    regressor = SteeringRegressor(
        model=SteeringView(model),
        loss=loss if loss is not None else nn.MSELoss(),
        input_shape=(3, h, w),
        optimizer=optimizer,
        channels_first=True,
        clip_values=(0.0, 1.0),
        device_type="cpu" if dev.type == "cpu" else "gpu",
    )
    got = regressor.device
    if got.type != dev.type or (dev.index is not None and got.index != dev.index):
        raise PDNError(f"to_art_regressor: ART can only use {got} here, not {dev}")
    return regressor


def _as_f32(x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.dtype != np.float32:
        return x.astype(np.float32)
    return x


def _flat_labels(y: Any, x: Any) -> Any:
    """(N,) or (N, 1) labels -> (N,) float32 (same array type as given)."""
    shape = tuple(y.shape)
    if len(shape) == 2 and shape[1] == 1:
        y = y.reshape(-1)
    elif len(shape) != 1:
        raise PDNError(f"steering labels: expected shape (N,) or (N, 1), got {shape}")
    if x is not None and len(y) != len(x):
        raise PDNError(f"steering labels: {len(y)} labels for {len(x)} images")
    if isinstance(y, np.ndarray):
        return y.astype(np.float32, copy=False)
    return y.to(torch.float32)


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed numpy's and torch's (CPU) global generators for a block; restore them afterwards.

    ART's patch attack and its smoothing classifier's training draw from the global generators;
    this confines that to one reproducible block. Not thread-safe (nothing using the global generators is).
    """
    state = np.random.get_state()  # noqa: NPY002 - ART itself draws from numpy's global generator
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)  # noqa: NPY002
            yield
    finally:
        np.random.set_state(state)  # noqa: NPY002
