"""The section "Certified in metres": ``pdn certify --physical`` folders.

A physical certify folder (``certify.json`` with a ``threat``) says which road (or billboard) stickers
of W x L metres, anywhere in a distance / lateral / yaw range, cannot move PatchVote's steering by more
than delta. This module turns it into the sentence a user wants (:func:`headline`: the largest swept
area certified on at least :data:`CERTIFIED_TARGET` of the frames, or honestly that none is), the
certified accuracy against sticker area (``sweep_physical.csv``, both aspects) and against distance,
and a picture of the threat's touch sets over one world frame (computed again here with
:mod:`defenses.physical` from the model's layout). Several folders (models, layouts) share the plots.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from drivenet_patch.app.report.page import Page, fmt, html_table, load_csv, load_json, model_name
from drivenet_patch.safety.errors import PDNError

__all__ = ["CERTIFIED_TARGET", "METRES_TITLE", "Physical", "certified_area", "headline", "is_physical",
           "metres_section", "read_physical"]

METRES_TITLE = "Certified in metres"
#: The share of frames a sticker area must be certified on for the headline to call it certified.
CERTIFIED_TARGET = 0.8
_SWEEP_COLUMNS = ("area_m2", "aspect", "width_m", "length_m", "certified_acc", "delta_deg")


def is_physical(path: Path) -> bool:
    """True for a certify folder made with ``--physical`` (its ``certify.json`` has a ``threat`` object)."""
    try:
        return isinstance(load_json(path / "certify.json").get("threat"), dict)
    except PDNError:
        return False


@dataclass(frozen=True)
class Physical:
    """One physical certify folder, read.

    Attributes:
        path: the folder.
        label: model name and folder name, for legends.
        cert: ``certify.json``.
        threat: its ``threat`` object.
        sweep: ``sweep_physical.csv`` at the run's delta (None without ``--sweep``).
        area_m2: the largest area certified on >= :data:`CERTIFIED_TARGET` of the frames (None: none is).
        acc: the certified accuracy at ``area_m2`` (or at the run's own threat when no area qualifies).
        sentence: :func:`headline`.
    """

    path: Path
    label: str
    cert: dict[str, Any]
    threat: dict[str, Any]
    sweep: pd.DataFrame | None
    area_m2: float | None
    acc: float | None
    sentence: str


def _at_delta(sweep: pd.DataFrame, delta: float | None) -> pd.DataFrame:
    """The sweep's rows at the tolerance nearest ``delta`` (the run's own delta is one of the swept ones)."""
    deltas = np.sort(sweep["delta_deg"].astype(float).unique())
    d0 = deltas[len(deltas) // 2] if delta is None else deltas[np.argmin(np.abs(deltas - float(delta)))]
    return sweep[np.isclose(sweep["delta_deg"].astype(float), d0)].sort_values(["area_m2", "aspect"])


def _by_area(sweep: pd.DataFrame) -> pd.Series:
    """Certified accuracy per area: the worse of the two aspects (a sticker of that area either way round)."""
    return sweep.groupby("area_m2")["certified_acc"].min().sort_index()


def certified_area(cert: dict[str, Any], sweep: pd.DataFrame | None,
                   target: float = CERTIFIED_TARGET) -> tuple[float | None, float | None]:
    """``(X, acc)``: the largest swept area X such that every swept area up to X is certified on at least
    ``target`` of the frames (both aspects), and its certified accuracy; ``(None, None)`` when the smallest
    is not. Without a sweep the run's own threat is the only size: ``(its area, acc)`` or ``(None, None)``."""
    if sweep is None or sweep.empty:
        acc = cert.get("certified_acc")
        t = cert.get("threat") or {}
        if isinstance(acc, (int, float)) and acc >= target:
            return float(t.get("width_m", 0)) * float(t.get("length_m", 0)), float(acc)
        return None, None
    area, acc = None, None
    for a, v in _by_area(sweep).items():
        if not v >= target:  # "up to X": the first size below the target ends the run (NaN too)
            break
        area, acc = float(a), float(v)
    return area, acc


def _where(t: dict[str, Any]) -> tuple[str, str]:
    """``("at 5-30 m ahead", "lateral -2.5 to 2.5 m, yaw up to ±15 deg")`` of a threat object."""
    d, lat = t.get("distance_m") or [], t.get("lateral_m") or []
    ahead = f"at {d[0]:g}-{d[1]:g} m ahead" if len(d) == 2 else "anywhere ahead"
    detail = []
    if len(lat) == 2:
        detail.append(f"lateral {lat[0]:g} to {lat[1]:g} m")
    if t.get("yaw_deg") is not None:
        detail.append(f"yaw up to ±{float(t['yaw_deg']):g} deg")
    return ahead, ", ".join(detail)


