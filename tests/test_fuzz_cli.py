"""Property-based tests of the ``pdn`` command line: random and absurd arguments.

The property: a command either succeeds (exit 0) or exits with 2 after printing exactly one line
on stderr (``pdn...: error: ...``) and no traceback. Commands run in-process through
``drivenet_patch.app.cli.main``; one test runs real subprocesses. Hypothesis profiles: see
``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import assume, event, given
from hypothesis import strategies as st

from drivenet_patch.app.cli import main
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.camera import parse_size

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
               max_size=12)
NUMBERISH = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-1", "1e999", "nan", "inf", "-inf", "0x10", "1_000", "", " ", "3.5", "1e-320", "99999999999",
                     "-0", "+7", "٣", "1/2", "none"]),
    TEXT,
)
SIZES = st.one_of(
    st.sampled_from(["0x0", "99999x99999", "-66x200", "66x-200", "66x200x3", "x", "66", "66x", "abcxdef", "8x8",
                     "7x7", "4096x4097", "66.5x200", "66 x 200", "66X200", "", "1e3x1e3", "nanxnan"]),
    st.tuples(st.integers(-10, 10**6), st.integers(-10, 10**6)).map(lambda t: f"{t[0]}x{t[1]}"),
    TEXT,
)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``pdn argv`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, bad arguments
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return int(code), out.getvalue(), err.getvalue()


def assert_contract(argv: list[str], ok: tuple[int, ...] = (0, 2)) -> tuple[int, str, str]:
    """Exit code 0, or 2 with one stderr line and no traceback (PDNError never escapes main)."""
    try:
        code, out, err = run_cli(argv)
    except PDNError as exc:  # pragma: no cover - the message says what leaked
        raise AssertionError(f"PDNError escaped main() for {argv}: {exc}") from None
    assert code in ok, (argv, code, err)
    event(f"exit {code}")  # --hypothesis-show-statistics: how many examples ran and how many were refused
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert "error:" in lines[0] and lines[0].startswith("pdn"), (argv, err)
    assert "Traceback" not in err, (argv, err)
    return code, out, err


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pdn-cli-") as d:
        yield Path(d)


# ------------------------------------------------------------------------------------- fixtures
def untrained_run(factory: pytest.TempPathFactory, model: str) -> Path:
    """A run folder of an untrained ``model`` (enough to load, evaluate, attack and certify)."""
    run = factory.mktemp(model)
    save_model(run, create_model(model, generator=torch.Generator().manual_seed(0)))
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_run(tmp_path_factory, "pilotnet_tiny")


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory: pytest.TempPathFactory, make_tiny_synth) -> Path:
    return make_tiny_synth(tmp_path_factory.mktemp("small") / "data", n=40, seed=1)


# ------------------------------------------------------------------------------------- data synth
@given(size=SIZES, frames=st.one_of(st.just("2"), NUMBERISH), seed=st.one_of(st.just("0"), NUMBERISH),
       cameras=st.one_of(st.just("center"), st.sampled_from(["left,right", "center,,", ",", "roof", ""]), TEXT),
       steps=st.one_of(st.just("4"), NUMBERISH))
def test_data_synth_arguments(size: str, frames: str, seed: str, cameras: str, steps: str) -> None:
    with scratch() as tmp:
        blocker = tmp / "a_file"
        blocker.write_text("in the way")
        # --out below a regular file: valid arguments still fail (cleanly) instead of rendering
        argv = ["data", "synth", "--out", str(blocker / "ds"), "--frames", frames, "--seed", seed,
                "--size", size, "--cameras", cameras, "--episode-steps", steps, "--json"]
        assert_contract(argv, ok=(2,))
        assert not (blocker / "ds").exists()


@given(size=SIZES)
def test_size_parser_accepts_only_sane_sizes(size: str) -> None:
    try:
        h, w = parse_size(size)
    except PDNError as exc:
        assert str(exc).startswith("size: ") and "\n" not in str(exc)  # the parameter; pdn names it --size
        return
    assert 8 <= h <= 4096 and 8 <= w <= 4096


@given(size=SIZES)
def test_world_preview_bad_sizes(size: str) -> None:
    try:
        parse_size(size)
    except PDNError:
        pass
    else:
        assume(False)  # a valid size would render a preview; only bad sizes are under test here
    with scratch() as tmp:
        _, _, err = assert_contract(["world", "preview", "--out", str(tmp / "g.png"), "--size", size], ok=(2,))
        assert "--size" in err
        assert not (tmp / "g.png").exists()


# ------------------------------------------------------------------------------------- data check
@given(fmt=st.one_of(st.sampled_from(["auto", "synth", "sullychen", "commaai", "udacity-sim", "kitti"]), TEXT),
       which=st.sampled_from(["good", "missing", "file", "empty_dir"]), outside=st.booleans())
def test_data_check_arguments(small_synth: Path, fmt: str, which: str, outside: bool) -> None:
    with scratch() as tmp:
        path = {"good": small_synth, "missing": tmp / "nope", "file": small_synth / "labels.csv",
                "empty_dir": tmp}[which]
        argv = ["data", "check", str(path), "--format", fmt, "--json"] + (["--allow-outside-paths"] if outside else [])
        assert_contract(argv)


# ------------------------------------------------------------------------------------- train
@given(
    epochs=st.one_of(st.just("1"), NUMBERISH), batch=st.one_of(st.just("8"), NUMBERISH),
    lr=st.one_of(st.just("1e-3"), NUMBERISH), spe=st.one_of(st.just("16"), NUMBERISH),
    seed=st.one_of(st.just("0"), NUMBERISH),
    model=st.one_of(st.just("pilotnet_tiny"), st.sampled_from(["lenet", "", "PILOTNET"]), TEXT),
    loss=st.sampled_from(["mse", "huber", "l1", ""]),
    device=st.one_of(st.just("cpu"), st.sampled_from(["cuda:7", "tpu", "cpu:0", "meta", "", "cuda", "mps", "cpu:99"]),
                     TEXT),
    data_kind=st.sampled_from(["missing", "empty", "file"]),
)
def test_train_arguments(epochs: str, batch: str, lr: str, spe: str, seed: str, model: str, loss: str, device: str,
                         data_kind: str) -> None:
    with scratch() as tmp:
        data = {"missing": tmp / "nope", "empty": tmp, "file": tmp / "x.txt"}[data_kind]
        if data_kind == "file":
            data.write_text("0.jpg 1.0\n")
        argv = ["train", "--data", str(data), "--out", str(tmp / "run"), "--epochs", epochs, "--batch", batch,
                "--lr", lr, "--samples-per-epoch", spe, "--seed", seed, "--model", model, "--loss", loss,
                "--device", device, "--json"]
        assert_contract(argv, ok=(2,))  # no usable data: never trains
        assert not (tmp / "run" / "model.safetensors").exists()


@given(
    epochs=st.sampled_from(["1", "0", "-3", "100001", "1e3"]), batch=st.sampled_from(["8", "0", "41", "1048577", "x"]),
    spe=st.sampled_from(["8", "16", "4", "100000001", "-16"]), seed=st.sampled_from(["0", "-1", "4294967296", "7"]),
    out_kind=st.sampled_from(["new", "below_file", "is_file", "existing_run"]),
)
def test_train_absurd_values_on_real_data(small_synth: Path, tiny_run: Path, epochs: str, batch: str, spe: str,
                                          seed: str, out_kind: str) -> None:
    with scratch() as tmp:
        blocker = tmp / "f"
        blocker.write_text("x")
        out = {"new": tmp / "run", "below_file": blocker / "run", "is_file": blocker, "existing_run": tiny_run}[out_kind]
        argv = ["train", "--data", str(small_synth), "--out", str(out), "--model", "pilotnet_tiny", "--epochs", epochs,
                "--batch", batch, "--samples-per-epoch", spe, "--seed", seed, "--no-augment", "--json"]
        assume(not (out_kind == "new" and epochs == "1" and batch == "8" and spe in ("8", "16")
                    and seed in ("0", "7")))  # that one trains (covered elsewhere); keep the examples fast
        assert_contract(argv)


# ------------------------------------------------------------------------------------- eval
@given(
    model_kind=st.sampled_from(["run", "missing", "pickle", "garbage_weights", "bad_config", "dataset"]),
    data_kind=st.sampled_from(["good", "missing", "broken_labels"]),
    out_kind=st.sampled_from(["default", "dir", "below_file", "csv"]),
    fmt=st.one_of(st.sampled_from(["auto", "synth", "sullychen"]), TEXT),
    device=st.one_of(st.just("cpu"), st.sampled_from(["cuda:3", "nonsense", ""])),
)
def test_eval_arguments(tiny_run: Path, small_synth: Path, model_kind: str, data_kind: str, out_kind: str, fmt: str,
                        device: str) -> None:
    with scratch() as tmp:
        model: Path = tiny_run
        if model_kind == "missing":
            model = tmp / "nope"
        elif model_kind == "pickle":
            model = tmp / "weights.pt"
            torch.save({"w": torch.zeros(1)}, model)
        elif model_kind in ("garbage_weights", "bad_config"):
            model = tmp / "run"
            model.mkdir()
            (model / "config.json").write_text((tiny_run / "config.json").read_text())
            (model / "model.safetensors").write_bytes((tiny_run / "model.safetensors").read_bytes())
            if model_kind == "garbage_weights":
                (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
            else:
                (model / "config.json").write_text('{"model": {"name": "pilotnet_tiny", "depth": "7"}}')
        elif model_kind == "dataset":
            model = small_synth
        data: Path = small_synth
        if data_kind == "missing":
            data = tmp / "no_data"
        elif data_kind == "broken_labels":
            data = tmp / "broken"
            data.mkdir()
            for name in ("images.npy", "meta.json"):
                (data / name).write_bytes((small_synth / name).read_bytes())
            (data / "labels.csv").write_text("steering_deg\n1.0\nnan\n")
        blocker = tmp / "f"
        blocker.write_text("x")
        out = {"default": None, "dir": tmp, "below_file": blocker / "p.csv", "csv": tmp / "p.csv"}[out_kind]
        argv = ["eval", "--model", str(model), "--data", str(data), "--format", fmt, "--device", device, "--json"]
        if out is not None:
            argv += ["--out", str(out)]
        code, stdout, _ = assert_contract(argv)
        if code == 0:
            assert '"rmse_deg"' in stdout
        if out_kind == "dir":
            assert not list(tmp.glob(".*.tmp*"))  # a failed write leaves no temporary file


# ------------------------------------------------------------------------------------- a real process
def test_real_subprocess_errors_are_one_line(tmp_path: Path) -> None:
    sully = tmp_path / "sully"
    sully.mkdir()
    (sully / "data.txt").write_text("../../etc/passwd 3.0\n")
    cases = [  # one process start costs seconds: one case, through a loader's PDNError and main()
        (["train", "--data", str(sully), "--out", str(tmp_path / "r"), "--model", "pilotnet_tiny"],
         "leaves the dataset folder"),
    ]
    for argv, needle in cases:
        proc = subprocess.run([sys.executable, "-m", "drivenet_patch.app.cli", *argv], capture_output=True, text=True,
                              timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, (argv, proc.stderr)
        assert needle in lines[0], lines[0]



# ------------------------------------------------------------------------------------- attack, drive, certify, ...
# Valid values are small (one step, one road, a few poses) so that the examples that do run stay fast;
# the rest are absurd. Every example must run to completion or be refused with one line.
STEPS = st.sampled_from(["1", "0", "-2", "501", "x", "1.5", "nan"])
ROADS = st.sampled_from(["1", "0", "-1", "x", "1e3", "99999999999999999999"])
KM = st.sampled_from(["0.15", "0", "-1", "nan", "inf", "1e9", "x", ""])
FLOATISH = st.one_of(st.sampled_from(["0.1", "0", "-1", "nan", "inf", "-inf", "1e308", "x", ""]), TEXT)
STICKER_SIZES = st.one_of(st.sampled_from(["0.5x0.6", "0x2", "-1x1", "nanxnan", "infx1", "1e9x1", "2x", "x", "0.5"]),
                          TEXT)
DISTANCES = st.one_of(st.sampled_from(["5-8", "8-5", "0-3", "nan-3", "5-999", "-5-5", "7", "", "5-8-9"]), TEXT)


@pytest.fixture(scope="module")
def tiny_patchvote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_run(tmp_path_factory, "patchvote_tiny")


@pytest.fixture(scope="module")
def tiny_sticker(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    atk = tmp_path_factory.mktemp("atk") / "a"
    code, _, err = run_cli(["attack", "--model", str(tiny_run), "--out", str(atk), "--steps", "1", "--batch", "2",
                            "--roads", "1", "--poses", "2", "--texels", "4x6", "--size", "0.5x0.6", "--distance",
                            "5-8", "--no-print", "--json"])
    assert code == 0, err
    return atk


@given(size=STICKER_SIZES, distance=DISTANCES, steps=STEPS, batch=st.sampled_from(["2", "0", "-4", "x", "1e3"]),
       lr=FLOATISH, texels=st.one_of(st.sampled_from(["4x6", "0x0", "-4x6", "4x", "99999x99999"]), TEXT),
       target=st.one_of(st.sampled_from(["left", "right", "away", "up"]), TEXT),
       place=st.sampled_from(["road", "billboard", "sky", ""]), lateral=FLOATISH, angle=FLOATISH,
       paper=st.sampled_from(["A4", "letter", "B5", ""]), roads=ROADS, poses=st.sampled_from(["2", "0", "-1", "x", "99999999999"]),
       weights=st.tuples(FLOATISH, FLOATISH))
def test_attack_arguments(tiny_run: Path, size: str, distance: str, steps: str, batch: str, lr: str, texels: str,
                          target: str, place: str, lateral: str, angle: str, paper: str, roads: str, poses: str,
                          weights: tuple[str, str]) -> None:
    with scratch() as tmp:
        out = tmp / "atk"
        argv = ["attack", "--model", str(tiny_run), "--out", str(out), "--size", size, "--distance", distance,
                "--steps", steps, "--batch", batch, "--lr", lr, "--texels", texels, "--target", target, "--place", place,
                "--lateral", lateral, "--angle", angle, "--paper", paper, "--roads", roads, "--poses", poses,
                "--nps-weight", weights[0], "--tv-weight", weights[1], "--json"]
        code, _, _ = assert_contract(argv)
        if code == 2:
            assert not (out / "sticker.png").exists()  # refused before the optimisation wrote anything
        else:
            assert (out / "sticker_print.pdf").is_file() and (out / "attack.json").is_file()


@given(threshold=FLOATISH, roads=ROADS, poses=st.sampled_from(["2", "0", "-1", "x", "99999999999"]),
       loop_roads=st.sampled_from(["0", "1", "-1", "x", "1e6", "99999999999"]), km=KM, seed=st.sampled_from(["0", "-1", "x", "1e99"]),
       sticker_kind=st.sampled_from(["good", "missing", "empty", "no_png"]))
def test_attack_eval_arguments(tiny_run: Path, tiny_sticker: Path, threshold: str, roads: str, poses: str,
                               loop_roads: str, km: str, seed: str, sticker_kind: str) -> None:
    with scratch() as tmp:
        sticker = tiny_sticker
        if sticker_kind != "good":
            sticker = tmp / "s"
            if sticker_kind != "missing":
                sticker.mkdir()
            if sticker_kind == "no_png":
                (sticker / "attack.json").write_text((tiny_sticker / "attack.json").read_text())
        argv = ["attack", "eval", "--model", str(tiny_run), "--sticker", str(sticker), "--threshold", threshold,
                "--roads", roads, "--poses", poses, "--loop-roads", loop_roads, "--km", km, "--seed", seed,
                "--out", str(tmp / "eval"), "--json"]
        code, stdout, _ = assert_contract(argv)
        if code == 0:
            assert '"mean_dev_deg"' in stdout and (tmp / "eval" / "eval.json").is_file()


@given(roads=ROADS, km=KM, seed=st.sampled_from(["0", "-1", "x", "4294967296"]),
       sticker_kind=st.sampled_from(["none", "folder", "missing", "garbage_png"]),
       every=st.one_of(st.just(None), FLOATISH), video=st.sampled_from([None, "v.mp4", "v.gif", "below_file.mp4"]),
       threads=st.sampled_from([None, "1", "0", "-2", "x", "100000"]))
def test_drive_arguments(tiny_run: Path, tiny_sticker: Path, roads: str, km: str, seed: str, sticker_kind: str,
                         every: str | None, video: str | None, threads: str | None) -> None:
    with scratch() as tmp:
        blocker = tmp / "f"
        blocker.write_text("x")
        argv = ["drive", "--model", str(tiny_run), "--roads", roads, "--km", km, "--seed", seed,
                "--out", str(tmp / "drive"), "--json"]
        sticker = {"none": None, "folder": tiny_sticker, "missing": tmp / "nope.png", "garbage_png": tmp / "g.png"}
        if sticker_kind == "garbage_png":
            (tmp / "g.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        if sticker[sticker_kind] is not None:
            argv += ["--sticker", str(sticker[sticker_kind])]
        if every is not None and sticker[sticker_kind] is not None:  # without --sticker it is refused (no stickers)
            argv += ["--sticker-every", every]
        if video is not None:
            argv += ["--video", str(blocker / "v.mp4") if video == "below_file.mp4" else str(tmp / video)]
        if threads is not None:
            argv += ["--threads", threads]
        code, stdout, _ = assert_contract(argv)
        if code == 0:
            assert '"autonomy_pct"' in stdout


@given(model_kind=st.sampled_from(["patchvote", "pilotnet", "missing"]),
       patch=st.one_of(st.sampled_from(["2%", "4x4", "0x0", "200%", "-1%", "nan%", "999x999", "x", ""]), TEXT),
       aggregate=st.one_of(st.sampled_from(["median", "trimmed", "vote", "reject", "mean"]), TEXT),
       delta=st.one_of(st.sampled_from(["10%", "1.5", "0", "-1", "nan", "inf", "500%", "%", ""]), TEXT),
       frames=st.sampled_from(["4", "0", "-1", "x", "1e9"]), attack=st.sampled_from([None, "1", "0", "-3", "x", "99999999999"]),
       attack_steps=st.sampled_from(["1", "0", "-1", "x", "99999999999"]), batch=st.sampled_from(["4", "0", "-1", "x"]),
       sweep=st.booleans())
def test_certify_arguments(tiny_run: Path, tiny_patchvote: Path, model_kind: str, patch: str, aggregate: str,
                           delta: str, frames: str, attack: str | None, attack_steps: str, batch: str,
                           sweep: bool) -> None:
    with scratch() as tmp:
        model = {"patchvote": tiny_patchvote, "pilotnet": tiny_run, "missing": tmp / "nope"}[model_kind]
        argv = ["certify", "--model", str(model), "--world", "--frames", frames, "--patch", patch, "--aggregate",
                aggregate, "--delta", delta, "--attack-steps", attack_steps, "--batch", batch,
                "--out", str(tmp / "cert"), "--json"]
        if attack is not None:
            argv += ["--attack", attack]
        if sweep:
            argv.append("--sweep")
        code, _, _ = assert_contract(argv)
        if code == 0:
            assert model_kind == "patchvote" and (tmp / "cert" / "certify.json").is_file()


@given(kinds=st.lists(st.sampled_from(["run", "missing", "empty_dir", "text_file", "bad_json", "bench_list",
                                       "dataset"]), min_size=1, max_size=3),
       out_kind=st.sampled_from(["new", "below_file", "is_file"]))
def test_report_arguments(tiny_run: Path, small_synth: Path, kinds: list[str], out_kind: str) -> None:
    with scratch() as tmp:
        blocker = tmp / "f"
        blocker.write_text("x")
        paths = []
        for i, kind in enumerate(kinds):
            p = tmp / f"in{i}"
            if kind == "run":
                p = tiny_run
            elif kind == "dataset":
                p = small_synth
            elif kind == "empty_dir":
                p.mkdir()
            elif kind == "text_file":
                p = p.with_suffix(".txt")
                p.write_text("hello")
            elif kind == "bad_json":
                p = p.with_suffix(".json")
                p.write_text("{not json")
            elif kind == "bench_list":
                p = p.with_suffix(".json")
                p.write_text("[1, 2, 3]")
            paths.append(str(p))
        out = {"new": tmp / "rep", "below_file": blocker / "rep", "is_file": blocker}[out_kind]
        code, _, _ = assert_contract(["report", *paths, "--out", str(out), "--json"])
        if code == 0:
            assert (out / "index.html").is_file()


@given(n=st.sampled_from(["2", "0", "-1", "x", "1e9", "100000"]), data_kind=st.sampled_from(["good", "missing", "run"]),
       out_kind=st.sampled_from(["new", "below_file"]), fmt=st.one_of(st.sampled_from(["auto", "synth", "udacity"]), TEXT))
def test_saliency_arguments(tiny_run: Path, small_synth: Path, n: str, data_kind: str, out_kind: str, fmt: str) -> None:
    with scratch() as tmp:
        blocker = tmp / "f"
        blocker.write_text("x")
        data = {"good": small_synth, "missing": tmp / "nope", "run": tiny_run}[data_kind]
        out = {"new": tmp / "sal", "below_file": blocker / "sal"}[out_kind]
        code, _, _ = assert_contract(["saliency", "--model", str(tiny_run), "--data", str(data), "--out", str(out),
                                      "--n", n, "--format", fmt, "--json"])
        if code == 0:
            assert (out / "saliency.json").is_file()


# ------------------------------------------------------------------------------------- hostile model folders and JSON
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                      st.floats(allow_nan=True, allow_infinity=True), TEXT)
JSON_VALUE = st.recursive(JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(TEXT, c, max_size=4)),
                          max_leaves=16)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


JSON_TEXT = st.one_of(
    JSON_VALUE.map(json.dumps),  # json.dumps writes NaN/Infinity, as a careless or hostile writer would
    st.integers(1, 200_000).map(_deep),
    st.integers(1, 200_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)
CONFIG_KEYS = st.one_of(st.sampled_from(["input_size", "dropout", "out_scale", "tau_deg", "name", "abstain",
                                         "regions", "init", "format_version"]), TEXT)
CONFIG_VALUES = st.one_of(JSON_VALUE, st.sampled_from([[100_000, 100_000], [66, 200], "66x200", 1e300, -1, 0]),
                          st.lists(st.integers(0, 10**6), min_size=1000, max_size=1000))


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in --json output")

    return json.loads(text, parse_constant=refuse)


@given(
    config=st.one_of(st.none(), JSON_TEXT, st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, max_size=3)),
    weights=st.sampled_from(["keep", "int32", "bool", "complex64", "float64", "nan", "inf", "missing_key",
                             "garbage", "empty", "symlink_out", "fifo", "deep_meta"]),
)
def test_hostile_model_folders(tiny_run: Path, small_synth: Path, config: object, weights: str) -> None:
    """A model folder from somebody else: random config.json (deep, non-finite, absurd sizes, unknown keys)
    and weights of other dtypes, NaN, garbage, a FIFO or a symlink. ``pdn eval`` runs (strict JSON out)
    or refuses in one line; no input is changed."""
    import os

    from safetensors.torch import load_file, save_file

    with scratch() as tmp:
        run = tmp / "run"
        run.mkdir()
        base = json.loads((tiny_run / "config.json").read_text())
        if config is None:
            text = json.dumps(base)
        elif isinstance(config, dict):
            text = json.dumps({**base, "model": {**base["model"], **config}})
        else:
            text = str(config)
        (run / "config.json").write_text(text)
        state = load_file(str(tiny_run / "model.safetensors"))
        key = next(k for k, v in state.items() if v.is_floating_point())
        weights_path = run / "model.safetensors"
        if weights in ("int32", "bool", "complex64", "float64"):
            state[key] = state[key].to(getattr(torch, weights))
        elif weights in ("nan", "inf"):
            state[key] = state[key].clone().fill_(float(weights))
        elif weights == "missing_key":
            del state[key]
        if weights == "garbage":
            weights_path.write_bytes(b"\xff" * 64)
        elif weights == "empty":
            weights_path.write_bytes(b"")
        elif weights == "symlink_out":
            os.symlink(tiny_run / "model.safetensors", weights_path)
        elif weights == "fifo":
            os.mkfifo(weights_path)
        elif weights == "deep_meta":
            save_file(state, str(weights_path), metadata={"pdn_model_config": _deep(100_000)})
            (run / "config.json").unlink()
        else:
            save_file(state, str(weights_path))
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_symlink()}
        argv = ["eval", "--model", str(run), "--data", str(small_synth), "--out", str(tmp / "p.csv"), "--json"]
        code, stdout, err = assert_contract(argv)
        if code == 0:
            _strict_json(stdout.strip().splitlines()[-1])
        assert len(err.strip()) <= 400, err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_symlink()} == before


@given(target=st.sampled_from(["meta.json", "config.json", "attack.json", "bench.json", "drive.json"]), text=JSON_TEXT)
def test_hostile_json_inputs(tiny_run: Path, small_synth: Path, target: str, text: str) -> None:
    """Any JSON the toolkit reads, replaced by random JSON, non-JSON, NaN-laden or 200,000-deep text:
    the command runs or refuses in one line naming the file; nothing hangs or raises a traceback."""
    with scratch() as tmp:
        if target == "meta.json":
            data = tmp / "data"
            data.mkdir()
            for name in ("images.npy", "labels.csv"):
                (data / name).write_bytes((small_synth / name).read_bytes())
            (data / "meta.json").write_text(text)
            argv = ["data", "check", str(data), "--json", "--format", "synth"]
        elif target == "config.json":
            run = tmp / "run"
            run.mkdir()
            (run / "model.safetensors").write_bytes((tiny_run / "model.safetensors").read_bytes())
            (run / "config.json").write_text(text)
            argv = ["report", str(run), "--out", str(tmp / "rep"), "--json"]
        elif target == "bench.json":
            (tmp / "bench.json").write_text(text)
            argv = ["report", str(tmp / "bench.json"), "--out", str(tmp / "rep"), "--json"]
        else:
            import cv2
            import numpy as np

            folder = tmp / target.split(".")[0]
            folder.mkdir()
            (folder / target).write_text(text)
            if target == "attack.json":
                cv2.imwrite(str(folder / "sticker.png"), np.zeros((8, 8, 3), np.uint8))
            else:
                (folder / "drive_log.csv").write_text("road,step,t,x,y,offset_m,steering_deg\n0,0,0.0,0.0,0.0,0.0,0.0\n")
            argv = ["report", str(folder), "--out", str(tmp / "rep"), "--json"]
        code, stdout, err = assert_contract(argv)
        if code == 0:
            _strict_json(stdout.strip().splitlines()[-1])
        else:
            assert str(tmp) in err or "--" in err, err  # names the file (or the option) at fault
        assert len(err.strip()) <= 400, err
