"""The pdn command line as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest


def pdn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "drivenet_patch.app.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    proc = pdn("--help")  # the real entry point, once
    assert proc.returncode == 0
    for word in ("data", "world", "train", "eval", "drive", "saliency", "bench", "attack", "certify", "report", "demo"):
        assert word in proc.stdout
    import argparse

    from drivenet_patch.app.cli import build_parser, main

    def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += [(*prefix, name), *commands(sub, (*prefix, name))]
        return found

    # `pdn attack eval` and `pdn attack sweep` are routed to the parsers attack-eval and attack-sweep
    every = [tuple(c[0].split("-", 1)) if c[0].startswith("attack-") else c for c in commands(build_parser())]
    assert {("export",), ("bench", "monitor"), ("attack", "eval"), ("attack", "sweep"), ("data", "synth")} <= set(every)
    # every command's --help, in this process (one interpreter start each would cost ~2.5 s)
    for sub in every:
        with pytest.raises(SystemExit) as exc:
            main([*sub, "--help"])
        assert exc.value.code == 0, sub
        out = capsys.readouterr().out
        assert out.startswith(f"usage: pdn {' '.join(sub)}"), (sub, out[:80])
        assert "--help" in out


def test_synth_help_names_the_library_default_episode_length() -> None:
    from drivenet_patch.data.synthesize import EPISODE_STEPS

    proc = pdn("data", "synth", "--help")
    assert proc.returncode == 0 and f"default {EPISODE_STEPS})" in " ".join(proc.stdout.split())


def test_synth_check_and_preview_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    proc = pdn("data", "synth", "--out", str(out), "--frames", "40", "--seed", "3", "--episode-steps", "40",
               "--cameras", "center,left", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["frames"] == 40 and result["cameras"] == ["center", "left"]
    proc = pdn("data", "check", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("format", "frames", "height", "width", "steering_mean", "steering_std", "steering_min", "steering_max"):
        assert key in report
    assert report["format"] == "synth" and report["frames"] == 40 and (report["height"], report["width"]) == (66, 200)
    text = pdn("data", "check", str(out))
    assert text.returncode == 0 and "synth" in text.stdout
    png = tmp_path / "grid.png"
    proc = pdn("world", "preview", "--out", str(png), "--seed", "2", "--size", "66x200")
    assert proc.returncode == 0, proc.stderr
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 150 and img.shape[1] > 800


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("data", "synth", "--out", "x", "--frames", "0"), ("--frames", "'0' is outside 1..10000000")),
        (("data", "synth", "--out", "x", "--frames", "5", "--size", "66by200"), ("--size", "66by200")),
        (("data", "synth", "--out", "x", "--frames", "5", "--cameras", "center,roof"), ("--cameras", "roof")),
        (("data", "check", "/nonexistent/dataset"), ("/nonexistent/dataset",)),
        (("data", "check", ".", "--format", "kitti"), ("kitti",)),
        (("world", "preview", "--out", "grid.txt"), ("--out",)),
        (("world", "teleport",), ("teleport",)),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    assert_one_line_error(pdn(*args, cwd=tmp_path), *needles)
    assert not (tmp_path / "x" / "images.npy").exists()


def test_bench_world_reports_fps_keys() -> None:
    from drivenet_patch.bench.timing import bench_world

    result = bench_world(frames=32, compile=False, repeats=1)
    assert result["fps_66x200"] > 0 and result["fps_160x320"] > 0
    assert result["fps_66x200"] == max(result["fps_66x200_eager"], result["fps_66x200_eager_uint8"])


def test_atomic_writes_leave_no_partial_file_and_respect_umask(tmp_path: Path) -> None:
    import os

    from drivenet_patch.storage.atomic import write_json, write_text

    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)

    class Boom(RuntimeError):
        pass

    from drivenet_patch.storage.atomic import atomic_path

    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert json.loads(target.read_text()) == {"a": 1}  # the old content survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    write_text(target, "new")
    assert target.read_text() == "new"


def test_file_system_errors_and_absurd_counts_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Found by fuzzing: an --out below a file escaped as a traceback; --threads 100000 and --poses 1e11
    ran the machine out of memory. All are one line now, before any work."""
    import torch

    from drivenet_patch.app.cli import main
    from drivenet_patch.app.cli.common import os_error_line
    from drivenet_patch.models import create_model
    from drivenet_patch.models.checkpoint import save_model

    run = tmp_path / "run"
    save_model(run, create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0)))
    (run / "metrics.csv").write_text("epoch,lr,train_loss,train_img_s,seconds,val_rmse_deg,val_mae_deg\n"
                                     "1,0.001,2.0,500,1.0,1.5,1.2\n")  # a training run the report accepts
    blocker = tmp_path / "f"
    blocker.write_text("x")
    cases = [
        (["report", str(run), "--out", str(blocker / "rep")], (str(blocker / "rep"), "Not a directory")),
        (["drive", "--model", str(run), "--roads", "1", "--km", "0.15", "--threads", "100000"], ("--threads", "1..1024")),
        (["drive", "--model", str(run), "--roads", "1", "--km", "1e9"], ("--km",)),
        (["attack", "--model", str(run), "--out", str(tmp_path / "a"), "--poses", "99999999999"], ("--poses",)),
        (["attack", "eval", "--model", str(run), "--sticker", str(tmp_path), "--loop-roads", "99999999999"],
         ("--loop-roads",)),
    ]
    for argv, needles in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("pdn") and "error:" in err, err
        assert all(n in err for n in needles), err
    assert not (tmp_path / "a").exists()
    rename = OSError(18, "Invalid cross-device link", "/a/x.tmp", None, "/b/x")
    assert os_error_line(rename) == "/a/x.tmp -> /b/x: Invalid cross-device link"
