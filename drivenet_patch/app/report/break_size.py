"""The section "Sticker size that breaks the model": ``pdn attack sweep`` folders.

A sweep folder (``sweep.json`` + ``sweep.csv``) holds one separately optimised sticker per area and
its closed-loop lane departures beside the noise and grey controls of the same size and a drive
with no sticker; its break area is the smallest area with departures on at least
:data:`attacks.sweep.BREAK_RATE` of the approaches. The section draws every swept model on one
plot (:func:`attacks.sweep.draw_sweep`) with DRP's painted area and, when a physical certify
folder of a defended model is given too, the largest area its certificate covers
(:mod:`drivenet_patch.app.report.metres`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from drivenet_patch.app.report.inputs import check_rows
from drivenet_patch.app.report.metres import read_physical
from drivenet_patch.app.report.page import Page, fmt, html_table, load_csv, load_json, model_name

__all__ = ["SWEEP_TITLE", "Swept", "certified_by_area", "read_sweeps", "sweep_section"]

SWEEP_TITLE = "Sticker size that breaks the model"
_RATES = ("departure_rate", "noise_departure_rate", "grey_departure_rate", "no_sticker_departure_rate")


@dataclass(frozen=True)
class Swept:
    """One sweep folder, read: ``label`` (model name, with the folder when two sweeps share one), the
    attacked ``model`` folder, ``meta`` (``sweep.json``), ``table`` (``sweep.csv`` by area) and its
    ``break_area`` (m², None when no size reached the break rate)."""

    path: Path
    label: str
    model: str
    meta: dict[str, Any]
    table: pd.DataFrame
    break_area: float | None


def _area(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def read_sweeps(paths: Sequence[Path]) -> list[Swept]:
    """The sweep folders ``paths``, read (one-line errors naming the file)."""
    from attacks.sweep import SWEEP_ROW_FIELDS, break_area

    read = []
    for p in paths:
        meta = load_json(p / "sweep.json")
        table = load_csv(p / "sweep.csv", ("area_m2", "width_m", "length_m", *_RATES))
        table = check_rows(p / "sweep.csv", table, SWEEP_ROW_FIELDS).sort_values("area_m2")
        brk = _area(meta["break_area_m2"]) if "break_area_m2" in meta else break_area(table)
        model = str(meta.get("model", "?"))
        read.append((p, model_name(model), model, meta, table.reset_index(drop=True), brk))
    names = [r[1] for r in read]
    return [Swept(p, f"{name} ({p.name})" if names.count(name) > 1 else name, model, meta, table, brk)
            for p, name, model, meta, table, brk in read]


def _role(name: str, meta: dict[str, Any]) -> str:
    """A sweep's label: the model's name and whether it is the defended model, whose stickers were optimised
    white-box against it (adaptive), or an undefended one."""
    defended = name.startswith("patchvote")
    placed = meta.get("stickers") or meta.get("segment") or meta.get("search")
    how = (f", {meta.get('stickers') or 1} sticker(s)" + (", placement searched" if meta.get("search") else "")
           if placed else "")
    return f"{name} {'defended (adaptive)' if defended else 'undefended'}{how}"


def certified_by_area(sweep: pd.DataFrame, aspect: str) -> pd.Series:
    """Certified accuracy by area of a physical certificate sweep, for stickers of the swept ``aspect``
    (``along``: the longer side along the road, as the attack sweep's stickers); the worse aspect when the
    sweep has no rows of that one."""
    rows = sweep[sweep["aspect"].astype(str) == aspect] if "aspect" in sweep else sweep
    rows = rows if len(rows) else sweep
    return pd.to_numeric(rows.groupby("area_m2")["certified_acc"].min(), errors="coerce").dropna().sort_index()


def _pct(v: Any) -> str:
    f = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
    return "n/a" if pd.isna(f) else f"{100 * float(f):.0f}%"


def sweep_section(page: Page, paths: Sequence[Path], physical: Sequence[Path] = ()) -> str:
    """The section's HTML: the departures-vs-area figure of every sweep with a table beside it, then each
    sweep's settings. ``physical``: certify ``--physical`` folders; a defended model's certified area is marked."""
    if not paths:
        return ""
    from attacks.sweep import BREAK_RATE, DRP_AREA_M2, draw_sweep

    sweeps = read_sweeps(paths)
    defended = [ph for ph in read_physical(physical) if ph.label.startswith("patchvote")]
    certified = {f"{ph.label} certified up to {ph.area_m2:g} m²": ph.area_m2 for ph in defended
                 if ph.area_m2 is not None}
    aspect = str(sweeps[0].meta.get("aspect") or "along")
    curves = {ph.label: certified_by_area(ph.sweep, aspect) for ph in defended if ph.sweep is not None}
    curves = {k: v for k, v in curves.items() if len(v)}
    drp = float(sweeps[0].meta.get("drp_area_m2") or DRP_AREA_M2)
    fig = Figure(figsize=(7.5, 4.6))
    draw_sweep(fig.subplots(), {_role(s.label, s.meta): s.table for s in sweeps},
               {_role(s.label, s.meta): s.break_area for s in sweeps}, drp, certified, "Lane departures vs sticker area",
               curves)
    caption = (f"Share of closed-loop approaches that leave the lane, one separately optimised sticker per area "
               f"(solid) beside its noise and grey controls and no sticker (dashed); star: the break area (the "
               f"smallest area with >= {100 * BREAK_RATE:.0f}% departures); dash-dot: DRP's painted region "
               f"(about 5.7 m x 38 m = {drp:g} m², Sato et al., USENIX Security 2021)")
    if certified or curves:
        caption += ("; three curves side by side: the undefended model, the defended model under stickers "
                    "optimised white-box against it (adaptive), and green: the defended model's physical "
                    f"certificate, the share of held-out frames on which no sticker of that area ({aspect} the "
                    "road, anywhere in the threat's distances, offsets and yaws) can move its output out of the "
                    "certified interval" + (" (a vertical line: the largest area certified on >= 80% of frames)"
                                            if certified else ""))
    fig_html = page.figure(fig, "sweep_departures", caption)

    areas = sorted({float(a) for s in sweeps for a in s.table["area_m2"]})
    header = ["area (m²)"] + [f"{s.label}: {c}" for s in sweeps for c in ("sticker", "noise", "grey", "no sticker")]
    rows = []
    for a in areas:
        row: list[Any] = [f"{a:g}"]
        for s in sweeps:
            hit = s.table[s.table["area_m2"] == a]
            row += [_pct(hit[c].iloc[0]) if len(hit) else "" for c in _RATES]
        rows.append(row)
    rows.append(["break area"] + [x for s in sweeps for x in
                                  ((f"{s.break_area:g} m²" if s.break_area is not None else f"none up to {max(areas):g} m²"),
                                   "", "", "")])
    table = html_table(rows, header)
    parts = [f'<div class="figs">{fig_html}<div>{table}</div></div>']
    for s in sweeps:
        m = s.meta
        n = pd.to_numeric(s.table["n_approaches"], errors="coerce") if "n_approaches" in s.table else None
        settings: list[tuple[str, Any]] = [
            ("model", s.model), ("aspect", m.get("aspect")), ("closed-loop-aware", m.get("closed_loop")),
            ("steps per size", m.get("steps")), ("optimisation roads x poses", f"{fmt(m.get('roads'))} x "
                                                                            f"{fmt(m.get('poses'))}"),
            ("closed loop", f"{fmt(m.get('loop_roads'))} roads x {fmt(m.get('km'))} km"
             + (f" ({int(n.min())} approaches per size)" if n is not None and n.notna().any() else "")),
            ("stickers per area", m.get("stickers")), ("segment", m.get("segment")),
            ("placements searched per area", m.get("search")),
            ("break area (m²)", s.break_area),
            ("known within (largest area below the break, break)", m.get("break_bracket_m2")),
            ("interpolated break area (m²)", m.get("break_area_interp_m2")), ("seed", m.get("seed"))]
        parts += [f"<h3>{html.escape(str(s.path))}</h3>", html_table([r for r in settings if r[1] is not None])]
    return "".join(parts)
