"""The report's opening: what was found, in plain sentences with their numbers.

:func:`summarize` reads the same toolkit outputs as :mod:`drivenet_patch.app.report` (training runs,
drives, attack folders with ``eval.json``, certify folders) and returns one finding per question
a reader asks first:

- ``model``: how accurate is the model on held-out frames, and does it drive (autonomy)?
- ``attack``: does the sticker work beyond its noise and grey controls and beyond what the model
  does with no sticker (offline change, success, lane departures)?
- ``break_size``: from which sticker area on does each swept model leave its lane (``pdn attack sweep``)?
- ``defense``: what does PatchVote certify, against which threat (pixel patch, physical sticker),
  at which tolerance delta? For a physical sticker: up to which area, in metres?
- ``adaptive``: did any attack break a certificate, and what does a sticker optimised against the
  defended model do?

Each finding carries ``weak`` (and says why in its text) when its evidence is thin: a model that
leaves its lane with no sticker, a sticker not clearly above its controls, a certificate that
covers under half of the frames. :func:`summary_html` renders the findings as the first block of
``index.html``; the report writes the dict as ``summary.json`` beside it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drivenet_patch.app.report.break_size import SWEEP_TITLE, read_sweeps
from drivenet_patch.app.report.compare import same_path
from drivenet_patch.app.report.inputs import check_report_json
from drivenet_patch.app.report.metres import METRES_TITLE, read_physical
from drivenet_patch.app.report.page import model_name, section_id
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import read_json

__all__ = ["CLEAR_RATIO", "MEANINGFUL_CERTIFIED", "summarize", "summary_html"]

#: The sticker's effect counts as "clearly above" a control when it is at least this many times larger.
CLEAR_RATIO = 3.0
#: A certificate covering fewer frames than this share is called out as covering little.
MEANINGFUL_CERTIFIED = 0.5


def _json(path: Path) -> dict[str, Any]:
    """The JSON object at ``path`` through the one input reader (size and depth bounded), ``{}`` when it
    is missing or unreadable: a summary says what it can."""
    try:
        obj = read_json(path)
        return check_report_json(path, obj) if isinstance(obj, dict) else {}
    except PDNError:
        return {}


def _num(v: Any) -> float | None:
    """``v`` as a finite float, else None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pct(v: Any) -> str:
    f = _num(v)
    return "n/a" if f is None else f"{100 * f:.0f}%"


def _count(n: Any, noun: str) -> str:
    """``"1 intervention"``, ``"3 interventions"``; ``"? interventions"`` when ``n`` is not a number."""
    f = _num(n)
    return f"? {noun}s" if f is None else f"{f:,.0f} {noun}{'' if f == 1 else 's'}"


def _deg(v: Any) -> str:
    f = _num(v)
    return "n/a" if f is None else f"{f:.2f} deg"


def _model_name(model_path: Any) -> str:
    """The registered model name of a run folder (``config.json``; of the zoo's folder for ``zoo:NAME``), ``?``
    when unreadable."""
    if model_path is None:
        return "?"
    return model_name(model_path)  # its config.json, read like a named folder's (never through a link out)


def _is_zoo(model: Any) -> bool:
    """Whether a certificate's ``model`` names a model of the package's zoo (``zoo:NAME``)."""
    from drivenet_patch.models.zoo import is_zoo_ref

    return is_zoo_ref(model)


def _defended(name: str) -> bool:
    return name.startswith("patchvote")


def _ratio(a: Any, b: Any) -> float | None:
    """``a / b``; infinite when ``b`` is 0 and ``a`` > 0; None when either is missing."""
    fa, fb = _num(a), _num(b)
    if fa is None or fb is None:
        return None
    if fb <= 0:
        return math.inf if fa > 0 else None
    return fa / fb


def _times(r: float | None) -> str:
    if r is None:
        return "n/a"
    return "above zero" if math.isinf(r) else f"{r:.1f}x"


# --------------------------------------------------------------------------------------------- findings


