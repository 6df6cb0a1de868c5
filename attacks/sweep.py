"""The break size: how large a sticker has to be before a model leaves its lane.

One sticker is optimised and evaluated per area (``pdn attack sweep``; the orchestration lives in
the CLI, which runs ``pdn attack`` and ``pdn attack eval`` per size). This module holds the pieces
that are plain functions: the sticker size of an area (:func:`sticker_size`), the parsing of the
area list, the table row of one size, the break area (:func:`break_area`: the smallest area whose
closed-loop departure rate reaches :data:`BREAK_RATE`) and the plot.

DRP (Sato et al., USENIX Security 2021) paints a 45 x 300 px bird's-eye region at about 7.9 px/m
in its highway configuration: about 5.7 m x 38 m, :data:`DRP_AREA_M2` = 108 m², against the
2.0 x 3.5 m = 7 m² sticker of the demo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_FRAMES, FieldCheck, check_fields, number, obj, rate, whole

DRP_AREA_M2 = 108.0
DEFAULT_AREAS = (2.0, 4.0, 7.0, 14.0, 28.0, 56.0, 112.0)
BREAK_RATE = 0.9
ASPECTS = ("along", "across", "line")
#: A ``line`` sticker is painted like a lane marking: this wide until it is this long, then wider.
LINE_WIDTH_M = 0.25
MAX_LINE_LENGTH_M = 40.0
#: Texels (rows along the road x columns across it) of a line sticker.
LINE_TEXELS = "64x8"
#: The demo sticker's shape: 2.0 m across the lane, 3.5 m along it.
ALONG_RATIO = 1.75
MAX_WIDTH_ALONG_M = 3.5  # an "along" sticker grows along the road once it is as wide as the lane
MAX_AREA_M2 = 400.0

SWEEP_COLUMNS = ("area_m2", "width_m", "length_m", "departure_rate", "noise_departure_rate",
                 "grey_departure_rate", "no_sticker_departure_rate", "mean_dev_deg", "success_rate",
                 "noise_mean_dev_deg", "grey_mean_dev_deg", "n_approaches", "n_frames", "seconds")


def parse_areas(text: str) -> tuple[float, ...]:
    """``"2,4,7"`` -> (2.0, 4.0, 7.0): distinct areas in m², each in (0, 400], sorted.

    Raises:
        PDNError: empty, not numbers, out of range or repeated (one line naming ``--areas``).
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        areas = [float(p) for p in parts]
    except ValueError:
        raise PDNError(f"areas must be comma-separated areas in m², e.g. 2,7,28, got {text!r}") from None
    if not areas or not all(math.isfinite(a) and 0 < a <= MAX_AREA_M2 for a in areas):
        raise PDNError(f"areas: every area must be a number in (0, {MAX_AREA_M2:g}] m², got {text!r}")
    if len(set(areas)) != len(areas):
        raise PDNError(f"areas: each area once, got {text!r}")
    return tuple(sorted(areas))


def sticker_size(area_m2: float, aspect: str = "along") -> tuple[float, float]:
    """``(width across the road, length along it)`` in metres of a sticker of ``area_m2``.

    * ``along``: the demo's 2.0 x 3.5 m shape (length = 1.75 x width) until the sticker is as wide as
      the lane (3.5 m); larger ones grow along the road, as DRP's long painted region does
      (7 m² -> 2.0 x 3.5 m, 28 m² -> 3.5 x 8 m, 112 m² -> 3.5 x 32 m).
    * ``across``: the CLI default's 3.5 x 2.0 m shape scaled (width = 1.75 x length), growing over
      the neighbouring lane and the shoulder (112 m² -> 14 x 8 m).
    * ``line``: a painted line along the lane, :data:`LINE_WIDTH_M` wide, up to :data:`MAX_LINE_LENGTH_M`
      long, then wider (7 m² -> 0.25 x 28 m, 28 m² -> 0.7 x 40 m).
    """
    if aspect not in ASPECTS:
        raise PDNError(f"aspect must be one of {', '.join(ASPECTS)}, got {aspect!r}")
    a = float(area_m2)
    if aspect == "along":
        w = min(math.sqrt(a / ALONG_RATIO), MAX_WIDTH_ALONG_M)
        return w, a / w
    if aspect == "line":
        length = min(a / LINE_WIDTH_M, MAX_LINE_LENGTH_M)
        return a / length, length
    return math.sqrt(a * ALONG_RATIO), math.sqrt(a / ALONG_RATIO)


