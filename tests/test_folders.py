"""No folder is taken over, and nothing is read from outside a folder the user names.

A command writes only into a folder it creates, a folder of its own kind (which it resumes), or one
the user overwrites with the command's flag (``pdn demo --restart``, which deletes only the demo's
own stage markers). Every other folder is refused with one line before any work, and nothing on disk
changes. Every folder a user names is read like a dataset folder: a symbolic link may not lead out
of it (:mod:`drivenet_patch.storage.folders`, :func:`drivenet_patch.safety.inputs.folder_file`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from drivenet_patch.app.cli import main
from drivenet_patch.app.demo import plan, run_demo
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.storage.folders import (
    KINDS,
    MARKER,
    check_output_folder,
    prepare_output_folder,
)
from drivenet_patch.world.sticker_file import load_sticker


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return int(code), out.getvalue(), err.getvalue()


def refused(result: tuple[int, str, str], *needles: str) -> str:
    """The one error line of a refused command (exit 2, no traceback), checked to hold ``needles``."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("pdn") and ": error: " in lines[0], lines[0]  # "pdn: error:" or argparse's
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[bytes, int] | str]:
    """Every entry under ``root`` (and ``root``'s own listing): file bytes and mtime, link targets, folders."""
    state: dict[str, tuple[bytes, int] | str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                state[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return state


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "pilot"
    save_model(run, create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0)))
    return run


@pytest.fixture(scope="module")
def pv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pv") / "pv"
    save_model(run, create_model("patchvote_tiny", generator=torch.Generator().manual_seed(0)))
    return run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, make_tiny_synth) -> Path:
    return make_tiny_synth(tmp_path_factory.mktemp("data") / "ds", n=40, seed=1)


def attack_argv(run: Path, out: Path) -> list[str | Path]:
    return ["attack", "--model", run, "--out", out, "--steps", "1", "--batch", "2", "--roads", "1", "--poses", "2",
            "--texels", "4x6", "--size", "0.5x0.6", "--distance", "5-8", "--no-print", "--json"]


@pytest.fixture(scope="module")
def attack_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    atk = tmp_path_factory.mktemp("atk") / "a"
    code, _, err = run_cli(*attack_argv(run_dir, atk))
    assert code == 0, err
    return atk


#: Each command that writes a folder: its argv with the folder ``OUT`` (cheap settings), and a file it writes there.
COMMANDS: dict[str, tuple[Callable[..., list[str | Path]], str]] = {
    "attack": (lambda r, OUT: attack_argv(r["run"], OUT), "attack.json"),
    "attack eval": (lambda r, OUT: ["attack", "eval", "--model", r["run"], "--sticker", r["attack"], "--roads", "1",
                                    "--poses", "2", "--loop-roads", "0", "--out", OUT, "--json"], "eval.json"),
    "drive": (lambda r, OUT: ["drive", "--model", r["run"], "--roads", "1", "--km", "0.02", "--out", OUT, "--json"],
              "drive.json"),
    "saliency": (lambda r, OUT: ["saliency", "--model", r["run"], "--data", r["data"], "--n", "2", "--out", OUT,
                                 "--json"], "saliency.json"),
    "train": (lambda r, OUT: ["train", "--data", r["data"], "--model", "pilotnet_tiny", "--out", OUT, "--epochs", "1",
                              "--samples-per-epoch", "32", "--batch", "16", "--no-augment", "--json"], "config.json"),
    "certify": (lambda r, OUT: ["certify", "--model", r["pv"], "--world", "--frames", "2", "--out", OUT, "--json"],
                "certify.json"),
    "report": (lambda r, OUT: ["report", r["attack"], "--out", OUT, "--json"], "index.html"),
    "data synth": (lambda r, OUT: ["data", "synth", "--out", OUT, "--frames", "2", "--size", "16x32",
                                   "--episode-steps", "4", "--json"], "meta.json"),
    "attack sweep": (lambda r, OUT: ["attack", "sweep", "--model", r["run"], "--out", OUT, "--areas", "2",
                                     "--steps", "1", "--json"], "sweep.json"),
    "demo": (lambda r, OUT: ["demo", "--out", OUT, "--quick", "--json"], "demo.json"),
    "tensorboard": (lambda r, OUT: ["train", "--data", r["data"], "--model", "pilotnet_tiny", "--out",
                                    r["tmp"] / "tb_run", "--epochs", "1", "--tensorboard", OUT],
                    "events.out.tfevents.1"),
}


