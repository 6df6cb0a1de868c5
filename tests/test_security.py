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

from drivenet_patch.app.cli import main
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.storage.atomic import atomic_path, remove_stale_temps, write_json, write_text


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
    from drivenet_patch.training.train import TrainConfig, train

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


# ------------------------------------------------------------------------------------- hostile inputs
def _comma(root: Path, n: int = 3) -> Path:
    """A minimal valid comma.ai folder (``camera/r.h5``, ``log/r.h5``) under ``root``."""
    h5py = pytest.importorskip("h5py")
    (root / "camera").mkdir(parents=True)
    (root / "log").mkdir()
    with h5py.File(root / "camera" / "r.h5", "w") as f:
        f.create_dataset("X", data=np.full((n, 3, 16, 32), 90, np.uint8))
    with h5py.File(root / "log" / "r.h5", "w") as f:
        f.create_dataset("steering_angle", data=np.arange(2 * n, dtype=np.float64))
        f.create_dataset("cam1_ptr", data=np.repeat(np.arange(n, dtype=np.float64), 2))
    return root


@pytest.mark.parametrize("trick", ["external_storage", "external_link", "virtual", "soft_to_external"])
def test_hdf5_that_points_at_other_files_is_refused(tmp_path: Path, trick: str) -> None:
    """A real HDF5 log whose steering lives in (or links to) a file outside the dataset: refused, naming it."""
    h5py = pytest.importorskip("h5py")
    from drivenet_patch.data import open_dataset

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(6, dtype=np.float64).tobytes())  # "bytes of any file on the machine"
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("steering_angle", data=np.arange(6, dtype=np.float64))
    root = _comma(tmp_path / "comma")
    with h5py.File(root / "log" / "r.h5", "a") as f:
        del f["steering_angle"]
        if trick == "external_storage":
            f.create_dataset("steering_angle", shape=(6,), dtype=np.float64, external=[(str(secret), 0, 48)])
        elif trick == "external_link":
            f["steering_angle"] = h5py.ExternalLink(str(other), "/steering_angle")
        elif trick == "virtual":
            layout = h5py.VirtualLayout(shape=(6,), dtype=np.float64)
            layout[:] = h5py.VirtualSource(str(other), "steering_angle", shape=(6,))
            f.create_virtual_dataset("steering_angle", layout)
        else:
            f["elsewhere"] = h5py.ExternalLink(str(other), "/")
            f["steering_angle"] = h5py.SoftLink("/elsewhere/steering_angle")
    with pytest.raises(PDNError) as info:
        open_dataset(root)
    msg = str(info.value)
    assert "r.h5" in msg and "allow_outside=True" in msg and "\n" not in msg and len(msg) <= 300, msg
    assert len(open_dataset(root, allow_outside=True)) == 3  # the user can still say yes


def test_synth_file_symlinked_out_of_the_folder_is_refused(tmp_path: Path, make_tiny_synth) -> None:
    from drivenet_patch.data import open_dataset

    root = make_tiny_synth(tmp_path / "ds", n=8, size=(16, 32))
    outside = tmp_path / "elsewhere.npy"
    (root / "images.npy").rename(outside)
    os.symlink(outside, root / "images.npy")
    with pytest.raises(PDNError, match="outside the folder"):
        open_dataset(root)
    assert len(open_dataset(root, allow_outside=True)) == 8


