"""PatchDrive: selection, cropping, batching, gradients, files, cost, training and saliency output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from drivenet_patch.analysis.saliency import BOX_COLOR, draw_boxes, patch_saliency, save_saliency
from drivenet_patch.data import open_dataset
from drivenet_patch.models import count_macs, create_model, list_models, model_defaults
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.models.patchdrive import (
    PatchDrive,
    cell_corners,
    crop_patches,
    has_patches,
    patch_coverage,
    patchdrive_macs,
    select_cells,
    straight_through_weights,
)
from drivenet_patch.safety.errors import PDNError

TINY_SIZE = (64, 128)  # patchdrive_tiny: downscale 2 -> 8 px cells, an 8x16 grid; 3 patches of 16x16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(seed: int = 0, **cfg: object) -> PatchDrive:
    return create_model("patchdrive_tiny", generator=gen(seed), **cfg)


def test_registered_with_config_and_shapes() -> None:
    assert {"patchdrive", "patchdrive_tiny"} <= set(list_models())
    assert model_defaults("patchdrive")["input_size"] == (160, 320) and model_defaults("patchdrive")["k"] == 8
    model = tiny()
    assert model.config["name"] == "patchdrive_tiny" and model.config["input_size"] == [64, 128]
    assert has_patches(model) and not has_patches(create_model("pilotnet_tiny"))
    x = torch.rand(2, 3, *TINY_SIZE, generator=gen(1))
    out = model.forward_details(x)
    assert out.steering.shape == (2,) and out.saliency.shape == (2, 8, 16)
    assert out.index.shape == (2, 3) and out.corners.shape == (2, 3, 2)
    assert (out.corners >= 0).all() and (out.corners[..., 0] <= 64 - 16).all() and (out.corners[..., 1] <= 128 - 16).all()
    torch.testing.assert_close(model(x), out.steering)
    torch.testing.assert_close(model.saliency(x), out.saliency)
    with pytest.raises(PDNError, match=r"\(B, 3, 64, 128\)"):
        model(torch.rand(1, 3, 66, 200))


def test_bad_config_is_refused() -> None:
    with pytest.raises(PDNError, match="multiple of 8"):
        create_model("patchdrive_tiny", patch=12)
    with pytest.raises(PDNError, match="k must lie"):
        create_model("patchdrive_tiny", k=500)
    with pytest.raises(PDNError, match="multiple of 16"):
        create_model("patchdrive_tiny", input_size=(66, 200))
    with pytest.raises(PDNError, match="k must be an integer"):
        create_model("patchdrive_tiny", k=2.5)


def test_batch_equals_per_image() -> None:
    """No cross-talk between images: the batched pass is the per-image pass, selection included."""
    model = tiny(3).eval()
    x = torch.rand(4, 3, *TINY_SIZE, generator=gen(4))
    with torch.no_grad():
        batch = model.forward_details(x)
        single = [model.forward_details(x[i : i + 1]) for i in range(4)]
    torch.testing.assert_close(batch.steering, torch.cat([s.steering for s in single]), atol=1e-4, rtol=1e-4)
    assert torch.equal(batch.corners, torch.cat([s.corners for s in single]))
    cl = model.forward_details(x.contiguous(memory_format=torch.channels_last))  # the training layout
    torch.testing.assert_close(cl.steering, batch.steering, atol=1e-4, rtol=1e-4)


def test_selection_picks_the_argmax_and_spreads_with_nms() -> None:
    logits = torch.zeros(2, 4, 6)
    logits[0, 2, 3] = 5.0
    logits[0, 2, 4] = 4.0  # next to the peak: suppressed by nms
    logits[0, 0, 0] = 3.0
    logits[1, 1, 5] = 1.0
    top1 = select_cells(logits, 1)
    assert top1.tolist() == [[2 * 6 + 3], [1 * 6 + 5]]
    assert torch.equal(top1[:, 0], logits.flatten(1).argmax(dim=1))
    assert select_cells(logits, 2)[0].tolist() == [15, 0]  # the peak, then the next *peak*
    assert select_cells(logits, 2, nms=False)[0].tolist() == [15, 16]  # without nms: the neighbour
    # Patches are centred on their cell and clamped into the frame.
    corners = cell_corners(torch.tensor([[0, 15, 23]]), 6, cell=8, patch=16, size=(32, 48))
    assert corners.tolist() == [[[0, 0], [12, 20], [16, 32]]]


def test_crop_patches_matches_slicing_and_is_differentiable() -> None:
    x = torch.rand(2, 3, 20, 30, generator=gen(5), requires_grad=True)
    corners = torch.tensor([[[0, 0], [4, 14]], [[12, 22], [3, 7]]])
    crops = crop_patches(x, corners, 8)  # (4, 3, 8, 8), image-major
    assert crops.shape == (4, 3, 8, 8)
    for b in range(2):
        for j in range(2):
            y0, x0 = corners[b, j].tolist()
            assert torch.equal(crops[2 * b + j], x[b, :, y0 : y0 + 8, x0 : x0 + 8])
    assert torch.equal(crop_patches(x.contiguous(memory_format=torch.channels_last), corners, 8), crops)
    crops.sum().backward()
    assert x.grad[0, 0, 0, 0] == 1 and x.grad[0, 0, 19, 0] == 0  # inside one window / in none
    mask = torch.zeros(2, 20, 30, dtype=torch.bool)
    mask[0, 6:8, 16:19] = True  # 6 pixels inside image 0's second window
    assert patch_coverage(mask, corners, 8).tolist() == [[0.0, 6.0], [0.0, 0.0]]


def test_gradients_reach_the_saliency_head_through_the_straight_through_weights() -> None:
    logits = torch.randn(2, 3, 4, generator=gen(6), requires_grad=True)
    index = select_cells(logits, 2)
    w = straight_through_weights(logits, index)
    torch.testing.assert_close(w, torch.ones(2, 2))
    (w * torch.tensor([[1.0, -2.0], [0.5, 3.0]])).sum().backward()
    assert logits.grad.abs().sum() > 0
    model = tiny(7)
    x = torch.rand(3, 3, *TINY_SIZE, generator=gen(8), requires_grad=True)
    model(x).pow(2).mean().backward()
    assert model.saliency_head.weight.grad.abs().sum() > 0
    assert model.patch_net[0][0].weight.grad.abs().sum() > 0 and model.global_net[0][0].weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0  # attacks need the input gradient


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = tiny(9, k=2).eval()
    save_model(tmp_path / "run", model)
    loaded = load_model(tmp_path / "run")
    assert isinstance(loaded, PatchDrive) and loaded.config == model.config and loaded.k == 2
    x = torch.rand(2, 3, *TINY_SIZE, generator=gen(10))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))


def test_cost_is_within_three_pilotnets() -> None:
    """The issue's budget: at most 3x PilotNet's multiply-accumulates at 66x200."""
    model = create_model("patchdrive", generator=gen(0))
    pilot = count_macs(create_model("pilotnet"))
    total = patchdrive_macs(model)
    assert count_macs(model) < total < 3 * pilot
    assert total < count_macs(create_model("pilotnet", input_size=(160, 320))) / 3  # vs PilotNet at the same size


def test_saliency_shows_the_map_and_the_selected_patches(tmp_path: Path, make_tiny_synth) -> None:
    model = tiny(11)
    ds = open_dataset(make_tiny_synth(tmp_path / "ds", n=6, size=TINY_SIZE))
    result = save_saliency(model, ds, tmp_path / "sal", n=3)
    assert result["method"] == "patches" and result["patch_size"] == 16 and result["frames"] == 3
    assert np.asarray(result["patches"]).shape == (3, 3, 2)
    for f in result["files"]:
        img = cv2.imread(f)
        assert img is not None and img.shape == (64, 128, 3)
    assert Path(result["grid"]).is_file()
    summary = json.loads((tmp_path / "sal" / "saliency.json").read_text())
    assert summary["patches"] == result["patches"]
    # The map and the boxes come from the model's own forward pass.
    from drivenet_patch.safety.tensors import to_tensor

    x = to_tensor(ds.frames(np.asarray(result["indices"])))
    masks, steering, corners = patch_saliency(model, x)
    assert corners.tolist() == result["patches"] and masks.shape == (3, 64, 128)
    assert float(masks.amax()) == 1.0 and model.training  # restored
    assert summary["prediction_deg"] == pytest.approx(steering.numpy(), abs=1e-3)
    boxed = draw_boxes(np.zeros((1, 64, 128, 3), np.uint8), np.array([[[4, 10]]]), 16)
    assert tuple(boxed[0, 4, 10]) == BOX_COLOR and tuple(boxed[0, 19, 25]) == BOX_COLOR
    assert boxed[0, 10, 16].sum() == 0  # inside the box: untouched


def test_pdn_train_and_saliency_cli(tmp_path: Path, make_tiny_synth: Callable[..., Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``pdn train --model patchdrive`` on a tiny 160x320 synth dataset, then ``pdn saliency`` on the run."""
    from drivenet_patch.app.cli import main

    make_tiny_synth(tmp_path / "ds", n=40, size=(160, 320))  # two episodes: one trains, one validates
    run = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "ds"), "--model", "patchdrive", "--epochs", "1", "--batch", "8",
                 "--samples-per-epoch", "16", "--out", str(run), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and (run / "model.safetensors").is_file()
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "patchdrive"
    code = main(["saliency", "--model", str(run), "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "sal"),
                 "--n", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "patches" and len(list((tmp_path / "sal").glob("saliency_0*.png"))) == 2