@pytest.fixture
def inputs(run_dir: Path, pv_dir: Path, data_dir: Path, attack_dir: Path, tmp_path: Path) -> dict[str, Path]:
    return {"run": run_dir, "pv": pv_dir, "data": data_dir, "attack": attack_dir, "tmp": tmp_path}


# ------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_user_folder_is_refused_and_left_as_it_was(command: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    argv, own_name = COMMANDS[command]
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    (user / own_name).write_text("my file that happens to share a name")
    before = snapshot(tmp_path)
    line = refused(run_cli(*argv(inputs, user)), str(user), "notes.txt", "choose")
    assert "nothing was changed" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_dataset_folder_is_refused_as_output_and_inside(command: str, inputs: dict[str, Path], tmp_path: Path,
                                                          make_tiny_synth) -> None:
    argv, _ = COMMANDS[command]
    data = make_tiny_synth(tmp_path / "ds", n=4, size=(16, 32))
    (data / "labels.csv").write_text((data / "labels.csv").read_text())  # any dataset, synth or not
    (data / "driving_log.csv").write_text("center,left,right,steering\n")  # a Udacity log: not a synth dataset
    before = snapshot(tmp_path)
    refused(run_cli(*argv(inputs, data)), str(data), "dataset")
    refused(run_cli(*argv(inputs, data / "sub")), "inside the dataset folder")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("command", "other"), [("attack", "run"), ("train", "attack"), ("drive", "run"),
                                                ("certify", "attack"), ("attack sweep", "run"), ("report", "attack"),
                                                ("demo", "run"), ("tensorboard", "run"), ("saliency", "drive")])
def test_another_commands_folder_is_refused(command: str, other: str, inputs: dict[str, Path],
                                            tmp_path: Path) -> None:
    argv, _ = COMMANDS[command]
    theirs = prepare_output_folder(tmp_path / "theirs", other)
    (theirs / "kept.txt").write_text("x")
    before = snapshot(tmp_path)
    refused(run_cli(*argv(inputs, theirs)), str(theirs), f"{other} folder of {KINDS[other].command}")
    assert snapshot(tmp_path) == before


def test_a_folder_one_level_inside_a_dataset_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    """A dataset's image folder (Udacity's IMG/) is part of the dataset: no output folder inside it, new or empty."""
    data = tmp_path / "udacity"
    (data / "IMG" / "empty").mkdir(parents=True)
    (data / "driving_log.csv").write_text("center,left,right,steering,throttle,brake,speed\n")
    before = snapshot(tmp_path)
    refused(run_cli(*attack_argv(inputs["run"], data / "IMG" / "new")), "inside the dataset folder")
    refused(run_cli(*attack_argv(inputs["run"], data / "IMG" / "empty")), "inside the dataset folder")
    assert snapshot(tmp_path) == before


