"""Closed-loop driving: the expert drives perfectly, a bad policy is caught, logs, video, stickers, CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from drivenet_patch.app.cli import drive as drive_cli
from drivenet_patch.app.cli.common import flag_message
from drivenet_patch.driving import video as drive_video
from drivenet_patch.driving.drive import (
    CAR_CENTRE_M,
    LANE_DEPARTURE_M,
    LOG_COLUMNS,
    STICKER_COLUMNS,
    ClosedLoopConfig,
    autonomy_pct,
    count_events,
    drive_closed_loop,
    make_roads,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import Camera, Renderer, Road, StickerPlacement
from drivenet_patch.world.episodes import lane_state
from drivenet_patch.world.preview import demo_texture
from drivenet_patch.world.sticker_file import load_sticker, save_sticker

CFG = ClosedLoopConfig()
STEPS = 300  # 300 m per road at 10 m/s and 0.1 s


def constant(deg: float):
    def policy(frames: torch.Tensor) -> torch.Tensor:
        return torch.full((frames.shape[0],), deg)

    return policy


def brightness_policy(frames: torch.Tensor) -> torch.Tensor:
    """A toy image-based policy: steer toward the brighter half of the lower image."""
    low = frames[:, :, frames.shape[2] // 2 :]
    w = frames.shape[3] // 2
    return (low[..., :w].mean((1, 2, 3)) - low[..., w:].mean((1, 2, 3))) * 20.0


@pytest.fixture(scope="module")
def roads() -> list[Road]:
    return make_roads(3, STEPS, CFG, seed=10_000)


@pytest.fixture(scope="module")
def oracle_run(roads: list[Road]) -> tuple[dict, pd.DataFrame]:
    return drive_closed_loop(None, roads, STEPS, Camera(), CFG, np.random.default_rng(0))


def test_expert_drives_three_roads_with_full_autonomy(oracle_run: tuple[dict, pd.DataFrame]) -> None:
    metrics, log = oracle_run
    assert metrics["autonomy_pct"] == 100.0
    assert metrics["interventions"] == metrics["departures"] == metrics["departure_events"] == 0
    assert metrics["max_abs_offset_m"] < LANE_DEPARTURE_M and metrics["mean_abs_offset_m"] < 0.1
    assert metrics["mean_abs_steer_error_deg"] == 0.0
    assert metrics["roads"] == 3 and metrics["steps_per_road"] == STEPS
    assert metrics["elapsed_s"] == pytest.approx(3 * STEPS * CFG.dt)
    assert metrics["distance_km"] == pytest.approx(0.9)
    json.dumps(metrics)  # JSON-ready
    for _, one in log.groupby("road"):  # every car really drove its 300 m along its road
        assert one["s"].iloc[-1] - one["s"].iloc[0] > 0.95 * (STEPS - 1) * CFG.speed_mps * CFG.dt


def test_log_has_the_columns_one_row_per_road_and_step(oracle_run: tuple[dict, pd.DataFrame]) -> None:
    _, log = oracle_run
    assert list(log.columns) == list(LOG_COLUMNS)
    assert len(log) == 3 * STEPS
    assert log.groupby("road")["step"].apply(list).tolist() == [list(range(STEPS))] * 3
    np.testing.assert_allclose(log["t"], log["step"] * CFG.dt)
    assert log["intervention"].dtype == bool and not log.isna().any().any()


def test_offsets_are_measured_at_the_car_centre(oracle_run: tuple[dict, pd.DataFrame], roads: list[Road]) -> None:
    # On a straight road along x with the ego lane at y = -1.75, the centre offset is exact by hand.
    straight = Road.straight(200.0)
    _, log = drive_closed_loop(constant(3.0), [straight], 6, Camera(), CFG, np.random.default_rng(0))
    by_hand = log["y"] + CAR_CENTRE_M * np.sin(log["yaw"]) + 1.75
    np.testing.assert_allclose(log["offset_m"], by_hand, atol=1e-6)
    rear = log["y"] + 1.75
    assert (by_hand - rear).abs().iloc[1:].min() > 0.01  # the rear axle would read differently
    # On curved roads the logged offsets are those of the point 1.35 m ahead of the logged rear axle.
    _, curvy = oracle_run
    for r, one in curvy.groupby("road"):
        yaw = one["yaw"].to_numpy()
        centre = np.stack([one["x"] + CAR_CENTRE_M * np.cos(yaw), one["y"] + CAR_CENTRE_M * np.sin(yaw), yaw], axis=1)
        np.testing.assert_allclose(one["offset_m"], lane_state(roads[r], centre)["offset_m"], atol=1e-9)


def test_constant_left_policy_is_caught_and_autonomy_matches_the_log(roads: list[Road]) -> None:
    metrics, log = drive_closed_loop(constant(8.0), [Road.straight(200.0), roads[0]], 80, Camera(), CFG,
                                     np.random.default_rng(0))
    n = int(log["intervention"].sum())
    assert n > 0 and metrics["interventions"] == metrics["departures"] == n
    elapsed = len(log) * CFG.dt
    assert metrics["elapsed_s"] == pytest.approx(elapsed)
    assert metrics["autonomy_pct"] == pytest.approx((1.0 - n * 6.0 / elapsed) * 100.0)
    assert metrics["autonomy_pct"] < 100.0
    # Interventions happen exactly where the car centre is more than 1 m off, and the next step is re-centred.
    np.testing.assert_array_equal(log["intervention"], log["offset_m"].abs() > 1.0)
    after = log.shift(-1)[log["intervention"] & (log["step"] < 79)]
    assert (after["offset_m"].abs() < 1e-3).all() and (after["heading_err_deg"].abs() < 1e-3).all()
    # Lane-departure events: runs of a wheel outside the lane, counted by hand.
    out = (log["offset_m"].abs() > 1.75 - 0.9).to_numpy()
    road = log["road"].to_numpy()
    starts = out & ~np.concatenate([[False], out[:-1] & (road[1:] == road[:-1])])
    assert metrics["departure_events"] == int(starts.sum()) >= n
    assert metrics["mean_abs_steer_error_deg"] == pytest.approx((log["predicted_deg"] - log["expert_deg"]).abs().mean())


def test_formula_helpers() -> None:
    assert autonomy_pct(0, 60.0) == 100.0
    assert autonomy_pct(2, 600.0) == pytest.approx(98.0)
    assert autonomy_pct(20, 60.0) == pytest.approx(-100.0)  # not clipped
    flags = np.array([[0, 1], [1, 1], [1, 0], [0, 1]], bool)
    assert count_events(flags) == 3


def test_same_seed_same_drive_and_lighting_follows_the_generator(roads: list[Road]) -> None:
    def run(seed: int) -> pd.DataFrame:
        return drive_closed_loop(brightness_policy, roads[:2], 40, Camera(), CFG, np.random.default_rng(seed))[1]

    threads = torch.get_num_threads()
    a, b, c = run(5), run(5), run(6)
    assert torch.get_num_threads() == threads  # the drive runs single-threaded; the setting comes back
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["predicted_deg"], c["predicted_deg"])


def test_video_is_written_and_reads_back(roads: list[Road], tmp_path: Path) -> None:
    path = tmp_path / "clips" / "drive.mp4"
    metrics, log = drive_closed_loop(constant(4.0), roads[:2], 30, Camera(), CFG, np.random.default_rng(0), video=path)
    assert metrics["video"] == str(path) and path.is_file() and path.stat().st_size > 10_000
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 30
    assert frames[0].shape == (3 * 66 + 42, 3 * 200, 3)
    assert [p.name for p in path.parent.iterdir()] == ["drive.mp4"]  # no temporary files left behind
    assert log["intervention"].any()  # frames of interventions were drawn as well


def test_video_falls_back_to_mjpeg_avi(roads: list[Road], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drive_video, "_probe_fourcc", lambda *a: False)
    with pytest.warns(RuntimeWarning, match="mp4v"):
        metrics, _ = drive_closed_loop(None, roads[:1], 12, Camera(), CFG, np.random.default_rng(0),
                                       video=tmp_path / "drive.mp4")
    avi = tmp_path / "drive.avi"
    assert metrics["video"] == str(avi) and not (tmp_path / "drive.mp4").exists()
    cap = cv2.VideoCapture(str(avi))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()


def test_sticker_copies_come_into_view_and_change_exactly_those_frames() -> None:
    road = Road.straight(300.0)
    seen: dict[str, list[torch.Tensor]] = {"clean": [], "sticker": []}

    def recorder(key: str):
        def policy(frames: torch.Tensor) -> torch.Tensor:
            seen[key].append(frames.clone())
            return torch.zeros(frames.shape[0])  # straight ahead: the same path with and without a sticker

        return policy

    cfg = ClosedLoopConfig(sticker_every_m=40.0)
    steps = 110  # 110 m: passes the copies at 60 m and 100 m
    _, clean = drive_closed_loop(recorder("clean"), [road], steps, Camera(), cfg, np.random.default_rng(0))
    metrics, log = drive_closed_loop(recorder("sticker"), [road], steps, Camera(), cfg, np.random.default_rng(0),
                                     sticker=(demo_texture(), StickerPlacement(s=0.0)))
    assert set(STICKER_COLUMNS) <= set(log.columns)
    view = log["sticker_in_view"].to_numpy()
    assert view.any() and metrics["sticker_frames"] == int(view.sum())
    assert {60.0, 100.0} <= set(log.loc[view, "sticker_s"])
    np.testing.assert_allclose(log[["x", "y", "yaw"]], clean[["x", "y", "yaw"]])
    changed = np.array([(a - b).abs().amax().item() > 0 for a, b in zip(seen["clean"], seen["sticker"])])
    np.testing.assert_array_equal(changed, view)
    # A copy is dropped for the next one only once it has left the view.
    renderer = Renderer(Camera())
    switch = np.flatnonzero(np.diff(log["sticker_s"].to_numpy()) != 0) + 1
    assert len(switch) >= 2
    for row in switch:
        old = StickerPlacement(s=float(log["sticker_s"].iloc[row - 1]))
        pose = log.loc[[row], ["x", "y", "yaw"]].to_numpy(copy=True)
        assert not renderer.render(road, pose, sticker=old, texture=demo_texture(), with_maps=True).mask.any()


def test_sticker_folder_roundtrip_and_png(tmp_path: Path) -> None:
    tex = demo_texture(24, 40)
    placement = StickerPlacement.billboard(s=5.0, d=-6.0, width_m=3.0)
    folder = save_sticker(tmp_path / "attack", tex, placement, extra={"target_deg": 5.0})
    loaded, where = load_sticker(folder)
    assert where == placement and loaded.shape == (3, 24, 40)
    assert (loaded - tex).abs().max() <= 0.5 / 255 + 1e-6
    assert json.loads((folder / "attack.json").read_text())["target_deg"] == 5.0
    loaded, where = load_sticker(folder / "sticker.png")
    assert where == StickerPlacement(s=0.0) and where.kind == "road" and where.width_m == 3.5


def test_bad_inputs_raise_one_line_errors(roads: list[Road], tmp_path: Path) -> None:
    cam, rng = Camera(), np.random.default_rng(0)
    with pytest.raises(PDNError, match="speed_mps"):
        ClosedLoopConfig(speed_mps=0.0)
    with pytest.raises(PDNError, match="intervention_m"):
        ClosedLoopConfig(intervention_m=-1.0)
    with pytest.raises(PDNError, match="spacing"):
        ClosedLoopConfig(sticker_every_m=2.0)
    with pytest.raises(PDNError, match="km"):
        CFG.steps_for(0.0)
    with pytest.raises(PDNError, match="non-empty"):
        drive_closed_loop(None, [], 10, cam, CFG, rng)
    with pytest.raises(PDNError, match="steps_per_road"):
        drive_closed_loop(None, roads, 0, cam, CFG, rng)
    with pytest.raises(PDNError, match="road 0 has"):
        drive_closed_loop(None, [Road.straight(50.0)], 500, cam, CFG, rng)
    with pytest.raises(PDNError, match="policy returned shape"):
        drive_closed_loop(lambda f: torch.zeros(2, 2), roads[:1], 3, cam, CFG, rng)
    with pytest.raises(PDNError, match="non-finite"):
        drive_closed_loop(constant(math.nan), roads[:1], 3, cam, CFG, rng)
    with pytest.raises(PDNError, match="sticker texture"):
        drive_closed_loop(None, roads[:1], 3, cam, CFG, rng, sticker=(torch.full((3, 4, 4), 2.0), StickerPlacement(s=0)))
    with pytest.raises(PDNError, match=r"\.mp4 or \.avi"):
        drive_closed_loop(None, roads[:1], 3, cam, CFG, rng, video=tmp_path / "x.gif")
    with pytest.raises(PDNError, match="does not exist"):
        load_sticker(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(PDNError, match=r"junk\.png: cannot decode image"):
        load_sticker(junk)
    folder = tmp_path / "attack"
    folder.mkdir()
    with pytest.raises(PDNError, match=r"attack\.json"):
        load_sticker(folder)
    (folder / "attack.json").write_text(json.dumps({"placement": {"wdth_m": 3.0}}))
    with pytest.raises(PDNError, match="unknown placement field 'wdth_m'"):
        load_sticker(folder)
    (folder / "attack.json").write_text(json.dumps({"placement": {"width_m": "wide"}}))
    with pytest.raises(PDNError, match=r"attack\.json: placement\.width_m = 'wide' must be a number"):
        load_sticker(folder)


# ---------------------------------------------------------------------------- CLI (in process)
class StandIn(torch.nn.Module):
    """What ``checkpoint.load_model`` returns, as far as ``pdn drive`` cares: frames -> degrees, input_size."""

    input_size = (66, 200)
    config: dict = {"model": "stand-in"}  # noqa: RUF012

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return brightness_policy(x)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pdn")
    drive_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["drive", *argv])


def test_cli_drive_writes_log_json_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(drive_cli, "load_run", lambda path, device: StandIn().eval())
    run = tmp_path / "run"
    run.mkdir()
    sticker = save_sticker(tmp_path / "attack", demo_texture(), StickerPlacement(s=0.0))
    out = tmp_path / "drive"
    args = parse("--model", str(run), "--roads", "2", "--km", "0.08", "--sticker", str(sticker),
                 "--sticker-every", "50", "--out", str(out), "--json")
    assert args.fn(args) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("autonomy_pct", "interventions", "departures", "departure_events", "mean_abs_offset_m",
                "max_abs_offset_m", "elapsed_s", "distance_km", "roads", "mean_abs_steer_error_deg", "sticker_frames"):
        assert key in result
    assert result["roads"] == 2 and result["steps_per_road"] == 80 and result["distance_km"] == pytest.approx(0.16)
    log = pd.read_csv(out / "drive_log.csv")
    assert list(log.columns) == [*LOG_COLUMNS, *STICKER_COLUMNS] and len(log) == 160
    meta = json.loads((out / "drive.json").read_text())
    assert meta["road_seeds"] == [10_000, 10_001] and meta["config"]["sticker_every_m"] == 50.0
    assert meta["camera"]["height"] == 66 and meta["sticker_placement"]["kind"] == "road"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--km", "0"], "argument --km: '0' is outside (0, 20]"),
        (["--km", "25"], "argument --km: '25' is outside (0, 20]"),
        (["--km", "nan"], "argument --km: 'nan' must be a finite number"),
        (["--sticker-every", "1"], "argument --sticker-every: '1' is outside [10, 100000]"),
        (["--video", "out.gif"], "--video"),
        (["--sticker", "missing.png"], "does not exist"),
        (["--out", "FILE"], "not a folder"),
    ],
)
def test_cli_bad_input_is_one_line_pdn_error(tmp_path: Path, argv: list[str], needle: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "file").write_text("x")
    argv = [str(tmp_path / a) if a.endswith(".png") else str(tmp_path / "file") if a == "FILE" else a for a in argv]
    if needle.startswith("argument "):  # refused as the flag is read (safety.values), before the command runs
        with pytest.raises(SystemExit) as exc:
            parse("--model", str(run), *argv)
        assert exc.value.code == 2 and needle in capsys.readouterr().err
        return
    args = parse("--model", str(run), *argv)
    with pytest.raises(PDNError) as info:
        args.fn(args)
    assert needle in flag_message(str(info.value), args)  # the line pdn prints: the library's parameter as the flag


def test_cli_missing_model_is_one_line_pdn_error(tmp_path: Path) -> None:
    args = parse("--model", str(tmp_path / "no-run"))
    with pytest.raises(PDNError, match=r"--model: .*does not exist"):
        args.fn(args)