@contextlib.contextmanager
def _unblocker(fifo: Path, after_s: float = 8.0):
    """Opens ``fifo`` for writing after ``after_s`` so that a reader stuck on it wakes up (the test
    then fails on its time check instead of hanging the suite)."""
    import threading

    stop = threading.Event()

    def unblock() -> None:
        if not stop.wait(after_s):
            with contextlib.suppress(OSError), open(fifo, "wb"):
                pass

    t = threading.Thread(target=unblock, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()


@pytest.mark.parametrize("where", ["log", "image", "synth_labels", "config", "palette"])
def test_fifo_instead_of_a_file_is_refused_at_once(tmp_path: Path, make_tiny_synth, where: str) -> None:
    """A real FIFO where a log, image, dataset file, config or a CLI path argument is expected: one line, no hang."""
    import time

    from tests.data.conftest import write_image

    if where in ("log", "image"):
        root = tmp_path / "sim"
        write_image(root / "IMG" / "a.jpg", 40, 80)
        line = "IMG/a.jpg, IMG/a.jpg, IMG/a.jpg, 0.1, 0, 0, 0\n"
        fifo = root / ("driving_log.csv" if where == "log" else "IMG/b.jpg")
        if where == "image":
            (root / "driving_log.csv").write_text(line + line.replace("IMG/a.jpg, IMG/a.jpg", "IMG/b.jpg, IMG/a.jpg"))
        argv = ["data", "check", str(root)]
    elif where == "synth_labels":
        root = make_tiny_synth(tmp_path / "ds", n=4, size=(16, 32))
        fifo = root / "labels.csv"
        fifo.unlink()
        argv = ["data", "check", str(root)]
    elif where == "config":
        save_model(tmp_path / "run", create_model("pilotnet_tiny"))
        root = make_tiny_synth(tmp_path / "ds", n=4, size=(66, 200))
        fifo = tmp_path / "run" / "config.json"
        fifo.unlink()
        argv = ["eval", "--model", str(tmp_path / "run"), "--data", str(root), "--out", str(tmp_path / "p.csv")]
    else:
        save_model(tmp_path / "run", create_model("pilotnet_tiny"))
        fifo = tmp_path / "palette.csv"
        argv = ["attack", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "atk"), "--palette", str(fifo)]
    os.mkfifo(fifo)
    start = time.monotonic()
    with _unblocker(fifo):
        code, _, err = run_cli(*argv)
    assert time.monotonic() - start < 8.0, "blocked on the FIFO"
    assert_one_line_exit_2(code, err, "FIFO")
    assert len(err.strip()) <= 320


@pytest.mark.parametrize("target", ["config", "meta", "safetensors_meta", "attack", "bench"])
def test_deeply_nested_json_is_one_line(tmp_path: Path, make_tiny_synth, target: str) -> None:
    """JSON nested 100,000 deep in any JSON input: one line naming the file, no RecursionError."""
    deep = "[" * 100_000 + "]" * 100_000
    data = make_tiny_synth(tmp_path / "ds", n=4, size=(66, 200))
    run = tmp_path / "run"
    save_model(run, create_model("pilotnet_tiny"))
    if target == "config":
        (run / "config.json").write_text('{"format_version": 1, "model": ' + deep + "}")
        argv, name = ["eval", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "p.csv")], "config.json"
    elif target == "meta":
        (data / "meta.json").write_text(deep)
        argv, name = ["data", "check", str(data)], "meta.json"
    elif target == "safetensors_meta":
        (run / "config.json").unlink()
        save_file({"w": torch.zeros(1)}, str(run / "model.safetensors"), metadata={"pdn_model_config": deep})
        argv, name = ["eval", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "p.csv")], "model.safetensors"
    elif target == "attack":
        (tmp_path / "atk").mkdir()
        (tmp_path / "atk" / "attack.json").write_text(deep)
        import cv2

        cv2.imwrite(str(tmp_path / "atk" / "sticker.png"), np.zeros((8, 8, 3), np.uint8))
        argv, name = ["report", str(tmp_path / "atk"), "--out", str(tmp_path / "rep")], "attack.json"
    else:
        (tmp_path / "bench.json").write_text('{"machine": ' + deep + "}")
        argv, name = ["report", str(tmp_path / "bench.json"), "--out", str(tmp_path / "rep")], "bench.json"
    code, _, err = run_cli(*argv)
    assert_one_line_exit_2(code, err, name)
    assert len(err.strip()) <= 320


