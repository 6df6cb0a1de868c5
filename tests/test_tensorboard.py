"""``pdn train --tensorboard DIR``: per-epoch scalars and a few frames; a one-line error without the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from drivenet_patch.app.cli import main


def _train_args(data: Path, out: Path, tb: Path) -> list[str]:
    return ["train", "--data", str(data), "--model", "pilotnet_tiny", "--out", str(out), "--epochs", "2",
            "--samples-per-epoch", "64", "--batch", "32", "--tensorboard", str(tb), "--json"]


def test_tensorboard_scalars_per_epoch_and_frames_once(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(_train_args(tiny_synth, tmp_path / "run", tmp_path / "tb")) == 0
    capsys.readouterr()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "val/rmse_deg", "train/lr", "train/images_per_s"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
    assert acc.Scalars("train/lr")[0].value > acc.Scalars("train/lr")[1].value  # the cosine decay, as trained
    assert tags["images"] == ["input/frames"] or "input/frames" in tags["images"]


def test_without_the_extra_the_flag_is_one_line_naming_it(tiny_synth: Path, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The interpreter as it is without the extra: the tensorboard package cannot be imported.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    assert main(_train_args(tiny_synth, tmp_path / "run", tmp_path / "tb")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pdn: error:") and "[tensorboard]" in lines[0], lines
    assert not (tmp_path / "run").exists()