def size_text(width_m: float, length_m: float) -> str:
    """``--size`` text of a sticker (``WIDTHxLENGTH``, 4 decimals)."""
    return f"{width_m:.4f}x{length_m:.4f}"


def sweep_row(area_m2: float, size: tuple[float, float], evaluation: Mapping[str, Any], seconds: float) -> dict:
    """One row of ``sweep.csv`` from ``pdn attack eval``'s result for the sticker of ``area_m2``."""
    def get(d: Mapping[str, Any] | None, key: str) -> Any:
        return None if d is None else d.get(key)

    noise, grey = evaluation.get("control_noise"), evaluation.get("control_grey")
    return {"area_m2": float(area_m2), "width_m": float(size[0]), "length_m": float(size[1]),
            "departure_rate": evaluation.get("departure_rate"),
            "noise_departure_rate": get(noise, "departure_rate"), "grey_departure_rate": get(grey, "departure_rate"),
            "no_sticker_departure_rate": get(evaluation.get("no_sticker"), "departure_rate"),
            "mean_dev_deg": evaluation.get("mean_dev_deg"), "success_rate": evaluation.get("success_rate"),
            "noise_mean_dev_deg": get(noise, "mean_dev_deg"), "grey_mean_dev_deg": get(grey, "mean_dev_deg"),
            "n_approaches": evaluation.get("n_approaches"), "n_frames": evaluation.get("n_frames"),
            "seconds": float(seconds)}


#: The fields of one row of ``sweep.csv`` (and of ``size.json``'s ``row``, the resume state of one size), typed
#: and bounded; a rate or a measurement may be null (not measured).
SWEEP_ROW_FIELDS: dict[str, FieldCheck] = {
    "area_m2": number(0.0, MAX_AREA_M2, low_open=True),
    "width_m": number(0.0, 100.0, low_open=True),
    "length_m": number(0.0, 200.0, low_open=True),
    **{c: rate() for c in SWEEP_COLUMNS if c.endswith("_rate")},
    **{c: number(0.0, 1e6, null=True) for c in ("mean_dev_deg", "noise_mean_dev_deg", "grey_mean_dev_deg")},
    "n_approaches": whole(0, MAX_FRAMES, null=True),
    "n_frames": whole(0, MAX_FRAMES, null=True),
    "seconds": number(0.0, 1e9, null=True),
}


def resumed_row(path: str | Path, settings: Mapping[str, Any], area_m2: float,
                size: tuple[float, float], root: str | Path) -> dict[str, Any] | None:
    """The sweep row of a size already done (its ``size.json``), checked; None when the size is not done yet.

    ``size.json`` is ``{"settings": {...}, "row": {...}}``: the settings must equal this sweep's, and the row
    must hold every :data:`SWEEP_COLUMNS` field with its type and bounds (:data:`SWEEP_ROW_FIELDS`) for this
    size. A resume state that does not is refused, not recomputed: the message says to remove the size's
    folder (it is then run again) or to write the sweep to another folder.

    Raises:
        PDNError: one line naming the file and the field.
    """
    from drivenet_patch.safety.inputs import contained_file, read_json

    path = Path(path)
    if not path.is_file() and not path.is_symlink():
        return None
    fix = f"remove {path.parent} to run this size again, or write the sweep to another folder"
    state = read_json(contained_file(path, root, what="sweep size result"), "sweep size result")
    fields = check_fields(str(path), state, {"settings": obj(), "row": obj()}, required=("settings", "row"),
                          hint=fix)
    if fields["settings"] != dict(settings):
        raise PDNError(f"{path} was made with other settings; write the sweep to another folder or remove {path.parent}")
    check_fields(str(path), state, {f"row.{k}": v for k, v in SWEEP_ROW_FIELDS.items()},
                 required=tuple(f"row.{c}" for c in SWEEP_COLUMNS), hint=fix)
    row = state["row"]
    if not (math.isclose(row["area_m2"], area_m2, rel_tol=1e-9)
            and all(math.isclose(row[k], v, rel_tol=1e-3) for k, v in zip(("width_m", "length_m"), size, strict=True))):
        raise PDNError(f"{path}: row.area_m2 = {row['area_m2']!r} ({row['width_m']!r} x {row['length_m']!r} m) is not "
                       f"this size ({area_m2:g} m², {size[0]:.4g} x {size[1]:.4g} m); {fix}")
    return {c: row[c] for c in SWEEP_COLUMNS}