def test_absurd_declared_sizes_are_refused_before_allocating(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    from drivenet_patch.data import open_dataset

    save_model(tmp_path / "run", create_model("pilotnet_tiny"))
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["model"]["input_size"] = [100_000, 100_000]
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PDNError, match="input_size"):
        load_model(tmp_path / "run")
    root = _comma(tmp_path / "comma")
    with h5py.File(root / "camera" / "r.h5", "a") as f:  # 10^11 frames declared, nothing written (chunked)
        del f["X"]
        f.create_dataset("X", shape=(10**11, 3, 16, 32), dtype=np.uint8, chunks=(1, 3, 16, 32))
    with pytest.raises(PDNError, match=r"r\.h5.*beyond the limits"):
        open_dataset(root)


def test_two_dimensional_comma_steering_is_refused(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    from drivenet_patch.data import open_dataset

    root = _comma(tmp_path / "comma")
    with h5py.File(root / "log" / "r.h5", "a") as f:
        del f["steering_angle"]
        f.create_dataset("steering_angle", data=np.zeros((3, 2)))
    with pytest.raises(PDNError, match=r"steering_angle.*shape"):
        open_dataset(root)


@pytest.mark.parametrize("argv", [("data", "synth", "--out", "{t}/d", "--frames", "2"), ("bench", "models"),
                                  ("bench",), ("demo", "--out", "{t}/demo", "--quick")])
def test_bad_device_is_refused_by_every_command(tmp_path: Path, argv: tuple[str, ...]) -> None:
    code, _, err = run_cli(*(a.format(t=tmp_path) for a in argv), "--device", "cuda:99x")
    assert_one_line_exit_2(code, err, "--device")
    assert not (tmp_path / "d").exists() and not (tmp_path / "demo").exists()


def test_absurd_steering_label_is_refused_with_its_row(tmp_path: Path, make_tiny_synth) -> None:
    import pandas as pd

    from drivenet_patch.data import open_dataset

    root = make_tiny_synth(tmp_path / "ds", n=8, size=(16, 32))
    labels = pd.read_csv(root / "labels.csv")
    labels.loc[5, "steering_deg"] = 1e300
    labels.to_csv(root / "labels.csv", index=False)
    with pytest.raises(PDNError, match=r"labels.csv: row 7: .*beyond \+-90"):
        open_dataset(root)


@pytest.mark.parametrize("bad", ["int", "bool", "complex", "nan"])
def test_weights_of_another_dtype_or_not_finite_are_refused(tmp_path: Path, bad: str) -> None:
    model = create_model("pilotnet_tiny")
    save_model(tmp_path, model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point())
    if bad == "nan":
        state[key][...] = float("nan")
    else:
        state[key] = state[key].to({"int": torch.int32, "bool": torch.bool, "complex": torch.complex64}[bad])
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(PDNError) as info:
        load_model(tmp_path)
    assert key in str(info.value) and "model.safetensors" in str(info.value)


def test_json_output_is_strict_and_says_what_became_null() -> None:
    from drivenet_patch.safety.inputs import dumps_strict

    text, replaced = dumps_strict({"rmse": float("nan"), "rows": [1.0, np.float32("inf")], "n": 3})

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    assert json.loads(text, parse_constant=refuse) == {"rmse": None, "rows": [1.0, None], "n": 3}
    assert replaced == ["rmse", "rows[1]"]


def test_absurd_camera_in_meta_is_refused_naming_the_file(tmp_path: Path, make_tiny_synth) -> None:
    from drivenet_patch.data import open_dataset

    root = make_tiny_synth(tmp_path / "ds", n=4, size=(16, 32))
    meta = json.loads((root / "meta.json").read_text())
    meta["camera"]["height"] = meta["camera"]["width"] = 10**6
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PDNError, match=r"meta\.json.*camera"):
        open_dataset(root)


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "labels.csv", "images.npy"])
def test_out_never_overwrites_an_input_a_model_or_a_dataset_file(tmp_path: Path, make_tiny_synth, victim: str) -> None:
    run, data = tmp_path / "run", make_tiny_synth(tmp_path / "ds", n=4, size=(66, 200))
    save_model(run, create_model("pilotnet_tiny"))
    target = (run if victim in ("model.safetensors", "config.json") else data) / victim
    before = target.read_bytes()
    code, _, err = run_cli("eval", "--model", str(run), "--data", str(data), "--out", str(target))
    assert_one_line_exit_2(code, err, "--out")
    assert target.read_bytes() == before


