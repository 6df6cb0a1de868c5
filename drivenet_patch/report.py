"""``pdn report``: one self-contained HTML page from the folders the toolkit writes.

Each input is recognised by its files (see :func:`detect_kind`): a training run, a closed-loop
drive, a sticker attack, a certify output, or a JSON benchmark file. The page
(``index.html``) holds sections Model, Drive, Attack, Defense and Benchmarks, each only when
its inputs were given; figures are PNG files next to it, each also saved as PDF for papers.
No network resources and no JavaScript: the folder can be zipped and mailed.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas), never through
``pyplot``, so no global backend or figure state is touched.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from drivenet_patch.errors import PDNError
from drivenet_patch.io import atomic_path, write_bytes, write_text

__all__ = ["SECTIONS", "build_report", "detect_kind"]

#: Section titles in page order, keyed by input kind.
SECTIONS: dict[str, str] = {"train": "Model", "drive": "Drive", "attack": "Attack", "certify": "Defense",
                            "bench": "Benchmarks"}

# Marker files per kind, checked in this order (a folder may hold several; the first wins).
_MARKERS: list[tuple[str, tuple[str, ...]]] = [
    ("attack", ("attack.json", "sticker.png")),
    ("certify", ("certify.json", "certify_frames.csv")),
    ("drive", ("drive.json", "drive_log.csv")),
    ("train", ("config.json", "metrics.csv")),
]
_TEXTURES = ("sticker", "noise", "grey")
_TEXTURE_COLOURS = {"sticker": "tab:red", "noise": "tab:blue", "grey": "tab:gray"}


def detect_kind(path: str | os.PathLike[str]) -> str:
    """Return the kind of a toolkit output: ``train``, ``drive``, ``attack``, ``certify`` or ``bench``.

    Raises:
        PDNError: the path does not exist, is empty, or holds none of the known file sets.
    """
    p = Path(path)
    if not p.exists():
        raise PDNError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() != ".json":
            raise PDNError(f"{p}: not a report input (expected a folder or a benchmark .json file)")
        return "bench"
    if not any(p.iterdir()):
        raise PDNError(f"{p}: empty folder")
    for kind, names in _MARKERS:
        if all((p / n).is_file() for n in names):
            return kind
    known = "; ".join(" + ".join(n) for _, n in _MARKERS)
    raise PDNError(f"{p}: not a toolkit output folder (expected one of: {known})")


def build_report(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``out/index.html`` and its figures from the toolkit outputs ``paths``.

    Args:
        paths: run, drive, attack or certify folders, or benchmark ``.json`` files.
        out: output folder (created).

    Returns:
        ``{"index": path of index.html, "figures": PNG file names in page order,
        "sections": section titles in page order, "inputs": [{"path", "kind"}, ...]}``.

    Raises:
        PDNError: no paths, or a path that is missing, empty or of unknown kind (checked for
        all paths before anything is written).
    """
    if not paths:
        raise PDNError("report: give at least one input folder or .json file")
    inputs = [(Path(p), detect_kind(p)) for p in paths]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = _Page(out)
    renderers: dict[str, Callable[[_Page, Path, str], str]] = {
        "train": _train_section, "drive": _drive_section, "attack": _attack_section,
        "certify": _certify_section, "bench": _bench_section}
    blocks: dict[str, list[str]] = {k: [] for k in SECTIONS}
    counts: dict[str, int] = dict.fromkeys(SECTIONS, 0)
    for path, kind in inputs:
        counts[kind] += 1
        blocks[kind].append(renderers[kind](page, path, f"{kind}{counts[kind]}"))
    sections = [SECTIONS[k] for k in SECTIONS if blocks[k]]
    body = "".join(f'<section id="{SECTIONS[k].lower()}"><h2>{SECTIONS[k]}</h2>{"".join(blocks[k])}</section>\n'
                   for k in SECTIONS if blocks[k])
    nav = " · ".join(f'<a href="#{s.lower()}">{s}</a>' for s in sections)
    index = out / "index.html"
    write_text(index, _HTML.format(title="PatchDriveNet report", nav=nav, body=body))
    return {"index": str(index), "figures": list(page.figures), "sections": sections,
            "inputs": [{"path": str(p), "kind": k} for p, k in inputs]}


