"""``pdn demo``: every stage's command is valid, and the quick demo runs, survives a kill and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import cv2
import pytest

from drivenet_patch.app.cli import build_parser, main
from drivenet_patch.app.cli.attack import route_argv
from drivenet_patch.app.demo import FULL, QUICK, DemoSettings, plan, run_demo
from drivenet_patch.safety.errors import PDNError


@pytest.mark.parametrize("quick", [True, False])
def test_every_stage_command_parses(quick: bool) -> None:
    parser = build_parser()
    stages = plan(Path("out"), quick)
    assert len({s.name for s in stages}) == len(stages)
    assert stages[-1].name == "report"
    for st in stages:
        assert st.commands, st.name
        for argv in st.commands:
            args = parser.parse_args(route_argv(list(argv)))
            assert callable(args.fn), argv
            assert "--json" in argv  # the demo keeps every command's JSON in its log
    # Every output folder the report reads is written by some stage before it.
    written = {argv[argv.index("--out") + 1] for st in stages[:-1] for argv in st.commands if "--out" in argv}
    report = stages[-1].commands[0]
    inputs = report[1:report.index("--out")]
    assert set(inputs) <= written, set(inputs) - written
    # PatchVote is evaluated like PilotNet (its RMSE in the report), and driven in the full demo.
    pv_cmds = next(st for st in stages if st.name == "patchvote").commands
    assert [c[0] for c in pv_cmds] == ["train", "eval"] + ([] if quick else ["drive"])
    assert ("out/drive_patchvote" in inputs) is (not quick)
    # The quick report says why its numbers are weaker (notes under the summary); the full one needs none.
    assert ("--note" in report) is quick


def test_full_demo_sweeps_sticker_sizes_and_both_certify_in_metres() -> None:
    """The full demo runs ``pdn attack sweep`` against PilotNet, both flavours certify
    PatchVote in metres, and the report gets both folders; --quick says why it has no sweep."""
    full, quick = ({st.name: st for st in plan(Path("out"), q)} for q in (False, True))
    assert "attack_sweep" in full and "attack_sweep" not in quick
    assert "certify_physical" in full and "certify_physical" in quick
    names = list(full)
    assert names.index("attack_sweep") < names.index("patchvote") < names.index("attack_sweep_patchvote")
    assert names.index("certify") < names.index("certify_physical") < names.index("report")
    # The sweep decides the break size, so the full demo has no separate offline smaller stickers; --quick does.
    assert "attack_sizes" not in full and "attack_sizes" in quick and "attack_sweep_patchvote" not in quick
    (sweep,) = full["attack_sweep"].commands
    assert sweep[:2] == ("attack", "sweep") and sweep[sweep.index("--model") + 1] == "out/pilotnet"
    assert sweep[sweep.index("--areas") + 1] == ",".join(f"{a:g}" for a in FULL.sweep_areas) == "7,14,20,28"
    assert sweep[sweep.index("--steps") + 1] == str(FULL.sweep_steps)
    # The defended model's curve: the same sweep, its stickers optimised against the defended model itself.
    (pv_sweep,) = full["attack_sweep_patchvote"].commands
    assert pv_sweep[pv_sweep.index("--model") + 1] == "out/patchvote"
    assert pv_sweep[pv_sweep.index("--areas") + 1] == ",".join(f"{a:g}" for a in FULL.pv_sweep_areas)
    for flag in ("--steps", "--roads", "--poses", "--distance", "--eval-roads", "--loop-roads", "--km", "--seed"):
        assert pv_sweep[pv_sweep.index(flag) + 1] == sweep[sweep.index(flag) + 1], flag
    for flavour in (full, quick):
        (cert,) = flavour["certify_physical"].commands
        assert cert[:3] == ("certify", "--model", "out/patchvote") and "--sweep" in cert
        assert cert[cert.index("--physical") + 1] == "2.0x3.5" and cert[cert.index("--out") + 1] == "out/certify_physical"
    for flavour, sweeps in ((full, True), (quick, False)):
        report = flavour["report"].commands[0]
        inputs = report[1:report.index("--out")]
        assert "out/certify_physical" in inputs and ("out/attack_sweep" in inputs) is sweeps
        assert ("out/attack_sweep_patchvote" in inputs) is sweeps
    assert QUICK.sweep_areas == () and any("sweep" in n and "full demo only" in n for n in QUICK.notes)


def test_device_reaches_every_command_that_takes_one() -> None:
    parser = build_parser()
    for st in plan(Path("out"), True, device="cuda:1"):
        for argv in st.commands:
            args = parser.parse_args(route_argv(list(argv)))
            assert getattr(args, "device", "cuda:1") == "cuda:1", argv


def test_refuses_a_folder_of_the_other_flavour(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text(json.dumps({"quick": False, "seed": 0}))
    with pytest.raises(PDNError, match="quick=False"):
        run_demo(main, tmp_path, quick=True)
    assert not (tmp_path / "stages").exists()  # refused before anything ran


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(str(dict(attrs)["src"]))
        self._in_h2 = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2.append(data.strip())
            self._in_h2 = False


def _stage_result(out: Path, name: str, i: int = 0) -> dict:
    return json.loads((out / "stages" / f"{name}.json").read_text())["results"][i]


#: A demo through every stage in about a minute: the default run's end-to-end check of the pipeline
#: (the --quick demo itself, killed and resumed, is the slow test below).
TINY = DemoSettings(
    train_frames=800, heldout_frames=200, cameras="center",
    train_args=("--epochs", "2", "--samples-per-epoch", "256"), patchvote_args=("--epochs", "1", "--samples-per-epoch", "256"),
    drive_roads=1, drive_km=0.1, saliency_n=2, attack_steps=4, attack_roads=1, attack_poses=4, loop_roads=1,
    loop_km=0.2, size_sweep=("1.0x1.75",), size_steps=2, certify_attack_runs=2, pv_attack_steps=2, pv_drive=False,
    physical_frames=16, physical_spacing=2.0, notes=("a tiny demo for the tests",))


def test_tiny_demo_runs_every_stage_resumes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    lines: list[str] = []
    first = run_demo(main, out, quick=True, settings=TINY, echo=lines.append)
    names = [st["name"] for st in first["stages"]]
    assert names == [st.name for st in plan(out, True, settings=TINY)] and not any(st["skipped"] for st in first["stages"])
    # Resume: the finished stages are skipped, a stage whose marker is gone runs again.
    (out / "stages" / "attack_patchvote.json").unlink()
    again = run_demo(main, out, quick=True, settings=TINY, echo=lines.append)
    ran = [st["name"] for st in again["stages"] if not st["skipped"]]
    assert ran == ["attack_patchvote"]
    assert _stage_result(out, "train")["epochs"] == 2
    cert = json.loads((out / "certify" / "certify.json").read_text())
    assert cert["violations"] == 0 and cert["sticker_violations"] == 0
    page = _Images()
    page.feed((out / "report" / "index.html").read_text(encoding="utf-8"))
    assert page.h2 == ["Summary", "Data", "Model", "Attack", "Defense", "Certified in metres"]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["notes"] == ["a tiny demo for the tests"]
    assert "defense_physical" in {f["key"] for f in summary["findings"]}
    for src in page.imgs:
        img = cv2.imread(str(out / "report" / src))
        assert img is not None and img.std() > 0, src


@pytest.mark.slow
def test_quick_demo_killed_mid_training_resumes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "drivenet_patch.app.cli", "demo", "--quick", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    metrics = out / "pilotnet" / "metrics.csv"
    try:  # kill it once PilotNet has finished its first epoch (the middle of the train stage)
        while proc.poll() is None and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    done_at_kill = {p.stem for p in (out / "stages").glob("*.json")}
    assert {"preview", "data"} <= done_at_kill and "train" not in done_at_kill

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    minutes = (time.perf_counter() - t0) / 60
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    lines = rerun.stdout.splitlines()
    skipped = {ln.split()[2] for ln in lines if ln.endswith("done before, skipped")}
    assert skipped == done_at_kill
    assert lines[-1] == f"report: {out / 'report' / 'index.html'}"
    # Training resumed inside the stage: the epochs before the kill were not trained again.
    assert _stage_result(out, "train")["start_epoch"] >= 1
    assert minutes < 8, f"quick demo took {minutes:.1f} min"  # ~3 min on a quiet 2-core machine

    # The results are real and say what they should.
    ev = _stage_result(out, "eval")
    assert ev["rmse_deg"] < 0.6 * ev["zero_rmse_deg"]
    pv_ev = _stage_result(out, "patchvote", 1)  # the defended model, on the same held-out roads
    assert pv_ev["n"] == ev["n"] and pv_ev["rmse_deg"] < pv_ev["zero_rmse_deg"]
    atk = json.loads((out / "attack" / "eval.json").read_text())
    assert atk["mean_dev_deg"] > 2 * max(atk["control_noise"]["mean_dev_deg"], atk["control_grey"]["mean_dev_deg"])
    assert atk["n_approaches"] > 0 and (out / "attack" / "eval_tracks.csv").is_file()
    cert = json.loads((out / "certify" / "certify.json").read_text())
    assert cert["violations"] == 0 and cert["sticker_violations"] == 0 and 0 < cert["certified_acc"] <= 1

    page = _Images()
    page.feed((out / "report" / "index.html").read_text(encoding="utf-8"))
    assert page.h2 == ["Summary", "Data", "Model", "Attack", "Defense", "Certified in metres"]  # findings first
    summary = json.loads((out / "report" / "summary.json").read_text())
    keys = [f["key"] for f in summary["findings"]]
    assert keys.count("model") == 2 and {"attack", "defense_patch", "defense_physical", "adaptive"} <= set(keys)
    assert summary["notes"] and "--quick" in summary["notes"][0]
    assert len(page.imgs) >= 25
    for src in page.imgs:
        img = cv2.imread(str(out / "report" / src))
        assert img is not None and img.std() > 0, src  # a real picture, not a blank placeholder
    for name in ("defended_vs_undefended.png", "attack_vs_size.png", "certify1_votes.png",
                 "attack1_trajectories.png", "data1_samples.png", "metres_vs_area.png", "metres_touch_sets.png"):
        assert name in page.imgs
