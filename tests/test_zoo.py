"""The model zoo: shipped models load, match their manifest, reproduce its figures, and work as ``--model zoo:NAME``.

The manifest's ``figures_check`` were measured by ``pdn zoo make --install`` with the same commands these
tests run (each entry's ``checks``: a small held-out set rendered with a fixed seed, then ``pdn eval`` /
``pdn certify``); its full ``figures`` are re-measured by ``make zoo``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from drivenet_patch.app.cli import main
from drivenet_patch.app.demo import FULL, QUICK, plan
from drivenet_patch.app.zoo import check_figures, compare, make_zoo, run_items, tolerances
from drivenet_patch.models.checkpoint import load_model
from drivenet_patch.models.zoo import (
    MANIFEST,
    read_manifest,
    sha256_file,
    zoo_dir,
    zoo_entries,
    zoo_entry,
    zoo_folder,
)
from drivenet_patch.safety.errors import PDNError

ENTRIES = zoo_entries()
NAMES = [e["name"] for e in ENTRIES]
#: Largest model file the package ships.
MAX_MODEL_BYTES = 5 * 1024 * 1024


def _pdn(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def check_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the check sets: each is rendered once (its step record) and shared by the models."""
    return tmp_path_factory.mktemp("zoo_check")


def test_manifest_names_the_zoo_the_issue_asks_for() -> None:
    by_model = {e["model"] for e in ENTRIES}
    assert {"pilotnet", "patchvote", "patchdrive"} <= by_model
    threats = {e["name"]: e["threat"] for e in ENTRIES}
    assert threats["pilotnet"] is None
    assert threats["patchvote_strips"]["kind"] == "physical" and threats["patchvote_strips"]["size_m"] == [2.0, 3.5]
    assert threats["patchvote_bands"]["kind"] == "pixel_patch"
    assert read_manifest()["license"] == "Apache-2.0"


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_complete_and_every_figure_is_measured_by_a_command(name: str) -> None:
    e = zoo_entry(name)
    assert e["license"] == "Apache-2.0" and e["version"] and e["purpose"]
    assert e["steps"] and e["steps"][-1]["command"][0] == "train"  # the recipe ends with the training
    assert any(f"--out {{work}}/{name}" in " ".join(s["command"]) for s in e["steps"])
    # Each figure comes from a measure's (or check's) command, never typed in by hand.
    measured = {f for m in e["measures"] for f in m.get("figures", {})}
    checked = {f for m in e["checks"] for f in m.get("figures", {})}
    assert e["figures"] and set(e["figures"]) == measured
    assert e["figures_check"] and set(e["figures_check"]) == checked
    assert set(tolerances(e)) == checked  # each check figure states how far it may move
    assert all(isinstance(v, (int, float)) for v in e["figures"].values())


@pytest.mark.parametrize("name", NAMES)
def test_model_files_match_the_manifest_and_load(name: str) -> None:
    e = zoo_entry(name)
    folder = zoo_dir(name)
    weights = folder / "model.safetensors"
    assert sha256_file(weights) == e["sha256"]
    assert weights.stat().st_size < MAX_MODEL_BYTES
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["config.json",
                                                                                       "model.safetensors"]
    model = load_model(f"zoo:{name}")
    assert model.name == e["model"] and not model.training
    assert sum(p.numel() for p in model.parameters()) == e["parameters"]
    with torch.no_grad():
        y = model(torch.rand(2, 3, *model.input_size, generator=torch.Generator().manual_seed(0)))
    assert y.shape[0] == 2 and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_model_reproduces_its_check_figures(name: str, check_dir: Path) -> None:
    """The manifest's figures on the small held-out set, re-measured here within the stated tolerances."""
    rows = check_figures(main, zoo_entry(name), f"zoo:{name}", check_dir, echo=lambda _line: None)
    assert rows and all(r["ok"] for r in rows), rows


