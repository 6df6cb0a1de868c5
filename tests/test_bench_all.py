"""``pdn bench`` with no sub-command: every benchmark in one process and one table of ratios."""

from __future__ import annotations

import json

import pytest

from drivenet_patch.bench import ratio_table
from drivenet_patch.cli import build_parser, cmd_bench_all, main


def test_ratios_are_the_quotients_of_side_by_side_measurements() -> None:
    parts = {"world": {"fps_66x200_compiled": 2000.0, "fps_66x200_eager": 800.0},
             "train": {"train_e2e_img_s": 540.0, "train_step_img_s_interleaved": 600.0, "infer_gflops": 100.0,
                       "matmul_gflops": 200.0, "infer_img_s": 1900.0},
             "attack": {"ours_s_per_step": 0.04, "art_s_per_step": 0.08, "ours_dev_deg": 1.2, "art_dev_deg": 0.8},
             "defense": {"patchvote_img_s": 1600.0, "pilotnet_img_s": 2000.0, "art_ds_img_s": 8.0}}
    rows = {r["measure"].split(" (")[0]: r["value"] for r in ratio_table(parts)}
    assert rows == pytest.approx({
        "world 66x200: torch.compile / eager renderer": 2.5,
        "train: end-to-end / bare step": 0.9,
        "inference: achieved / matmul GFLOP/s": 0.5,
        "attack: our sticker step speed / ART AdversarialPatchPyTorch": 2.0,
        "attack: our deviation / ART's at equal steps": 1.5,
        "defense: PatchVote / PilotNet inference": 0.8,
        "defense: PatchVote / ART derandomized smoothing inference": 200.0})


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
    assert {"world", "train", "attack", "defense", "ratios", "machine"} <= set(out)
    measures = {r["measure"] for r in out["ratios"]}
    assert any(m.startswith("attack: our sticker step speed") for m in measures)
    assert all(r["value"] > 0 for r in out["ratios"])
