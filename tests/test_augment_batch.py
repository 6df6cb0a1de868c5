"""Batched torch photometric augmentation: replayable, bounded, per-frame, with the intended effects."""

from __future__ import annotations

import math

import pytest
import torch

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.training.augment_batch import BatchPhotometric


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


def _reference(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The jitter written frame by frame, op by op, as documented (no folding, no batching)."""
    from drivenet_patch.training.augment_batch import _RGB2YIQ, noise_bank

    yiq = torch.tensor(_RGB2YIQ)
    bank = noise_bank(tuple(x.shape[1:]), x.dtype, x.device)
    n, (_, H, W) = len(bank) // 2, x.shape[1:]
    vv, uu = torch.linspace(-0.5, 0.5, H).view(H, 1), torch.linspace(-0.5, 0.5, W).view(1, W)
    k1 = torch.tensor([0.27, 0.46, 0.27])
    kernel = (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3)
    out = []
    for i, f in enumerate(x):
        a, s = float(p["hue"][i]), float(p["saturation"][i])
        rot = torch.tensor([[1.0, 0, 0], [0, s * math.cos(a), -s * math.sin(a)], [0, s * math.sin(a), s * math.cos(a)]])
        colour = torch.linalg.inv(yiq) @ rot @ yiq
        g = torch.einsum("ij,jhw->ihw", colour, f)  # hue and saturation
        g = p["contrast"][i] * (g - g.mean(dim=(1, 2), keepdim=True)) + g.mean(dim=(1, 2), keepdim=True)
        g = g + p["brightness"][i]
        ang = p["shadow_angle"][i]
        side = torch.sigmoid((uu * torch.cos(ang) + vv * torch.sin(ang) - p["shadow_offset"][i]) * 40.0)
        g = g * (1.0 - p["shadow"][i] * side)
        if p["blur"][i] > 0:
            b = torch.nn.functional.conv2d(torch.nn.functional.pad(g[None], (1, 1, 1, 1), mode="replicate"), kernel,
                                           groups=3)[0]
            g = g + p["blur"][i] * (b - g)
        g = g + p["noise"][i] * bank[(int(p["noise_seed"][0]) % n + i) % n]
        out.append(g.clamp(0.0, 1.0))
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["opencv", "torch-planes"])
def test_batched_jitter_equals_the_frame_by_frame_reference(seed: int, dtype: torch.dtype) -> None:
    """Both implementations (float32 on the CPU goes through OpenCV, anything else through torch
    colour planes, as on a GPU) match the op-by-op reference."""
    aug = BatchPhotometric(strength=2.0, shadow_p=0.5, blur_p=0.5)
    x = frames(12)
    params = aug.draw(torch.Generator().manual_seed(seed), len(x))
    assert (params["shadow"] > 0).any() and (params["blur"] > 0).any() and (params["blur"] == 0).any()
    out = aug.apply(x.to(dtype), params)
    assert out.dtype == dtype
    assert torch.allclose(out.float(), _reference(x, params), atol=1e-5)


def test_the_two_implementations_agree_and_a_wrong_blur_is_caught() -> None:
    """The OpenCV and torch-plane paths give the same frames; the check is sharp enough to see a
    blur tap off by 0.01 in one of them."""
    import drivenet_patch.training.augment_batch as ab

    aug = BatchPhotometric(strength=2.0, shadow_p=1.0, blur_p=1.0)
    x = frames(6)
    params = aug.draw(torch.Generator().manual_seed(9), len(x))
    p = {k: v.float() if v.is_floating_point() else v for k, v in params.items()}
    mat, offset = torch.eye(3).expand(6, 3, 3).contiguous(), torch.zeros(6, 3)
    a, b = ab._apply_opencv(x, p, mat, offset), ab._apply_planes(x, p, mat, offset)
    assert a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous()
    assert torch.allclose(a, b, atol=1e-6)
    taps = ab._BLUR_TAPS
    try:
        ab._BLUR_TAPS = (0.28, 0.44, 0.28)
        assert (ab._apply_opencv(x, p, mat, offset) - b).abs().max() > 1e-3
    finally:
        ab._BLUR_TAPS = taps


def test_memory_format_is_the_requested_layout_with_the_same_values() -> None:
    aug, x = BatchPhotometric(), frames()
    params = aug.draw(torch.Generator().manual_seed(5), len(x))
    plain = aug.apply(x, params)
    last = aug.apply(x.contiguous(memory_format=torch.channels_last), params, torch.channels_last)
    assert plain.is_contiguous() and last.is_contiguous(memory_format=torch.channels_last)
    # The same values up to float rounding (the per-frame means are summed in another order).
    assert torch.allclose(plain, last, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_fused_uint8_path_equals_jitter_after_the_float_conversion(seed: int) -> None:
    """The training pipeline's CPU path (uint8 frames straight to jittered channels-last floats) gives
    the frames of the reference and of ``apply`` on ``frames / 255``, to float rounding; a colour map
    that forgot the 1/255 or dropped the noise is caught."""
    import numpy as np

    from drivenet_patch.safety.tensors import to_tensor

    aug = BatchPhotometric(strength=2.0, shadow_p=0.5, blur_p=0.5)
    u8 = np.random.default_rng(seed).integers(0, 256, (10, 24, 40, 3), dtype=np.uint8)
    params = aug.draw(torch.Generator().manual_seed(seed), len(u8))
    assert (params["shadow"] > 0).any() and (params["blur"] > 0).any()
    fused = aug.apply_uint8(u8, params)
    assert fused.dtype == torch.float32 and fused.is_contiguous(memory_format=torch.channels_last)
    x = to_tensor(u8)
    assert (fused - aug.apply(x, params)).abs().max() < 2e-6
    assert (fused - _reference(x, params)).abs().max() < 1e-5
    quiet = dict(params, noise=torch.zeros_like(params["noise"]))
    assert (aug.apply_uint8(u8, quiet) - fused).abs().max() > 1e-3
    with pytest.raises(PDNError, match="uint8"):
        aug.apply_uint8(u8.astype(np.float32), params)
    with pytest.raises(PDNError, match="drawn for 10 frames"):
        aug.apply_uint8(u8[:4], params)
