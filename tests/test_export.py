"""``pdn export``: every registered model runs in ONNX Runtime as it does in PyTorch; PatchVote's votes stay exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")  # a guard only: `make test` installs the deploy extra

from defenses.certify import certify_votes
from drivenet_patch.app.cli import main
from drivenet_patch.deploy import onboard
from drivenet_patch.deploy.export import compare, export_onnx, run_session, session, world_frames
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model

TOL_DEG = 1e-4


def _model(name: str, **cfg) -> torch.nn.Module:
    return create_model(name, generator=torch.Generator().manual_seed(0), **cfg).eval()


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    return world_frames((66, 200), 12)


@pytest.mark.parametrize("name,cfg", [("pilotnet_tiny", {}), pytest.param("resnet18", {}, marks=pytest.mark.slow),
                                      ("patchdrive_tiny", {}),
                                      ("patchvote_tiny", {"abstain": [0]}),
                                      ("patchvote_tiny", {"aggregate": "trimmed"}),
                                      ("patchvote_tiny", {"aggregate": "vote"})])
def test_onnx_runtime_equals_pytorch_on_held_out_world_frames(tmp_path: Path, held_out, name, cfg) -> None:
    model = _model(name, **cfg)
    frames = held_out if tuple(model.input_size) == (66, 200) else world_frames(model.input_size, 12)
    info = export_onnx(model, tmp_path / "m.onnx")
    sess = session(tmp_path / "m.onnx")
    diff = compare(model, sess, frames)
    assert set(diff) == set(info["outputs"])
    assert max(diff.values()) <= TOL_DEG, diff
    # the batch axis is dynamic: one frame and a batch give the same steering
    one = run_session(sess, frames[:1])
    assert np.allclose(one[info["outputs"][0]], run_session(sess, frames)[info["outputs"][0]][:1], atol=TOL_DEG)
    assert model.training is False and not (tmp_path / "m.onnx").with_suffix(".onnx.tmp").exists()


def test_patchvote_votes_keep_the_exactness_contract_in_onnx_runtime(tmp_path: Path, held_out) -> None:
    model = _model("patchvote_tiny", out_scale=100.0)
    export_onnx(model, tmp_path / "pv.onnx")
    sess = session(tmp_path / "pv.onnx")
    x = held_out[:1]
    clean = run_session(sess, x)["votes"][0]
    g = torch.Generator().manual_seed(1)
    rows, cols = model.layout.index_tensors()
    for r in range(model.n_regions):
        inside = torch.zeros(66, 200, dtype=torch.bool)
        inside[rows[r], cols[r]] = True
        noise = torch.rand(x.shape, generator=g)
        moved = run_session(sess, torch.where(inside, x, noise))["votes"][0]
        assert moved[r] == clean[r]  # bit for bit: only its own pixels feed a vote
        assert (moved != clean).sum() >= model.n_regions - 3  # and the others did see the change


def test_vehicle_certifier_from_onnx_metadata_equals_certify_votes(tmp_path: Path, held_out) -> None:
    model = _model("patchvote_tiny", abstain=[8], out_scale=3.0)
    export_onnx(model, tmp_path / "pv.onnx")
    sess = session(tmp_path / "pv.onnx")
    cert_fn = onboard.Certifier.from_onnx_session(sess)
    assert cert_fn.default_threat == "patch_2%" and len(cert_fn.threats) == 3
    out = run_session(sess, held_out)
    cert = cert_fn(out["votes"], out["valid"])
    ref = certify_votes(torch.from_numpy(out["votes"]), model.touch("2%"), torch.from_numpy(out["valid"]), "median")
    for a, b in zip(cert, ref, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(cert.output, out["steering"])
    torch_cert = model.certify(held_out, "2%")
    assert np.abs(cert.lo - torch_cert.lo.numpy()).max() <= TOL_DEG


@pytest.mark.slow
def test_bench_models_reports_onnx_runtime_beside_pytorch() -> None:
    from drivenet_patch.bench.timing import bench_models

    out = bench_models(batch=2, repeats=1, onnx=True)
    for name in ("pilotnet_66x200", "pilotnet_160x320", "patchdrive_160x320", "resnet18_66x200", "patchvote_66x200"):
        assert out[f"{name}_ort_img_s"] > 0 and out[f"{name}_ort_max_diff_deg"] <= TOL_DEG


def test_pdn_export_cli(tmp_path: Path, capsys) -> None:
    save_model(tmp_path / "run", _model("pilotnet_tiny"))
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "p.onnx"),
                 "--batch", "4", "--check-frames", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch"] == 4 and result["check"]["frames"] == 8
    assert result["check"]["max_abs_diff"]["steering"] <= TOL_DEG
    for bad, needle in ((["--out", str(tmp_path / "p.txt")], "--out"), (["--out", str(tmp_path / "q.onnx"), "--opset", "99"],
                        "--opset"), (["--out", str(tmp_path / "q.onnx"), "--batch", "0"], "--batch")):
        try:
            code = main(["export", "--model", str(tmp_path / "run"), *bad])
        except SystemExit as exc:  # argparse's own refusal
            code = exc.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("pdn") and "error:" in err[0] and needle in err[0], err
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("sub", [("export",), ("bench", "monitor")])
def test_new_commands_have_help(sub, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*sub, "--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith(f"usage: pdn {' '.join(sub)}")