def test_zoo_list_json_and_show() -> None:
    rc, out, err = _pdn(["zoo", "list", "--json"])
    assert rc == 0, err
    listed = json.loads(out)
    assert [m["name"] for m in listed] == NAMES
    for m, e in zip(listed, ENTRIES):
        assert {"name", "model", "threat", "figures", "sha256"} <= set(m)
        assert m["figures"] == e["figures"] and m["sha256"] == e["sha256"] and m["threat"] == e["threat"]
    rc, out, _ = _pdn(["zoo", "list"])
    assert rc == 0 and all(f"zoo:{n}" in out for n in NAMES)
    rc, out, _ = _pdn(["zoo", "show", "patchvote_strips"])
    assert rc == 0 and "--physical 2.0x3.5" in out and "layout=strips" in out
    rc, out, err = _pdn(["zoo", "show", "no_such_model"])
    assert rc == 2 and out == "" and err.count("\n") == 1 and "patchvote_strips" in err


def test_model_flag_takes_zoo_models(tmp_path: Path, check_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model zoo:NAME`` in eval, certify and attack; default outputs land in runs/zoo-NAME, never in the package."""
    run_items(main, [zoo_entry("pilotnet")["checks"][0]], check_dir, check=check_dir, echo=lambda _line: None)
    data = str(check_dir / "heldout")
    monkeypatch.chdir(tmp_path)
    before = {n: sha256_file(zoo_dir(n) / "model.safetensors") for n in NAMES}
    rc, out, err = _pdn(["eval", "--model", "zoo:pilotnet", "--data", data, "--json"])
    assert rc == 0, err
    assert json.loads(out)["n"] == 200 and (tmp_path / "runs" / "zoo-pilotnet" / "predictions.csv").is_file()
    rc, out, err = _pdn(["certify", "--model", "zoo:patchvote_bands", "--data", data, "--frames", "32", "--json"])
    assert rc == 0, err
    cert = json.loads(out)
    assert cert["model"] == "zoo:patchvote_bands" and cert["n"] == 32
    assert (tmp_path / "runs" / "zoo-patchvote_bands" / "certify" / "certify.json").is_file()
    rc, out, err = _pdn(["attack", "--model", "zoo:pilotnet", "--out", str(tmp_path / "atk"), "--steps", "2",
                         "--roads", "1", "--poses", "2", "--batch", "2", "--no-print", "--json"])
    assert rc == 0, err
    assert (tmp_path / "atk" / "sticker.png").is_file()
    rc, _, err = _pdn(["certify", "--model", "zoo:pilotnet", "--data", data, "--json"])
    assert rc == 2 and "PatchVote" in err  # a zoo model is checked like a run folder
    assert {n: sha256_file(zoo_dir(n) / "model.safetensors") for n in NAMES} == before
    assert sorted(p.name for p in zoo_dir("pilotnet").iterdir()) == ["config.json", "model.safetensors"]


def _zoo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the zoo (manifest and PilotNet) that the loader reads instead of the package's."""
    root = tmp_path / "zoo"
    shutil.copytree(zoo_dir("pilotnet"), root / "pilotnet")
    shutil.copyfile(MANIFEST, root / "manifest.json")
    monkeypatch.setattr("drivenet_patch.models.zoo.MANIFEST", root / "manifest.json")
    return root


def test_a_changed_model_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _zoo_copy(tmp_path, monkeypatch)
    assert zoo_folder("zoo:pilotnet") == root / "pilotnet"  # the copy loads as it is
    weights = root / "pilotnet" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(blob))
    with pytest.raises(PDNError, match="sha256"):
        load_model("zoo:pilotnet")
    rc, out, err = _pdn(["eval", "--model", "zoo:pilotnet", "--data", str(tmp_path), "--json"])
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("pdn: error: zoo:pilotnet:") and "refusing a changed model file" in err
    weights.unlink()
    with pytest.raises(PDNError, match=r"lacks model\.safetensors"):
        load_model("zoo:pilotnet")


