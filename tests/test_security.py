"""Untrusted files: model loading never runs code, configs are checked against the registry,
dataset logs cannot read outside their folder unless the user says so, and writes are atomic.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from drivenet_patch.checkpoint import load_model, save_model
from drivenet_patch.cli import main
from drivenet_patch.errors import PDNError
from drivenet_patch.io import atomic_path, remove_stale_temps, write_json, write_text
from drivenet_patch.models import create_model


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return int(code), out.getvalue(), err.getvalue()


def assert_one_line_exit_2(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------------- pickles
class _Payload:
    """Unpickling this would create ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture
def evil_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder whose ``model.pt`` runs code when unpickled, with a valid config.json beside it."""
    save_model(tmp_path, create_model("pilotnet_tiny"))
    marker = tmp_path / "marker.txt"
    weights = tmp_path / "model.pt"
    weights.write_bytes(pickle.dumps({"conv.weight": _Payload(marker)}, protocol=2))
    return weights, marker


def test_pickle_payload_never_runs(evil_run: tuple[Path, Path]) -> None:
    weights, marker = evil_run
    with pytest.raises(PDNError, match="refusing to load pickle file"):
        load_model(weights)
    with pytest.raises(PDNError, match="weights-only"):  # even when allowed: torch.load(weights_only=True)
        load_model(weights, allow_pickle=True)
    zipped = weights.with_name("zipped.pt")  # torch.save's own zip container, same payload
    torch.save({"conv.weight": _Payload(marker)}, zipped)
    with pytest.raises(PDNError, match="weights-only"):
        load_model(zipped, allow_pickle=True)
    for suffix in (".pth", ".pkl", ".ckpt", ".bin", ".PT"):
        twin = weights.with_suffix(suffix)
        twin.write_bytes(weights.read_bytes())
        with pytest.raises(PDNError, match="refusing to load pickle file"):
            load_model(twin)
    assert not marker.exists()


def test_pickle_payload_via_cli(evil_run: tuple[Path, Path], tmp_path: Path, make_tiny_synth) -> None:
    weights, marker = evil_run
    data = make_tiny_synth(tmp_path / "data", n=8)
    code, _, err = run_cli("eval", "--model", str(weights), "--data", str(data), "--out", str(tmp_path / "p.csv"))
    assert_one_line_exit_2(code, err, "refusing to load pickle file", "model.pt")
    code, _, err = run_cli("eval", "--model", str(weights), "--data", str(data), "--out", str(tmp_path / "p.csv"),
                           "--allow-pickle")
    assert_one_line_exit_2(code, err, "weights-only")
    assert not marker.exists() and not (tmp_path / "p.csv").exists()


def test_allow_pickle_reads_a_plain_state_dict(tmp_path: Path, make_tiny_synth) -> None:
    model = create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(3))
    save_model(tmp_path, model)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    data = make_tiny_synth(tmp_path / "data", n=8)
    code, out, err = run_cli("eval", "--model", str(tmp_path / "weights.pth"), "--data", str(data), "--out",
                             str(tmp_path / "p.csv"), "--allow-pickle", "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 8


def test_safetensors_header_cannot_smuggle_a_config(tmp_path: Path) -> None:
    """The config embedded in a lone weights file goes through the same registry checks."""
    model = create_model("pilotnet_tiny")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"),
              metadata={"pdn_model_config": json.dumps({"name": "os.system", "cmd": "touch x"})})
    with pytest.raises(PDNError, match=r"unknown model 'os\.system'"):
        load_model(tmp_path / "w.safetensors")


# ------------------------------------------------------------------------------------- config.json
@pytest.mark.parametrize(
    ("model_cfg", "needle"),
    [
        ({"name": "lenet"}, "unknown model 'lenet'"),
        ({"name": ["pilotnet"]}, "unknown model"),
        ({"name": "pilotnet_tiny", "__class__": "x"}, "unknown config key"),
        ({"name": "pilotnet_tiny", "input_size": "tall"}, "input_size"),
        ({"name": "pilotnet_tiny", "input_size": [66, 200, 3]}, "input_size"),
        ({"name": "pilotnet_tiny", "dropout": "0.5; rm -rf /"}, "dropout"),
        ({"name": "pilotnet_tiny", "dropout": True}, "dropout"),
        ({"name": "pilotnet_tiny", "out_scale": float("nan")}, "out_scale"),
        ("pilotnet_tiny", "'model' object"),
    ],
)
def test_config_json_is_checked_against_the_registry(tmp_path: Path, model_cfg: object, needle: str) -> None:
    save_model(tmp_path, create_model("pilotnet_tiny"))
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "model": model_cfg}))
    with pytest.raises(PDNError) as info:
        load_model(tmp_path)
    msg = str(info.value)
    assert needle in msg and "config.json" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------- path escape
@pytest.fixture
def escaping_sully(tmp_path: Path) -> Path:
    """A SullyChen folder whose data.txt names an image outside it (a real, readable image)."""
    import cv2
    import numpy as np

    root = tmp_path / "sully"
    root.mkdir()
    img = np.full((256, 455, 3), 128, np.uint8)
    assert cv2.imwrite(str(tmp_path / "private.jpg"), img)
    for i in range(8):
        assert cv2.imwrite(str(root / f"{i}.jpg"), img)
    lines = [f"{i}.jpg {i - 4}.0" for i in range(8)] + ["../private.jpg 1.0"]
    (root / "data.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cli_refuses_outside_paths_unless_allowed(escaping_sully: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("data", "check", str(escaping_sully))
    assert_one_line_exit_2(code, err, "data.txt: row 9", "leaves the dataset folder", "--allow-outside-paths")
    code, out, err = run_cli("data", "check", str(escaping_sully), "--allow-outside-paths", "--json")
    assert code == 0, err
    assert json.loads(out)["frames"] == 9

    run = tmp_path / "run"
    save_model(run, create_model("pilotnet_tiny"))
    code, _, err = run_cli("eval", "--model", str(run), "--data", str(escaping_sully))
    assert_one_line_exit_2(code, err, "leaves the dataset folder")
    code, out, err = run_cli("eval", "--model", str(run), "--data", str(escaping_sully), "--allow-outside-paths",
                             "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 9

    train = ["train", "--data", str(escaping_sully), "--out", str(tmp_path / "t"), "--model", "pilotnet_tiny",
             "--batch", "64"]
    code, _, err = run_cli(*train)
    assert_one_line_exit_2(code, err, "leaves the dataset folder")
    code, _, err = run_cli(*train, "--allow-outside-paths")  # opened: now only too small for a batch
    assert_one_line_exit_2(code, err, "fewer than one batch of 64")


def test_allow_outside_is_harmless_for_synth(make_tiny_synth, tmp_path: Path) -> None:
    data = make_tiny_synth(tmp_path / "data", n=8)
    code, out, err = run_cli("data", "check", str(data), "--allow-outside-paths", "--json")
    assert code == 0, err
    assert json.loads(out)["format"] == "synth"


# ------------------------------------------------------------------------------------- atomic writes
def test_failed_writes_are_one_line_and_leave_no_temporary_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PDNError, match=r"file/out\.json: cannot write"):
        write_json(blocker / "out.json", {"a": 1})
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(PDNError, match=r"dir\.json: cannot write"):
        write_text(tmp_path / "dir.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "file"]
    # an OSError of the writer's own, about another file, is not disguised as a write error
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "ok.txt"):
        open(tmp_path / "missing" / "input.txt").close()


def test_stale_temporary_files_are_recognised(tmp_path: Path) -> None:
    with contextlib.suppress(RuntimeError), atomic_path(tmp_path / "metrics.csv") as tmp:
        stale = tmp.with_name(tmp.name.replace(".metrics", ".model", 1))
        stale.write_text("half")  # what a kill in the middle of a write leaves behind
        raise RuntimeError
    keep = [tmp_path / ".hidden", tmp_path / "notes.tmp", tmp_path / "model.safetensors"]
    for p in keep:
        p.write_text("mine")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in keep)


def test_resume_with_a_corrupt_state_is_one_line(tiny_synth: Path, tmp_path: Path) -> None:
    from drivenet_patch.train import TrainConfig, train

    cfg = TrainConfig(model="pilotnet_tiny", epochs=2, batch=32, samples_per_epoch=32, augment=False)
    train([tiny_synth], tmp_path / "run", cfg, until_epoch=1)
    state = tmp_path / "run" / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(PDNError, match=r"train_state\.safetensors: not a readable safetensors file"):
        train([tiny_synth], tmp_path / "run", cfg, resume=True)
    (tmp_path / "run" / "config.json").write_text('{"train": {"epochs": "many"}}')
    with pytest.raises(PDNError, match=r"config\.json: invalid training configuration"):
        train([tiny_synth], tmp_path / "run", cfg, resume=True)


def test_resynthesis_interrupted_half_way_leaves_the_old_dataset_intact(tmp_path: Path, monkeypatch) -> None:
    import drivenet_patch.data.synthesize as synth_mod
    from drivenet_patch.data import open_dataset

    out = tmp_path / "ds"
    synth_mod.synthesize(out, 4, seed=1, size=(16, 32), episode_steps=4, progress=False)
    before = open_dataset(out)
    frames, labels = before.frames(range(4)), before.labels.copy()

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill between images.npy and labels.csv

    monkeypatch.setattr(synth_mod, "write_csv", killed)
    with pytest.raises(KeyboardInterrupt):
        synth_mod.synthesize(out, 6, seed=2, size=(16, 32), episode_steps=4, progress=False)
    after = open_dataset(out)  # not 6 new frames under 4 old labels: the old dataset, unchanged
    assert len(after) == 4 and np.array_equal(after.frames(range(4)), frames)
    assert after.labels.equals(labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the staging folder is gone