def test_tensorboard_and_out_cannot_be_one_folder(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    refused(run_cli("train", "--data", inputs["data"], "--model", "pilotnet_tiny", "--out", out, "--tensorboard", out),
            "--tensorboard", "also --out")
    assert not out.exists()


def test_attack_eval_writes_into_no_other_stickers_attack_folder(inputs: dict[str, Path], tmp_path: Path) -> None:
    other = _copy_folder(inputs["attack"], tmp_path / "other")  # marked as an attack folder
    legacy = _copy_folder(inputs["attack"], tmp_path / "legacy")
    (legacy / MARKER).unlink()  # written before markers: known by its attack.json and files
    before = snapshot(tmp_path)
    refused(run_cli(*COMMANDS["attack eval"][0](inputs, other)), "another sticker")
    refused(run_cli(*COMMANDS["attack eval"][0](inputs, legacy)), "another sticker")
    assert snapshot(tmp_path) == before


def test_an_input_run_or_attack_folder_is_refused_as_output(inputs: dict[str, Path]) -> None:
    before = snapshot(inputs["run"].parent), snapshot(inputs["attack"].parent)
    refused(run_cli(*attack_argv(inputs["run"], inputs["run"])), "--out")
    refused(run_cli(*COMMANDS["drive"][0](inputs, inputs["attack"])), "--out", "attack folder")
    refused(run_cli(*COMMANDS["train"][0](inputs, inputs["attack"])), "--out", "attack folder")
    assert (snapshot(inputs["run"].parent), snapshot(inputs["attack"].parent)) == before


def test_a_refused_command_creates_nothing(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Bad flags, a bad input or an unusable output: the new output folder is not even created."""
    out = tmp_path / "new"
    refused(run_cli("attack", "--model", inputs["run"], "--out", out, "--size", "nan"))
    refused(run_cli("attack", "--model", tmp_path / "missing", "--out", out))
    refused(run_cli("drive", "--model", inputs["run"], "--km", "-1", "--out", out))
    refused(run_cli("train", "--data", tmp_path / "missing", "--out", out, "--tensorboard", tmp_path / "tb"))
    assert sorted(os.listdir(tmp_path)) == []


def test_file_outputs_never_go_into_a_dataset_folder(inputs: dict[str, Path]) -> None:
    data = inputs["data"]
    before = snapshot(data)
    refused(run_cli("world", "preview", "--out", data / "preview.png"), "dataset folder")
    refused(run_cli("eval", "--model", inputs["run"], "--data", data, "--out", data / "pred.csv"), "--out")
    refused(run_cli("export", "--model", inputs["run"], "--out", data / "m.onnx"), "dataset folder")
    refused(run_cli("drive", "--model", inputs["run"], "--km", "0.02", "--video", data / "v.mp4"), "dataset folder")
    assert snapshot(data) == before


def test_every_out_option_says_whether_it_is_a_folder_and_of_which_kind() -> None:
    """A command with ``--out`` declares its folder kind (checked by the folder rule) or that ``--out`` is a file:
    a new command cannot forget the rule."""
    import argparse

    from drivenet_patch.app.cli import build_parser

    def commands(parser: argparse.ArgumentParser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):
                    yield from commands(sub)
        fn = parser.get_default("fn")
        if fn is not None:
            yield parser, fn

    seen = 0
    for parser, fn in commands(build_parser()):
        if any("--out" in a.option_strings for a in parser._actions):
            seen += 1
            kind = getattr(fn, "out_kind", None)
            assert kind in KINDS or getattr(fn, "out_is_file", False), parser.prog
    assert seen >= 13


# ------------------------------------------------------------------------------------- own folders
@pytest.mark.parametrize("command", ["attack", "drive", "saliency", "certify", "report", "data synth"])
def test_own_folder_is_written_again_and_foreign_files_in_it_kept(command: str, inputs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """A second run into the command's own folder works, and never deletes or changes a file a user added.

    A report or a dataset is swapped in whole, so a user's file in it makes the next run refuse rather than
    delete it."""
    argv, own_name = COMMANDS[command]
    out = tmp_path / "out"
    code, _, err = run_cli(*argv(inputs, out))
    assert code == 0, err
    assert (out / own_name).is_file()
    assert run_cli(*argv(inputs, out))[0] == 0  # its own folder, as it left it
    (out / "user.txt").write_text("added by the user")
    before = snapshot(out)["user.txt"]
    if command in ("report", "data synth"):
        refused(run_cli(*argv(inputs, out)), "user.txt")
    else:
        code, _, err = run_cli(*argv(inputs, out))
        assert code == 0, err
    assert snapshot(out)["user.txt"] == before


def test_train_resumes_its_run_and_refuses_a_finished_one_without_resume(inputs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = COMMANDS["train"][0](inputs, out)
    assert run_cli(*argv)[0] == 0
    (out / "notes.txt").write_text("mine")
    refused(run_cli(*argv), "already holds a run")
    code, stdout, err = run_cli(*argv, "--resume")
    assert code == 0, err
    assert json.loads(stdout)["epochs"] == 1 and (out / "notes.txt").read_text() == "mine"


def test_a_folder_made_before_markers_is_recognised_by_its_manifest(tmp_path: Path) -> None:
    legacy = tmp_path / "run"
    save_model(legacy, create_model("pilotnet_tiny"))  # config.json + model.safetensors, no marker
    assert check_output_folder(legacy, "run") == "own"
    (legacy / "notes.txt").write_text("x")  # a file pdn train never writes: not recognisably a run
    with pytest.raises(PDNError, match=r"notes\.txt"):
        check_output_folder(legacy, "run")
    assert check_output_folder(tmp_path / "empty_is_fine", "attack") == "new"


def test_a_marker_that_leads_out_of_the_folder_is_not_a_marker(tmp_path: Path) -> None:
    elsewhere = prepare_output_folder(tmp_path / "elsewhere", "attack")
    user = tmp_path / "user"
    user.mkdir()
    (user / "photo.png").write_bytes(b"png")
    (user / MARKER).symlink_to(elsewhere / MARKER)
    with pytest.raises(PDNError, match="not a readable pdn folder marker"):
        check_output_folder(user, "attack")


@pytest.mark.parametrize(("kind", "sub"), [("demo", "pilotnet"), ("attack sweep", "area_2"), ("run", "certify")])
def test_an_own_folder_with_a_link_that_leads_out_is_not_written_through(kind: str, sub: str,
                                                                        tmp_path: Path) -> None:
    """A sub-folder of a command's own folder that is a link to someone else's folder is refused, not resumed."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text("{}")
    own = prepare_output_folder(tmp_path / "own", kind)
    (own / sub).symlink_to(theirs, target_is_directory=True)
    before = snapshot(tmp_path)
    with pytest.raises(PDNError, match="outside the folder"):
        check_output_folder(own, kind)
    with pytest.raises(PDNError, match="outside the folder"):
        prepare_output_folder(own, kind)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------- pdn demo
def _fake_runner(calls: list[list[str]]) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        calls.append(list(argv))
        return 0
    return run


def test_demo_restart_deletes_only_its_own_stage_markers(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    calls: list[list[str]] = []
    run_demo(_fake_runner(calls), out, quick=True, echo=lambda line: None)
    stages = [st.name for st in plan(out, True)]
    assert sorted(p.stem for p in (out / "stages").glob("*.json")) == sorted(stages)
    (out / "notes.txt").write_text("mine")
    (out / "stages" / "mine.json").write_text("{}")
    (out / "logs" / "mine.log").write_text("x")
    keep = {k: v for k, v in snapshot(out).items() if "mine" in k or k == "notes.txt"}
    calls.clear()
    result = run_demo(_fake_runner(calls), out, quick=True, restart=True, echo=lambda line: None)
    assert not any(st["skipped"] for st in result["stages"]) and calls  # every stage ran again
    assert {k: v for k, v in snapshot(out).items() if k in keep} == keep
    calls.clear()
    again = run_demo(_fake_runner(calls), out, quick=True, echo=lambda line: None)  # resumes: all done
    assert all(st["skipped"] for st in again["stages"]) and not calls


@pytest.mark.parametrize("restart", [False, True])
def test_demo_refuses_a_user_folder_even_with_restart(tmp_path: Path, restart: bool) -> None:
    user = tmp_path / "photos"
    user.mkdir()
    (user / "world_preview.png").write_bytes(b"my picture")
    (user / "stages").mkdir()
    (user / "stages" / "data.json").write_text("{}")
    before = snapshot(tmp_path)
    refused(run_cli("demo", "--out", user, "--quick", *(["--restart"] if restart else [])), str(user), "choose")
    calls: list[list[str]] = []
    with pytest.raises(PDNError, match="choose"):
        run_demo(_fake_runner(calls), user, quick=True, restart=restart, echo=lambda line: None)
    assert not calls and snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------- reads stay inside
def _outside_copy(src: Path, tmp_path: Path) -> Path:
    target = tmp_path / "outside" / src.name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(src.read_bytes())
    return target


def _link_out(folder: Path, name: str, tmp_path: Path) -> None:
    target = _outside_copy(folder / name, tmp_path)
    (folder / name).unlink()
    (folder / name).symlink_to(target)


def _copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_run_folder_file_that_leads_out_is_refused(inputs: dict[str, Path], tmp_path: Path, name: str) -> None:
    run = _copy_folder(inputs["run"], tmp_path / "run")
    _link_out(run, name, tmp_path)
    refused(run_cli("eval", "--model", run, "--data", inputs["data"], "--out", tmp_path / "p.csv"),
            name, "outside the folder")
    refused(run_cli("drive", "--model", run, "--roads", "1", "--km", "0.02"), name, "outside the folder")
    with pytest.raises(PDNError, match="outside the folder"):
        load_model(run)
    load_model(run, allow_outside=True)  # permitted explicitly
    code, _, err = run_cli("eval", "--model", run, "--data", inputs["data"], "--out", tmp_path / "p.csv",
                           "--allow-outside-paths")
    assert code == 0, err


@pytest.mark.parametrize("name", ["sticker.png", "attack.json"])
def test_an_attack_folder_file_that_leads_out_is_refused(inputs: dict[str, Path], tmp_path: Path, name: str) -> None:
    atk = _copy_folder(inputs["attack"], tmp_path / "atk")
    _link_out(atk, name, tmp_path)
    with pytest.raises(PDNError, match="outside the folder"):
        load_sticker(atk)
    refused(run_cli("drive", "--model", inputs["run"], "--sticker", atk, "--roads", "1", "--km", "0.02"),
            name, "outside the folder")
    refused(run_cli("attack", "eval", "--model", inputs["run"], "--sticker", atk, "--loop-roads", "0",
                    "--out", tmp_path / "ev"), name, "outside the folder")
    assert not (tmp_path / "ev").exists()


def test_a_selection_study_result_that_leads_out_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "pilotnet_eval.json").write_text(json.dumps({"rmse_deg": 1.0}))
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"mean_dev_deg": 9.0}))
    (results / "pilotnet_attack_eval.json").symlink_to(secret)
    before = snapshot(tmp_path)
    refused(run_cli("selection-study", "--results", results), "pilotnet_attack_eval.json", "outside the folder")
    assert snapshot(tmp_path) == before