def _pct(v: Any) -> str:
    return "n/a" if v is None or not np.isfinite(float(v)) else f"{100 * float(v):.0f}%"


def headline(cert: dict[str, Any], sweep: pd.DataFrame | None, target: float = CERTIFIED_TARGET) -> str:
    """The sentence of the section and the summary.

    "Certified against any road sticker up to X m² at 5-30 m ahead (lateral ..., yaw ...), at delta = D deg,
    on N% of held-out frames", X the largest swept area certified on >= ``target`` of the frames; when none
    is, it says so with the share at the run's own size.
    """
    t = cert.get("threat") or {}
    place, (ahead, detail) = t.get("place", "road"), _where(t)
    delta, n = cert.get("delta_deg"), cert.get("n", "?")
    d = "n/a" if delta is None else f"{float(delta):.2f}"
    w, length = float(t.get("width_m", float("nan"))), float(t.get("length_m", float("nan")))
    area, acc = certified_area(cert, sweep, target)
    swept = sweep is not None and not sweep.empty
    if area is not None:
        shape = "long side along or across the road" if swept else f"{w:g} x {length:g} m"
        inside = ", ".join(x for x in (detail, shape) if x)
        return (f"Certified against any {place} sticker up to {area:g} m² {ahead} ({inside}), at delta = {d} deg, "
                f"on {_pct(acc)} of {n} held-out frames.")
    own = _pct(cert.get("certified_acc"))
    where = ", ".join(x for x in (f"any {place} sticker {ahead}", detail, f"delta = {d} deg") if x)
    if swept:
        by_area = _by_area(sweep)
        return (f"No swept area is certified on >= {100 * target:.0f}% of frames; at {w:g}x{length:g} m it is {own} "
                f"(at the smallest, {float(by_area.index[0]):g} m², {_pct(by_area.iloc[0])}; {where}; {n} held-out "
                "frames).")
    return (f"The {w:g}x{length:g} m sticker is certified on {own} of {n} held-out frames ({where}), below "
            f"{100 * target:.0f}%; no other sizes were swept (pdn certify --sweep).")


def read_physical(paths: Sequence[Path]) -> list[Physical]:
    """The physical certify folders ``paths``, read (one-line errors naming the file)."""
    out = []
    for p in paths:
        c = load_json(p / "certify.json")
        name, t = model_name(c.get("model")), c.get("threat")
        if not isinstance(t, dict):
            raise PDNError(f"{p / 'certify.json'}: no physical threat (made without pdn certify --physical)")
        sweep = None
        if (p / "sweep_physical.csv").is_file():
            sweep = _at_delta(load_csv(p / "sweep_physical.csv", _SWEEP_COLUMNS), c.get("delta_deg"))
        area, acc = certified_area(c, sweep)
        if area is None:
            acc = c.get("certified_acc")
        out.append(Physical(p, f"{name} ({p.name})" if len(paths) > 1 else name, c, t, sweep, area, acc,
                            headline(c, sweep)))
    return out


