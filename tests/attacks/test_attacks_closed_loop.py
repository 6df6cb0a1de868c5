"""Closed-loop-aware sticker optimisation (``attacks.closed_loop``) and the size sweep (``attacks.sweep``, ``pdn attack sweep``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from attacks.base import lateral_hinge
from attacks.closed_loop import (
    Approaches,
    ClosedLoopAttackConfig,
    bicycle_poses,
    lateral_offsets,
    make_approaches,
    optimize_closed_loop,
    rollout,
    rollout_road_length,
)
from attacks.eot import EOTConfig
from attacks.sticker import StickerConfig
from attacks.sweep import break_area, parse_areas, sticker_size
from drivenet_patch.app.cli import build_parser, main
from drivenet_patch.driving.drive import ClosedLoopConfig, centred_pose, drive_closed_loop
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import Camera, Renderer, Road, StickerPlacement
from drivenet_patch.world.render import Lighting
from drivenet_patch.world.vehicle import bicycle_step

H, W = 66, 200
SHORT = ClosedLoopAttackConfig(before_m=9.0, after_m=1.0, approaches_per_road=2, resim_every=2)
PLACE = StickerPlacement(s=0.0, width_m=2.0, length_m=3.5)


def tiny(seed: int = 0) -> nn.Module:
    return create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(seed)).eval()


class RedBluePolicy(nn.Module):
    """A hand-weighted steering model: steers left on red, right on blue (lower half of the frame).

    The world's asphalt is grey, so red and blue roughly cancel without a sticker; a red sticker pushes
    the car left, a blue one right. It makes "a sticker that pushes left" certain, which an untrained
    network cannot promise.
    """

    input_size = (H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x[:, :, H // 2 :, :]
        return 60.0 * (low[:, 0] - low[:, 2]).mean(dim=(1, 2))


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(Camera(height=H, width=W))


@pytest.fixture(scope="module")
def roads() -> list[Road]:
    drive = ClosedLoopConfig()
    return [Road.straight(rollout_road_length(PLACE, SHORT, drive) + 60.0), Road.generate(7, 120.0)]


@pytest.fixture(scope="module")
def approaches(roads) -> Approaches:
    return make_approaches(roads, PLACE, SHORT, np.random.default_rng(0), ClosedLoopConfig(vary_lighting=False))


# ---------------------------------------------------------------------------- rollouts
def test_rollout_without_effect_reproduces_the_closed_loop_drive(roads, renderer) -> None:
    """No sticker, or a dirt multiplier of 1 everywhere: the rollout is pdn drive's closed loop, step for step."""
    model = tiny()
    drive = ClosedLoopConfig()
    s0 = 12.0
    starts = np.stack([centred_pose(r, s0) for r in roads])
    steps = 12
    lights = Lighting.sample(np.random.default_rng(3), len(roads))
    app = Approaches(roads, [StickerPlacement(s=s0 + 14.0)] * 2, np.arange(2), starts, lights, steps)
    metrics, log = drive_closed_loop(model, roads, steps, renderer.camera, ClosedLoopConfig(start_s_m=s0,
                                     intervention_m=3.0), np.random.default_rng(3))
    assert metrics["interventions"] == 0
    for texture, dirt in ((None, False), (torch.ones(3, 4, 4), True)):
        roll = rollout(model, app, texture, renderer, drive, dirt=dirt)
        assert roll.scenes is not None  # the sticker was in view, with no effect
        for r in range(2):
            got = log[log["road"] == r]
            np.testing.assert_allclose(roll.poses[:steps, r], got[["x", "y", "yaw"]].to_numpy(), atol=1e-9)
            np.testing.assert_allclose(roll.steer[:, r].double().numpy(), got["predicted_deg"].to_numpy(), atol=1e-6)
            np.testing.assert_allclose(roll.offset_m[:steps, r], got["offset_m"].to_numpy(), atol=1e-9)


