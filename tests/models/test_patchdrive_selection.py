"""PatchDrive's patch-selection loss: the penalty, its gradient, lambda = 0 as before,
``pdn train --model-arg``, the effective number of patches and the study table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from drivenet_patch.analysis.saliency import patch_weights_map, save_saliency, unit_range
from drivenet_patch.analysis.selection import fusion_usage, inference_cost, selection_stats
from drivenet_patch.analysis.selection_study import study_table, write_study_table
from drivenet_patch.data import open_dataset
from drivenet_patch.models import create_model, model_defaults, parse_model_args
from drivenet_patch.models.patchdrive import (
    PatchDrive,
    effective_patches,
    gate_weights,
    selection_penalty,
    straight_through_weights,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.training.train import TrainConfig, train

TINY_SIZE = (64, 128)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, make_tiny_synth: Callable[..., Path]) -> Path:
    """80 frames of the tiny learnable dataset at patchdrive_tiny's input size (read only)."""
    return make_tiny_synth(tmp_path_factory.mktemp("sel") / "ds", n=80, size=TINY_SIZE)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(seed: int = 0, **cfg: object) -> PatchDrive:
    return create_model("patchdrive_tiny", generator=gen(seed), **cfg)


def test_selection_weight_is_a_config_key_and_is_checked() -> None:
    assert model_defaults("patchdrive")["selection_weight"] == 0.0
    model = tiny(selection_weight=0.05)
    assert model.config["selection_weight"] == 0.05 and model.gated and not tiny().gated
    for bad in (-0.1, float("nan"), "a", True):
        with pytest.raises(PDNError, match="selection_weight") as err:
            tiny(selection_weight=bad)
        assert "\n" not in str(err.value)


def test_lambda_zero_is_todays_model_bit_for_bit() -> None:
    """Same seed: the same weights; the straight-through weights in the forward pass; and the
    model's own training loss gives exactly the loss and gradients of the generic MSE path."""
    before, after = tiny(3), tiny(3, selection_weight=0)
    for (name, p), q in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.equal(p, q), name
    x = torch.rand(4, 3, *TINY_SIZE, generator=gen(4))
    y = torch.randn(4, generator=gen(5))
    out = after.forward_details(x)
    torch.testing.assert_close(out.weights, torch.ones(4, 3), rtol=0, atol=0)
    generic = F.mse_loss(before(x), y)  # what pdn train computes for a model without its own loss
    own = after.training_loss(x, y, "mse")
    assert torch.equal(generic, own)
    generic.backward()
    own.backward()
    for (name, p), q in zip(before.named_parameters(), after.parameters()):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad), name


def test_lambda_zero_training_run_is_identical(tmp_path: Path, tiny_data: Path) -> None:
    """``pdn train`` with selection_weight = 0 writes the very weights of a run without the key."""
    common = dict(model="patchdrive_tiny", epochs=1, batch=16, samples_per_epoch=32, seed=7)
    train([tiny_data], tmp_path / "a", TrainConfig(model_cfg={}, **common))
    train([tiny_data], tmp_path / "b", TrainConfig(model_cfg={"selection_weight": 0.0}, **common))
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_penalty_gradient_reaches_the_saliency_head_and_sparsifies() -> None:
    model = tiny(5, selection_weight=0.5)
    x = torch.rand(4, 3, *TINY_SIZE, generator=gen(6))
    # The penalty alone (no task loss) already moves the saliency head.
    selection_penalty(model.forward_details(x).saliency).mean().backward()
    assert model.saliency_head.weight.grad.abs().sum() > 0 and model.saliency_head.bias.grad > 0
    assert model.patch_net[0][0].weight.grad is None  # the patches do not enter the penalty
    # and the whole loss: task + lambda * penalty, through the gates used in value.
    model.zero_grad()
    y = torch.zeros(4)
    loss = model.training_loss(x, y)
    out = model.forward_details(x)
    task = F.mse_loss(out.steering, y)
    torch.testing.assert_close(loss, task + 0.5 * selection_penalty(out.saliency).mean())
    torch.testing.assert_close(out.weights, gate_weights(out.saliency, out.index))
    # A few steps on the penalty make the gates smaller.
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with torch.no_grad():
        start = float(selection_penalty(model.saliency(x)).mean())
    for _ in range(3):
        opt.zero_grad()
        selection_penalty(model.saliency(x)).mean().backward()
        opt.step()
    with torch.no_grad():
        assert float(selection_penalty(model.saliency(x)).mean()) < start


