"""Property-based tests of the values read from files and metadata: attack.json, the attack sweep's resume
state, the selection-study tables, the report's inputs, and the vehicle certifier's metadata and per-frame
inputs.

The property, for every input: it is accepted (and then what comes out is finite and in range), or it is
refused with one line naming the file (or metadata key) and the field: a PDNError from the library,
``pdn: error: ...`` and exit 2 from the command line; no traceback, nothing changed on disk, and the
work is bounded (a generous time cap that catches runaway loops, not a speed test). Hypothesis profiles:
``tests/conftest.py`` (``pytest -m slow`` runs the long variant of each).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_run import run_cli
from hypothesis import given
from hypothesis import strategies as st

from drivenet_patch.deploy import onboard
from drivenet_patch.safety.errors import PDNError

#: Seconds any one input may take: far above the real cost (milliseconds), far below a runaway loop.
TIME_CAP_S = 30.0

# ------------------------------------------------------------------------------------- hostile JSON values
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, 1e-320, 0, -1, 2**63, 10**400, -(10**400), 0.5, 1.0, 3.5, 100000]),
    st.text(max_size=8), st.sampled_from(["false", "true", "NaN", "Infinity", "1e999", "5-15", "left", "", "2"]),
)
#: Anything JSON can hold (and NaN/Infinity, which Python's json also writes), a few levels deep.
VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=12)
#: Values of a wrong type for a number, a range or a flag: each is refused wherever one of those belongs.
WRONG = st.one_of(st.text(max_size=6), st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2),
                  st.lists(st.text(max_size=3), min_size=1, max_size=3),
                  st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, "NaN", "1.0", "false", [], {}]))


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its content hash and modification time (a refused command changes none)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out




def assert_refused(argv: list[str], root: Path, *needles: str) -> str:
    """``pdn argv`` exits 2 with one ``pdn: error:`` line holding ``needles``, changes nothing under ``root``."""
    before = snapshot(root)
    code, _, err, seconds = run_cli(argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pdn") and "error:" in lines[0], (argv, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert snapshot(root) == before, "a refused command changed files"
    assert seconds < TIME_CAP_S
    return lines[0]


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip(), text
    return text


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pdn-fuzz-files-") as d:
        yield Path(d)


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))  # Python's json writes NaN/Infinity: hostile files may hold them


# ------------------------------------------------------------------------------------- attack.json
from drivenet_patch.world.sticker import StickerPlacement  # noqa: E402
from drivenet_patch.world.sticker_file import ATTACK_JSON_FIELDS, load_sticker, save_sticker  # noqa: E402

_ATTACK = {"mode": "sticker", "attack": {"target": "left", "dirt_range": [0.3, 1.0], "steps": 10, "seed": 0,
                                         "texture_hw": [4, 6], "loss": "hinge"},
           "distance_m": [5.0, 15.0], "lateral_m": 0.0, "size_m": [2.0, 3.5], "model": "run", "source": "world"}
_ATTACK_KEYS = sorted(k for k in ATTACK_JSON_FIELDS if k not in ("placement", "attack", "metrics", "final", "scenes"))


def _attack_folder(root: Path) -> Path:
    folder = root / "atk"
    save_sticker(folder, torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0)),
                 StickerPlacement(s=0.0, width_m=2.0, length_m=3.5), dict(_ATTACK))
    return folder


def _set(meta: dict, dotted: str, value: Any) -> dict:
    node = meta
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return meta


@given(key=st.sampled_from(_ATTACK_KEYS), value=VALUES)
def test_attack_json_fields_are_typed_and_bounded(key: str, value: Any) -> None:
    from attacks.artifact import read_attack

    with scratch() as root:
        folder = _attack_folder(root)
        meta = json.loads((folder / "attack.json").read_text())
        _write(folder / "attack.json", _set(meta, key, value))
        before = snapshot(root)
        t0 = time.perf_counter()
        for read in (load_sticker, read_attack):
            try:
                out = read(folder)
            except PDNError as exc:
                msg = one_line(exc)
                assert "attack.json" in msg and key.split(".")[0] in msg, msg
                continue
            placement = out[1]
            assert all(math.isfinite(getattr(placement, f)) for f in ("s", "d", "width_m", "length_m", "yaw_deg"))
            assert 0 < placement.width_m <= 60 and 0 < placement.length_m <= 60
        assert time.perf_counter() - t0 < TIME_CAP_S and snapshot(root) == before


@pytest.mark.parametrize(("key", "value"), [
    ("distance_m", 5), ("distance_m", "5-15"), ("distance_m", {"near": 5, "far": 15}), ("distance_m", [15, 5]),
    ("attack.dirt_range", 0.5), ("attack.dirt_range", "0.3:1.0"), ("lateral_m", "0"), ("lateral_m", math.nan),
    ("placement.width_m", 1e300), ("placement.yaw_deg", 1e300), ("placement.kind", ["road"]),
    ("attack.target", 7), ("mode", {"x": 1}), ("attack", "left"), ("placement", [1, 2])])
def test_pdn_refuses_a_bad_attack_json_in_one_line_naming_file_and_field(tmp_path: Path, key: str, value: Any) -> None:
    folder = _attack_folder(tmp_path)
    _write(folder / "attack.json", _set(json.loads((folder / "attack.json").read_text()), key, value))
    line = assert_refused(["attack", "eval", "--model", str(tmp_path / "no-model"), "--sticker", str(folder)],
                          tmp_path, "attack.json", key.split(".")[-1] if "." in key else key)
    assert "Error" not in line.split("error:", 1)[1][:12]  # no Python exception name


# ------------------------------------------------------------------------------------- sweep resume state
from attacks.sweep import SWEEP_COLUMNS, resumed_row, size_text, sticker_size  # noqa: E402

_SIZE = sticker_size(2.0, "along")


def _settings(model: str) -> dict[str, Any]:
    return {"model": model, "aspect": "along", "closed_loop": True, "resim_every": None, "target": "left",
            "steps": 300, "roads": 8, "poses": 32, "distance": "5-15", "eval_roads": 8, "loop_roads": 10,
            "km": 0.5, "seed": 0, "area_m2": 2.0, "size": size_text(*_SIZE)}


def _row() -> dict[str, Any]:
    return {"area_m2": 2.0, "width_m": _SIZE[0], "length_m": _SIZE[1], "departure_rate": 0.5,
            "noise_departure_rate": 0.1, "grey_departure_rate": None, "no_sticker_departure_rate": 0.0,
            "mean_dev_deg": 2.0, "success_rate": 0.3, "noise_mean_dev_deg": 0.2, "grey_mean_dev_deg": 0.1,
            "n_approaches": 6, "n_frames": 64, "seconds": 12.0}


_STATE_EDITS = st.one_of(
    st.tuples(st.just("row"), st.sampled_from(SWEEP_COLUMNS), st.one_of(VALUES, st.just("<missing>"))),
    st.tuples(st.just("top"), st.sampled_from(["row", "settings"]), st.one_of(VALUES, st.just("<missing>"))),
)


@given(edit=_STATE_EDITS)
def test_sweep_resume_state_is_checked(edit: tuple[str, str, Any]) -> None:
    where, key, value = edit
    with scratch() as root:
        state = {"settings": _settings("m"), "row": _row()}
        target = state["row"] if where == "row" else state
        if value == "<missing>":
            target.pop(key)
        else:
            target[key] = value
        path = root / "area_2" / "size.json"
        _write(path, state)
        before = snapshot(root)
        t0 = time.perf_counter()
        try:
            row = resumed_row(path, _settings("m"), 2.0, _SIZE, root)
        except PDNError as exc:
            msg = one_line(exc)
            assert "size.json" in msg and (key in msg or "settings" in msg), msg
        else:
            assert row is not None and list(row) == list(SWEEP_COLUMNS)
            for k, v in row.items():
                assert v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)), (k, v)
            for k in SWEEP_COLUMNS:
                if k.endswith("_rate") and row[k] is not None:
                    assert 0 <= row[k] <= 1
        assert time.perf_counter() - t0 < TIME_CAP_S and snapshot(root) == before


def _own_sweep_folder(out: Path) -> None:
    """``out`` as a sweep folder that ``pdn attack sweep`` resumes (marked as its kind where folders are marked)."""
    try:
        from drivenet_patch.storage.folders import prepare_output_folder
    except ImportError:
        out.mkdir(parents=True)
        return
    prepare_output_folder(out, "attack sweep")


@pytest.mark.parametrize(("key", "value"), [("departure_rate", "high"), ("departure_rate", [0.5]),
                                            ("departure_rate", math.nan), ("n_approaches", "6"),
                                            ("area_m2", 7.0), ("seconds", -1.0), ("row", None), ("row", "<missing>"),
                                            ("width_m", {"m": 1})])
def test_pdn_attack_sweep_refuses_a_bad_resume_state_before_any_work(tmp_path: Path, key: str, value: Any) -> None:
    out = tmp_path / "sweep"
    run = tmp_path / "run"
    run.mkdir()
    state = {"settings": _settings(str(run)), "row": _row()}
    target = state if key == "row" else state["row"]
    if value == "<missing>":
        target.pop(key)
    else:
        target[key] = value
    _own_sweep_folder(out)
    _write(out / "area_2" / "size.json", state)
    assert_refused(["attack", "sweep", "--model", str(run), "--out", str(out), "--areas", "2"], tmp_path,
                   "size.json", key, "remove")


# ------------------------------------------------------------------------------------- selection-study tables
_STUDY_FILES = {"_eval.json": ["rmse_deg"],
                "_selection.json": ["selection_weight", "effective_patches", "effective_patches_fusion", "macs",
                                    "ms_per_image"],
                "_attack_eval.json": ["mean_dev_deg", "success_rate", "in_topk_rate", "n_frames", "control_noise",
                                      "control_grey"],
                "_attack_sal_eval.json": ["mean_dev_deg", "in_topk_rate", "weight_on_sticker"]}


def _study(res: Path) -> None:
    for run, r in {"pilotnet": 1.2, "pd0": 0.8}.items():
        _write(res / f"{run}_eval.json", {"rmse_deg": r})
        _write(res / f"{run}_selection.json", {"macs": 2_000_000, "ms_per_image": 0.5, "selection_weight": 0.0,
                                               "effective_patches": 3.0, "effective_patches_fusion": 2.5})
        _write(res / f"{run}_attack_eval.json", {"mean_dev_deg": r, "success_rate": 0.1, "n_frames": 256,
                                                 "control_noise": {"mean_dev_deg": 0.1}, "control_grey": {}})
    _write(res / "pd0_attack_sal_eval.json", {"mean_dev_deg": 0.5, "in_topk_rate": 0.9})


@given(file=st.sampled_from(sorted(_STUDY_FILES)), data=st.data())
def test_selection_study_tables_are_checked(file: str, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(_STUDY_FILES[file]))
    value = data.draw(st.one_of(VALUES, WRONG))
    with scratch() as root:
        res = root / "results"
        _study(res)
        path = res / f"pd0{file}"
        obj = json.loads(path.read_text())
        obj[key] = value
        _write(path, obj)
        before = snapshot(root)
        code, out, err, seconds = run_cli(["selection-study", "--results", str(res), "--json"])
        assert seconds < TIME_CAP_S and "Traceback" not in err
        if code == 2:
            line = err.strip()
            assert "\n" not in line and path.name in line and key in line, line
            assert snapshot(root) == before
        else:
            assert code == 0, err
            rows = json.loads(out)["rows"]
            for r in rows:
                for k, v in r.items():
                    assert v is None or isinstance(v, str) or math.isfinite(v), (k, v)


# ------------------------------------------------------------------------------------- report inputs
_DRIVE = {"autonomy_pct": 70.0, "distance_km": 1.0, "roads": 2, "interventions": 3, "departures": 1,
          "mean_abs_offset_m": 0.3, "model": "run", "config": {"intervention_m": 1.5}}
_CERTIFY = {"certified_acc": 0.5, "clean_acc": 0.9, "certified_share": 0.8, "delta_deg": 2.0, "n": 10,
            "violations": 0, "k_max": 2, "n_regions": 9, "mae_deg": 0.5, "median_halfwidth_deg": 0.7,
            "patch": [11, 24], "patch_spec": "2%", "aggregate": "median", "model": "run"}


def _report_inputs(root: Path) -> tuple[Path, Path]:
    drive, cert = root / "drive", root / "certify"
    _write(drive / "drive.json", _DRIVE)
    (drive / "drive_log.csv").write_text("road,t,x,y,offset_m\n0,0,0,0,0\n0,0.1,1,0,0.1\n")
    _write(cert / "certify.json", _CERTIFY)
    (cert / "certify_frames.csv").write_text("lo_deg,hi_deg\n-1,1\n-inf,inf\n")
    return drive, cert


@given(which=st.sampled_from(["drive", "certify"]), data=st.data())
def test_report_inputs_are_checked_before_anything_is_written(which: str, data: st.DataObject) -> None:
    from drivenet_patch.app.report import detect_kind
    from drivenet_patch.app.report.inputs import check_inputs

    base = _DRIVE if which == "drive" else _CERTIFY
    key = data.draw(st.sampled_from(sorted(base)))
    value = data.draw(st.one_of(VALUES, WRONG))
    with scratch() as root:
        folders = dict(zip(("drive", "certify"), _report_inputs(root), strict=True))
        path = folders[which] / f"{which}.json"
        _write(path, {**base, key: value})
        before = snapshot(root)
        t0 = time.perf_counter()
        try:
            check_inputs([(p, detect_kind(p)) for p in folders.values()])
        except PDNError as exc:
            msg = one_line(exc)
            assert path.name in msg and key in msg, msg
        assert time.perf_counter() - t0 < TIME_CAP_S and snapshot(root) == before


@pytest.mark.parametrize(("which", "key", "value"), [("drive", "autonomy_pct", "high"), ("drive", "roads", [2]),
                                                     ("drive", "autonomy_pct", math.nan),
                                                     ("certify", "certified_acc", "0.5"),
                                                     ("certify", "certified_acc", 50.0), ("certify", "n", "ten"),
                                                     ("certify", "patch", "11x24"), ("certify", "delta_deg", 1e300),
                                                     ("certify", "threat", {"width_m": None, "length_m": 2.0}),
                                                     ("certify", "certified_acc_by_distance", {"near": 0.5}),
                                                     ("certify", "k_max", None), ("drive", "config", None)])
def test_pdn_report_refuses_a_bad_field_in_one_line(tmp_path: Path, which: str, key: str, value: Any) -> None:
    drive, cert = _report_inputs(tmp_path / "in")
    base = _DRIVE if which == "drive" else _CERTIFY
    _write((drive if which == "drive" else cert) / f"{which}.json", {**base, key: value})
    assert_refused(["report", str(drive), str(cert), "--out", str(tmp_path / "in" / "report")], tmp_path,
                   f"{which}.json", key)
    assert not (tmp_path / "in" / "report").exists()


def test_report_tables_with_text_where_numbers_belong_are_refused(tmp_path: Path) -> None:
    _, cert = _report_inputs(tmp_path)
    (cert / "certify_frames.csv").write_text("lo_deg,hi_deg\n-1,1\nlow,high\n")
    line = assert_refused(["report", str(cert), "--out", str(tmp_path / "report")], tmp_path,
                          "certify_frames.csv", "lo_deg", "row 3")
    assert "low" in line


# ------------------------------------------------------------------------------------- certifier metadata
def _meta() -> dict[str, Any]:
    return onboard.certificate_metadata(6, [True] * 5 + [False], "median", 1, 2.0, 3.0,
                                        {"t": {"kind": "test", "touch_sets": [[0], [1, 2], [3, 4, 5]]}}, "t")


_META_KEYS = ["format", "n_regions", "valid", "aggregate", "trim", "bin_deg", "tau_deg", "default_threat", "threats"]


@given(key=st.sampled_from([*_META_KEYS, "threats.t", "threats.t.touch_sets", "valid.0", "touch.0"]),
       value=st.one_of(VALUES, WRONG), aggregate=st.sampled_from(onboard.METHODS), as_text=st.booleans())
def test_certifier_metadata_is_validated_without_tracebacks(key: str, value: Any, aggregate: str,
                                                           as_text: bool) -> None:
    meta = {**_meta(), "aggregate": aggregate}
    if key == "valid.0":
        meta["valid"] = [value, *meta["valid"][1:]]
    elif key == "touch.0":
        meta["threats"] = {"t": {"kind": "test", "touch_sets": [[value], [1]]}}
    elif key.startswith("threats."):
        parts = key.split(".")
        meta["threats"] = {"t": value} if len(parts) == 2 else {"t": {"kind": "test", "touch_sets": value}}
    else:
        meta[key] = value
    t0 = time.perf_counter()
    try:
        cert = onboard.Certifier.from_metadata(json.dumps(meta) if as_text else meta)
    except PDNError as exc:
        one_line(exc)
    else:
        assert cert.n_regions == 6 and cert.valid.dtype == bool
        votes = np.random.default_rng(0).normal(0, 0.1, (4, 6)).astype(np.float32)
        out = cert(votes)
        ok = np.asarray(out.certified)
        assert np.isfinite(out.lo[ok]).all() and np.isfinite(out.hi[ok]).all()
    assert time.perf_counter() - t0 < TIME_CAP_S


@pytest.mark.parametrize(("change", "needle"), [
    (lambda m: m.update(valid=["false"] * 5 + [False]), "valid[0]"),
    (lambda m: m.update(tau_deg=math.inf, aggregate="reject"), "tau_deg"),
    (lambda m: m.update(bin_deg=1e300, aggregate="vote"), "bin_deg"),
    (lambda m: m.update(trim=10**30, aggregate="trimmed"), "trim"),
    (lambda m: m.update(n_regions=10**12), "n_regions"),
    (lambda m: m.update(n_regions=math.inf), "n_regions"),
    (lambda m: m.update(threats={"t": {"touch_sets": [[10**12]]}}), "region index"),
    (lambda m: m.update(threats={"t": {"touch_sets": [[math.inf]]}}), "touch_sets[0][0]"),
    (lambda m: m.update(threats={f"t{i}": {"touch_sets": [[0]]} for i in range(1000)}), str(onboard.MAX_THREATS)),
    (lambda m: m.update(threats={"t": {"touch_sets": [[i % 6] for i in range(30_000)]}}), str(onboard.MAX_TOUCH_SETS)),
    (lambda m: m.update(default_threat=["t"]), "default_threat"),
])
def test_known_bad_metadata_is_refused_naming_the_value_and_limit(change, needle: str) -> None:
    meta = _meta()
    change(meta)
    t0 = time.perf_counter()
    with pytest.raises(PDNError) as info:
        onboard.Certifier.from_metadata(json.dumps(meta))
    assert needle in one_line(info.value) and onboard.CERT_KEY in str(info.value)
    assert time.perf_counter() - t0 < 5.0


def test_deep_or_huge_metadata_json_is_refused_quickly() -> None:
    for text in (_deep(100_000), '{"format": ' + _deep(5000) + "}", "[" * 10**6, '{"a": "' + "x" * (17 << 20) + '"}'):
        t0 = time.perf_counter()
        with pytest.raises(PDNError) as info:
            onboard.Certifier.from_metadata(text)
        one_line(info.value)
        assert time.perf_counter() - t0 < 10.0


# ------------------------------------------------------------------------------------- per-frame inputs
_FRAME_VALUES = st.sampled_from([0.0, 0.1, -0.1, 0.2, 1e30, -1e30, math.nan, math.inf, -math.inf])


@given(votes=st.lists(st.lists(_FRAME_VALUES, min_size=6, max_size=6), min_size=1, max_size=5),
       pixel=st.sampled_from([0.5, math.nan, math.inf, -math.inf]), row=st.integers(0, 4),
       aggregate=st.sampled_from(onboard.METHODS))
def test_per_frame_inputs_never_certify_a_non_finite_frame(votes, pixel: float, row: int, aggregate: str) -> None:
    cert = onboard.Certifier.from_metadata({**_meta(), "aggregate": aggregate})
    v = np.array(votes, dtype=np.float32)
    frames = np.full((v.shape[0], 3, 2, 2), 0.5, np.float32)
    frames[row % v.shape[0], 1, 1, 0] = pixel
    out = cert(v, frames=frames)
    ok = np.asarray(out.certified)
    verified = onboard.verified(out, 5.0)
    finite = np.isfinite(v).all(1) & np.isfinite(frames.reshape(len(v), -1)).all(1)
    assert not ok[~finite].any() and not verified[~finite].any()
    assert np.isfinite(out.lo[ok]).all() and np.isfinite(out.hi[ok]).all()
    faults = onboard.input_faults(v, frames)
    assert ((faults == "") == finite).all()


@pytest.mark.parametrize("valid", [np.array(["false"] * 6), np.array([0.5] * 6), np.array([2] * 6), ["x"] * 6])
def test_a_valid_mask_that_is_not_booleans_is_refused(valid) -> None:
    with pytest.raises(PDNError, match="valid mask"):
        onboard.certify(np.zeros((2, 6), np.float32), [[0]], valid)


@given(votes=VALUES, valid=st.one_of(st.none(), VALUES), frames=st.one_of(st.none(), VALUES),
       threat=st.one_of(st.none(), st.text(max_size=3), st.integers()))
def test_the_certifier_api_takes_any_per_frame_input_without_a_traceback(votes, valid, frames, threat) -> None:
    cert = onboard.Certifier.from_metadata(_meta())
    t0 = time.perf_counter()
    try:
        out = cert(votes, valid, threat, frames)
    except PDNError as exc:
        one_line(exc)
    else:
        v = np.asarray(votes, dtype=np.float64)
        ok = np.asarray(out.certified)
        assert not ok[~np.isfinite(v).all(1)].any()
        assert np.isfinite(out.lo[ok]).all() and np.isfinite(out.hi[ok]).all()
    assert time.perf_counter() - t0 < TIME_CAP_S


@pytest.mark.parametrize(("column", "value"), [("departure_rate", "5.0"), ("departure_rate", "high"),
                                               ("area_m2", "-2"), ("n_approaches", "2.5")])
def test_pdn_report_refuses_a_sweep_table_with_a_bad_cell(tmp_path: Path, column: str, value: str) -> None:
    sweep = tmp_path / "in" / "sweep"
    row = {**_row(), "grey_departure_rate": ""}
    row[column] = value
    sweep.mkdir(parents=True)
    (sweep / "sweep.csv").write_text(",".join(row) + "\n" + ",".join(str(v) for v in row.values()) + "\n")
    _write(sweep / "sweep.json", {"break_area_m2": None, "model": "run"})
    assert_refused(["report", str(sweep), "--out", str(tmp_path / "in" / "report")], tmp_path, "sweep.csv", column)
    assert not (tmp_path / "in" / "report").exists()


def test_a_run_trained_without_validation_is_reported_and_a_bad_metrics_row_refused(tmp_path: Path) -> None:
    from drivenet_patch.models import create_model
    from drivenet_patch.models.checkpoint import save_model

    run = tmp_path / "in" / "run"
    save_model(run, create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0)))
    (run / "metrics.csv").write_text("epoch,train_loss,val_rmse_deg\n0,2.5,\n1,1.5,\n")
    code, _, err, _ = run_cli(["report", str(run), "--out", str(tmp_path / "report")])
    assert code == 0, err
    assert "no validation set" in (tmp_path / "report" / "index.html").read_text()
    (run / "metrics.csv").write_text("epoch,train_loss,val_rmse_deg\n0,2.5,1.0\n,1.5,0.9\n")
    assert_refused(["report", str(run), "--out", str(tmp_path / "in" / "report2")], tmp_path / "in",
                   "metrics.csv row 3", "epoch")
