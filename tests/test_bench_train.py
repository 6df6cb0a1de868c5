"""``pdn bench train``: which models it measures and the JSON it prints (figures are not checked: timings)."""

from __future__ import annotations

import json

import pytest

from defenses.regions import LAYOUTS
from drivenet_patch.app.cli import main
from drivenet_patch.app.cli.bench import train_models, train_table
from drivenet_patch.bench.timing import bench_train
from drivenet_patch.models.registry import list_models

ROW_KEYS = {"model", "layout", "e2e_img_s", "bare_img_s", "e2e_over_bare", "infer_img_s", "infer_gflops",
            "train_gflops", "infer_share_of_matmul", "train_share_of_matmul", "train_over_pilotnet",
            "infer_over_pilotnet", "batches", "macs"}


def test_default_models_follow_the_layouts_and_presets() -> None:
    models = train_models()
    assert models[0] == ("pilotnet", {})
    assert [cfg["layout"] for name, cfg in models if name == "patchvote"] == list(LAYOUTS)
    presets = {n for n in list_models() if n.startswith("patchvote_") and not n.endswith("_tiny")}
    assert {name for name, _ in models if name.startswith("patchvote_")} == presets


def test_one_model_with_its_config_keys() -> None:
    assert train_models("patchvote", ["layout=strips"]) == (("patchvote", {"layout": "strips"}),)


def test_bench_train_json_schema(tmp_path) -> None:
    """Two small models through the real pipeline (rendered frames, prefetch thread) in a few steps."""
    out = bench_train(batches=2, batch=4, repeats=1, seconds=0.0, frames=32,
                      models=(("pilotnet", {}), ("patchvote_tiny", {})), ceiling_n=256)
    assert out["matmul_gflops"] > 0
    rows = out["models"]
    assert [r["model"] for r in rows] == ["pilotnet", "patchvote_tiny"]
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["e2e_img_s"] > 0 and r["bare_img_s"] > 0 and r["infer_img_s"] > 0
        assert r["e2e_over_bare"] == pytest.approx(r["e2e_img_s"] / r["bare_img_s"], abs=2e-3)
        assert r["infer_share_of_matmul"] == pytest.approx(r["infer_gflops"] / out["matmul_gflops"], abs=2e-3)
    assert rows[0]["layout"] is None and rows[0]["train_over_pilotnet"] == 1.0
    assert out["train_e2e_img_s"] == rows[0]["e2e_img_s"]  # the keys pdn bench's ratio table reads
    assert "patchvote_tiny" in train_table(out)
    json.dumps(out)


def test_model_arg_needs_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--model-arg", "layout=strips"]) == 2
    assert "--model-arg needs --model" in capsys.readouterr().err
    assert main(["bench", "train", "--model", "pilotnet", "--model-arg", "no_such_key=1"]) == 2


def test_breakdown_names_every_stage() -> None:
    from drivenet_patch.bench.timing import train_breakdown

    out = train_breakdown(batches=1, batch=4, frames=16)
    stages = ("gather", "warp_flip", "float_jitter", "forward", "backward", "optimizer")
    assert all(out[k] >= 0 for k in stages)
    assert out["pipeline"] == pytest.approx(sum(out[k] for k in stages[:3]), abs=0.05)
    assert out["step"] == pytest.approx(sum(out[k] for k in stages[3:]), abs=0.05)
