"""Model zoo: registry, shapes, exact PilotNet size, the normalisation layer, gradients, learning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models import resnet18 as tv_resnet18

from drivenet_patch.models import (
    ColorNorm,
    PilotNet,
    count_macs,
    count_parameters,
    create_model,
    list_models,
    model_defaults,
    use_mode,
)
from drivenet_patch.safety.errors import PDNError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_package_exports_and_a_light_cli_import() -> None:
    import subprocess
    import sys

    import drivenet_patch.models as models

    assert sorted(models.__all__) == sorted(models._EXPORTS)
    for name in models.__all__:
        assert getattr(models, name) is not None
    code = "import sys, drivenet_patch.app.cli.saliency; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0  # pdn --help stays fast


def test_registry_lists_models_and_defaults() -> None:
    assert {"pilotnet", "pilotnet_tiny", "resnet18"} <= set(list_models())
    assert list_models() == sorted(list_models())
    assert model_defaults("pilotnet") == {"input_size": (66, 200), "dropout": 0.0, "out_scale": 10.0}
    assert "init" in model_defaults("resnet18")


@pytest.mark.parametrize("name", ["pilotnet", "pilotnet_tiny", "resnet18"])
def test_every_model_maps_images_to_one_angle_each(name: str) -> None:
    model = create_model(name, generator=gen(1))
    # The config is complete, JSON-serialisable and rebuilds the same architecture and weights.
    cfg = json.loads(json.dumps(model.config))
    assert cfg == model.config and cfg["name"] == name and cfg["input_size"] == [66, 200]
    again = create_model(cfg.pop("name"), generator=gen(1), **cfg)
    assert again.config == model.config
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(3, 3, 66, 200, generator=gen(2), requires_grad=True)
    y = model(x)
    assert y.shape == (3,) and y.dtype == torch.float32 and torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_pilotnet_parameter_count_by_hand() -> None:
    conv = lambda cin, cout, k: cout * cin * k * k + cout  # noqa: E731
    fc = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    convs = conv(3, 24, 5) + conv(24, 36, 5) + conv(36, 48, 5) + conv(48, 64, 3) + conv(64, 64, 3)
    flatten = 64 * 1 * 18  # 66x200 -> 31x98 -> 14x47 -> 5x22 -> 3x20 -> 1x18
    fcs = fc(flatten, 100) + fc(100, 50) + fc(50, 10) + fc(10, 1)
    assert (convs, fcs, convs + fcs) == (131_348, 120_871, 252_219)
    model = create_model("pilotnet")
    assert isinstance(model, PilotNet) and model.flat_features == 1152
    assert count_parameters(model) == 252_219
    assert count_parameters(create_model("pilotnet_tiny")) == 5_751


def test_pilotnet_macs_by_hand() -> None:
    # output pixels x out channels x (in channels x k x k), per conv; in x out per FC.
    macs = (
        31 * 98 * 24 * 3 * 25 + 14 * 47 * 36 * 24 * 25 + 5 * 22 * 48 * 36 * 25 + 3 * 20 * 64 * 48 * 9 + 1 * 18 * 64 * 64 * 9
        + 1152 * 100 + 100 * 50 + 50 * 10 + 10 * 1
    )
    assert macs == 26_876_342
    assert count_macs(create_model("pilotnet")) == macs


def test_pilotnet_other_input_sizes_and_too_small() -> None:
    model = create_model("pilotnet_tiny", input_size=(80, 160))
    # 80 -> 38 -> 17 -> 7 -> 5 -> 3 ; 160 -> 78 -> 37 -> 17 -> 15 -> 13
    assert model.flat_features == 8 * 3 * 13
    assert model(torch.rand(2, 3, 80, 160)).shape == (2,)
    assert create_model("pilotnet_tiny", input_size="61x61")(torch.rand(1, 3, 61, 61)).shape == (1,)
    with pytest.raises(PDNError, match="61x61"):
        create_model("pilotnet", input_size=(60, 200))


def test_wrong_input_shape_is_a_clear_error() -> None:
    model = create_model("pilotnet_tiny")
    with pytest.raises(PDNError, match=r"\(B, 3, 66, 200\)"):
        model(torch.rand(2, 3, 64, 200))
    with pytest.raises(PDNError, match="expected images"):
        model(torch.rand(3, 66, 200))


def _yuv_by_hand(r: float, g: float, b: float) -> tuple[float, float, float]:
    y = 0.299 * r + 0.587 * g + 0.114 * b  # BT.601 luma
    return (y - 0.5) / 0.5, (b - y) / 0.886, (r - y) / 0.701  # = (Y-.5)/.5, U/.436, V/.615


@pytest.mark.parametrize(
    ("rgb", "yuv"),
    [
        ((1.0, 1.0, 1.0), (1.0, 0.0, 0.0)),  # white: Y = 1, no colour
        ((0.0, 0.0, 0.0), (-1.0, 0.0, 0.0)),  # black
        ((0.5, 0.5, 0.5), (0.0, 0.0, 0.0)),  # mid grey: all zero
        ((1.0, 0.0, 0.0), (-0.402, -0.299 / 0.886, 1.0)),  # red: V at its maximum
        ((0.0, 1.0, 0.0), (0.174, -0.587 / 0.886, -0.587 / 0.701)),  # green
        ((0.0, 0.0, 1.0), (-0.772, 1.0, -0.114 / 0.701)),  # blue: U at its maximum
        ((0.2, 0.7, 0.4), _yuv_by_hand(0.2, 0.7, 0.4)),
    ],
)
def test_pilotnet_normalisation_is_scaled_bt601_yuv(rgb: tuple, yuv: tuple) -> None:
    torch.testing.assert_close(torch.tensor(_yuv_by_hand(*rgb)), torch.tensor(yuv))
    x = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    out = ColorNorm.pilotnet_yuv()(x)
    assert out.shape == (2, 3, 4, 5)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(yuv), atol=1e-6, rtol=0)
    assert (out == out[:, :, :1, :1]).all()
    # The analog-YUV table values agree to their printed precision.
    u_table = -0.14713 * rgb[0] - 0.28886 * rgb[1] + 0.436 * rgb[2]
    v_table = 0.615 * rgb[0] - 0.51499 * rgb[1] - 0.10001 * rgb[2]
    assert abs(out[0, 1, 0, 0].item() * 0.436 - u_table) < 2e-5
    assert abs(out[0, 2, 0, 0].item() * 0.615 - v_table) < 2e-5


def test_imagenet_normalisation_and_no_constants_in_state_dict() -> None:
    x = torch.rand(2, 3, 4, 4, generator=gen())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(ColorNorm.imagenet()(x), (x - mean) / std)
    for name in list_models():
        assert not any(k.startswith("norm.") for k in create_model(name).state_dict())


def test_unknown_names_keys_and_bad_values_list_valid_choices() -> None:
    with pytest.raises(PDNError, match="valid models: patchdrive, patchdrive_tiny, patchvote, patchvote_road, patchvote_tiny, pilotnet, pilotnet_tiny, resnet18"):
        create_model("alexnet")
    with pytest.raises(PDNError, match=r"unknown config key.*width.*valid keys: dropout, input_size, out_scale"):
        create_model("pilotnet", width=3)
    for bad in ({"dropout": 1.5}, {"dropout": "x"}, {"out_scale": 0}, {"out_scale": float("nan")},
                {"input_size": (66,)}, {"input_size": "66by200"}, {"input_size": (66.5, 200)}, {"input_size": (0, 200)}):
        with pytest.raises(PDNError, match="pilotnet"):
            create_model("pilotnet", **bad)


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a = create_model("pilotnet_tiny", generator=gen(5))
    b = create_model("pilotnet_tiny", generator=gen(5))
    c = create_model("pilotnet_tiny", generator=gen(6))
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    # Without a generator the seed comes from the global RNG, as for any nn.Module.
    torch.manual_seed(5)
    d = create_model("pilotnet_tiny")
    torch.manual_seed(5)
    e = create_model("pilotnet_tiny")
    f = create_model("pilotnet_tiny")
    pd_, pe, pf = (torch.cat([p.flatten() for p in m.parameters()]) for m in (d, e, f))
    assert torch.equal(pd_, pe) and not torch.equal(pe, pf)
    torch.set_rng_state(state)


def test_out_scale_multiplies_the_head_and_dropout_only_acts_in_train_mode() -> None:
    x = torch.rand(4, 3, 66, 200, generator=gen())
    m10 = create_model("pilotnet_tiny", generator=gen(3)).eval()
    m25 = create_model("pilotnet_tiny", out_scale=25.0, generator=gen(3)).eval()
    torch.testing.assert_close(m25(x), m10(x) * 2.5)
    drop = create_model("pilotnet_tiny", dropout=0.5, generator=gen(3))
    torch.manual_seed(0)
    assert not torch.equal(drop.train()(x), drop(x))
    torch.testing.assert_close(drop.eval()(x), m10(x))


def test_use_mode_restores_each_submodule() -> None:
    model = create_model("pilotnet_tiny").train()
    model.features[0].eval()  # a mixed state, e.g. a frozen stage
    before = [m.training for m in model.modules()]
    with use_mode(model, False):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError), use_mode(model, False):
        raise RuntimeError
    assert [m.training for m in model.modules()] == before


def _halves(n: int, g: torch.Generator, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images whose halves have random brightness; label = 10 * (mean left - mean right)."""
    h, w = size
    left, right = torch.rand(n, 1, 1, 1, generator=g), torch.rand(n, 1, 1, 1, generator=g)
    x = torch.cat([left.expand(n, 3, h, w // 2), right.expand(n, 3, h, w - w // 2)], dim=3)
    x = (x + 0.1 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    y = 10.0 * (x[..., : w // 2].mean(dim=(1, 2, 3)) - x[..., w // 2 :].mean(dim=(1, 2, 3)))
    return x, y


@pytest.fixture
def one_thread() -> Iterator[None]:
    """200 tiny steps are dominated by per-op overhead: with 2 OpenMP threads on a shared,
    busy 2-core machine every op waits at a barrier and the loop ran 40x slower (85 s vs 2 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_tiny_model_learns_a_synthetic_steering_signal() -> None:
    g = gen(0)
    size = (64, 64)
    model = create_model("pilotnet_tiny", input_size=size, generator=g)
    x_train, y_train = _halves(256, g, size)
    x_val, y_val = _halves(128, g, size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = F.mse_loss(model(x_val), y_val).item()
    for _ in range(200):
        idx = torch.randint(0, len(x_train), (16,), generator=g)
        loss = F.mse_loss(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = F.mse_loss(model(x_val), y_val).item()
    assert after < before / 5, (before, after)


def _tv_state(num_classes: int = 1000) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        return tv_resnet18(weights=None, num_classes=num_classes).state_dict()


def test_resnet18_initialises_its_backbone_from_a_local_safetensors_file(tmp_path: Path) -> None:
    state = _tv_state()
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = create_model("resnet18", init=path)
    assert model.config["init"] == str(path)
    own = model.backbone.state_dict()
    for key, value in own.items():
        assert torch.equal(value, state[key]), key
    assert model(torch.rand(2, 3, 66, 200)).shape == (2,)


def test_resnet18_init_errors_name_the_file(tmp_path: Path) -> None:
    state = _tv_state()
    state["conv1.weight"] = state["conv1.weight"][:, :, :5, :5].contiguous()
    bad_shape = tmp_path / "shape.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad_shape))
    with pytest.raises(PDNError, match=r"shape\.safetensors: shape mismatch for 'conv1.weight'"):
        create_model("resnet18", init=str(bad_shape))
    partial = tmp_path / "partial.safetensors"
    save_file({"conv1.weight": _tv_state()["conv1.weight"].contiguous()}, str(partial))
    with pytest.raises(PDNError, match=r"partial\.safetensors: not a ResNet-18 state dict: missing"):
        create_model("resnet18", init=str(partial))
    with pytest.raises(PDNError, match=r"nothere\.safetensors"):
        create_model("resnet18", init=str(tmp_path / "nothere.safetensors"))
    with pytest.raises(PDNError, match=r"must be a \.safetensors file"):
        create_model("resnet18", init=str(tmp_path / "weights.pth"))
