"""The certified runtime monitor in the closed loop, and the core's generic per-step hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from defenses.certify import certify_votes
from defenses.monitor import CertifiedMonitor, summarize
from drivenet_patch.app.cli import main
from drivenet_patch.driving.drive import ClosedLoopConfig, MonitorStep, drive_closed_loop
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world import Camera, Road

CFG = ClosedLoopConfig(vary_lighting=False)
STEPS = 15


def _pv(**cfg) -> torch.nn.Module:
    return create_model("patchvote_tiny", generator=torch.Generator().manual_seed(0), out_scale=2.0, **cfg).eval()


@pytest.fixture(scope="module")
def road() -> list[Road]:
    return [Road.generate(3, 200.0)]


class Slow:
    """A generic monitor: halves the speed of car 0 and records a constant column."""

    def step(self, frames, command_deg, t):
        scale = np.ones(len(command_deg))
        scale[0] = 0.5
        return MonitorStep(command_deg, scale, {"seen_t": np.full(len(command_deg), t)})


def test_generic_hook_slows_the_car_and_adds_columns(road) -> None:
    base, _ = drive_closed_loop(lambda x: torch.zeros(len(x)), road, STEPS, Camera(), CFG, np.random.default_rng(0))
    m, log = drive_closed_loop(lambda x: torch.zeros(len(x)), road, STEPS, Camera(), CFG, np.random.default_rng(0),
                               monitor=Slow())
    assert m["distance_km"] == pytest.approx(base["distance_km"] / 2)
    assert (log["speed_mps"] == CFG.speed_mps / 2).all() and np.allclose(log["seen_t"], log["t"])

    class Bad(Slow):
        def step(self, frames, command_deg, t):
            return MonitorStep(command_deg, np.zeros(len(command_deg)), {})

    with pytest.raises(PDNError, match="speed scales"):
        drive_closed_loop(lambda x: torch.zeros(len(x)), road, 2, Camera(), CFG, np.random.default_rng(0), monitor=Bad())


def test_monitor_logs_the_certificate_and_without_fallback_changes_nothing(road) -> None:
    model = _pv()
    _, plain_log = drive_closed_loop(model, road, STEPS, Camera(), CFG, np.random.default_rng(0))
    mon = CertifiedMonitor(model, delta_deg=1.0)
    _, log = drive_closed_loop(mon.policy, road, STEPS, Camera(), CFG, np.random.default_rng(0), monitor=mon)
    np.testing.assert_array_equal(log["predicted_deg"], plain_log["predicted_deg"])  # same drive
    np.testing.assert_array_equal(log["command_deg"], log["predicted_deg"])
    lo, hi, steer = log["cert_lo"].to_numpy(), log["cert_hi"].to_numpy(), log["predicted_deg"].to_numpy()
    fin = np.isfinite(lo) & np.isfinite(hi)
    assert fin.any() and (lo[fin] <= steer[fin]).all() and (steer[fin] <= hi[fin]).all()
    np.testing.assert_array_equal(log["verified"], fin & (hi - lo <= 1.0))
    s = summarize(log)
    assert s["unverified_share"] == pytest.approx(1 - log["verified"].mean()) and s["fallback_steps"] == 0


def test_slow_and_hold_fallbacks(road) -> None:
    model = _pv()
    mon = CertifiedMonitor(model, delta_deg=1e-9, fallback="slow", slow_factor=0.25)  # nothing is verified
    _, log = drive_closed_loop(mon.policy, road, 8, Camera(), CFG, np.random.default_rng(0), monitor=mon)
    assert not log["verified"].any() and (log["speed_mps"] == 0.25 * CFG.speed_mps).all()

    frames = torch.rand(2, 3, 66, 200, generator=torch.Generator().manual_seed(0))
    hold = CertifiedMonitor(model, delta_deg=1e6, fallback="hold", hold_s=0.25)
    first = hold.step(frames, np.array([1.0, 2.0]), 0.0)
    with torch.no_grad():
        cert = certify_votes(model.votes(frames), model.touch("2%"), model.valid)
    np.testing.assert_array_equal(first.record["verified"], cert.certified.numpy())
    np.testing.assert_array_equal(first.record["cert_lo"], cert.lo.double().numpy())
    hold.delta = 1e-9  # from now on nothing is verified
    kept = hold.step(frames, np.array([5.0, 6.0]), 0.2)
    late = hold.step(frames, np.array([7.0, 8.0]), 0.5)
    ok = first.record["verified"]
    np.testing.assert_array_equal(kept.command_deg, np.where(ok, [1.0, 2.0], [5.0, 6.0]))
    np.testing.assert_array_equal(late.command_deg, [7.0, 8.0])  # held for at most hold_s
    assert kept.record["fallback"].tolist() == ok.tolist()


def test_pdn_drive_monitor_cli(tmp_path: Path, capsys) -> None:
    save_model(tmp_path / "pv", _pv())
    save_model(tmp_path / "pilot", create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0)))
    args = ["drive", "--model", str(tmp_path / "pv"), "--roads", "1", "--km", "0.03", "--monitor", "--fallback", "slow",
            "--out", str(tmp_path / "d"), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["monitor"]["unverified_share"] <= 1 and Path(result["monitor"]["trace"]).is_file()
    assert {"cert_lo", "cert_hi", "verified", "fallback"} <= set(
        (tmp_path / "d" / "drive_log.csv").read_text().splitlines()[0].split(","))
    # the report shows the monitor's trace in the drive's section
    assert main(["report", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "drive1_monitor_trace.png" in (tmp_path / "r" / "index.html").read_text()
    assert (tmp_path / "r" / "drive1_monitor_trace.png").stat().st_size > 1000 and report["index"]
    for bad in (["--model", str(tmp_path / "pilot"), "--monitor"], ["--model", str(tmp_path / "pv"), "--fallback", "hold"]):
        assert main(["drive", *bad, "--roads", "1", "--km", "0.01"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pdn: error:")