def _model_findings(runs: Sequence[Path], drives: Sequence[Path]) -> list[dict[str, Any]]:
    drive_results = [(d, _json(d / "drive.json")) for d in drives]
    found = []
    for run in runs:
        name = _model_name(run)
        nums: dict[str, Any] = {"run": str(run), "model": name}
        said: list[str] = []
        weak: list[str] = []
        pred = run / "predictions.csv"
        if pred.is_file():
            try:
                p = pd.read_csv(pred, usecols=["steering_deg", "predicted_deg"])
            except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
                p = pd.DataFrame()
            if len(p):
                err = p["predicted_deg"].to_numpy(np.float64) - p["steering_deg"].to_numpy(np.float64)
                rmse = float(np.sqrt(np.mean(err ** 2)))
                zero = float(np.sqrt(np.mean(p["steering_deg"].to_numpy(np.float64) ** 2)))
                nums.update(eval_frames=len(p), rmse_deg=rmse, rmse_over_zero=rmse / max(zero, 1e-12))
                said.append(f"predicts held-out steering with RMSE {rmse:.3g} deg on {len(p):,} frames "
                            f"({nums['rmse_over_zero']:.2f}x the always-zero baseline)")
                if nums["rmse_over_zero"] > 0.5:
                    weak.append("its error is more than half of always predicting straight ahead")
        else:
            said.append("was not evaluated on held-out frames (no predictions.csv)")
        mine = [d for path, d in drive_results if same_path(d.get("model"), run)]
        if len(drive_results) == 1 and len(runs) == 1 and not mine:
            mine = [drive_results[0][1]]  # a lone drive of a lone run (older drive.json without "model")
        if mine:
            d = mine[0]
            auto, inter = _num(d.get("autonomy_pct")), d.get("interventions")
            nums.update(autonomy_pct=auto, interventions=inter, drive_roads=d.get("roads"),
                        drive_km=d.get("distance_km"))
            said.append(f"drives {d.get('roads', '?')} held-out roads ({_num(d.get('distance_km')) or 0:.2g} km) "
                        f"closed loop with {auto:.1f}% autonomy ({_count(inter, 'intervention')})" if auto is not None
                        else "was driven closed loop, but the drive reports no autonomy")
            if auto is not None and auto < 100.0:
                weak.append(f"it needed the safety driver {_count(inter, 'time')} without any attack")
        else:
            said.append("was not driven closed loop here")
            nums["autonomy_pct"] = None
        text = f"{name} " + "; ".join(said) + "."
        if weak:
            text += " Weak: " + "; ".join(weak) + "."
        found.append({"key": "model", "section": "model", "title": f"Model ({name})", "text": text,
                      "weak": bool(weak), "numbers": nums})
    return found


