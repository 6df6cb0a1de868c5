"""VisualBackProp: the product structure, shapes and range, localisation, files and the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from drivenet_patch.analysis.saliency import (
    backprop_maps,
    overlay,
    save_saliency,
    upscale_mask,
    visual_backprop,
)
from drivenet_patch.app.cli.saliency import register as add_saliency_command
from drivenet_patch.data import open_dataset
from drivenet_patch.models import SaliencyStage, create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.safety.errors import PDNError


def stage(k: int, s: int, p: int = 0) -> SaliencyStage:
    return SaliencyStage(torch.nn.Identity(), (k, k), (s, s), (p, p))


def test_upscale_spreads_each_value_over_its_footprint() -> None:
    mask = torch.zeros(1, 3, 4)
    mask[0, 1, 2] = 2.0
    up = upscale_mask(mask, stage(3, 2), (8, 10))  # conv 3x3/2: 8x10 -> 3x4 (one row/col never read)
    expected = torch.zeros(8, 10)
    expected[2:5, 4:7] = 2.0  # output (1, 2) reads input rows 2..4, cols 4..6
    assert torch.equal(up[0], expected)
    padded = upscale_mask(torch.ones(1, 17, 50), stage(3, 2, 1), (33, 100))  # padding 1 (ResNet max-pool)
    assert padded.shape == (1, 33, 100) and padded[0, 0, 0] == 1 and padded[0, 1, 1] == 4


def test_backprop_is_the_product_of_upscaled_maps() -> None:
    stages = [stage(3, 2), stage(3, 1)]
    shallow = torch.ones(1, 7, 9)  # 15x19 input -> 7x9 -> 5x7
    shallow[0, :, :4] = 0.0  # nothing active in the left part of the shallow stage
    deep = torch.zeros(1, 5, 7)
    deep[0, 2, 3] = 1.0
    mask = backprop_maps([shallow, deep], stages, (15, 19))[0]
    # deep (2, 3) covers shallow rows 2..4, cols 3..5; only cols 4..5 are active there,
    # which cover input rows 4..10 and cols 8..12.
    expected = torch.zeros(15, 19)
    expected[4:11, 8:13] = 1.0
    expected[[6, 8], :] *= 2.0  # input rows 6 and 8 are read by two shallow rows (stride 2, kernel 3)
    expected[:, 10] *= 2.0
    expected /= expected.max()
    torch.testing.assert_close(mask, expected)
    zero = backprop_maps([torch.zeros(2, 7, 9), deep.expand(2, 5, 7)], stages, (15, 19))
    assert torch.equal(zero, torch.zeros(2, 15, 19))  # nothing active: zeros, no NaN


@pytest.mark.parametrize("name", ["pilotnet_tiny", "pilotnet", "resnet18"])
def test_masks_have_the_input_size_and_unit_range_and_are_deterministic(name: str) -> None:
    model = create_model(name, generator=torch.Generator().manual_seed(0)).train()
    x = torch.rand(3, 3, 66, 200, generator=torch.Generator().manual_seed(1))
    masks = visual_backprop(model, x)
    assert masks.shape == (3, 66, 200) and masks.dtype == torch.float32
    assert masks.min() >= 0 and torch.allclose(masks.flatten(1).max(dim=1).values, torch.ones(3))
    assert torch.equal(visual_backprop(model, x), masks)
    assert model.training  # restored
    # Per image: the batch does not mix.
    torch.testing.assert_close(visual_backprop(model, x[1:2])[0], masks[1])


def square_detector() -> torch.nn.Module:
    """pilotnet_tiny whose convs average the brightness (Y) and fire only where it is high."""
    model = create_model("pilotnet_tiny")
    with torch.no_grad():
        for i, st in enumerate(model.features):
            conv = st[0]
            conv.bias.zero_()
            if i == 0:
                conv.weight.zero_()
                conv.weight[:, 0] = 1.0 / 25  # luma only: y' = -1 on black, +1 on white
            else:
                conv.weight.fill_(1.0 / (conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]))
    return model


@pytest.mark.parametrize(("top", "left"), [(20, 30), (10, 150)])
def test_mask_sits_on_a_bright_square(top: int, left: int) -> None:
    model = square_detector()
    x = torch.zeros(1, 3, 66, 200)
    x[0, :, top : top + 24, left : left + 24] = 1.0
    mask = visual_backprop(model, x)[0]
    r, c = divmod(int(mask.argmax()), 200)
    assert top <= r < top + 24 and left <= c < left + 24
    outside = mask.clone()
    outside[max(top - 8, 0) : top + 32, max(left - 8, 0) : left + 32] = 0
    assert outside.max() == 0  # conv1 fires only within 4 px of the square; its footprint adds 4
    assert torch.equal(visual_backprop(model, torch.zeros(1, 3, 66, 200)), torch.zeros(1, 66, 200))


def test_bad_inputs() -> None:
    model = create_model("pilotnet_tiny")
    with pytest.raises(PDNError, match=r"values must lie in \[0, 1\]"):
        visual_backprop(model, torch.full((1, 3, 66, 200), 2.0))

    class NoStages(torch.nn.Module):
        def saliency_stages(self) -> list:
            return create_model("pilotnet").saliency_stages()  # hooks on modules this model never runs

        name = "nostages"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3))

    with pytest.raises(PDNError, match="never ran"):
        visual_backprop(NoStages(), torch.rand(1, 3, 66, 200))


def test_overlay_tints_salient_pixels() -> None:
    frames = np.full((2, 4, 5, 3), 100, np.uint8)
    masks = np.zeros((2, 4, 5), np.float32)
    masks[1, 2, 3] = 1.0
    out = overlay(frames, torch.from_numpy(masks))
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.array_equal(out[0], frames[0])
    assert tuple(out[1, 2, 3]) == (30, 208, 30)  # 0.3 * 100 + 0.7 * (0, 255, 0)
    with pytest.raises(PDNError, match="overlay"):
        overlay(frames, masks[:, :3])


def test_save_saliency_writes_pngs_and_summary(tmp_path: Path, make_tiny_synth) -> None:
    ds = open_dataset(make_tiny_synth(tmp_path / "ds", n=10))
    model = create_model("pilotnet_tiny")
    result = save_saliency(model, ds, tmp_path / "out", n=4)
    assert result["indices"] == [0, 3, 6, 9] and result["frames"] == 4
    for f in result["files"]:
        img = cv2.imread(f)
        assert img is not None and img.shape == (66, 200, 3)
    grid = cv2.imread(result["grid"])
    assert grid is not None and grid.shape[1] > 4 * 200 and grid.shape[0] > 66
    summary = json.loads((tmp_path / "out" / "saliency.json").read_text())
    assert summary["steering_deg"] == pytest.approx(ds.labels["steering_deg"].to_numpy()[[0, 3, 6, 9]], abs=1e-4)
    with torch.no_grad():
        from drivenet_patch.safety.tensors import to_tensor

        expected = model.eval()(to_tensor(ds.frames([0, 3, 6, 9]))).numpy()
    assert summary["prediction_deg"] == pytest.approx(expected, abs=1e-3)
    assert not list((tmp_path / "out").glob(".*"))
    assert save_saliency(model, ds, tmp_path / "all", n=50)["frames"] == 10
    with pytest.raises(PDNError, match="expects 80x160"):
        save_saliency(create_model("pilotnet_tiny", input_size=(80, 160)), ds, tmp_path / "x")


def test_saliency_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], make_tiny_synth) -> None:
    data = make_tiny_synth(tmp_path / "ds", n=5)
    save_model(tmp_path / "run", create_model("pilotnet_tiny"))
    parser = argparse.ArgumentParser(prog="pdn")
    add_saliency_command(parser.add_subparsers())
    args = parser.parse_args(["saliency", "--model", str(tmp_path / "run"), "--data", str(data),
                              "--out", str(tmp_path / "sal"), "--n", "3", "--json"])
    assert args.fn(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 3 and result["indices"] == [0, 2, 4]
    assert Path(result["grid"]).is_file() and len(list((tmp_path / "sal").glob("saliency_0*.png"))) == 3
