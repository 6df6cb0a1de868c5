"""``pdn train`` killed with SIGKILL at random moments, then ``--resume``d, ends exactly where an
uninterrupted run with the same seed ends: the same metrics.csv (but for timings) and bit-identical
weights. After every kill, each file in the run folder is complete and readable.

The kill delays are random on purpose; a failure message carries them (and the seed that drew
them: set ``PDN_KILL_SEED`` to replay it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

TIMING = ["seconds", "train_img_s"]


def _cmd(data: Path, out: Path, epochs: int, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "drivenet_patch.app.cli", "train", "--data", str(data), "--out", str(out),
            "--model", "pilotnet_tiny", "--epochs", str(epochs), "--batch", "32", "--samples-per-epoch", "96",
            "--lr", "3e-3", "--seed", "3", "--json"]
    return [*args, "--resume"] if resume else args


def _env() -> dict[str, str]:
    # One thread per process: the reference and the resumed run must compute in the same way.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr
    return proc


def _snapshot(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()} if out.is_dir() else {}


def _epoch_seconds(out: Path) -> float:
    try:
        return float(pd.read_csv(out / "metrics.csv")["seconds"].mean())
    except (OSError, ValueError, KeyError):
        return 0.5


def _kill_during_training(cmd: list[str], out: Path, rng: random.Random) -> str:
    """Start ``cmd``; once it has written something (an epoch is done), SIGKILL it after a random
    delay: often within a few milliseconds (in the middle of that epoch's writes), else up to
    two epochs later (in the middle of training). Returns what happened, for failure messages."""
    before = _snapshot(out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        while proc.poll() is None and _snapshot(out) == before:
            time.sleep(0.005)
        delay = rng.uniform(0.0, 0.03) if rng.random() < 0.4 else rng.uniform(0.0, 2.0 * _epoch_seconds(out))
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return f"killed {delay:.3f}s after a write"
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == 0, err
        return "finished before the kill"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _assert_run_folder_readable(out: Path, note: str) -> None:
    """No partial file: everything that exists under its final name parses completely."""
    if not out.exists():
        return
    for p in out.iterdir():
        if p.name.startswith("."):
            continue  # a writer's temporary file; removed on resume
        if p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            assert len(pd.read_csv(p)) >= 1, note
    if (out / "metrics.csv").is_file():  # a listed epoch is committed: a resume never trains it again
        from drivenet_patch.storage.state import read_state_meta

        committed = read_state_meta(out / "train_state.safetensors")["epoch"] + 1
        assert committed - 1 <= len(pd.read_csv(out / "metrics.csv")) <= committed, note


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_run(ref: Path, got: Path, note: str) -> None:
    a = pd.read_csv(ref / "metrics.csv").drop(columns=TIMING)
    b = pd.read_csv(got / "metrics.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b, obj=f"metrics.csv ({note})")
    for name in ("model.safetensors", "last.safetensors"):
        wa, wb = _weights(ref / name), _weights(got / name)
        assert wa.keys() == wb.keys(), note
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k} differs ({note})"
    stale = [p.name for p in got.iterdir() if p.name.startswith(".") and p.name != ".pdn-folder.json"]  # not the marker
    assert not stale, f"stale temporary files ({note})"


def _kill_and_resume(tiny_synth: Path, tmp_path: Path, epochs: int, kills: int) -> None:
    seed = int(os.environ.get("PDN_KILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    ref = tmp_path / "ref"
    # The uninterrupted reference runs alongside (one thread each; the machine may have two cores).
    reference = subprocess.Popen(_cmd(tiny_synth, ref, epochs, resume=False), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, env=_env())
    try:
        cut = tmp_path / "cut"
        events = []
        for _ in range(kills):
            # The first start has no run to resume: --resume on a missing folder simply starts one.
            events.append(_kill_during_training(_cmd(tiny_synth, cut, epochs, resume=True), cut, rng))
            note = f"PDN_KILL_SEED={seed}: {', '.join(events)}"
            _assert_run_folder_readable(cut, note)
        _run(_cmd(tiny_synth, cut, epochs, resume=True))
        _, err = reference.communicate(timeout=600)
        assert reference.returncode == 0, err.decode()
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.communicate()
    note = f"PDN_KILL_SEED={seed}: {', '.join(events)}, then resumed to the end"
    assert len(pd.read_csv(cut / "metrics.csv")) == epochs
    _assert_same_run(ref, cut, note)


def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_synth: Path, tmp_path: Path) -> None:
    _kill_and_resume(tiny_synth, tmp_path, epochs=4, kills=2)


@pytest.mark.slow
def test_many_sigkills_then_resume_equals_an_uninterrupted_run(tiny_synth: Path, tmp_path: Path) -> None:
    _kill_and_resume(tiny_synth, tmp_path, epochs=12, kills=10)