def test_resimulation_uses_the_poses_the_car_visited(approaches, renderer) -> None:
    """A red sticker pushes the rolled-out car left, a blue one right; every scene is at a visited pose."""
    model = RedBluePolicy()
    drive = ClosedLoopConfig(vary_lighting=False)
    red, blue = torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)
    red[0], blue[2] = 1.0, 1.0
    rolls = {name: rollout(model, approaches, tex, renderer, drive) for name, tex in
             (("none", None), ("red", red), ("blue", blue))}
    end = {name: r.offset_m[-1] for name, r in rolls.items()}
    assert np.all(end["red"] > end["none"] + 0.05) and np.all(end["blue"] < end["none"] - 0.05)
    for roll in rolls.values():
        info = roll.scenes.info
        visited = roll.poses[info["t"].to_numpy(), info["approach"].to_numpy()]
        np.testing.assert_array_equal(info[["x", "y", "yaw"]].to_numpy(), visited)
        # the poses are the bicycle's answer to the model's own commands
        for t in range(approaches.steps):
            np.testing.assert_allclose(roll.poses[t + 1], bicycle_step(roll.poses[t], roll.steer[t].double().numpy(),
                                                                       drive.speed_mps, drive.dt), atol=1e-12)


# ---------------------------------------------------------------------------- the displacement objective
def test_displacement_is_exact_at_the_rollout_and_its_gradient_matches_finite_differences(approaches, renderer) -> None:
    roll = rollout(tiny(), approaches, torch.full((3, 4, 4), 0.5), renderer, ClosedLoopConfig(vary_lighting=False))
    steer = roll.steer.double()
    np.testing.assert_allclose(lateral_offsets(steer, roll).numpy(), roll.offset_m, atol=1e-9)
    # the torch bicycle is the numpy one
    start = torch.as_tensor(roll.poses[0])
    np.testing.assert_allclose(bicycle_poses(start, steer, 10.0, 0.1).numpy(), roll.poses, atol=1e-12)
    x = (steer[:8] + 0.7).clone().requires_grad_(True)  # off the rollout too; straight-ahead steps included
    rest = steer[8:]

    def f(head: torch.Tensor) -> torch.Tensor:
        return lateral_offsets(torch.cat([head, rest]), roll)[1:]

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)
    objective = lateral_hinge("left", 5.0)  # goal far away: every step has a gradient
    assert torch.autograd.gradcheck(lambda h: objective(f(h)), (x,), eps=1e-6, atol=1e-6)
    # pushing left lowers the left objective
    g = torch.autograd.grad(objective(f(x)), x)[0]
    assert torch.all(g[:-1] < 0)


def test_closed_loop_attack_is_seeded_and_moves_the_car_toward_the_target(approaches, renderer) -> None:
    cfg = StickerConfig(steps=4, batch=6, lr=0.5, texture_hw=(4, 6), target="left", eot=EOTConfig.identity(),
                        nps_weight=0.0, tv_weight=0.0)
    ccfg = ClosedLoopAttackConfig(before_m=9.0, after_m=1.0, approaches_per_road=2, resim_every=3, goal_m=3.0)
    drive = ClosedLoopConfig(vary_lighting=False)
    model = RedBluePolicy()
    a = optimize_closed_loop(model, approaches, cfg, ccfg, renderer, torch.Generator().manual_seed(1), drive=drive)
    b = optimize_closed_loop(model, approaches, cfg, ccfg, renderer, torch.Generator().manual_seed(1), drive=drive)
    assert torch.equal(a.texture, b.texture)
    assert a.history.drop(columns="step").equals(b.history.drop(columns="step"))
    h = a.history
    assert h["rollout_offset_m"].iloc[-1] > h["rollout_offset_m"].iloc[0]  # re-simulated after 3 steps
    assert a.texture[0].mean() > a.texture[2].mean()  # it learned red, the colour that steers left
    assert a.config["closed_loop"]["resim_every"] == 3 and a.texture.min() >= 0 and a.texture.max() <= 1
    with pytest.raises(PDNError, match="left or right"):
        optimize_closed_loop(model, approaches, StickerConfig(steps=1, target="away"), ccfg, renderer)
    with pytest.raises(PDNError, match="resim_every"):
        ClosedLoopAttackConfig(resim_every=0)


