"""The ART regressor wrapper: shapes, exact loss gradients, label shapes, train/eval state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.attacks.evasion import FastGradientMethod
from art.estimators.regression import PyTorchRegressor

from drivenet_patch.models import create_model, use_mode
from drivenet_patch.models.art import to_art_regressor
from drivenet_patch.safety.errors import PDNError


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 66, 200, generator=g), 5.0 * torch.randn(6, generator=g)


def torch_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    with use_mode(model, False):
        F.mse_loss(model(xg), y, reduction=reduction).backward()
    return xg.grad


def test_estimator_setup() -> None:
    model = create_model("pilotnet_tiny")
    reg = to_art_regressor(model)
    assert isinstance(reg, PyTorchRegressor)
    assert reg.input_shape == (3, 66, 200) and reg.channels_first
    assert tuple(float(v) for v in reg.clip_values) == (0.0, 1.0)
    assert isinstance(reg.loss, torch.nn.MSELoss) and reg.optimizer is None
    assert reg.device == torch.device("cpu")
    assert to_art_regressor(create_model("pilotnet_tiny", input_size=(80, 160))).input_shape == (3, 80, 160)


def test_predict_matches_the_model(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = batch
    model = create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(1))
    reg = to_art_regressor(model)
    pred = reg.predict(x.numpy())
    assert pred.shape == (6, 1) and pred.dtype == np.float32  # ART adds the column
    with torch.no_grad():
        np.testing.assert_array_equal(pred[:, 0], model.eval()(x).numpy())
    np.testing.assert_array_equal(reg.predict(x.numpy().astype(np.float64)), pred)


def test_loss_gradient_is_the_gradient_of_the_batch_mean_mse(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    model = create_model("pilotnet", generator=torch.Generator().manual_seed(2))
    reg = to_art_regressor(model)
    grad = reg.loss_gradient(x.numpy(), y.numpy())
    assert isinstance(grad, np.ndarray) and grad.shape == x.shape and grad.dtype == np.float32
    mean_grad = torch_grad(model, x, y, "mean").numpy()
    np.testing.assert_allclose(grad, mean_grad, rtol=1e-5, atol=1e-9)
    # ART reduces with the mean over the batch: the sum convention is N times larger.
    np.testing.assert_allclose(grad * len(x), torch_grad(model, x, y, "sum").numpy(), rtol=1e-4, atol=1e-7)
    # (N, 1) labels - the shape ART's own predict returns - give the same gradient (plain ART
    # would broadcast them against the (N,) predictions into an (N, N) loss).
    np.testing.assert_array_equal(reg.loss_gradient(x.numpy(), y.numpy()[:, None]), grad)
    np.testing.assert_array_equal(reg.loss_gradient(x.numpy(), y.numpy().astype(np.float64)), grad)
    # torch in, torch out.
    tgrad = reg.loss_gradient(x, y)
    assert isinstance(tgrad, torch.Tensor)
    np.testing.assert_array_equal(tgrad.numpy(), grad)
    losses = reg.compute_loss(x.numpy(), y.numpy()[:, None])
    assert losses.shape == (6,)
    with torch.no_grad():
        np.testing.assert_allclose(losses, ((model(x) - y) ** 2).numpy(), rtol=1e-5)


def test_bad_label_shapes_are_clear_errors(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    reg = to_art_regressor(create_model("pilotnet_tiny"))
    with pytest.raises(PDNError, match=r"expected shape \(N,\) or \(N, 1\), got \(6, 2\)"):
        reg.loss_gradient(x.numpy(), np.zeros((6, 2), np.float32))
    with pytest.raises(PDNError, match="5 labels for 6 images"):
        reg.loss_gradient(x.numpy(), y.numpy()[:5])


def test_art_calls_leave_the_models_train_state_alone(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    model = create_model("pilotnet_tiny", dropout=0.5, generator=torch.Generator().manual_seed(3)).train()
    model.features[1].eval()
    before = [m.training for m in model.modules()]
    reg = to_art_regressor(model)
    grad = reg.loss_gradient(x.numpy(), y.numpy())
    reg.predict(x.numpy())
    assert [m.training for m in model.modules()] == before
    # ... and ART's default (training_mode=False) really ran in eval mode: no dropout noise.
    np.testing.assert_allclose(grad, torch_grad(model, x, y, "mean").numpy(), rtol=1e-5, atol=1e-9)


def test_fgsm_with_true_labels_increases_the_error(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    model = create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(4))
    reg = to_art_regressor(model)
    xn, yn = x.numpy(), y.numpy()
    adv = FastGradientMethod(reg, eps=0.03).generate(xn, y=yn)
    assert np.abs(adv - xn).max() <= 0.03 + 1e-6 and adv.min() >= 0.0 and adv.max() <= 1.0
    err = lambda z: float(((reg.predict(z)[:, 0] - yn) ** 2).mean())  # noqa: E731
    assert err(adv) > err(xn)