def metres_section(page: Page, paths: Sequence[Path]) -> str:
    """The section's HTML: per folder its sentence and numbers, then the shared figures."""
    if not paths:
        return ""
    found = read_physical(paths)
    parts = []
    for ph in found:
        c, t = ph.cert, ph.threat
        rows: list[tuple[str, Any]] = [
            ("model", c.get("model")),
            ("threat", f"{t.get('place', 'road')} sticker {fmt(t.get('width_m'))} x {fmt(t.get('length_m'))} m"),
            ("distance ahead (m)", t.get("distance_m")), ("lateral (m)", t.get("lateral_m")),
            ("yaw up to (deg)", t.get("yaw_deg")), ("delta (deg)", c.get("delta_deg")),
            ("frames", f"{fmt(c.get('n'))} ({c.get('source', '?')})"), ("certified_acc", c.get("certified_acc")),
            ("clean_acc", c.get("clean_acc")),
            ("regions touched (k_max of N)", f"{fmt(c.get('k_max'))} of {fmt(c.get('n_regions'))}"),
            ("maximal touch sets", c.get("n_sets")), ("covering grid (m)", c.get("spacing_m")),
            ("pixel margin", c.get("margin_px"))]
        parts += [f"<h3>{html.escape(str(ph.path))}</h3>", f"<p><b>{html.escape(ph.sentence)}</b></p>",
                  html_table([r for r in rows if r[1] is not None])]
    figs = [f for f in (_vs_area(page, found), _vs_distance(page, found)) if f]
    touch, notes = _touch_figure(page, found)
    figs += [touch] if touch else []
    parts += ['<div class="figs">', *figs, "</div>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    return "".join(parts)


def _vs_area(page: Page, found: list[Physical]) -> str:
    swept = [ph for ph in found if ph.sweep is not None]
    if not swept:
        return ""
    fig = Figure(figsize=(6.2, 3.9))
    ax = fig.subplots()
    for i, ph in enumerate(swept):
        s = ph.sweep
        for aspect, ls, mk in (("along", "-", "o"), ("across", "--", "s")):
            g = s[s["aspect"] == aspect]
            if len(g):
                ax.plot(g["area_m2"], g["certified_acc"], ls=ls, marker=mk, color=f"C{i}",
                        label=f"{ph.label}: long side {aspect} the road")
        own, t = ph.cert.get("certified_acc"), ph.threat
        if isinstance(own, (int, float)):
            ax.plot([float(t["width_m"]) * float(t["length_m"])], [own], "*", ms=14, color=f"C{i}", mec="k",
                    label=f"{ph.label}: the run's {fmt(t['width_m'])} x {fmt(t['length_m'])} m")
        if ph.area_m2 is not None:
            ax.axvline(ph.area_m2, color=f"C{i}", lw=1, ls="-.")
            ax.text(ph.area_m2, 0.03, f" certified up to {ph.area_m2:g} m²", rotation=90, fontsize=7, va="bottom",
                    color=f"C{i}")
    ax.axhline(CERTIFIED_TARGET, color="grey", lw=0.8, ls=":")
    deltas = ", ".join(dict.fromkeys(f"{float(ph.sweep['delta_deg'].iloc[0]):.2f}" for ph in swept))  # once each
    ax.set(xscale="log", xlabel="sticker area (m², log scale)", ylabel="certified accuracy", ylim=(-0.02, 1.02),
           title=f"Certified accuracy vs sticker area (delta = {deltas} deg)")
    ax.legend(fontsize=7)
    return page.figure(fig, "metres_vs_area", f"Share of held-out frames certified against every sticker of each "
                                              f"area (both aspects, 1:1.75) anywhere in the threat region; dotted: "
                                              f"{100 * CERTIFIED_TARGET:.0f}%, star: the run's own sticker")


def _vs_distance(page: Page, found: list[Physical]) -> str:
    rows = [(ph, ph.cert.get("certified_acc_by_distance")) for ph in found]
    rows = [(ph, d) for ph, d in rows if isinstance(d, dict) and d]
    if not rows:
        return ""
    fig = Figure(figsize=(6.2, 3.9))
    ax = fig.subplots()
    width = 0.8 / len(rows)
    bins = sorted({k for _, d in rows for k in d}, key=lambda k: float(str(k).split("-")[0]))
    x = np.arange(len(bins))
    for i, (ph, d) in enumerate(rows):
        vals = np.array([float(d[b]) if d.get(b) is not None else np.nan for b in bins])
        bars = ax.bar(x + (i - (len(rows) - 1) / 2) * width, np.nan_to_num(vals), width=width, color=f"C{i}",
                      label=ph.label)
        ax.bar_label(bars, labels=[_pct(v) for v in vals], fontsize=7)
    ax.set_xticks(x, [f"{b} m" for b in bins])
    ax.set(xlabel="distance of the sticker's centre ahead of the camera", ylabel="certified accuracy",
           ylim=(0, 1.1), title="Certified accuracy by distance (the run's sticker)")
    ax.legend(fontsize=7)
    return page.figure(fig, "metres_vs_distance", "Share of frames certified against the stickers of each distance "
                                                  "bin alone: near stickers cover more of the image")


def _touch_figure(page: Page, found: list[Physical]) -> tuple[str, list[str]]:
    """The threat's footprints (orange: the union over its covering) and the model's regions (white) over one
    world frame, the maximal touch set with the most regions outlined in red; one panel per folder."""
    panels, notes = [], []
    for ph in found:
        try:
            panels.append((ph, _touch_panel_data(ph)))
        except PDNError as exc:
            notes.append(f"Touch sets of {ph.path} not drawn: {exc}")
    if not panels:
        return "", notes
    fig = Figure(figsize=(5.6 * len(panels), 3.0))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (ph, (img, union, boxes, best, k, n_sets, context)) in zip(axes, panels):
        overlay = np.zeros((*union.shape, 4))
        overlay[union] = (1.0, 0.55, 0.0, 0.5)
        if context is not None:  # the pixels every vote reads besides its own box
            overlay[context & ~union] = (0.0, 0.75, 1.0, 0.35)
        ax.imshow(img)
        ax.imshow(overlay)
        _outline(ax, boxes, np.ones(len(boxes), bool), "white", 0.7)
        _outline(ax, boxes, best, "red", 2.0)
        t = ph.threat
        ax.set_title(f"{ph.label}: {fmt(t['width_m'])} x {fmt(t['length_m'])} m touches <= {k} of {len(boxes)} "
                     f"regions\n({n_sets} maximal sets; red: one with {int(best.sum())})", fontsize=8)
        ax.axis("off")
    sources = {str(ph.cert.get("source", "world")) for ph, _ in panels}
    caption = ("Where the threat's stickers can land in the model's input (orange: the union of the footprints of "
               "the covering), the model's regions (white) and the largest set of regions one sticker can touch "
               "(red), over a world frame at the model's input size")
    if any(data[-1] is not None for _, data in panels):
        caption += ("; blue: the context a patchvote_road model's votes all read besides their own region (pixels "
                    "no sticker of the threat its context was cut for can reach), so each vote's dependency set is "
                    "its white box plus the blue")
    if sources != {"world"}:
        caption += ("; drawn for the world camera: a certificate over a dataset used its camera, whose footprints "
                    "differ")
    return page.figure(fig, "metres_touch_sets", caption), notes


def _touch_panel_data(ph: Physical) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, Any]:
    """(frame (H, W, 3), footprint union (H, W), region boxes (N, 4), largest maximal set (N,), k_max, sets,
    the context every vote reads (H, W) or None)."""
    import torch

    from defenses.physical import ImageGeometry, PhysicalThreat, cell_boxes, footprint_mask, physical_touch
    from defenses.regions import maximal_touch_sets
    from drivenet_patch.models.checkpoint import load_model
    from drivenet_patch.models.zoo import is_zoo_ref
    from drivenet_patch.world import Renderer, Road

    run = ph.cert.get("model")
    if not run or not (is_zoo_ref(run) or Path(str(run)).is_dir()):
        raise PDNError(f"its model folder {run!r} is not here")
    model = load_model(str(run))
    if not hasattr(model, "layout"):
        raise PDNError(f"{run} holds a {model.name} model, not a PatchVote")
    fields = {f.name for f in dataclasses.fields(PhysicalThreat)}
    threat = PhysicalThreat(**{k: v for k, v in ph.threat.items() if k in fields})
    size = tuple(int(v) for v in model.input_size)
    geom = dataclasses.replace(ImageGeometry.world(size), margin_px=float(ph.cert.get("margin_px", 0.5)))
    spacing = float(ph.cert.get("spacing_m", 0.25))
    touch = physical_touch(threat, geom, model.layout, spacing)
    sets = maximal_touch_sets(touch.touch)
    best = sets[int(sets.sum(1).argmax())].numpy()
    union = np.zeros(size, bool)
    for box in cell_boxes(threat, spacing)[0]:
        union |= footprint_mask(box, geom)
    road = Road.straight(200.0)
    with torch.no_grad():
        img = Renderer(geom.camera).render(road, road.pose_at(20.0)[None]).image[0]
    k = int(ph.cert.get("k_max", int(touch.touch.sum(1).max())))
    context = getattr(model.layout, "context", None)
    return (img.permute(1, 2, 0).numpy(), union, np.asarray(model.layout.boxes()), best, k, int(sets.shape[0]),
            None if context is None else context.numpy())


def _outline(ax: Any, boxes: np.ndarray, which: np.ndarray, colour: str, lw: float) -> None:
    """Region rectangles, each inset by a staggered pixel or two so overlapping ones stay apart."""
    from matplotlib.patches import Rectangle

    for i, (y0, x0, y1, x1) in enumerate(boxes):
        if which[i]:
            inset = 0.5 + 3 * (i % 2)  # neighbours of a band layout overlap: alternate heights
            ax.add_patch(Rectangle((x0 - 0.5 + inset, y0 - 0.5 + inset), x1 - x0 - 2 * inset, y1 - y0 - 2 * inset,
                                   fill=False, ec=colour, lw=lw))
