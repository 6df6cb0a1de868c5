"""Digital baselines through ART: FGSM / PGD budgets and directions, the regression patch attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.digital import RegressionAdversarialPatch, art_patch_attack, fgsm, pgd
from drivenet_patch.models import create_model
from drivenet_patch.safety.errors import PDNError


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 3, 66, 200, generator=torch.Generator().manual_seed(1))


def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return out


def check_budget(x: torch.Tensor, adv: torch.Tensor, eps: float) -> None:
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float((adv - x).abs().max()) > 0.5 * eps  # it did move


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_untargeted_moves_away_from_the_true_label(model: torch.nn.Module, images: torch.Tensor, attack: str) -> None:
    clean = predict(model, images)
    # True labels on both sides of the prediction: the attack must push away from each.
    y = clean + torch.tensor([2.0, -2.0, 2.0, -2.0, 2.0, -2.0])
    eps = 4 / 255
    adv = fgsm(model, images, y, eps=eps) if attack == "fgsm" else pgd(model, images, y, eps=eps, eps_step=1 / 255, steps=5)
    check_budget(images, adv, eps)
    assert ((predict(model, adv) - y).abs() > (clean - y).abs()).all()
    assert model.training  # the caller's train/eval mode is left alone


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("target", [25.0, -25.0])
def test_targeted_moves_towards_the_target(model: torch.nn.Module, images: torch.Tensor, attack: str, target: float) -> None:
    clean = predict(model, images)
    eps = 4 / 255
    if attack == "fgsm":
        adv = fgsm(model, images, None, eps=eps, target=target)
    else:
        adv = pgd(model, images, None, eps=eps, eps_step=1 / 255, steps=5, target=torch.full((6,), target))
    check_budget(images, adv, eps)
    assert ((predict(model, adv) - target).abs() < (clean - target).abs()).all()


def test_pgd_goes_further_than_fgsm_and_is_deterministic(model: torch.nn.Module, images: torch.Tensor) -> None:
    eps = 4 / 255
    clean = predict(model, images)
    one = predict(model, fgsm(model, images, None, eps=eps, target=30.0))
    many = pgd(model, images, None, eps=eps, eps_step=1 / 255, steps=8, target=30.0)
    assert (predict(model, many) - clean).mean() > (one - clean).mean()
    state = torch.random.get_rng_state()
    torch.testing.assert_close(pgd(model, images, None, eps=eps, eps_step=1 / 255, steps=8, target=30.0), many, rtol=0, atol=0)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_label_shapes(model: torch.nn.Module, images: torch.Tensor) -> None:
    y = predict(model, images) + 1.0
    a = fgsm(model, images, y, eps=2 / 255)
    torch.testing.assert_close(fgsm(model, images, y[:, None], eps=2 / 255), a, rtol=0, atol=0)
    torch.testing.assert_close(fgsm(model, images, y.numpy(), eps=2 / 255), a, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: fgsm(m, x, None), r"fgsm: pass the true steering labels y .* or a target angle"),
        (lambda m, x: pgd(m, x), r"pgd: pass the true steering labels y"),
        (lambda m, x: fgsm(m, x, torch.zeros(5)), r"fgsm: y: expected a number or shape \(6,\) or \(6, 1\), got \(5,\)"),
        (lambda m, x: fgsm(m, x, torch.zeros(6), eps=0.0), r"fgsm: eps: must lie in \(0, 1\]"),
        (lambda m, x: fgsm(m, x, torch.zeros(6), eps=2.0), r"fgsm: eps: must lie in \(0, 1\]"),
        (lambda m, x: fgsm(m, x, target="left"), r"fgsm: target: expected a number or a tensor"),
        (lambda m, x: fgsm(m, x, target=float("nan")), r"fgsm: target: labels must be finite"),
        (lambda m, x: pgd(m, x, torch.zeros(6), eps_step=-1.0), r"pgd: eps_step: must lie in"),
        (lambda m, x: pgd(m, x, torch.zeros(6), steps=0), r"pgd: steps: expected an integer >= 1"),
        (lambda m, x: fgsm(m, x * 2, torch.zeros(6)), r"fgsm: x: values must lie in \[0, 1\]"),
        (lambda m, x: pgd(m, x[0], torch.zeros(6)), r"pgd: x: expected shape \(N, 3, H, W\)"),
        (lambda m, x: art_patch_attack(m, x, patch_shape=(3, 8, 16)), r"patch_shape must be \(3, s, s\)"),
        (lambda m, x: art_patch_attack(m, x, steps=0), r"art_patch_attack: steps: expected an integer >= 1"),
        (lambda m, x: art_patch_attack(m, x, scale_min=0.8, scale_max=0.5), r"need 0 < scale_min <= scale_max <= 1"),
        (lambda m, x: art_patch_attack(m, x, optimizer="SGD"), r"optimizer must be 'Adam' or 'pgd'"),
        (lambda m, x: art_patch_attack(m, x, y=torch.zeros(2)), r"art_patch_attack: y: expected a number or shape"),
    ],
)
def test_bad_input_is_a_clear_error(model: torch.nn.Module, images: torch.Tensor, call, message: str) -> None:
    with pytest.raises(PDNError, match=message):
        call(model, images)


PATCH = {"steps": 12, "batch": 6, "patch_shape": (3, 16, 16), "scale_min": 0.5, "scale_max": 0.7}


def mean_deviation(model: torch.nn.Module, attack: RegressionAdversarialPatch, x: torch.Tensor,
                   patch: torch.Tensor | None, ref: torch.Tensor, draws: int = 4) -> float:
    devs = [
        (predict(model, attack.overlay(x, patch, generator=torch.Generator().manual_seed(k))) - ref).abs().mean()
        for k in range(draws)
    ]
    return float(torch.stack(devs).mean())


def test_art_patch_beats_a_random_patch(model: torch.nn.Module, images: torch.Tensor) -> None:
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state()  # noqa: NPY002
    result = art_patch_attack(model, images, generator=torch.Generator().manual_seed(0), **PATCH)
    # ART's global-RNG draws were confined to the call.
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert result.patch.shape == (3, 16, 16) and result.patch.dtype == torch.float32
    assert float(result.patch.min()) >= 0.0 and float(result.patch.max()) <= 1.0
    assert result.mask.shape == (3, 16, 16) and bool((result.mask == 1).all())
    assert len(result.step_seconds) == len(result.step_losses) == 12 and not result.targeted
    assert np.mean(result.step_losses[-3:]) > np.mean(result.step_losses[:3])  # untargeted loss rises
    clean = predict(model, images)
    trained = mean_deviation(model, result.attack, images, None, clean)
    random = np.mean([
        mean_deviation(model, result.attack, images, torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(s)), clean)
        for s in range(3)
    ])
    assert trained > random
    # Patched pixels change, and the overlay is reproducible from its generator.
    g = torch.Generator().manual_seed(5)
    patched = result.attack.overlay(images, generator=g)
    assert patched.shape == images.shape and not torch.equal(patched, images)
    torch.testing.assert_close(result.attack.overlay(images, generator=torch.Generator().manual_seed(5)), patched, rtol=0, atol=0)


def test_art_patch_is_reproducible_and_targeted_pulls(model: torch.nn.Module, images: torch.Tensor) -> None:
    small = {**PATCH, "steps": 4}
    a = art_patch_attack(model, images, target=-20.0, generator=torch.Generator().manual_seed(3), **small)
    b = art_patch_attack(model, images, target=-20.0, generator=torch.Generator().manual_seed(3), **small)
    torch.testing.assert_close(a.patch, b.patch, rtol=0, atol=0)
    assert a.targeted and a.step_losses[-1] < a.step_losses[0]  # targeted loss falls
    c = art_patch_attack(model, images, target=-20.0, generator=torch.Generator().manual_seed(4), **small)
    assert not torch.equal(a.patch, c.patch)


def test_patch_overlay_rejects_a_wrong_patch(model: torch.nn.Module, images: torch.Tensor) -> None:
    result = art_patch_attack(model, images, generator=torch.Generator().manual_seed(0), **{**PATCH, "steps": 1})
    with pytest.raises(PDNError, match=r"overlay: patch must have shape \(3, 16, 16\), got \(3, 8, 8\)"):
        result.attack.overlay(images, torch.rand(3, 8, 8))