def test_gates_are_the_weights_in_value() -> None:
    """A patch whose gate is ~0 is ignored: the steering no longer depends on the patch contents."""
    model = tiny(8, selection_weight=0.1).eval()
    x = torch.rand(2, 3, *TINY_SIZE, generator=gen(9))
    with torch.no_grad():
        model.saliency_head.bias.fill_(-60.0)  # every gate sigmoid(-60) ~ 1e-26
        a = model(x)
        model.patch_proj.bias.add_(5.0)  # changes every patch token
        b = model(x)
    torch.testing.assert_close(a, b)


def test_penalty_and_effective_patches_by_hand() -> None:
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    assert float(selection_penalty(logits)[0]) == pytest.approx(float(torch.sigmoid(logits).sum()))
    st = straight_through_weights(logits, torch.tensor([[3, 1]]))
    assert torch.equal(st, torch.ones(1, 2))
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.0, 0.0]])
    eff = effective_patches(w)
    torch.testing.assert_close(eff, torch.tensor([4.0, 1.0, 2.0]))
    assert float(effective_patches(w[:, [2, 0, 3, 1]])[0]) == pytest.approx(4.0)  # order does not matter
    u = fusion_usage(torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    torch.testing.assert_close(u, torch.tensor([[1.0, 0.0]]))


def test_parse_model_args() -> None:
    assert parse_model_args("patchdrive", ["selection_weight=0.01", "k=4", "nms=false", "input_size=96x192"]) == {
        "selection_weight": 0.01, "k": 4, "nms": False, "input_size": "96x192"}
    for items, match in ((["nope=1"], "no config key 'nope'"), (["k"], "KEY=VALUE"), (["k=2.5"], "must be a int"),
                         (["selection_weight=abc"], "must be a float"), (["k=2", "k=3"], "given twice"),
                         (["nms=1"], "must be a bool")):
        with pytest.raises(PDNError, match=match) as err:
            parse_model_args("patchdrive", items)
        assert "\n" not in str(err.value)


def test_pdn_train_model_arg_is_stored_and_errors_are_one_line(tmp_path: Path, tiny_data: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from drivenet_patch.app.cli import main

    run = tmp_path / "run"
    base = ["train", "--data", str(tiny_data), "--model", "patchdrive_tiny", "--epochs", "1",
            "--batch", "16", "--samples-per-epoch", "16", "--json"]
    assert main([*base, "--out", str(run), "--model-arg", "selection_weight=0.02", "--model-arg", "k=2"]) == 0
    capsys.readouterr()
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["selection_weight"] == 0.02 and saved["model"]["k"] == 2
    assert saved["train"]["model_cfg"]["selection_weight"] == 0.02
    # --resume with the same arguments continues the run (the config compares as stored)
    assert main([*base, "--out", str(run), "--model-arg", "selection_weight=0.02", "--model-arg", "k=2",
                 "--resume", "--epochs", "1"]) == 0
    capsys.readouterr()
    for extra, match in ((["--model-arg", "bogus=1"], "no config key 'bogus'"),
                         (["--model-arg", "selection_weight=-1"], "selection_weight must be"),
                         (["--input-size", "64x128", "--model-arg", "input_size=64x128"], "already set by its own flag")):
        assert main([*base, "--out", str(tmp_path / "bad"), *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pdn: error:") and match in lines[0], lines
        assert not (tmp_path / "bad" / "config.json").exists()


def test_selection_stats_cost_and_overlay(tmp_path: Path, make_tiny_synth: Callable[..., Path]) -> None:
    ds = open_dataset(make_tiny_synth(tmp_path / "ds", n=10, size=TINY_SIZE))
    for lam in (0.0, 0.3):
        model = tiny(12, selection_weight=lam)
        stats = selection_stats(model, ds, n=6, batch_size=4)
        assert stats["n_frames"] == 6 and stats["k"] == 3 and stats["gated"] == (lam > 0)
        assert 1.0 <= stats["effective_patches_fusion"] <= 3.0 + 1e-5
        if lam == 0:
            assert stats["effective_patches"] == pytest.approx(3.0)
        else:
            assert 1.0 <= stats["effective_patches"] <= 3.0 + 1e-5 and 0 <= stats["cells_on"] <= 128
        assert model.training  # mode restored
        # The overlay shows the driver's weights: the gates as they are, or the per-image scaled softmax.
        x = torch.from_numpy(ds.frames(np.arange(2))).permute(0, 3, 1, 2).float() / 255
        masks, _, _, weights = patch_weights_map(model, x)
        with torch.no_grad():
            logits = model.saliency(x)
        cell = model.cell
        expect = torch.sigmoid(logits) if lam else unit_range(logits.flatten(1).softmax(1).view_as(logits))
        torch.testing.assert_close(masks[:, ::cell, ::cell], expect, atol=1e-5, rtol=1e-4)
        assert weights.shape == (2, 3)
        result = save_saliency(model, ds, tmp_path / f"sal{lam}", n=2)
        assert np.asarray(result["patch_weights"]).shape == (2, 3)
    with pytest.raises(PDNError, match="patch-selecting"):
        selection_stats(create_model("pilotnet_tiny"), ds)
    cost = inference_cost(tiny(), batch=2, repeats=1)
    assert cost["macs"] > 0 and cost["ms_per_image"] > 0 and cost["parameters"] > 0


def _write(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj))


def test_study_table_reads_the_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from drivenet_patch.app.cli import main

    res = tmp_path / "results"
    res.mkdir()
    rmse = {"pilotnet": 1.2, "pd0": 0.8, "pd0.03": 0.84}
    for run, r in rmse.items():
        _write(res / f"{run}_eval.json", {"rmse_deg": r})
        sel = {"macs": 2_000_000, "ms_per_image": 0.5}
        if run != "pilotnet":
            sel |= {"selection_weight": float(run[2:]), "effective_patches": 8.0 - len(run),
                    "effective_patches_fusion": 3.0}
        _write(res / f"{run}_selection.json", sel)
        _write(res / f"{run}_attack_eval.json", {"mean_dev_deg": r, "success_rate": 0.1, "n_frames": 256,
                                                 "control_noise": {"mean_dev_deg": 0.1}, "control_grey": {}})
    _write(res / "pd0_attack_sal_eval.json", {"mean_dev_deg": 0.5, "in_topk_rate": 0.9})
    df = study_table(res)
    assert list(df["run"]) == ["pilotnet", "pd0", "pd0.03"]  # PilotNet first, then by lambda
    assert df.loc[df.run == "pd0.03", "rmse_vs_lambda0"].item() == pytest.approx(0.84 / 0.8)
    assert df.loc[df.run == "pd0", "sal_in_topk"].item() == 0.9
    assert np.isnan(df.loc[df.run == "pd0.03", "sal_dev_deg"].astype(float).item())  # step not run: blank
    assert main(["selection-study", "--results", str(res), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 3 and Path(out["table_md"]).read_text().count("\n") == 5
    assert write_study_table(res)["table_csv"].endswith("table.csv")
    (res / "pd0_eval.json").write_text("{nope")
    assert main(["selection-study", "--results", str(res)]) == 2
    assert "pd0_eval.json" in capsys.readouterr().err
