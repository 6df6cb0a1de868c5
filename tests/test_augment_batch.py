"""Batched torch photometric augmentation: replayable, bounded, per-frame, with the intended effects."""

from __future__ import annotations

import pytest
import torch

from drivenet_patch.augment_batch import BatchPhotometric
from drivenet_patch.errors import PDNError


def frames(n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.2 + 0.6 * torch.rand(n, 3, 24, 40, generator=g)


def test_same_generator_replays_and_another_differs() -> None:
    aug, x = BatchPhotometric(), frames()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    params = aug.draw(torch.Generator().manual_seed(1), len(x))
    assert torch.equal(aug.apply(x, params), a)  # a logged draw replays


def test_strength_zero_and_inactive_frames_are_identity() -> None:
    x = frames()
    assert (BatchPhotometric(strength=0.0)(x, torch.Generator().manual_seed(3)) - x).abs().max() < 1e-5
    assert (BatchPhotometric(p=0.0)(x, torch.Generator().manual_seed(3)) - x).abs().max() < 1e-5


def test_output_is_a_new_bounded_tensor_of_the_same_shape() -> None:
    x = frames()
    y = BatchPhotometric(strength=3.0)(x, torch.Generator().manual_seed(4))
    assert y.shape == x.shape and y.dtype == x.dtype and y.data_ptr() != x.data_ptr()
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(x, frames())  # input untouched


def test_effects_go_the_intended_way() -> None:
    aug, x = BatchPhotometric(), frames(4)
    params = aug.draw(torch.Generator().manual_seed(0), 4)
    neutral = {k: torch.zeros_like(v) for k, v in params.items()}
    neutral.update(contrast=torch.ones(4), saturation=torch.ones(4))
    assert torch.allclose(aug.apply(x, neutral), x, atol=1e-5)
    brighter = dict(neutral, brightness=torch.full((4,), 0.1))
    assert torch.allclose(aug.apply(x, brighter), (x + 0.1).clamp(0, 1), atol=1e-5)
    grey = dict(neutral, saturation=torch.zeros(4))
    g = aug.apply(x, grey)
    assert (g.max(dim=1).values - g.min(dim=1).values).max() < 1e-4  # no chroma left
    shadow = dict(neutral, shadow=torch.full((4,), 0.5), shadow_angle=torch.zeros(4), shadow_offset=torch.zeros(4))
    s = aug.apply(x, shadow)
    assert (s <= x + 1e-6).all() and (s[..., -5:] < 0.6 * x[..., -5:] + 1e-6).all()  # one side darkened
    assert torch.allclose(s[..., :5], x[..., :5], atol=1e-3)  # the other side untouched


def test_bad_input_is_refused() -> None:
    with pytest.raises(PDNError, match="strength"):
        BatchPhotometric(strength=-1.0)
    with pytest.raises(PDNError, match="frames"):
        BatchPhotometric()(torch.zeros(2, 24, 40), torch.Generator())
    aug = BatchPhotometric()
    with pytest.raises(PDNError, match="drawn for 3"):
        aug.apply(frames(2), aug.draw(torch.Generator(), 3))