def test_selection_study_writes_its_table_only_into_a_study_folder(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "pilotnet_eval.json").write_text(json.dumps({"rmse_deg": 1.0}))
    assert run_cli("selection-study", "--results", results, "--json")[0] == 0
    assert run_cli("selection-study", "--results", results, "--json")[0] == 0  # its own table, written again
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pilotnet_eval.json").write_text(json.dumps({"rmse_deg": 1.0}))
    (mine / "table.md").write_text("my own table")
    (mine / "notes.txt").write_text("mine")
    before = snapshot(tmp_path / "mine")
    refused(run_cli("selection-study", "--results", mine), "notes.txt", "choose")
    assert snapshot(tmp_path / "mine") == before


@pytest.mark.parametrize("which", ["run", "attack"])
def test_a_report_input_with_a_link_out_is_refused(inputs: dict[str, Path], tmp_path: Path, which: str) -> None:
    folder = _copy_folder(inputs[which], tmp_path / which)
    if which == "run":
        (folder / "metrics.csv").write_text("epoch,train_loss,val_rmse_deg\n1,0.5,1.0\n")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    (folder / "examples.png").unlink(missing_ok=True)
    (folder / "examples.png").symlink_to(secret)
    refused(run_cli("report", folder, "--out", tmp_path / "rep"), "examples.png", "outside the folder")
    assert not (tmp_path / "rep").exists()


