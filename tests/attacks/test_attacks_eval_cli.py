"""Sticker evaluation (offline, closed loop, controls), ``pdn attack``, ``pdn attack eval`` and ``pdn bench attack``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.approach import world_placement
from attacks.bench import bench_attack
from attacks.evaluate import ApproachWindow, approach_table, control_textures, offline_eval
from attacks.scenes import ApproachConfig, world_scenes
from drivenet_patch.app.cli import main
from drivenet_patch.app.cli.attack import parse_metres, parse_range, route_argv
from drivenet_patch.driving.drive import LANE_DEPARTURE_M, ClosedLoopConfig
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import Camera, Renderer, Road, StickerPlacement

H, W = 66, 200


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """pilotnet_tiny with a large output scale: an untrained net barely reacts to its input, this one does."""
    return create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(seed), out_scale=1000.0).eval()


@pytest.fixture(scope="module")
def scenes():
    cfg = ApproachConfig(poses_per_road=12, distance_m=(5.0, 12.0))
    return world_scenes(Renderer(Camera(height=H, width=W)), Road.straight(120.0), StickerPlacement(s=40.0), cfg,
                        np.random.default_rng(0))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    save_model(out, tiny_model(), extra={"note": "test"})
    return out


# ---------------------------------------------------------------------------- evaluation pieces
def test_controls_are_seeded_shaped_and_in_range() -> None:
    a = control_textures((8, 14), torch.Generator().manual_seed(1))
    b = control_textures((8, 14), torch.Generator().manual_seed(1))
    c = control_textures((8, 14), torch.Generator().manual_seed(2))
    assert set(a) == {"noise", "grey"} and a["noise"].shape == (3, 8, 14)
    assert torch.equal(a["noise"], b["noise"]) and not torch.equal(a["noise"], c["noise"])
    assert torch.all(a["grey"] == 0.5) and a["noise"].min() >= 0 and a["noise"].max() <= 1
    d = control_textures((4, 4), torch.Generator().manual_seed(0), dirt=True, dirt_range=(0.3, 0.9))
    assert d["noise"].shape == (1, 4, 4) and d["noise"].min() >= 0.3 and d["noise"].max() <= 0.9
    assert torch.allclose(d["grey"], torch.tensor(0.6))
    with pytest.raises(PDNError, match="size"):
        control_textures((0, 4), torch.Generator())


def test_offline_eval_numbers_match_a_direct_computation(scenes) -> None:
    model = tiny_model()
    tex = torch.rand(3, 8, 14, generator=torch.Generator().manual_seed(3))
    frames, s = offline_eval(model, scenes, tex, "left", threshold_deg=0.5, chunk=5)  # chunks must not matter
    with torch.no_grad():
        clean = model(scenes.background).double()
        adv = model(scenes.apply(tex)).double()
    delta = (adv - clean).numpy()
    np.testing.assert_allclose(frames["delta_deg"], delta, atol=1e-4)
    assert s["mean_dev_deg"] == pytest.approx(np.abs(delta).mean(), abs=1e-4)
    assert s["success_rate"] == pytest.approx(np.mean(delta >= 0.5))
    assert s["n_frames"] == len(scenes) and "mean_dev_5_15m_deg" in s
    # the direction counts: right is left's mirror, away is the magnitude
    _, r = offline_eval(model, scenes, tex, "right", threshold_deg=0.5)
    _, a = offline_eval(model, scenes, tex, "away", threshold_deg=0.5)
    assert r["success_rate"] == pytest.approx(np.mean(-delta >= 0.5))
    assert a["success_rate"] == pytest.approx(np.mean(np.abs(delta) >= 0.5))
    with pytest.raises(PDNError, match="target"):
        offline_eval(model, scenes, tex, "up")
    with pytest.raises(PDNError, match="threshold"):
        offline_eval(model, scenes, tex, "left", threshold_deg=0)


def test_background_coloured_sticker_deviates_less_than_noise(scenes) -> None:
    """A grey patch close to asphalt changes the frame less than noise, so it moves the model less."""
    model = tiny_model()
    ctrl = control_textures((8, 14), torch.Generator().manual_seed(0))
    _, noise = offline_eval(model, scenes, ctrl["noise"], "away")
    asphalt = scenes.background[:, :, -5:, 90:110].mean(dim=(0, 2, 3))  # road just ahead of the bumper
    _, plain = offline_eval(model, scenes, asphalt[:, None, None].expand(3, 8, 14), "away")
    assert plain["mean_dev_deg"] < noise["mean_dev_deg"]


def test_approach_table_flags_departures_inside_the_window_only() -> None:
    road = Road.straight(400.0)
    cfg = ClosedLoopConfig(sticker_start_m=60.0, sticker_every_m=100.0)
    s = np.arange(0.0, 300.0, 1.0)
    offset = np.zeros_like(s)
    offset[(s > 150) & (s < 170)] = LANE_DEPARTURE_M + 0.1  # inside copy 160's window
    offset[(s > 220) & (s < 230)] = LANE_DEPARTURE_M + 0.1  # between windows: not an approach's fault
    log = pd.DataFrame({"road": 0, "s": s, "offset_m": offset, "intervention": np.abs(offset) > 1.0})
    table = approach_table(log, [road], StickerPlacement(s=0.0), cfg, ApproachWindow(25.0, 20.0))
    # copies at 60, 160, 260; 260 + 20 = 280 <= 299 reached; 360 not reached
    assert table["sticker_s"].tolist() == [60.0, 160.0, 260.0]
    assert table["departure"].tolist() == [False, True, False]
    with pytest.raises(PDNError):
        ApproachWindow(-1.0, 2.0)


def test_parsers() -> None:
    assert parse_metres("3.5x2.0") == (3.5, 2.0) and parse_range("5-20") == (5.0, 20.0) and parse_range("8") == (8, 8)
    for bad in ("0x2", "3x", "ax2", "-1x2", "30x1"):
        with pytest.raises(PDNError, match="--size"):
            parse_metres(bad)
    for bad in ("20-5", "0-5", "x", "5-100"):
        with pytest.raises(PDNError, match="--distance"):
            parse_range(bad)
    assert route_argv(["attack", "eval", "--x"]) == ["attack-eval", "--x"] and route_argv(["attack"]) == ["attack"]
    from drivenet_patch.world.road import EGO_LANE_D

    p = world_placement("road", (2.0, 3.5), lateral_m=-1.0)
    assert (p.kind, p.d, p.width_m, p.length_m) == ("road", EGO_LANE_D - 1.0, 2.0, 3.5)
    b = world_placement("billboard", (4.0, 2.5), lateral_m=1.0)
    assert b.kind == "billboard" and b.d == world_placement("billboard", (4.0, 2.5)).d + 1.0
    with pytest.raises(PDNError, match=r"^lateral_m must"):  # the parameter; the CLI names it --lateral
        world_placement("road", (2.0, 3.5), lateral_m=float("nan"))


# ---------------------------------------------------------------------------- CLI
def test_cli_attack_then_eval_writes_everything(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    atk = tmp_path / "atk"
    rc = main(["attack", "--model", str(run_dir), "--out", str(atk), "--steps", "3", "--batch", "4", "--roads", "1",
               "--poses", "8", "--texels", "8x14", "--distance", "5-12", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("sticker.png", "sticker_print.pdf", "sticker_palette.png", "attack.json", "examples.png",
                 "history.csv"):
        assert (atk / name).is_file() and (atk / name).stat().st_size > 0, name
    assert (atk / "sticker_print.pdf").read_bytes().startswith(b"%PDF")
    assert (atk / "examples.png").read_bytes().startswith(b"\x89PNG")
    meta = json.loads((atk / "attack.json").read_text())
    assert meta["attack"]["steps"] == 3 and meta["placement"]["width_m"] == 3.5
    assert meta["metrics"]["heldout"]["n_frames"] == report["n_frames"] > 0
    assert len(pd.read_csv(atk / "history.csv")) == 3

    rc = main(["attack", "eval", "--model", str(run_dir), "--sticker", str(atk), "--roads", "1", "--poses", "8",
               "--loop-roads", "1", "--km", "0.2", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("mean_dev_deg", "success_rate", "departure_rate", "n_frames", "n_approaches"):
        assert key in result
    for control in ("control_noise", "control_grey"):
        assert {"mean_dev_deg", "success_rate", "departure_rate"} <= set(result[control])
    assert result["n_approaches"] >= 1 and 0.0 <= result["departure_rate"] <= 1.0
    frames = pd.read_csv(atk / "eval_frames.csv")
    assert set(frames["texture"]) == {"sticker", "noise", "grey"}
    # all three textures were judged on the same frames
    per = {name: g["clean_deg"].to_numpy() for name, g in frames.groupby("texture")}
    np.testing.assert_array_equal(per["sticker"], per["noise"])
    np.testing.assert_array_equal(per["sticker"], per["grey"])
    approaches = pd.read_csv(atk / "eval_approaches.csv")
    assert set(approaches["texture"]) == {"sticker", "noise", "grey", "none"}  # "none": no sticker at all
    assert result["no_sticker"]["n_approaches"] == result["n_approaches"]
    # The tracks are the approaches' steps: one group per approach, within the window, offsets as logged.
    tracks = pd.read_csv(atk / "eval_tracks.csv")
    assert set(tracks["texture"]) == set(approaches["texture"])
    assert tracks.groupby(["texture", "road", "sticker_s"]).ngroups == len(approaches)
    assert tracks["rel_s"].between(-25.0, 20.0).all()
    worst = tracks.assign(a=tracks["offset_m"].abs()).groupby(["texture", "road", "sticker_s"])["a"].max()
    ref = approaches.set_index(["texture", "road", "sticker_s"])["max_abs_offset_m"]
    np.testing.assert_allclose(worst.sort_index().to_numpy(), ref.sort_index().to_numpy(), atol=1e-3)


@pytest.mark.parametrize("argv, needle", [
    (["--size", "0x2"], "--size"),
    (["--target", "up"], "target"),
    (["--distance", "9-3"], "--distance"),
    (["--place", "sky"], "--place"),
    (["--steps", "501"], "steps"),
    (["--paper", "B5"], "paper"),
])
def test_cli_attack_bad_input_is_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          argv: list[str], needle: str) -> None:
    rc = main(["attack", "--model", str(run_dir), "--out", str(tmp_path / "a"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "a").exists()  # refused before any optimisation or output


def test_cli_attack_no_print_skips_only_the_print_pdf(run_dir: Path, tmp_path: Path) -> None:
    atk = tmp_path / "atk"
    assert main(["attack", "--model", str(run_dir), "--out", str(atk), "--steps", "2", "--batch", "4", "--roads", "1",
                 "--poses", "4", "--texels", "8x14", "--no-print", "--json"]) == 0
    # the folder's marker says it is an attack folder (storage.folders), so pdn attack may resume into it
    assert sorted(p.name for p in atk.iterdir()) == [".pdn-folder.json", "attack.json", "examples.png", "history.csv",
                                                      "sticker.png", "sticker_palette.png"]


def test_cli_missing_model_and_sticker_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["attack", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["attack", "eval", "--model", str(tmp_path / "nope"), "--sticker", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "attack.json" in err or "does not exist" in err


def test_bench_attack_reports_both_sides() -> None:
    r = bench_attack(tiny_model(), steps=2, batch=4, roads=1, poses=8)
    for key in ("ours_s_per_step", "art_s_per_step", "speedup", "ours_dev_deg", "art_dev_deg"):
        assert np.isfinite(r[key]) and r[key] >= 0
    assert r["speedup"] == pytest.approx(r["art_s_per_step"] / r["ours_s_per_step"])
    # the median step leaves out the set-up that the whole run's average carries
    assert 0 < r["ours_s_per_step"] < r["ours_s_per_step_with_setup"]
    # The model's own pass is part of both steps, so it is shorter than either and bounds the speed-up.
    assert 0 < r["model_pass_s"] < r["art_s_per_step"] and r["speedup_bound"] > 1.0
    assert r["art_steps"] >= 1 and r["art_patch_px"] > 0