@pytest.mark.parametrize("ref", ["zoo:", "zoo:../pilotnet", "zoo:PilotNet", "zoo:nope"])
def test_bad_zoo_names_are_refused_in_one_line(ref: str) -> None:
    rc, out, err = _pdn(["drive", "--model", ref, "--roads", "1", "--km", "0.1", "--json"])
    assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("pdn: error:")


def test_runner_skips_finished_steps_and_refuses_a_changed_recipe(tmp_path: Path) -> None:
    """A named item's record is written when it finishes; a re-run skips it; another command under its name
    is refused rather than silently mixed with the old result."""
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        calls.append(argv)
        print(json.dumps({"value": float(len(argv)), "nested": {"n": 7}}))
        return 0

    items = [{"name": "data", "command": ["data", "synth", "--out", "{work}/d"]},
             {"command": ["eval", "--model", "{model}"], "figures": {"v": "value", "n": "nested.n"}}]
    got = run_items(runner, items, tmp_path, work=tmp_path, model="m", echo=lambda _line: None)
    assert got == {"v": 3.0, "n": 7}
    assert calls == [["data", "synth", "--out", f"{tmp_path}/d"], ["eval", "--model", "m"]]
    record = json.loads((tmp_path / "steps" / "data.json").read_text())
    assert record["command"] == calls[0] and record["result"]["nested"] == {"n": 7}
    calls.clear()
    run_items(runner, items, tmp_path, work=tmp_path, model="m", echo=lambda _line: None)
    assert calls == [["eval", "--model", "m"]]  # the data step was skipped, the measure ran again
    changed = [{"name": "data", "command": ["data", "synth", "--out", "{work}/other"]}]
    with pytest.raises(PDNError, match="another command"):
        run_items(runner, changed, tmp_path, work=tmp_path, echo=lambda _line: None)
    with pytest.raises(PDNError, match="no 'missing'"):
        run_items(runner, [{"command": ["x"], "figures": {"f": "missing"}}], tmp_path, echo=lambda _line: None)


def test_compare_marks_figures_outside_their_tolerance(tmp_path: Path) -> None:
    rows = {r["figure"]: r for r in compare({"a": 1.0, "b": 0.5, "c": 2}, {"a": 1.004, "b": 0.6, "c": 2},
                                            {"a": 0.005, "b": 0.05})}
    assert rows["a"]["ok"] is True and rows["b"]["ok"] is False and rows["c"]["ok"] is None
    with pytest.raises(PDNError, match="no such zoo model"):
        make_zoo(lambda argv: 0, tmp_path / "work", names=["nope"], echo=lambda _line: None)
    assert not (tmp_path / "work").exists()  # refused before anything ran


def test_demo_certifies_the_zoo_defended_model_on_its_own_frames() -> None:
    """Both demo flavours certify the zoo's road-sticker PatchVote with the settings of their own
    certify_physical stage (same frames, seed and grid) and hand the folder to the report."""
    for quick, settings in ((False, FULL), (True, QUICK)):
        stages = {st.name: st for st in plan(Path("out"), quick)}
        names = list(stages)
        assert names.index("certify_physical") < names.index("certify_zoo") < names.index("report")
        (own,) = stages["certify_physical"].commands
        (zoo,) = stages["certify_zoo"].commands
        assert zoo[zoo.index("--model") + 1] == settings.zoo_defended == "zoo:patchvote_road"
        for flag in ("--physical", "--frames", "--spacing", "--seed"):
            assert zoo[zoo.index(flag) + 1] == own[own.index(flag) + 1], flag
        report = stages["report"].commands[0]
        assert zoo[zoo.index("--out") + 1] == "out/certify_physical_zoo" in report
    assert any("zoo:patchvote_road" in n for n in QUICK.notes)