def break_area(table: pd.DataFrame, rate: float = BREAK_RATE) -> float | None:
    """The smallest ``area_m2`` whose ``departure_rate`` is at least ``rate`` (None if none is, or none was driven)."""
    if table.empty or "departure_rate" not in table:
        return None
    dep = pd.to_numeric(table["departure_rate"], errors="coerce")
    hit = table.loc[dep >= rate, "area_m2"]
    return float(hit.min()) if len(hit) else None


def break_bracket(table: pd.DataFrame, rate: float = BREAK_RATE) -> tuple[float | None, float | None]:
    """``(below, at)``: the largest swept area under ``rate`` departures that is smaller than the break area,
    and the break area (:func:`break_area`). The break area is known within the factor ``at / below``;
    ``(None, at)`` when the smallest area swept already breaks, ``(largest, None)`` when none does."""
    if table.empty or "departure_rate" not in table:
        return None, None
    at = break_area(table, rate)
    areas = pd.to_numeric(table["area_m2"])
    dep = pd.to_numeric(table["departure_rate"], errors="coerce")
    below = areas[(dep < rate) & (areas < at if at is not None else dep.notna())]
    return (float(below.max()) if len(below) else None), at


def interpolated_break_area(table: pd.DataFrame, rate: float = BREAK_RATE) -> float | None:
    """The area at which the departure rate crosses ``rate``, interpolated linearly in log(area) between the two
    swept sizes of :func:`break_bracket` (None unless both exist). Departures grow with area but are measured,
    so this is an estimate inside the bracket, not a measurement."""
    below, at = break_bracket(table, rate)
    if below is None or at is None:
        return None
    areas = pd.to_numeric(table["area_m2"])
    dep = pd.to_numeric(table["departure_rate"], errors="coerce")
    r0, r1 = float(dep[areas == below].iloc[0]), float(dep[areas == at].iloc[0])
    if r1 <= r0:
        return at
    f = (rate - r0) / (r1 - r0)
    return float(math.exp(math.log(below) + f * (math.log(at) - math.log(below))))