def _attack_rows(attacks: Sequence[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in attacks:
        ev = _json(path / "eval.json")
        if not ev:
            continue
        a = _json(path / "attack.json")
        size = a.get("size_m") or [None, None]
        w, length = _num(size[0]), _num(size[1])
        rows.append({"path": path, "a": a, "ev": ev, "model": a.get("model", ev.get("model")),
                     "name": _model_name(a.get("model", ev.get("model"))), "w": w, "l": length,
                     "area": (w or 0.0) * (length or 0.0)})
    return rows


def _attack_numbers(r: dict[str, Any]) -> dict[str, Any]:
    ev = r["ev"]
    nums: dict[str, Any] = {"attack": str(r["path"]), "model": r["name"], "size_m": [r["w"], r["l"]],
                            "n_frames": ev.get("n_frames"), "n_approaches": ev.get("n_approaches")}
    for key in ("mean_dev_deg", "success_rate", "departure_rate"):
        nums[key] = _num(ev.get(key))
        for c in ("noise", "grey"):
            nums[f"{c}_{key}"] = _num((ev.get(f"control_{c}") or {}).get(key))
    nums["none_departure_rate"] = _num((ev.get("no_sticker") or {}).get("departure_rate"))
    nums["none_n_approaches"] = (ev.get("no_sticker") or {}).get("n_approaches")
    return nums


def _sticker_finding(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    undefended = [r for r in rows if not _defended(r["name"])]
    if not undefended:
        return None
    main = max(undefended, key=lambda r: r["area"])
    n = _attack_numbers(main)
    size = f"{main['w']:g} x {main['l']:g} m" if main["w"] and main["l"] else "the"
    ctrl_dev = max((v for v in (n["noise_mean_dev_deg"], n["grey_mean_dev_deg"]) if v is not None), default=None)
    n["dev_over_controls"] = _ratio(n["mean_dev_deg"], ctrl_dev)
    parts = [f"The {size} sticker changes {main['name']}'s held-out steering by {_deg(n['mean_dev_deg'])} on "
             f"average (noise control {_deg(n['noise_mean_dev_deg'])}, grey {_deg(n['grey_mean_dev_deg'])}: "
             f"{_times(n['dev_over_controls'])} the larger control) and succeeds on {_pct(n['success_rate'])} of "
             f"{n['n_frames']} frames (controls {_pct(n['noise_success_rate'])} / {_pct(n['grey_success_rate'])})"]
    weak: list[str] = []
    if n["dev_over_controls"] is not None and n["dev_over_controls"] < CLEAR_RATIO:
        weak.append(f"its offline effect is less than {CLEAR_RATIO:g}x its controls', so it is not clearly "
                    "the optimised pattern that steers")
    dep = n["departure_rate"]
    if dep is not None:
        parts.append(f"In closed loop it causes lane departures on {_pct(dep)} of {n['n_approaches']} approaches "
                     f"(noise {_pct(n['noise_departure_rate'])}, grey {_pct(n['grey_departure_rate'])}, "
                     f"no sticker {_pct(n['none_departure_rate'])})")
        none = n["none_departure_rate"]
        base = max((v for v in (n["noise_departure_rate"], n["grey_departure_rate"], none) if v is not None),
                   default=None)
        n["departures_over_baseline"] = _ratio(dep, base)
        if none is not None and none > 0:
            weak.append(f"the model leaves its lane on {_pct(none)} of these approaches with no sticker at all, so "
                        "departures there are not the sticker's doing alone")
        elif base is not None and dep <= base:
            weak.append("it causes no more departures than its controls")
    else:
        parts.append("It was not driven closed loop (no departures measured)")
    smaller = sorted((r for r in undefended if r is not main and same_path(r["model"], Path(str(main["model"])))),
                     key=lambda r: -r["area"])
    if smaller:
        parts.append("Smaller stickers: " + "; ".join(
            f"{r['w']:g} x {r['l']:g} m {_deg(r['ev'].get('mean_dev_deg'))}, success {_pct(r['ev'].get('success_rate'))}"
            for r in smaller))
        n["smaller"] = [{"size_m": [r["w"], r["l"]], "mean_dev_deg": _num(r["ev"].get("mean_dev_deg")),
                         "success_rate": _num(r["ev"].get("success_rate"))} for r in smaller]
    text = ". ".join(parts) + "."
    if weak:
        text += " Weak: " + "; ".join(weak) + "."
    return {"key": "attack", "section": "attack", "title": "Sticker vs controls", "text": text, "weak": bool(weak),
            "numbers": n}


def _break_finding(sweeps: Sequence[Path]) -> dict[str, Any] | None:
    """One sentence: the break area of each swept model, or the largest size that did not break it."""
    from attacks.sweep import BREAK_RATE, DRP_AREA_M2

    if not sweeps:
        return None
    said, weak, nums = [], [], {}
    for s in read_sweeps(sweeps):
        t = s.table
        n = pd.to_numeric(t["n_approaches"], errors="coerce").min() if "n_approaches" in t else None
        per = f"{int(n)} approaches per size" if n is not None and np.isfinite(n) else "approaches"
        top = float(t["area_m2"].max())
        if s.break_area is None:
            said.append(f"no size up to {top:g} m² made {s.label} leave its lane in >= {100 * BREAK_RATE:.0f}% "
                        f"of approaches ({per})")
        else:
            row = t[t["area_m2"] == s.break_area].iloc[0]
            said.append(f"{s.label} leaves its lane in >= {100 * BREAK_RATE:.0f}% of approaches from "
                        f"{s.break_area:g} m² on ({row['width_m']:.2g} x {row['length_m']:.2g} m, {per})")
            base = [_num(row[c]) for c in ("noise_departure_rate", "grey_departure_rate", "no_sticker_departure_rate")]
            if any(b is not None and b >= BREAK_RATE for b in base):
                weak.append(f"at {s.break_area:g} m² {s.label} departs as often with a control or no sticker, so the "
                            "break is not the sticker's doing")
        none = pd.to_numeric(t["no_sticker_departure_rate"], errors="coerce").max()
        if np.isfinite(none) and none > 0:
            weak.append(f"{s.label} leaves its lane on up to {_pct(none)} of these approaches with no sticker")
        nums[s.label] = {"sweep": str(s.path), "break_area_m2": s.break_area, "max_area_m2": top,
                         "n_approaches": None if n is None or not np.isfinite(n) else int(n)}
    text = "Sticker size: " + "; ".join(said) + f"; DRP paints about {DRP_AREA_M2:g} m²."
    if weak:
        text += " Weak: " + "; ".join(weak) + "."
    return {"key": "break_size", "section": section_id(SWEEP_TITLE), "title": "Sticker size that breaks the model",
            "text": text, "weak": bool(weak), "numbers": {"models": nums, "drp_area_m2": DRP_AREA_M2}}


def _certify_findings(certs: Sequence[Path]) -> list[dict[str, Any]]:
    found = []
    # With a zoo model's certificate beside this run's, each sentence names which model its figure is from.
    any_zoo = any(_is_zoo(_json(p / "certify.json").get("model")) for p in certs)
    for path in certs:
        c = _json(path / "certify.json")
        if not c:
            continue
        zoo = _is_zoo(c.get("model"))
        acc, clean, delta = _num(c.get("certified_acc")), _num(c.get("clean_acc")), _num(c.get("delta_deg"))
        threat = c.get("threat")
        if isinstance(threat, dict):
            w, length = threat.get("width_m"), threat.get("length_m")
            dist = threat.get("distance_m") or []
            what = (f"any physical {threat.get('place', 'road')} sticker of {w} x {length} m"
                    + (f" {dist[0]:g}-{dist[1]:g} m ahead" if len(dist) == 2 else ""))
            kind = "physical"
        else:
            patch = c.get("patch") or []
            what = (f"any {c.get('patch_spec', '')} pixel patch".replace("  ", " ")
                    + (f" ({patch[0]} x {patch[1]} px)" if len(patch) == 2 else ""))
            kind = "patch"
        name = _model_name(c.get("model"))
        if zoo:
            name = f"{c['model']} (the package's fully trained {name}; pdn zoo show {str(c['model'])[4:]})"
        elif any_zoo:
            name = f"{name} trained by this run"
        nums = {"certify": str(path), "kind": kind, "model": name, "certified_acc": acc, "clean_acc": clean,
                "delta_deg": delta, "n": c.get("n"), "threat": what, "zoo": zoo}
        section = "defense"
        if kind == "physical":  # the sentence of "Certified in metres": the largest area certified, in m²
            (ph,) = read_physical([path])
            nums["certified_area_m2"] = ph.area_m2
            text = (f"{name}: {ph.sentence[0].lower()}{ph.sentence[1:]} On a certified frame no such sticker "
                    f"moves the output by more than delta; without attack {_pct(clean)} of the frames are within it.")
            section = section_id(METRES_TITLE)
        else:
            text = (f"{name} certifies {_pct(acc)} of {_count(c.get('n'), 'held-out frame')} against {what}: on "
                    f"those frames its output provably stays within {_deg(delta)} of the true angle (without attack "
                    f"{_pct(clean)} of the frames are within it).")
            if _unbounded(c):
                text += (f" Such a patch can touch {c.get('k_max')} of its {c.get('n_regions')} regions, more than "
                         f"the {c.get('aggregate', 'median')} can outvote, so this layout certifies no frame "
                         "against it, however accurate the votes.")
        weak = acc is not None and acc < MEANINGFUL_CERTIFIED
        if weak:
            text += (f" Weak: the certificate covers less than {_pct(MEANINGFUL_CERTIFIED)} of the frames; on the "
                     "rest an attacker of this size may move the steering by more than delta.")
        found.append({"key": f"defense_{kind}" + ("_zoo" if zoo else ""), "section": section,
                      "title": f"Certificate ({kind}{', zoo model' if zoo else ''})",
                      "text": text, "weak": weak, "numbers": nums})
    return found


def _unbounded(c: dict[str, Any]) -> bool:
    """Whether a certificate gave no frame a finite interval (``certified_share`` 0 of a non-empty run): the
    threat touches more regions than the aggregate can outvote."""
    share, n = _num(c.get("certified_share")), _num(c.get("n"))
    return share == 0.0 and bool(n)


def _adaptive_finding(certs: Sequence[Path], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    parts, nums = [], {}
    broken = False
    for path in certs:
        c = _json(path / "certify.json")
        if c.get("attack_runs"):
            v = int(c.get("violations", 0) or 0)
            broken |= v > 0
            nums.update(attack_runs=c["attack_runs"], violations=v)
            parts.append(f"{c['attack_runs']} adaptive patch attacks found {v} certificate violations"
                         + (" (a vacuous check here: no frame had a finite interval to leave)" if _unbounded(c)
                            else ""))
        if c.get("sticker_frames"):
            v = int(c.get("sticker_violations", 0) or 0)
            broken |= v > 0
            nums.update(sticker_frames=c["sticker_frames"], sticker_violations=v)
            parts.append(f"the undefended model's sticker, composited into {c['sticker_frames']} approach frames, "
                         f"found {v}")
    defended = [r for r in rows if _defended(r["name"])]
    if defended:
        d = _attack_numbers(max(defended, key=lambda r: r["area"]))
        nums["against_defended"] = d
        sentence = (f"a sticker optimised white-box against {d['model']} changes its steering by "
                    f"{_deg(d['mean_dev_deg'])} (success {_pct(d['success_rate'])}")
        dep, none = d["departure_rate"], d.get("none_departure_rate")
        if dep is not None:
            sentence += f", departures {_pct(dep)}" + (f"; with no sticker {_pct(none)}" if none is not None else "")
        parts.append(sentence + ")")
    if not parts:
        return None
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if broken:
        text += " A certificate was broken: the defense or its bound is wrong; see the Defense section."
    return {"key": "adaptive", "section": "defense", "title": "Adaptive attacks", "text": text, "weak": broken,
            "numbers": nums}


def summarize(inputs: Sequence[tuple[Path, str]], notes: Sequence[str] = ()) -> dict[str, Any]:
    """The findings of a report's inputs.

    Args:
        inputs: ``(path, kind)`` pairs as :func:`drivenet_patch.app.report.detect_kind` names them.
        notes: sentences about how the inputs were made (e.g. why a quick run's settings are small).

    Returns:
        ``{"findings": [{"key", "section", "title", "text", "weak", "numbers"}], "notes": [...],
        "weak": [keys of weak findings]}``; ``section`` is the id of the report section with the detail.
    """
    by_kind: dict[str, list[Path]] = {}
    for p, k in inputs:
        by_kind.setdefault(k, []).append(Path(p))
    runs, drives = by_kind.get("train", []), by_kind.get("drive", [])
    rows = _attack_rows(by_kind.get("attack", []))
    findings = _model_findings(runs, drives)
    sticker = _sticker_finding(rows)
    if sticker:
        findings.append(sticker)
    brk = _break_finding(by_kind.get("sweep", []))
    if brk:
        findings.append(brk)
    findings += _certify_findings(by_kind.get("certify", []) + by_kind.get("certify_physical", []))
    adaptive = _adaptive_finding(by_kind.get("certify", []), rows)
    if adaptive:
        findings.append(adaptive)
    return {"findings": findings, "notes": [str(n) for n in notes],
            "weak": [f["key"] for f in findings if f["weak"]]}


def summary_html(summary: dict[str, Any]) -> str:
    """The summary block of ``index.html``: one list item per finding, linking to its section."""
    if not summary["findings"] and not summary["notes"]:
        return ""
    items = "".join(
        f'<li class="{"weak" if f["weak"] else "ok"}"><b>{html.escape(f["title"])}.</b> {html.escape(f["text"])} '
        f'<a href="#{html.escape(f["section"])}">details</a></li>' for f in summary["findings"])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
    return ('<section id="summary"><h2>Summary</h2><ul class="findings">' + items + "</ul>"
            + (f'<p class="notes-title">About these settings:</p><ul class="notes">{notes}</ul>' if notes else "")
            + "</section>\n")
