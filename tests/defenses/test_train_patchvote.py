"""``pdn train --model patchvote``: the training loop uses the model's own training_loss."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from defenses import PatchVote
from drivenet_patch.data.synthesize import synthesize
from drivenet_patch.models.checkpoint import load_model
from drivenet_patch.training.evaluation import evaluate
from drivenet_patch.training.train import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pv_world")
    synthesize(root / "train", 96, seed=31, episode_steps=48, progress=False)
    return root / "train"


def test_one_epoch_of_patchvote_through_the_training_loop(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = PatchVote.training_loss

    def spy(self: PatchVote, x, y, loss_name):  # type: ignore[no-untyped-def]
        calls.append(loss_name)
        return original(self, x, y, loss_name)

    monkeypatch.setattr(PatchVote, "training_loss", spy)
    cfg = TrainConfig(model="patchvote_tiny", model_cfg={"abstain": [0]}, epochs=1, batch=16, samples_per_epoch=48,
                      lr=3e-3, loss="huber", seed=3)
    summary = train([tiny_world], tmp_path / "run", cfg)
    assert summary["epochs"] == 1 and calls == ["huber"] * 3  # 48 frames / 16 per batch
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["train_loss"].notna().all()
    model = load_model(tmp_path / "run")
    assert isinstance(model, PatchVote) and model.config["abstain"] == [0]
    m = evaluate(tmp_path / "run", tiny_world)
    assert m["n"] == 96 and m["rmse_deg"] >= 0
