"""``pdn train`` under ``torchrun``: two CPU processes (gloo) with DistributedDataParallel reach the
validation RMSE of one process with the same global batch and epochs; only rank 0 writes and
reports; the frames of each global batch are split between the ranks without overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.training.data import Subset, batches
from drivenet_patch.training.train import TrainConfig, train

pytestmark = pytest.mark.skipif(
    not __import__("torch").distributed.is_available(), reason="this torch has no torch.distributed"
)

TINY = ["--model", "pilotnet_tiny", "--epochs", "5", "--batch", "32", "--samples-per-epoch", "256", "--lr", "3e-3",
        "--seed", "1", "--no-augment", "--json"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _train_cmd(data: Path, out: Path, nproc: int) -> list[str]:
    pdn = ["-m", "drivenet_patch.app.cli", "train", "--data", str(data), "--out", str(out), *TINY]
    if nproc == 1:
        return [sys.executable, *pdn]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *pdn]


def test_ranks_take_disjoint_shares_of_every_batch(tiny_synth: Path) -> None:
    from drivenet_patch.data import open_dataset

    ds = open_dataset(tiny_synth)
    data = Subset(ds, np.arange(len(ds)))
    data.frames = lambda idx: np.asarray(idx)[:, None, None, None] * np.ones((1, 1, 1, 3), np.int64)  # frame = index
    cfg = TrainConfig(model="pilotnet_tiny", batch=8, samples_per_epoch=64, augment=False, seed=4)
    whole = [f[:, 0, 0, 0] for f, _ in batches(data, cfg, epoch=2, augmenter=None)]
    shares = [[f[:, 0, 0, 0] for f, _ in batches(data, cfg, epoch=2, augmenter=None, rank=r, world=2)] for r in (0, 1)]
    assert len(whole) == len(shares[0]) == len(shares[1]) == 8
    for b, (s0, s1) in enumerate(zip(*shares)):
        assert len(s0) == len(s1) == 4
        assert sorted([*s0, *s1]) == sorted(whole[b])  # together: the one-process batch, split in two


def test_batch_must_split_evenly_between_processes(tiny_synth: Path, tmp_path: Path, monkeypatch) -> None:
    import drivenet_patch.training.train as train_mod

    monkeypatch.setattr(train_mod, "init_distributed", lambda device: train_mod.Dist(rank=0, world=3))
    with pytest.raises(PDNError, match="batch 32 must be a multiple of the number of processes"):
        train([tiny_synth], tmp_path / "run", TrainConfig(model="pilotnet_tiny", batch=32))
    assert not (tmp_path / "run").exists()


def test_bad_torchrun_environment_is_one_line(monkeypatch) -> None:
    import torch

    from drivenet_patch.training.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(PDNError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed(torch.device("cpu")).world == 1


def test_two_processes_reach_one_process_quality(tiny_synth: Path, tmp_path: Path) -> None:
    runs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    procs = {n: subprocess.Popen(_train_cmd(tiny_synth, out, n), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=_env()) for n, out in runs.items()}
    results = {}
    for n, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1, stdout  # rank 0 alone reports
        results[n] = json.loads(lines[0])
    assert results[1]["world_size"] == 1 and results[2]["world_size"] == 2
    one, two = results[1]["best_val_rmse_deg"], results[2]["best_val_rmse_deg"]
    zero = results[1]["final"]["val_zero_rmse_deg"]
    assert one < 0.6 * zero, results[1]  # one process learns
    assert two <= 1.25 * one, (one, two)  # and two processes as well as one
    m1, m2 = (pd.read_csv(runs[n] / "metrics.csv") for n in (1, 2))
    assert len(m1) == len(m2) == 5
    assert sorted(p.name for p in runs[2].iterdir()) == sorted(p.name for p in runs[1].iterdir())


@pytest.mark.slow
def test_two_processes_are_reproducible_and_resume_after_a_kill(tiny_synth: Path, tmp_path: Path) -> None:
    import signal
    import time

    def run(out: Path, *extra: str) -> None:
        proc = subprocess.run([*_train_cmd(tiny_synth, out, 2), *extra], capture_output=True, text=True,
                              env=_env(), timeout=600)
        assert proc.returncode == 0, proc.stderr

    run(tmp_path / "a")
    run(tmp_path / "b")
    drop = ["seconds", "train_img_s"]
    ma, mb = (pd.read_csv(tmp_path / n / "metrics.csv").drop(columns=drop) for n in "ab")
    pd.testing.assert_frame_equal(ma, mb)
    # SIGKILL the whole torchrun job once two epochs are written, then resume it with torchrun
    cut = tmp_path / "cut"
    job = subprocess.Popen(_train_cmd(tiny_synth, cut, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=_env(), start_new_session=True)
    try:
        while job.poll() is None and not (
                (cut / "metrics.csv").is_file() and len(pd.read_csv(cut / "metrics.csv")) >= 2):
            time.sleep(0.01)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    run(cut, "--resume")
    pd.testing.assert_frame_equal(ma, pd.read_csv(cut / "metrics.csv").drop(columns=drop))


@pytest.mark.parametrize("args, rc", [(["--json"], 0), (["--format", "nonsense"], 2)])
def test_pdn_ends_without_interpreter_shutdown_after_a_group_and_loses_no_output(tiny_synth: Path, args, rc) -> None:
    # After torchrun work, pdn skips interpreter shutdown (gloo threads can abort it) with
    # os._exit; piped stdout is block-buffered, so the exit must flush it first.
    code = ("import sys; import drivenet_patch.training.distributed as t; t._GROUP_THREADS_LEFT = True; "
            f"sys.argv = ['pdn', 'data', 'check', {str(tiny_synth)!r}, *{args!r}]; "
            "import atexit; atexit.register(print, 'ATEXIT'); "
            "from drivenet_patch.app.cli import run; run()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == rc, proc.stderr
    assert "ATEXIT" not in proc.stdout  # os._exit: no interpreter shutdown
    if rc == 0:
        assert json.loads(proc.stdout)["frames"] == 400, proc.stdout
    else:
        assert proc.stderr.startswith("pdn: error:") and proc.stderr.count("\n") == 1, proc.stderr