def test_report_summary_says_which_model_each_certificate_is_from(tmp_path: Path) -> None:
    from drivenet_patch.app.report import build_report

    rc, _, err = _pdn(["certify", "--model", "zoo:patchvote_strips", "--physical", "2.0x3.5", "--frames", "8",
                       "--spacing", "2", "--out", str(tmp_path / "cert_zoo"), "--json"])
    assert rc == 0, err
    result = build_report([tmp_path / "cert_zoo"], tmp_path / "report")
    summary = json.loads(Path(result["summary"]).read_text())
    (finding,) = [f for f in summary["findings"] if f["key"] == "defense_physical_zoo"]
    assert finding["numbers"]["zoo"] is True
    assert finding["text"].startswith("zoo:patchvote_strips (the package's fully trained patchvote")


@pytest.mark.slow
def test_remake_the_quickest_model_from_its_recipe(tmp_path: Path) -> None:
    """The manifest's recipe re-makes PatchDrive (the quickest: 10,000 frames at 160 x 320 and 5 short
    epochs, about 3 minutes on 2 cores), and the re-made model reproduces the shipped one's check figures."""
    name = "patchdrive"
    entry = zoo_entry(name)
    run_items(main, entry["steps"], tmp_path, work=tmp_path, echo=lambda _line: None)
    rows = check_figures(main, entry, tmp_path / name, tmp_path / "check", echo=lambda _line: None)
    assert rows and all(r["ok"] for r in rows), rows


def test_make_runs_the_recipe_measures_and_installs_into_the_manifest(tmp_path: Path) -> None:
    """``pdn zoo make --install`` on a one-model manifest: the recipe's commands run once, the figures are the
    measures' JSON, and the manifest gets the installed file's sha256 (a fake runner stands in for pdn)."""
    from drivenet_patch.models import create_model
    from drivenet_patch.models.checkpoint import save_model

    entry = {"name": "tiny", "model": "pilotnet_tiny", "purpose": "a test", "threat": None, "sha256": "0" * 64,
             "license": "Apache-2.0", "version": "0", "figures": {}, "figures_check": {},
             "steps": [{"name": "tiny", "command": ["train", "--out", "{work}/tiny"]}],
             "measures": [{"command": ["eval", "--model", "{model}"], "figures": {"rmse": "rmse_deg"}}],
             "checks": [{"command": ["eval", "--model", "{model}", "--data", "{check}/d"], "figures": {"rmse": "rmse_deg"},
                         "tolerance": {"rmse": 0.001}}]}
    manifest = tmp_path / "zoo" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"format_version": 1, "license": "Apache-2.0", "models": [entry]}))
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        calls.append(argv)
        if argv[0] == "train":
            save_model(argv[argv.index("--out") + 1], create_model("pilotnet_tiny"))
        print(json.dumps({"rmse_deg": 0.25}))
        return 0

    work = tmp_path / "work"
    result = make_zoo(runner, work, install=True, manifest=manifest, echo=lambda _line: None)
    assert [c[0] for c in calls] == ["train", "eval", "eval"]
    assert calls[1] == ["eval", "--model", str(work / "tiny")]
    (got,) = read_manifest(manifest)["models"]
    assert got["figures"] == {"rmse": 0.25} and got["figures_check"] == {"rmse": 0.25}
    assert got["sha256"] == sha256_file(manifest.parent / "tiny" / "model.safetensors")
    assert got["parameters"] == sum(p.numel() for p in create_model("pilotnet_tiny").parameters())
    assert result["models"][0]["figures_check"][0]["manifest"] is None  # beside the manifest it replaced
    calls.clear()
    again = make_zoo(runner, work, manifest=manifest, echo=lambda _line: None)  # resumed: no training again
    assert [c[0] for c in calls] == ["eval", "eval"]
    assert again["models"][0]["figures_check"] == [{"figure": "rmse", "manifest": 0.25, "measured": 0.25,
                                                    "difference": 0.0, "tolerance": 0.001, "ok": True}]
