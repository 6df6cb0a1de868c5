"""The sticker attack against PatchDrive: the saliency objective and the in-top-k measurement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks.eot import draw_eot, eot_footprint
from attacks.saliency_grab import saliency_capture, saliency_grab_loss, sticker_cells
from attacks.scenes import StickerScenes
from attacks.sticker import SALIENCY_COLUMN, StickerConfig, optimize_sticker
from drivenet_patch.models import create_model
from drivenet_patch.safety.errors import PDNError

H, W = 64, 128  # patchdrive_tiny's input
FAST = dict(steps=20, batch=8, texture_hw=(8, 14), lr=0.2, nps_weight=0.0, tv_weight=0.0)


@pytest.fixture(scope="module")
def scenes(straight_approach) -> StickerScenes:
    return straight_approach(H, W)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """patchdrive_tiny with one patch and a confident saliency head (an untrained one is nearly flat)."""
    model = create_model("patchdrive_tiny", k=1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.saliency_head.weight.mul_(30.0)
    return model


def sticker_mass(model: torch.nn.Module, scenes: StickerScenes, texture: torch.Tensor) -> float:
    with torch.no_grad():
        return float(saliency_grab_loss(model.saliency(scenes.apply(texture)), scenes.mask, model.cell, 1.0)[1])


def test_grab_loss_is_minus_log_saliency_mass_on_the_sticker_cells() -> None:
    logits = torch.zeros(3, 2, 4, requires_grad=True)
    foot = torch.zeros(3, 16, 32, dtype=torch.bool)  # cell 8: a 2x4 grid
    foot[0, 0:3, 0:3] = True  # cell (0, 0)
    foot[1, 7:9, 15:17] = True  # the corner of four cells
    # frame 2: no sticker in view, left out
    assert sticker_cells(foot, 8).sum(dim=(1, 2)).tolist() == [1, 4, 0]
    loss, mass = saliency_grab_loss(logits, foot, 8)
    assert mass == pytest.approx((1 / 8 + 4 / 8) / 2)
    assert loss.item() == pytest.approx(-(np.log(1 / 8) + np.log(4 / 8)) / 2)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0, 0] < 0 and logits.grad[0, 1, 3] > 0
    assert logits.grad[2].abs().sum() == 0
    none, _ = saliency_grab_loss(logits, torch.zeros_like(foot), 8)
    assert none.item() == 0.0
    sharp = torch.zeros(1, 2, 4)
    sharp[0, 0, 0] = 0.3  # a flat map with the sticker's cell slightly ahead
    soft, hard = (saliency_grab_loss(sharp, foot[:1], 8, t)[1] for t in (1.0, 0.1))
    assert soft == pytest.approx(np.exp(0.3) / (np.exp(0.3) + 7)) and hard > 2 * soft  # low temperature: ranking


def test_footprint_follows_the_jitter(scenes: StickerScenes) -> None:
    g = torch.Generator().manual_seed(1)
    from attacks.eot import EOTConfig

    params = draw_eot(EOTConfig(jitter_px=2), len(scenes), 4, scenes.size, g)
    foot = eot_footprint(scenes, params)
    base = scenes.maps(params.idx)[2]
    assert foot.shape == base.shape and foot.dtype == torch.bool
    assert (foot.sum(dim=(1, 2)) > 0).all()


def test_saliency_objective_raises_the_in_topk_share(model: torch.nn.Module, scenes: StickerScenes) -> None:
    plain = optimize_sticker(model, scenes, StickerConfig(**FAST))
    grab = optimize_sticker(model, scenes, StickerConfig(**FAST, saliency_weight=5.0))
    assert SALIENCY_COLUMN not in plain.history and SALIENCY_COLUMN in grab.history
    assert sticker_mass(model, scenes, grab.texture) > sticker_mass(model, scenes, plain.texture)
    before = saliency_capture(model, scenes, plain.texture)
    after = saliency_capture(model, scenes, grab.texture)
    assert after["n_visible"] == before["n_visible"] == len(scenes)
    assert after["in_topk_rate"] > max(before["in_topk_rate"], after["clean_in_topk_rate"])
    assert 0 <= after["patch_sticker_share"] <= 1
    assert after["in_top1_rate"] == after["in_topk_rate"]  # k = 1
    # k = 1 with straight-through weights (all 1): the sticker's weight share is the in-top-k share
    assert after["weight_on_sticker"] == pytest.approx(after["in_topk_rate"])
    assert after["clean_weight_on_sticker"] == pytest.approx(after["clean_in_topk_rate"])


def test_saliency_weight_needs_a_patch_model(scenes: StickerScenes) -> None:
    pilot = create_model("pilotnet_tiny", input_size=(H, W))
    with pytest.raises(PDNError, match="patch-selecting model"):
        optimize_sticker(pilot, scenes, StickerConfig(**FAST, saliency_weight=1.0))
    with pytest.raises(PDNError, match="patch-selecting model"):
        saliency_capture(pilot, scenes, torch.full((3, 8, 14), 0.5))
    with pytest.raises(PDNError, match="saliency_weight"):
        StickerConfig(saliency_weight=-1.0)


def test_attack_cli_reports_the_in_topk_share(tmp_path: Path, model: torch.nn.Module,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``pdn attack --saliency-weight`` and ``pdn attack eval`` on a patchdrive run carry the in-top-k numbers."""
    from drivenet_patch.app.cli import main
    from drivenet_patch.models.checkpoint import save_model

    save_model(tmp_path / "run", model)
    small = ["--roads", "1", "--poses", "4", "--json"]
    code = main(["attack", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "atk"), "--steps", "2",
                 "--batch", "4", "--texels", "8x14", "--distance", "4-6", "--size", "0.6x0.4", "--saliency-weight", "1",
                 *small])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["in_topk_rate"] <= 1
    meta = json.loads((tmp_path / "atk" / "attack.json").read_text())
    assert meta["attack"]["saliency_weight"] == 1.0
    assert set(meta["metrics"]["heldout_saliency"]) >= {"in_topk_rate", "clean_in_topk_rate", "n_visible"}
    code = main(["attack", "eval", "--model", str(tmp_path / "run"), "--sticker", str(tmp_path / "atk"),
                 "--loop-roads", "0", *small])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["in_topk_rate"] <= 1 and "in_topk_rate" in result["control_grey"]
    # inside the most salient patch implies inside a selected one
    assert 0 <= result["in_top1_rate"] <= result["in_topk_rate"]
