"""``pdn train --input-size``: a model built for another input size, trained on data resized to it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from drivenet_patch.app.cli import main
from drivenet_patch.models.checkpoint import load_model


def test_train_at_another_input_size(make_tiny_synth: Callable[..., Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = make_tiny_synth(tmp_path / "data", n=120, size=(72, 144))  # world data is rendered at the model size
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "pilotnet_tiny", "--input-size", "72x144",
                 "--epochs", "1", "--samples-per-epoch", "64", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["input_size"] == [72, 144]
    assert load_model(out).input_size == (72, 144)
    assert main(["eval", "--model", str(out), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 120


def test_bad_input_size_is_one_line(tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data", str(tiny_synth), "--model", "pilotnet_tiny", "--input-size", "48by96",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--input-size" in err and len(err.splitlines()) == 1
