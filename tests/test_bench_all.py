"""``pdn bench`` with no sub-command: every benchmark in one process and one table of ratios."""

from __future__ import annotations

import json

import pytest

from drivenet_patch.app.cli import build_parser, main
from drivenet_patch.app.cli.bench import cmd_bench_all
from drivenet_patch.bench.timing import bench_models, ratio_table
from drivenet_patch.models import count_macs, create_model


def test_ratios_are_the_quotients_of_side_by_side_measurements() -> None:
    parts = {"world": {"fps_66x200_compiled": 2000.0, "fps_66x200_eager": 800.0},
             "train": {"train_e2e_img_s": 540.0, "train_step_img_s_interleaved": 600.0, "infer_gflops": 100.0,
                       "matmul_gflops": 200.0, "infer_img_s": 1900.0},
             "attack": {"ours_s_per_step": 0.04, "art_s_per_step": 0.08, "ours_dev_deg": 1.2, "art_dev_deg": 0.8},
             "defense": {"patchvote_img_s": 1600.0, "pilotnet_img_s": 2000.0, "art_ds_img_s": 8.0},
             "models": {"patchdrive_160x320_macs": 33_000_000, "pilotnet_66x200_macs": 27_500_000,
                        "patchdrive_160x320_img_s": 500.0, "pilotnet_66x200_img_s": 1500.0}}
    rows = {r["measure"].split(" (")[0]: r["value"] for r in ratio_table(parts)}
    assert rows == pytest.approx({
        "world 66x200: torch.compile / eager renderer": 2.5,
        "train: end-to-end / bare step": 0.9,
        "inference: achieved / matmul GFLOP/s": 0.5,
        "attack: our sticker step speed / ART AdversarialPatchPyTorch": 2.0,
        "attack: our deviation / ART's at equal steps": 1.5,
        "defense: PatchVote / PilotNet inference": 0.8,
        "defense: PatchVote / ART derandomized smoothing inference": 200.0,
        "models: PatchDrive 160x320 / PilotNet 66x200 multiply-adds": 1.2,
        "models: PatchDrive 160x320 / PilotNet 66x200 time per image": 3.0})


def test_details_show_four_significant_digits() -> None:
    rows = ratio_table({"attack": {"ours_s_per_step": 0.03962639982510154, "art_s_per_step": 0.09592770150266006}})
    assert rows[0]["detail"] == "0.03963 vs 0.09593 s/step"


def test_missing_or_zero_measurements_are_skipped() -> None:
    rows = ratio_table({"train": {"train_e2e_img_s": 540.0, "train_step_img_s_interleaved": 0.0},
                        "attack": {"ours_s_per_step": 0.04}})
    assert rows == []


def test_bench_without_subcommand_runs_everything() -> None:
    args = build_parser().parse_args(["bench", "--no-art", "--json"])
    assert args.fn is cmd_bench_all and args.no_art
    sub = build_parser().parse_args(["bench", "train"])
    assert sub.fn is not cmd_bench_all


@pytest.mark.slow
def test_bench_all_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--no-art", "--no-compile", "--frames", "128", "--attack-steps", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"world", "train", "attack", "defense", "models", "ratios", "machine"} <= set(out)
    measures = {r["measure"] for r in out["ratios"]}
    assert any(m.startswith("attack: our sticker step speed") for m in measures)
    assert all(r["value"] > 0 for r in out["ratios"])


def test_bench_models_measures_patchdrive_beside_pilotnet(capsys: pytest.CaptureFixture[str]) -> None:
    out = bench_models(batch=2, repeats=1)
    assert out["pilotnet_66x200_macs"] == count_macs(create_model("pilotnet"))
    assert out["pilotnet_160x320_macs"] == count_macs(create_model("pilotnet", input_size=(160, 320)))
    # PatchDrive adds the attention fusion, which count_macs (convs and linears) does not see.
    assert out["patchdrive_160x320_macs"] > count_macs(create_model("patchdrive"))
    # A property of the default design: at most 3x PilotNet's multiply-adds at 66x200.
    assert 1.0 < out["patchdrive_160x320_macs_over_pilotnet_66x200"] <= 3.0
    for name in ("pilotnet_66x200", "pilotnet_160x320", "patchdrive_160x320"):
        assert out[f"{name}_img_s"] > 0 and out[f"{name}_params"] > 0
        assert out[f"{name}_time_over_pilotnet_66x200"] == pytest.approx(
            out["pilotnet_66x200_img_s"] / out[f"{name}_img_s"], rel=1e-2)
    assert main(["bench", "models", "--batch", "4096"]) == 2
    assert "argument --batch: '4096' is outside 1..1024" in capsys.readouterr().err