def test_report_reads_a_named_model_folder_like_a_named_folder(inputs: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """attack.json names the attacked run's folder; the report reads its config.json (for the model's name) as
    it reads a folder the user names: a config.json that leads out of that folder is not read."""
    run = _copy_folder(inputs["run"], tmp_path / "run")
    _link_out(run, "config.json", tmp_path)
    atk = _copy_folder(inputs["attack"], tmp_path / "atk")
    assert run_cli("attack", "eval", "--model", inputs["run"], "--sticker", atk, "--roads", "1", "--poses", "2",
                   "--loop-roads", "0")[0] == 0
    meta = json.loads((atk / "attack.json").read_text())
    (atk / "attack.json").write_text(json.dumps({**meta, "model": str(run)}))
    opened: list[str] = []
    real_open = os.open

    def spy(path, *args, **kwargs):  # every file opened through the toolkit's readers
        opened.append(os.path.realpath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    code, _, err = run_cli("report", atk, "--out", tmp_path / "rep")
    assert code == 0, err
    assert os.path.realpath(atk / "attack.json") in opened  # the spy sees the report's reads
    assert os.path.realpath(run / "config.json") not in opened  # the outside target of the link


def test_a_file_named_in_certify_json_must_lie_in_its_folder(inputs: dict[str, Path], tmp_path: Path) -> None:
    cert = tmp_path / "cert"
    assert run_cli(*COMMANDS["certify"][0](inputs, cert))[0] == 0
    secret = tmp_path / "secret.png"
    secret.write_bytes((cert / "example_clean.png").read_bytes())
    meta = json.loads((cert / "certify.json").read_text())
    meta["examples"]["clean"]["image"] = "../secret.png"
    (cert / "certify.json").write_text(json.dumps(meta))
    refused(run_cli("report", cert, "--out", tmp_path / "rep"), "secret.png", "outside the folder")
    assert not (tmp_path / "rep").exists()


def test_a_sweep_folder_file_that_leads_out_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    sweep = prepare_output_folder(tmp_path / "sweep", "attack sweep")
    (sweep / "area_2").mkdir()
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"settings": {}, "row": {}}))
    (sweep / "area_2" / "size.json").symlink_to(secret)
    refused(run_cli(*COMMANDS["attack sweep"][0](inputs, sweep)), "size.json", "outside the folder")


def test_train_resume_state_that_leads_out_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = COMMANDS["train"][0](inputs, out)
    assert run_cli(*argv)[0] == 0
    _link_out(out, "config.json", tmp_path)
    refused(run_cli(*argv, "--resume"), "config.json", "outside the folder")
