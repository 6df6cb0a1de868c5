"""Training and evaluation: learning, determinism, resume, metrics, the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drivenet_patch.data.synthesize import synthesize
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.training.data import balanced_weights
from drivenet_patch.training.evaluation import evaluate, regression_metrics
from drivenet_patch.training.train import TrainConfig, train

TINY = dict(model="pilotnet_tiny", epochs=3, batch=32, samples_per_epoch=320, lr=3e-3)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("world")
    synthesize(root / "train", 600, seed=21, cameras=("center", "left", "right"), episode_steps=100, progress=False)
    synthesize(root / "test", 150, seed=22, episode_steps=100, progress=False)
    return root / "train", root / "test"


def test_regression_metrics_on_hand_made_labels() -> None:
    truth = np.array([1.0, -1.0, 3.0, 1.0])
    pred = np.array([1.5, -1.0, 2.0, 1.0])
    m = regression_metrics(pred, truth)
    assert m["rmse_deg"] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 0) / 4))
    assert m["mae_deg"] == pytest.approx(1.5 / 4)
    assert m["zero_rmse_deg"] == pytest.approx(np.sqrt((1 + 1 + 9 + 1) / 4))
    assert m["mean_rmse_deg"] == pytest.approx(np.sqrt(((0) ** 2 + 2**2 + 2**2 + 0) / 4))  # mean is 1
    assert m["n"] == 4


def test_balanced_weights_favour_rare_curves() -> None:
    steer = np.array([0.1] * 90 + [5.2] * 10)
    w = balanced_weights(steer)
    assert w.sum() == pytest.approx(1.0)
    assert w[-1] / w[0] == pytest.approx(8.0)  # 9x rarer, capped at 8x


def test_tiny_model_learns_and_is_deterministic(world: tuple[Path, Path], tmp_path: Path) -> None:
    train_dir, test_dir = world
    cfg = TrainConfig(**TINY, seed=5)
    a = train([train_dir], tmp_path / "a", cfg)
    b = train([train_dir], tmp_path / "b", cfg)
    ma = pd.read_csv(tmp_path / "a" / "metrics.csv")
    mb = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert len(ma) == 3 and a["epochs"] == 3
    pd.testing.assert_frame_equal(ma.drop(columns=["seconds", "train_img_s"]), mb.drop(columns=["seconds", "train_img_s"]))
    assert ma["train_loss"].iloc[-1] < ma["train_loss"].iloc[0]
    for name in ("config.json", "model.safetensors", "last.safetensors", "metrics.csv"):
        assert (tmp_path / "a" / name).is_file()
    assert not list((tmp_path / "a").glob("*.pt")) and not list((tmp_path / "a").glob("*.pkl"))
    m = evaluate(tmp_path / "a", test_dir, out_csv=tmp_path / "pred.csv")
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == m["n"] == 150
    np.testing.assert_allclose(pred["error_deg"], pred["predicted_deg"] - pred["steering_deg"], atol=1e-5)
    assert np.isfinite(m["rmse_deg"]) and m["rmse_deg"] >= 0
    assert b["best_val_rmse_deg"] == a["best_val_rmse_deg"]


def test_resume_reaches_the_same_result(world: tuple[Path, Path], tmp_path: Path) -> None:
    train_dir, _ = world
    cfg = TrainConfig(**TINY, seed=9)
    train([train_dir], tmp_path / "full", cfg)
    train([train_dir], tmp_path / "cut", cfg, until_epoch=1)
    assert len(pd.read_csv(tmp_path / "cut" / "metrics.csv")) == 1
    train([train_dir], tmp_path / "cut", cfg, resume=True)
    full = pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns=["seconds", "train_img_s"])
    cut = pd.read_csv(tmp_path / "cut" / "metrics.csv").drop(columns=["seconds", "train_img_s"])
    pd.testing.assert_frame_equal(full, cut)
    with pytest.raises(PDNError, match="different configuration"):
        train([train_dir], tmp_path / "cut", TrainConfig(**{**TINY, "lr": 1e-4}, seed=9), resume=True)
    with pytest.raises(PDNError, match="already holds a run"):
        train([train_dir], tmp_path / "full", cfg)


def test_bad_training_config_is_refused() -> None:
    with pytest.raises(PDNError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(PDNError, match="loss"):
        TrainConfig(loss="l7")


def test_train_and_eval_cli(world: tuple[Path, Path], tmp_path: Path) -> None:
    train_dir, test_dir = world
    run = tmp_path / "run"

    def pdn(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "drivenet_patch.app.cli", *args], capture_output=True, text=True,
                              timeout=600)

    proc = pdn("train", "--data", str(train_dir), "--model", "pilotnet_tiny", "--epochs", "1", "--batch", "32",
               "--samples-per-epoch", "128", "--out", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["epochs"] == 1
    proc = pdn("eval", "--model", str(run), "--data", str(test_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    for key in ("rmse_deg", "mae_deg", "zero_rmse_deg", "mean_rmse_deg", "n"):
        assert key in m
    assert (run / "predictions.csv").is_file()
    bad = pdn("train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2"), "--epochs", "1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    bad = pdn("eval", "--model", str(tmp_path / "missing_run"), "--data", str(test_dir))
    assert bad.returncode == 2 and "missing_run" in bad.stderr and "Traceback" not in bad.stderr


def test_augmentation_corrects_like_the_data_expert(world: tuple[Path, Path]) -> None:
    from drivenet_patch.data import open_dataset
    from drivenet_patch.training.data import Subset, correction_horizon_s

    train_dir, _ = world
    ds = open_dataset(train_dir)
    data = Subset(ds, np.arange(len(ds)))
    # The world expert looks 8 m ahead at 10 m/s: shifted views must be labelled by the same controller.
    assert correction_horizon_s(data, TrainConfig()) == pytest.approx(ds.meta["drive"]["lookahead_m"] / 10.0)
    assert correction_horizon_s(data, TrainConfig(horizon_s=2.0)) == 2.0


def test_albumentations_photometric_training_is_deterministic(world: tuple[Path, Path], tmp_path: Path) -> None:
    train_dir, _ = world
    cfg = TrainConfig(**{**TINY, "epochs": 2}, seed=3, photometric="albumentations")
    train([train_dir], tmp_path / "a", cfg)
    train([train_dir], tmp_path / "b", cfg)
    ma = pd.read_csv(tmp_path / "a" / "metrics.csv").drop(columns=["seconds", "train_img_s"])
    mb = pd.read_csv(tmp_path / "b" / "metrics.csv").drop(columns=["seconds", "train_img_s"])
    pd.testing.assert_frame_equal(ma, mb)
    with pytest.raises(PDNError, match="photometric"):
        TrainConfig(photometric="kornia")