# --------------------------------------------------------------------------------------------
# page helpers


class _Page:
    """Collects figures written into the output folder."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.figures: list[str] = []

    def figure(self, fig: Figure, name: str, caption: str) -> str:
        """Save ``fig`` as ``name.png`` and ``name.pdf``; return its HTML ``<figure>``."""
        FigureCanvasAgg(fig)
        fig.tight_layout()
        for ext in ("png", "pdf"):
            with atomic_path(self.out / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, dpi=120)
        self.figures.append(f"{name}.png")
        return (f'<figure><img src="{name}.png" alt="{html.escape(caption)}">'
                f'<figcaption>{html.escape(caption)} (<a href="{name}.pdf">PDF</a>)</figcaption></figure>')

    def copy_image(self, src: Path, name: str, caption: str, css: str = "") -> str:
        """Copy a PNG next to ``index.html``; return its HTML ``<figure>``."""
        write_bytes(self.out / name, src.read_bytes())
        style = f' style="{css}"' if css else ""
        return (f'<figure><img src="{name}" alt="{html.escape(caption)}"{style}>'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PDNError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PDNError(f"{path}: expected a JSON object")
    return obj


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PDNError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PDNError(f"{path}: missing columns {', '.join(missing)}")
    if df.empty:
        raise PDNError(f"{path}: no rows")
    return df


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k in sorted(obj):
        v = obj[k]
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def _head(path: Path) -> str:
    return f"<h3>{html.escape(str(path))}</h3>"


# --------------------------------------------------------------------------------------------
# sections


def _train_section(page: _Page, path: Path, tag: str) -> str:
    cfg = _read_json(path / "config.json")
    m = _read_csv(path / "metrics.csv", ["epoch", "train_loss", "val_rmse_deg"])
    parts = [_head(path)]
    best = m.loc[m["val_rmse_deg"].idxmin()]
    rows: list[tuple[str, Any]] = [("model", cfg.get("model", {}).get("name", "?")), ("epochs", len(m)),
                                   ("final val RMSE (deg)", float(m["val_rmse_deg"].iloc[-1])),
                                   ("best val RMSE (deg)", f"{best['val_rmse_deg']:.4g} (epoch {int(best['epoch'])})")]
    if "val_zero_rmse_deg" in m.columns:
        rows.append(("predict-zero RMSE (deg)", float(m["val_zero_rmse_deg"].iloc[-1])))

    fig = Figure(figsize=(9, 3.4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(m["epoch"], m["train_loss"], marker="o")
    ax1.set(xlabel="epoch", ylabel="train loss", title="Training loss", yscale="log")
    ax2.plot(m["epoch"], m["val_rmse_deg"], marker="o", label="model")
    if "val_zero_rmse_deg" in m.columns:
        ax2.plot(m["epoch"], m["val_zero_rmse_deg"], ls="--", c="grey", label="predict 0")
    ax2.set(xlabel="epoch", ylabel="val RMSE (deg)", title="Validation RMSE")
    ax2.legend()
    figs = [page.figure(fig, f"{tag}_curves", "Training loss and validation steering RMSE per epoch")]

    pred_path = path / "predictions.csv"
    if pred_path.is_file():
        p = _read_csv(pred_path, ["steering_deg", "predicted_deg"])
        err = p["predicted_deg"] - p["steering_deg"]
        rows += [("eval frames", len(p)), ("eval MAE (deg)", float(err.abs().mean())),
                 ("eval RMSE (deg)", float(np.sqrt((err ** 2).mean())))]
        fig = Figure(figsize=(4.6, 4.4))
        ax = fig.subplots()
        ax.scatter(p["steering_deg"], p["predicted_deg"], s=4, alpha=0.4)
        lo = float(min(p["steering_deg"].min(), p["predicted_deg"].min()))
        hi = float(max(p["steering_deg"].max(), p["predicted_deg"].max()))
        ax.plot([lo, hi], [lo, hi], c="k", lw=0.8, label="y = x")
        ax.set(xlabel="true steering (deg)", ylabel="predicted (deg)", title=f"Prediction vs truth (n={len(p)})")
        ax.set_aspect("equal")
        ax.legend()
        figs.append(page.figure(fig, f"{tag}_scatter", "Predicted vs true steering angle on the eval set"))
    parts += [_table(rows), '<div class="figs">', *figs, "</div>"]
    return "".join(parts)


def _drive_section(page: _Page, path: Path, tag: str) -> str:
    d = _read_json(path / "drive.json")
    log = _read_csv(path / "drive_log.csv", ["road", "t", "x", "y", "offset_m"])
    keys = ["autonomy_pct", "distance_km", "roads", "interventions", "departures", "mean_abs_offset_m",
            "max_abs_offset_m", "mean_abs_steer_error_deg", "model", "sticker"]
    rows = [(k, d[k]) for k in keys if k in d]
    auto = d.get("autonomy_pct")
    lead = f'<p class="big">Autonomy: {_fmt(auto)} %</p>' if auto is not None else ""

    roads = sorted(log["road"].unique())
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for r in roads:
        g = log[log["road"] == r]
        ax.plot(g["x"], g["y"], lw=1, label=f"road {r}")
        if "intervention" in g.columns:
            hit = g[g["intervention"].astype(str).str.lower() == "true"]
            ax.scatter(hit["x"], hit["y"], marker="x", c="r", s=25, zorder=3)
    ax.set(xlabel="x (m)", ylabel="y (m)", title="Top-down trajectories (x = intervention)")
    ax.set_aspect("equal", adjustable="datalim")
    if len(roads) <= 12:
        ax.legend(fontsize=7, loc="best")
    figs = [page.figure(fig, f"{tag}_trajectory", "Closed-loop trajectories seen from above, one line per road")]

    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    for r in roads:
        g = log[log["road"] == r]
        ax.plot(g["t"], g["offset_m"], lw=0.7, label=f"road {r}")
    lim = d.get("config", {}).get("intervention_m")
    if lim:
        for s in (-1, 1):
            ax.axhline(s * lim, c="r", ls="--", lw=0.8)
    ax.set(xlabel="time (s)", ylabel="lane offset (m)", title="Lateral offset from the lane centre")
    figs.append(page.figure(fig, f"{tag}_offset", "Lane offset over time per road (dashed: intervention limit)"))
    return "".join([_head(path), lead, _table(rows), '<div class="figs">', *figs, "</div>"])


def _attack_section(page: _Page, path: Path, tag: str) -> str:
    a = _read_json(path / "attack.json")
    cfg = a.get("attack", {})
    rows = [(k, cfg[k]) for k in ("target", "angle_deg", "loss", "steps", "texture_hw", "nps_weight", "tv_weight")
            if k in cfg]
    if "distance_m" in a:
        rows.append(("distance_m", a["distance_m"]))
    parts = [_head(path), _table(rows), '<div class="figs">']
    pix = "image-rendering: pixelated; width: 336px"
    parts.append(page.copy_image(path / "sticker.png", f"{tag}_sticker.png", "The optimised sticker", pix))
    if (path / "sticker_palette.png").is_file():
        parts.append(page.copy_image(path / "sticker_palette.png", f"{tag}_sticker_palette.png",
                                     "Print preview: the sticker snapped to the printer palette", pix))
    parts.append("</div>")
    if (path / "examples.png").is_file():
        parts.append(page.copy_image(path / "examples.png", f"{tag}_examples.png",
                                     "Frames before and after, with predicted steering", "max-width: 100%"))

    ev_path = path / "eval.json"
    if ev_path.is_file():
        ev = _read_json(ev_path)
        cols = ["mean_dev_deg", "success_rate", "departure_rate"]
        trows = [["sticker", *(ev.get(c) for c in cols)]]
        for name in ("noise", "grey"):
            ctrl = ev.get(f"control_{name}")
            if isinstance(ctrl, dict):
                trows.append([f"control: {name}", *(ctrl.get(c) for c in cols)])
        parts += ["<h4>Attack vs controls</h4>", _table(trows, ["texture", *cols]),
                  f"<p>success = deviation toward the target above {_fmt(ev.get('threshold_deg'))} deg; "
                  f"{_fmt(ev.get('n_frames'))} frames, {_fmt(ev.get('n_approaches'))} closed-loop approaches.</p>"]

    figs: list[str] = []
    hist_path = path / "history.csv"
    if hist_path.is_file():
        h = _read_csv(hist_path, ["step", "deviation_deg"])
        fig = Figure(figsize=(5.5, 3.4))
        ax = fig.subplots()
        ax.plot(h["step"], h["deviation_deg"], lw=0.8, alpha=0.5, label="per step")
        ax.plot(h["step"], h["deviation_deg"].rolling(10, min_periods=1).mean(), lw=1.6, label="10-step mean")
        ax.set(xlabel="step", ylabel="deviation toward target (deg)", title="Sticker optimisation")
        ax.legend()
        figs.append(page.figure(fig, f"{tag}_optimisation", "Deviation toward the target during optimisation"))

    frames_path = path / "eval_frames.csv"
    if frames_path.is_file():
        f = _read_csv(frames_path, ["texture", "distance_m", "delta_deg", "deviation_deg", "success"])
        present = [t for t in _TEXTURES if t in set(f["texture"])] + sorted(set(f["texture"]) - set(_TEXTURES))
        edges = np.linspace(f["distance_m"].min(), f["distance_m"].max() + 1e-9, 9)
        mids = (edges[:-1] + edges[1:]) / 2
        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.subplots()
        for t in present:
            g = f[f["texture"] == t]
            c = _TEXTURE_COLOURS.get(t)
            ax.scatter(g["distance_m"], g["deviation_deg"], s=5, alpha=0.25, color=c)
            binned = g.groupby(pd.cut(g["distance_m"], edges, include_lowest=True), observed=False)["deviation_deg"]
            ax.plot(mids, binned.mean().to_numpy(), marker="o", color=c, label=t)
        ax.axhline(0, c="k", lw=0.6)
        ax.set(xlabel="distance to sticker (m)", ylabel="deviation toward target (deg)",
               title="Deviation vs distance")
        ax.legend()
        figs.append(page.figure(fig, f"{tag}_distance",
                                "Deviation toward the target vs distance (dots: frames, lines: binned mean)"))

        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.subplots()
        bins = np.linspace(f["delta_deg"].min(), f["delta_deg"].max() + 1e-9, 40)
        for t in present:
            ax.hist(f.loc[f["texture"] == t, "delta_deg"], bins=bins, alpha=0.55,
                    color=_TEXTURE_COLOURS.get(t), label=t)
        ax.set(xlabel="steering change vs clean (deg)", ylabel="frames", title="Steering change per texture")
        ax.legend()
        figs.append(page.figure(fig, f"{tag}_delta_hist", "Histogram of the steering change caused by each texture"))
    if figs:
        parts += ['<div class="figs">', *figs, "</div>"]
    return "".join(parts)


def _certify_section(page: _Page, path: Path, tag: str) -> str:
    c = _read_json(path / "certify.json")
    fr = _read_csv(path / "certify_frames.csv", ["lo_deg", "hi_deg"])
    keys = ["certified_acc", "clean_acc", "violations", "delta_deg", "patch_spec", "patch", "aggregate", "mae_deg",
            "median_halfwidth_deg", "n", "attack_runs", "attack_max_shift_deg", "sticker_certified",
            "sticker_frames", "sticker_violations"]
    parts = [_head(path), _table([(k, c[k]) for k in keys if k in c])]
    figs: list[str] = []

    sweep_path = path / "sweep.csv"
    if sweep_path.is_file():
        s = _read_csv(sweep_path, ["patch", "ph", "pw", "aggregate", "certified_acc", "delta_deg"])
        s = s.assign(area=s["ph"] * s["pw"])
        agg = c.get("aggregate") if c.get("aggregate") in set(s["aggregate"]) else s["aggregate"].iloc[0]
        sa = s[s["aggregate"] == agg]
        patches = sa.sort_values("area").drop_duplicates("patch")
        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.subplots()
        for i, (_, pr) in enumerate(patches.iterrows()):  # markers and dashes keep equal lines visible
            g = sa[sa["patch"] == pr["patch"]].sort_values("delta_deg")
            ax.plot(g["delta_deg"], g["certified_acc"], marker="osD^v"[i % 5], ms=9 - i, ls=["-", "--", ":"][i % 3],
                    label=f"{pr['patch']} ({pr['ph']}x{pr['pw']} px)")
        ax.set(xlabel="tolerance delta (deg)", ylabel="certified accuracy", ylim=(0, 1.02),
               title=f"Certified accuracy vs delta ({agg})")
        ax.legend(fontsize=8, title="patch")
        figs.append(page.figure(fig, f"{tag}_vs_delta", "Certified accuracy vs tolerance delta, one line per patch size"))

        deltas = np.sort(s["delta_deg"].unique())
        d0 = float(deltas[np.argmin(np.abs(deltas - float(c.get("delta_deg", deltas[len(deltas) // 2]))))])
        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.subplots()
        order = s.sort_values("area").drop_duplicates("patch")
        rank = {p: i for i, p in enumerate(order["patch"])}  # x = rank of the patch area
        for i, a in enumerate(s["aggregate"].unique()):
            g = s[(s["aggregate"] == a) & np.isclose(s["delta_deg"], d0)].sort_values("area")
            ax.plot([rank[p] for p in g["patch"]], g["certified_acc"], marker="osD^v"[i % 5], ms=9 - i,
                    ls=["-", "--", ":"][i % 3], label=a)
        ax.set_xticks(range(len(order)), [f"{p}\n{h}x{w}" for p, h, w in zip(order["patch"], order["ph"], order["pw"])])
        ax.set(xlabel="patch size (share of image, px)", ylabel="certified accuracy", ylim=(0, 1.02),
               title=f"Certified accuracy vs patch size (delta = {d0:.3g} deg)")
        ax.legend(fontsize=8, title="aggregate")
        figs.append(page.figure(fig, f"{tag}_vs_patch", "Certified accuracy vs patch size, one line per aggregate"))

    half = (fr["hi_deg"] - fr["lo_deg"]) / 2
    half = half[np.isfinite(half)]
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.hist(half, bins=40)
    ax.axvline(float(half.median()), c="k", ls="--", label=f"median {half.median():.3g} deg")
    if "delta_deg" in c:
        ax.axvline(float(c["delta_deg"]), c="r", ls=":", label=f"delta {float(c['delta_deg']):.3g} deg")
    ax.set(xlabel="certified interval half-width (deg)", ylabel="frames", title=f"Interval widths (n={len(half)})")
    ax.legend()
    figs.append(page.figure(fig, f"{tag}_halfwidth", "Histogram of certified interval half-widths"))
    parts += ['<div class="figs">', *figs, "</div>"]
    return "".join(parts)


def _bench_section(page: _Page, path: Path, tag: str) -> str:
    del page, tag  # a table only
    return _head(path) + _table(_flatten(_read_json(path)), ["key", "value"])


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 0.9em; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0.5em 0; }} figure img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }} .big {{ font-size: 1.4em; font-weight: bold; }}
</style></head>
<body><h1>{title}</h1><nav>{nav}</nav>
{body}</body></html>
"""