def draw_sweep(ax: Any, tables: Mapping[str, pd.DataFrame], breaks: Mapping[str, float | None] | None = None,
               drp_area_m2: float = DRP_AREA_M2, certified: Mapping[str, float] | None = None,
               title: str = "Lane departures vs sticker area",
               certified_curves: Mapping[str, pd.Series] | None = None) -> None:
    """Departure rate against sticker area (log scale) on ``ax``: per model its sticker (solid), its noise,
    grey and no-sticker controls (dashed) and its break area (a star), DRP's area, certified areas and
    certified shares.

    Args:
        ax: a matplotlib ``Axes``.
        tables: ``{model name: sweep table}`` (columns of :data:`SWEEP_COLUMNS`).
        breaks: ``{model name: break area}``; computed by :func:`break_area` for models not in it.
        drp_area_m2: DRP's painted area, marked by a labelled vertical line.
        certified: ``{label: area}`` of certified sticker areas (a defended model's), each marked.
        title: the plot's title.
        certified_curves: ``{label: certified accuracy by area}`` (a Series indexed by area in m², values in
            [0, 1]), each drawn in green on the same 0-100% axis: the share of frames on which no sticker of
            that area can move the defended model's output out of its certified interval.
    """
    breaks = dict(breaks or {})
    styles = {"departure_rate": ("-", "o", "sticker"), "noise_departure_rate": ("--", "x", "noise control"),
              "grey_departure_rate": ("--", "s", "grey control"), "no_sticker_departure_rate": ("--", "", "no sticker")}
    xs = [drp_area_m2, *(certified or {}).values()]
    for i, (name, t) in enumerate(tables.items()):
        colour = f"C{i}"
        xs += [float(a) for a in t["area_m2"]]
        for col, (ls, marker, label) in styles.items():
            if col in t and t[col].notna().any():
                ax.plot(t["area_m2"], 100 * pd.to_numeric(t[col]), ls, marker=marker or None, color=colour,
                        lw=1.6 if col == "departure_rate" else 1.0, alpha=1.0 if col == "departure_rate" else 0.55,
                        label=f"{name}: {label}")
        brk = breaks[name] if name in breaks else break_area(t)
        if brk is not None:
            at = pd.to_numeric(t.loc[t["area_m2"] == brk, "departure_rate"])
            ax.plot([brk], [100 * float(at.iloc[0]) if len(at) else 100 * BREAK_RATE], "*", ms=15, color=colour,
                    mec="k", label=f"{name}: breaks at {brk:g} m²")
    for label, curve in (certified_curves or {}).items():
        ax.plot(curve.index.astype(float), 100 * curve.astype(float), "-", marker="^", color="tab:green", lw=1.6,
                label=f"{label}: frames certified (%)")
        xs += [float(a) for a in curve.index]
    ax.axvline(drp_area_m2, color="k", lw=1, ls="-.")
    ax.text(drp_area_m2, 50, f"DRP paints ~{drp_area_m2:g} m² ", rotation=90, va="center", ha="right", fontsize=8)
    for label, area in (certified or {}).items():
        ax.axvline(area, color="tab:green", lw=1.2, ls="-.")
        ax.text(area, 3, f"{label} ", rotation=90, va="bottom", ha="right", fontsize=8, color="tab:green")
    ax.axhline(100 * BREAK_RATE, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    ticks = sorted({float(a) for t in tables.values() for a in t["area_m2"]})
    for a in sorted({float(a) for c in (certified_curves or {}).values() for a in c.index}):
        if all(abs(math.log(a / b)) > 0.2 for b in ticks):  # a certified area's tick, unless one is that close
            ticks = sorted([*ticks, a])
    ax.set_xticks(ticks, [f"{a:g}" for a in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sticker area (m², log scale)")
    ax.set_ylabel("approaches ending in a lane departure (%)" if not certified_curves
                  else "lane departures (%); green: frames certified (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")


def plot_sweep(tables: Mapping[str, pd.DataFrame], path: str | Path, drp_area_m2: float = DRP_AREA_M2,
               certified_area_m2: float | None = None, title: str = "Lane departures vs sticker area") -> Path:
    """:func:`draw_sweep` into the PNG ``path`` (written atomically; no pyplot state is touched).

    Args:
        tables: ``{model name: sweep table}`` (columns of :data:`SWEEP_COLUMNS`).
        path: the PNG to write.
        drp_area_m2: DRP's painted area, marked by a vertical line.
        certified_area_m2: the defended model's certified sticker area, marked when given.
        title: the plot's title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from drivenet_patch.storage.atomic import atomic_path

    fig = Figure(figsize=(7.0, 4.2))
    FigureCanvasAgg(fig)
    draw_sweep(fig.subplots(), tables, None, drp_area_m2,
               None if certified_area_m2 is None else {"certified": certified_area_m2}, title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


__all__ = [
    "ASPECTS",
    "BREAK_RATE",
    "DEFAULT_AREAS",
    "DRP_AREA_M2",
    "LINE_TEXELS",
    "LINE_WIDTH_M",
    "SWEEP_COLUMNS",
    "SWEEP_ROW_FIELDS",
    "break_area",
    "break_bracket",
    "draw_sweep",
    "interpolated_break_area",
    "parse_areas",
    "plot_sweep",
    "resumed_row",
    "size_text",
    "sticker_size",
    "sweep_row",
]