def test_error_lines_are_bounded() -> None:
    msg = str(PDNError("/data/run/config.json: abstain must be a list of ints, got " + repr(list(range(100_000)))))
    assert len(msg) <= 300 and msg.startswith("/data/run/config.json: abstain")


def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_next(tmp_path: Path, tiny_synth: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a run killed before its first epoch leaves
    code, _, err = run_cli("train", "--data", str(tiny_synth), "--model", "pilotnet_tiny", "--out", str(out),
                           "--epochs", "1", "--samples-per-epoch", "64", "--batch", "32", "--no-augment")
    assert code == 0, err
    load_model(out)


def _pdn(*argv: str) -> list[str]:
    import sys

    return [sys.executable, "-c", "from drivenet_patch.app.cli import run; run()", *argv]


def test_sigkill_during_synth_over_a_good_dataset_keeps_it(tmp_path: Path) -> None:
    """A real ``pdn data synth`` killed with SIGKILL while it writes over a good dataset: the old one
    still loads, unchanged, and the next run removes the hidden staging folder it left."""
    import signal
    import subprocess
    import time

    from drivenet_patch.data import open_dataset
    from drivenet_patch.data.synthesize import synthesize

    out = tmp_path / "ds"
    synthesize(out, 6, seed=1, size=(16, 32), episode_steps=6, progress=False)
    good = open_dataset(out).frames(range(6))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(_pdn("data", "synth", "--out", str(out), "--frames", "400000", "--size", "16x32",
                                 "--episode-steps", "4"), env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".ds.staging-*/.images.npy.*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        assert list(tmp_path.glob(".ds.staging-*")), "synth never started writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ds = open_dataset(out)
    assert len(ds) == 6 and np.array_equal(ds.frames(range(6)), good)
    synthesize(out, 3, seed=2, size=(16, 32), episode_steps=4, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"] and len(open_dataset(out)) == 3


def _report_loads(folder: Path) -> bool:
    """index.html exists and every image it shows is there."""
    import re

    index = folder / "index.html"
    return index.is_file() and all((folder / m).is_file() for m in re.findall(r'src="([^"]+)"', index.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["synth", "train", "report"])
def test_sigkill_at_random_moments_over_a_good_output(tmp_path: Path, tiny_synth: Path, command: str) -> None:
    """``pdn data synth``, ``pdn train --resume`` and ``pdn report`` killed at random moments while they
    write over an existing good output: each time the output still loads (old or new, never half)."""
    import signal
    import subprocess
    import time

    from drivenet_patch.data import open_dataset

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = tmp_path / "out"
    train = ("train", "--data", str(tiny_synth), "--model", "pilotnet_tiny", "--out", str(out),
             "--samples-per-epoch", "64", "--batch", "32", "--no-augment")
    if command == "synth":
        argv = ("data", "synth", "--out", str(out), "--frames", "300", "--size", "33x100")
        def loads() -> bool:
            return len(open_dataset(out)) == 300
    elif command == "train":
        argv = (*train, "--epochs", "30", "--resume")
        def loads() -> bool:
            return load_model(out) is not None
    else:
        run_cli(*train, "--epochs", "2")
        argv = ("report", str(out), "--out", str(tmp_path / "rep"))
        def loads() -> bool:
            return _report_loads(tmp_path / "rep")
    if command == "train":
        assert run_cli(*train, "--epochs", "1")[0] == 0
    else:
        assert subprocess.run(_pdn(*argv), env=env, capture_output=True).returncode == 0
    assert loads()
    rng = np.random.default_rng(21)
    for delay in rng.uniform(3.0, 12.0, 4):
        proc = subprocess.Popen(_pdn(*argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert loads(), f"{command}: output unloadable after a SIGKILL at {delay:.1f} s"