# ---------------------------------------------------------------------------- sweep pieces
def test_sweep_sizes_areas_and_break_area() -> None:
    for a in (2.0, 7.0, 28.0, 112.0):
        for aspect in ("along", "across"):
            w, length = sticker_size(a, aspect)
            assert w * length == pytest.approx(a)
    assert sticker_size(7.0, "along") == pytest.approx((2.0, 3.5))
    assert sticker_size(7.0, "across") == pytest.approx((3.5, 2.0))
    assert sticker_size(112.0, "along")[0] == pytest.approx(3.5)  # lane-wide, then longer along the road
    assert parse_areas("7, 2,28") == (2.0, 7.0, 28.0)
    t = pd.DataFrame({"area_m2": [2.0, 7.0, 28.0, 56.0], "departure_rate": [0.1, 0.95, 0.85, 1.0]})
    assert break_area(t) == 7.0
    assert break_area(t.assign(departure_rate=[0.1, 0.2, 0.3, None])) is None


@pytest.mark.parametrize("argv, needle", [
    (["attack", "sweep", "--areas", "2,x"], "--areas"),
    (["attack", "sweep", "--areas", "0,2"], "--areas"),
    (["attack", "sweep", "--areas", "2,2"], "--areas"),
    (["attack", "sweep", "--areas", ""], "--areas"),
    (["attack", "sweep", "--aspect", "diagonal"], "--aspect"),
    (["attack", "sweep", "--closed-loop", "--resim-every", "0"], "--resim-every"),
    (["attack", "sweep", "--no-closed-loop", "--resim-every", "5"], "--resim-every"),
    (["attack", "--closed-loop", "--resim-every", "0"], "--resim-every"),
    (["attack", "--closed-loop", "--steps", "10", "--resim-every", "11"], "--resim-every"),
    (["attack", "--resim-every", "5"], "--resim-every"),
    (["attack", "--closed-loop", "--data", "x"], "--closed-loop"),
])
def test_bad_sweep_and_closed_loop_flags_are_refused_in_one_line(argv, needle, tmp_path, capsys) -> None:
    rc = main([*argv, "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("pdn") and "error:" in err and "\n" not in err and needle in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_attack_sweep_end_to_end_is_resumable(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    save_model(run, tiny())
    argv = ["attack", "sweep", "--model", str(run), "--out", str(tmp_path / "sweep"), "--areas", "2,7",
            "--closed-loop", "--resim-every", "1", "--steps", "2", "--roads", "1", "--poses", "4",
            "--eval-roads", "1", "--loop-roads", "1", "--km", "0.2", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert list(table["area_m2"]) == [2.0, 7.0] and (table["n_approaches"] > 0).all()
    assert table["departure_rate"].between(0, 1).all() and table["no_sticker_departure_rate"].notna().all()
    assert first["break_area_m2"] == break_area(table) and (tmp_path / "sweep" / "sweep.png").stat().st_size > 0
    for a in ("2", "7"):
        meta = json.loads(Path(tmp_path / "sweep" / f"area_{a}" / "attack.json").read_text())
        assert meta["closed_loop"] is True and meta["attack"]["closed_loop"]["resim_every"] == 1
    assert main(argv) == 0  # resumed: nothing re-run, the same table
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["skipped"] == [2.0, 7.0] and second["rows"] == first["rows"]
    assert main([*argv[:-1], "--seed", "3", "--json"]) == 2  # other settings in the same folder: refused


def test_sweep_is_closed_loop_aware_by_default_and_can_be_turned_off() -> None:
    # The sweep measures departures, where the closed-loop-aware sticker wins (docs/stickers.md, the break size).
    parse = build_parser().parse_args
    base = ["attack-sweep", "--model", "m", "--out", "o"]
    assert parse(base).closed_loop is True
    assert parse([*base, "--no-closed-loop"]).closed_loop is False
    assert parse(["attack", "--model", "m", "--out", "o"]).closed_loop is False  # pdn attack stays open loop
