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
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from drivenet_patch.errors import PDNError
from drivenet_patch.inputs import read_json
from drivenet_patch.io import atomic_path, replace_folder, write_bytes, write_json, write_text
from drivenet_patch.report_summary import summarize, summary_html

__all__ = ["SECTIONS", "build_report", "detect_kind"]

#: Section title of each input kind; sections appear in the order of their first kind here.
SECTIONS: dict[str, str] = {"data": "Data", "train": "Model", "saliency": "Model", "drive": "Model",
                            "attack": "Attack", "certify": "Defense", "bench": "Benchmarks"}

# Marker files per kind, checked in this order (a folder may hold several; the first wins).
# A folder with none of them that holds a dataset of a known format is a "data" input.
_MARKERS: list[tuple[str, tuple[str, ...]]] = [
    ("attack", ("attack.json", "sticker.png")),
    ("certify", ("certify.json", "certify_frames.csv")),
    ("drive", ("drive.json", "drive_log.csv")),
    ("train", ("config.json", "metrics.csv")),
    ("saliency", ("saliency.json", "saliency_grid.png")),
]
_TEXTURES = ("sticker", "noise", "grey")
_TEXTURE_COLOURS = {"sticker": "tab:red", "noise": "tab:blue", "grey": "tab:gray"}


def detect_kind(path: str | os.PathLike[str]) -> str:
    """Return the kind of an input: ``data``, ``train``, ``saliency``, ``drive``, ``attack``, ``certify`` or
    ``bench``.

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
    from drivenet_patch.data import detect_format

    try:
        detect_format(p)
        return "data"
    except PDNError:
        pass
    known = "; ".join(" + ".join(n) for _, n in _MARKERS)
    raise PDNError(f"{p}: not a toolkit output folder or dataset (expected one of: {known}; or a dataset)")


def build_report(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 notes: Sequence[str] = ()) -> dict[str, Any]:
    """Write ``out/index.html``, ``out/summary.json`` and the figures from the toolkit outputs ``paths``.

    Args:
        paths: run, drive, attack or certify folders, or benchmark ``.json`` files.
        out: output folder (created).
        notes: sentences about how the inputs were made, shown under the summary.

    Returns:
        ``{"index": path of index.html, "summary": path of summary.json (the findings the page opens with,
        :func:`drivenet_patch.report_summary.summarize`), "figures": PNG file names in page order,
        "sections": section titles in page order (after the summary), "inputs": [{"path", "kind"}, ...]}``.

    Raises:
        PDNError: no paths, or a path that is missing, empty or of unknown kind (checked for
        all paths before anything is written).
    """
    if not paths:
        raise PDNError("report: give at least one input folder or .json file")
    inputs = [(Path(p), detect_kind(p)) for p in paths]
    out = Path(out)
    # Built in a staging folder beside ``out`` and swapped in whole: a failure or a kill at any moment
    # leaves the previous report as it was (never new figures under an old index.html).
    with replace_folder(out, _is_report_file, "a report") as staging:
        figures, sections = _write_report(inputs, staging, notes)
    return {"index": str(out / "index.html"), "summary": str(out / "summary.json"), "figures": figures,
            "sections": sections, "inputs": [{"path": str(p), "kind": k} for p, k in inputs]}


def _is_report_file(name: str) -> bool:
    """True for the files :func:`build_report` writes (index.html, summary.json, PNG and PDF figures)."""
    return name in ("index.html", "summary.json") or name.lower().endswith((".png", ".pdf"))


def _write_report(inputs: list[tuple[Path, str]], out: Path, notes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Write index.html, summary.json and the figures of ``inputs`` (path, kind) into ``out``; (figures, sections)."""
    page = _Page(out)
    renderers: dict[str, Callable[[_Page, Path, str], str]] = {
        "data": _data_section, "train": _train_section, "saliency": _saliency_section, "drive": _drive_section,
        "attack": _attack_section, "certify": _certify_section, "bench": _bench_section}
    titles = list(dict.fromkeys(SECTIONS.values()))
    blocks: dict[str, list[str]] = {t: [] for t in titles}
    counts: dict[str, int] = dict.fromkeys(SECTIONS, 0)
    for kind in SECTIONS:  # page order: by kind, then in the order given
        for path, k in inputs:
            if k == kind:
                counts[kind] += 1
                blocks[SECTIONS[kind]].append(renderers[kind](page, path, f"{kind}{counts[kind]}"))
    attack_rows = _attack_rows([p for p, k in inputs if k == "attack"])  # read once, used by three blocks
    blocks["Model"].append(_model_comparison([p for p, k in inputs if k == "train"],
                                             [p for p, k in inputs if k == "drive"], attack_rows))
    blocks["Attack"].append(_attack_summary(page, attack_rows))
    blocks["Defense"].append(_defended_vs_undefended(page, attack_rows))
    sections = [t for t in titles if any(blocks[t])]
    body = "".join(f'<section id="{t.lower()}"><h2>{t}</h2>{"".join(blocks[t])}</section>\n'
                   for t in sections)
    summary = summarize(inputs, notes)
    head = summary_html(summary)
    nav = " · ".join(f'<a href="#{s.lower()}">{s}</a>' for s in (["Summary"] if head else []) + sections)
    write_json(out / "summary.json", summary)
    write_text(out / "index.html", _HTML.format(title="PatchDriveNet report", nav=nav, body=head + body))
    return list(page.figures), sections




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
    obj = read_json(path)
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
    rows: list[tuple[str, Any]] = [(k, a[k]) for k in ("model", "size_m") if k in a]
    rows += [(k, cfg[k]) for k in ("target", "angle_deg", "loss", "steps", "texture_hw", "nps_weight", "tv_weight")
             if k in cfg]
    # the variants that change what the sticker is, only when used
    rows += [(k, cfg[k]) for k in ("saliency_weight", "dirt") if cfg.get(k)]
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
        if isinstance(ev.get("no_sticker"), dict):
            trows.append(["no sticker", None, None, ev["no_sticker"].get("departure_rate")])
        parts += ["<h4>Attack vs controls</h4>", _table(trows, ["texture", *cols]),
                  f"<p>success = deviation toward the target above {_fmt(ev.get('threshold_deg'))} deg; "
                  f"{_fmt(ev.get('n_frames'))} frames, {_fmt(ev.get('n_approaches'))} closed-loop approaches.</p>"]

    figs: list[str] = []
    if ev_path.is_file() and (path / "eval_tracks.csv").is_file():
        parts.append(_trajectory_figure(page, path, tag, _read_json(ev_path)))
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

    examples = c.get("examples") or {}
    shown: list[tuple[str, dict[str, Any]]] = []
    if isinstance(examples.get("clean"), dict):
        shown.append(("held-out frame", examples["clean"]))
    if isinstance(examples.get("sticker"), dict):
        if isinstance(examples["sticker"].get("clean"), dict):
            shown.append(("approach, no sticker", examples["sticker"]["clean"]))
        shown.append(("same approach with the sticker", examples["sticker"]))
    if shown:
        figs.append(_vote_figure(page, path, tag, shown))
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


def _data_section(page: _Page, path: Path, tag: str) -> str:
    from drivenet_patch.data import detect_format, open_dataset

    fmt = detect_format(path)
    ds = open_dataset(path)
    labels = ds.labels
    y = labels["steering_deg"].to_numpy(np.float64)
    if len(y) == 0:
        raise PDNError(f"{path}: the dataset has no frames")
    rows: list[tuple[str, Any]] = [
        ("format", fmt), ("frames", len(y)), ("frame size (HxW)", f"{ds.size[0]}x{ds.size[1]}"),
        ("steering mean / std (deg)", f"{y.mean():.3g} / {y.std():.3g}"),
        ("steering min / max (deg)", f"{y.min():.3g} / {y.max():.3g}"),
        ("share of |steering| < 1 deg", float((np.abs(y) < 1).mean()))]
    cams = labels["camera"].astype(str) if "camera" in labels.columns else pd.Series(["all"] * len(y))
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    bins = np.linspace(y.min(), y.max() + 1e-9, 50)
    for cam in sorted(cams.unique()):
        ax.hist(y[(cams == cam).to_numpy()], bins=bins, alpha=0.6, label=cam)
    ax.set(xlabel="steering label (deg, + = left)", ylabel="frames", title=f"Label histogram (n={len(y)})")
    if cams.nunique() > 1:
        ax.legend(title="camera")
    figs = [page.figure(fig, f"{tag}_labels", "Histogram of the steering labels, per camera")]

    pick = np.linspace(0, len(y) - 1, min(8, len(y))).round().astype(int)
    images = ds.frames(pick)
    cols = min(4, len(pick))
    nrows = -(-len(pick) // cols)
    fig = Figure(figsize=(3.2 * cols, 1.25 * nrows * 3.2 * ds.size[0] / ds.size[1] + 0.4))
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax, i, img in zip(axes, pick, images):
        ax.imshow(img)
        ax.set_title(f"#{i}  {y[i]:+.2f} deg", fontsize=8)
        ax.axis("off")
    for ax in axes[len(pick):]:
        ax.axis("off")
    figs.append(page.figure(fig, f"{tag}_samples", "Sample frames at the model's input size with their labels"))
    return "".join([_head(path), _table(rows), '<div class="figs">', *figs, "</div>"])


def _saliency_section(page: _Page, path: Path, tag: str) -> str:
    meta = _read_json(path / "saliency.json")
    rows = [(k, meta[k]) for k in ("frames", "indices", "prediction_deg") if k in meta]
    if meta.get("method") == "patches":
        caption = (f"Where the patch model looks: its saliency map (green: the cells it scores high) and the "
                   f"{meta.get('patch_size', '')} px patches it selects (red; the most salient one drawn thicker)")
    else:
        caption = "VisualBackProp: where the model looks (green: pixels that drive the prediction)"
    img = page.copy_image(path / "saliency_grid.png", f"{tag}_grid.png", caption, "max-width: 100%")
    return "".join([_head(path), "<h4>Saliency</h4>", _table(rows), img])


def _lane_axes(ax: Any, ev: dict[str, Any], before: float, after: float) -> None:
    """Lane edges, the departure limits and the sticker's footprint on a top-down road-frame axis."""
    from matplotlib.patches import Rectangle

    half = float(ev.get("lane_width_m", 3.5)) / 2
    dep = ev.get("lane_departure_m")
    for sgn in (-1, 1):
        ax.axhline(sgn * half, c="k", lw=1.2)
        if dep is not None:
            ax.axhline(sgn * float(dep), c="r", ls="--", lw=0.8)
    pl = ev.get("placement") or {}
    if pl.get("kind", "road") == "road" and "width_m" in pl:
        w, length, lat = float(pl["width_m"]), float(pl["length_m"]), float(pl.get("lateral_m", 0.0))
        ax.add_patch(Rectangle((-length / 2, lat - w / 2), length, w, fc="tab:orange", alpha=0.35, ec="tab:orange"))
    ax.set_xlim(-before, after)
    ax.set_ylim(-half - 0.4, half + 0.4)


def _trajectory_figure(page: _Page, path: Path, tag: str, ev: dict[str, Any]) -> str:
    t = _read_csv(path / "eval_tracks.csv", ["texture", "road", "sticker_s", "rel_s", "offset_m"])
    order = [n for n in ("none", *_TEXTURES) if n in set(t["texture"])]
    stats = {"none": ev.get("no_sticker") or {}, "sticker": ev,
             **{n: ev.get(f"control_{n}") or {} for n in ("noise", "grey")}}
    before, after = float(-t["rel_s"].min()), float(t["rel_s"].max())
    fig = Figure(figsize=(10, 1.9 * len(order) + 0.6))
    axes = np.atleast_1d(fig.subplots(len(order), 1, sharex=True))
    for ax, name in zip(axes, order):
        _lane_axes(ax, ev, before, after)
        g = t[t["texture"] == name]
        for _, a in g.groupby(["road", "sticker_s"]):
            ax.plot(a["rel_s"], a["offset_m"], lw=0.9, color=_TEXTURE_COLOURS.get(name, "tab:green"), alpha=0.8)
        st = stats.get(name, {})
        rate = st.get("departure_rate")
        label = {"none": "no sticker", "sticker": "adversarial sticker"}.get(name, f"control: {name}")
        ax.set_title(f"{label}: departures {_fmt(None if rate is None else 100 * rate)} % of "
                     f"{_fmt(st.get('n_approaches'))} approaches", fontsize=9)
        ax.set_ylabel("offset (m)")
    axes[-1].set_xlabel("metres from the sticker's centre along the road (car drives left to right)")
    return page.figure(fig, f"{tag}_trajectories",
                       "Closed-loop approaches seen from above in road coordinates (up = left): black lane edges, "
                       "red dashed departure limit, orange the sticker's footprint")


def _attack_rows(attacks: Sequence[Path]) -> pd.DataFrame:
    """One row per attack folder that has ``eval.json``: model, size and the sticker's and controls' numbers."""
    rows = []
    for path in attacks:
        if not (path / "eval.json").is_file():
            continue
        a, ev = _read_json(path / "attack.json"), _read_json(path / "eval.json")
        model = str(a.get("model", ev.get("model", "?")))
        try:
            name = str(_read_json(Path(model) / "config.json").get("model", {}).get("name", "?"))
        except PDNError:
            name = "?"
        size = a.get("size_m") or [float("nan"), float("nan")]
        row = {"attack": str(path), "model": model, "model_name": name, "width_m": float(size[0]),
               "length_m": float(size[1]), "area_m2": float(size[0]) * float(size[1])}
        for key in ("mean_dev_deg", "success_rate", "departure_rate"):
            row[key] = ev.get(key)
            for c in ("noise", "grey"):
                row[f"{c}_{key}"] = (ev.get(f"control_{c}") or {}).get(key)
        row["none_departure_rate"] = (ev.get("no_sticker") or {}).get("departure_rate")
        rows.append(row)
    return pd.DataFrame(rows)


def _same(a: Any, b: Path) -> bool:
    try:
        return Path(str(a)).resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _model_comparison(runs: Sequence[Path], drives: Sequence[Path], attack_rows: pd.DataFrame) -> str:
    """One row per training run: accuracy, closed-loop autonomy, inference cost and attack success."""
    if len(runs) < 2:
        return ""
    from drivenet_patch.checkpoint import load_model
    from drivenet_patch.models.base import count_macs
    from drivenet_patch.models.patchdrive import PatchDrive, patchdrive_macs

    drive_results = [_read_json(d / "drive.json") for d in drives]
    rows = []
    for run in runs:
        model = load_model(run)
        macs = patchdrive_macs(model) if isinstance(model, PatchDrive) else count_macs(model)  # + attention
        lam = float(model.config.get("selection_weight") or 0.0)  # issue 22: the patch-selection loss
        row: list[Any] = [str(run), model.name + (f" (lambda {lam:g})" if lam else ""),
                          "x".join(map(str, model.input_size)), sum(p.numel() for p in model.parameters()), round(macs / 1e6, 1)]
        pred = run / "predictions.csv"
        if pred.is_file():
            p = _read_csv(pred, ["steering_deg", "predicted_deg"])
            rmse = float(np.sqrt(((p["predicted_deg"] - p["steering_deg"]) ** 2).mean()))
            row += [rmse, rmse / max(float(np.sqrt((p["steering_deg"] ** 2).mean())), 1e-12)]
        else:
            row += [None, None]
        auto = [a.get("autonomy_pct") for a in drive_results if _same(a.get("model"), run)]
        row.append(auto[0] if auto else "not driven")
        hit = attack_rows[[_same(m, run) for m in attack_rows["model"]]] if not attack_rows.empty else attack_rows
        if len(hit):  # the strongest of the stickers given against this model
            best = hit.loc[pd.to_numeric(hit["mean_dev_deg"], errors="coerce").fillna(-1.0).idxmax()]
            row += [Path(best["attack"]).name, best["mean_dev_deg"], best["success_rate"]]
        else:
            row += [None, None, None]
        sel = _read_json(run / "selection.json") if (run / "selection.json").is_file() else {}  # pdn selection
        row.append(sel.get("effective_patches_fusion"))
        rows.append(row)
    return "<h3>Models compared</h3>" + _table(rows, [
        "run", "model", "input", "parameters", "MMACs / image", "eval RMSE (deg)", "RMSE / always-zero",
        "autonomy %", "strongest sticker given", "its mean |dev| (deg)", "its success",
        "effective patches (fusion)"])


def _attack_summary(page: _Page, df: pd.DataFrame) -> str:
    """Success rate and deviation vs sticker size, for models attacked with stickers of several sizes."""
    if df.empty:
        return ""
    groups = [(m, g.sort_values("area_m2")) for m, g in df.groupby("model") if g["area_m2"].nunique() > 1]
    if not groups:
        return ""
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for i, (model, g) in enumerate(groups):
        lab = f"{g['model_name'].iloc[0]} ({Path(model).name})"
        mk = "osD^v"[i % 5]
        ax1.plot(g["area_m2"], g["success_rate"].astype(float), marker=mk, c="tab:red", label=f"sticker, {lab}")
        ax2.plot(g["area_m2"], g["mean_dev_deg"].astype(float), marker=mk, c="tab:red", label=f"sticker, {lab}")
        for c in ("noise", "grey"):
            ax1.plot(g["area_m2"], g[f"{c}_success_rate"].astype(float), marker=mk, ls="--",
                     c=_TEXTURE_COLOURS[c], label=f"{c}, {lab}")
            ax2.plot(g["area_m2"], g[f"{c}_mean_dev_deg"].astype(float), marker=mk, ls="--", c=_TEXTURE_COLOURS[c],
                     label=f"{c}, {lab}")
    ax1.set(xlabel="sticker area (m²)", ylabel="success rate", ylim=(-0.02, 1.02), title="Success rate vs sticker size")
    ax2.set(xlabel="sticker area (m²)", ylabel="mean |steering change| (deg)", title="Deviation vs sticker size")
    ax1.legend(fontsize=7)
    fig_html = page.figure(fig, "attack_vs_size", "Held-out success rate and mean deviation vs sticker area, "
                                                  "each size optimised separately, with the two controls")
    table = _table([[Path(r.attack).name, r.model_name, f"{r.width_m:g} x {r.length_m:g}", r.mean_dev_deg,
                     r.success_rate, r.departure_rate, r.noise_mean_dev_deg, r.grey_mean_dev_deg]
                    for r in df.itertuples()],
                   ["attack", "model", "size (m)", "mean |dev| (deg)", "success", "departures",
                    "noise |dev|", "grey |dev|"])
    return "<h3>Sticker size</h3>" + table + f'<div class="figs">{fig_html}</div>'


def _defended_vs_undefended(page: _Page, df: pd.DataFrame) -> str:
    """Stickers against the undefended model(s) beside stickers against PatchVote (largest size each)."""
    if df.empty:
        return ""
    df = df.assign(defended=df["model_name"].str.startswith("patchvote"))
    if df["defended"].nunique() < 2:
        return ""
    df = df.sort_values("area_m2").groupby("model").tail(1).sort_values("defended")
    labels = [f"{n} ({Path(m).name})\n{'defended' if d else 'undefended'}"
              for n, m, d in zip(df["model_name"], df["model"], df["defended"])]
    x = np.arange(len(df))
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 3)
    for ax, key, title in zip(axes, ("mean_dev_deg", "success_rate", "departure_rate"),
                              ("mean |steering change| (deg)", "success rate", "lane departures")):
        kinds = [("sticker", ""), ("noise", "noise_"), ("grey", "grey_")]
        if key == "departure_rate" and df["none_departure_rate"].notna().any():
            kinds.append(("no sticker", "none_"))  # what the model does on those roads anyway
        width = 0.8 / len(kinds)
        for j, (c, prefix) in enumerate(kinds):
            vals = pd.to_numeric(df[f"{prefix}{key}"], errors="coerce").to_numpy(np.float64)
            bars = ax.bar(x + (j - (len(kinds) - 1) / 2) * width, np.nan_to_num(vals), width=width,
                          color=_TEXTURE_COLOURS.get(c, "tab:green"), label=c)
            ax.bar_label(bars, labels=["n/a" if not np.isfinite(v) else f"{v:.2g}" for v in vals], fontsize=6)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig_html = page.figure(fig, "defended_vs_undefended",
                           "The same attack (a sticker optimised white-box against each model) on the undefended "
                           "and the PatchVote-defended model, with the controls")
    return f'<h3>Undefended vs defended under attack</h3><div class="figs">{fig_html}</div>'


def _votes_grid(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The region votes as a (rows, cols) grid in layout order, and its validity mask."""
    ys, xs = np.sort(table["y0"].unique()), np.sort(table["x0"].unique())
    grid = np.full((len(ys), len(xs)), np.nan)
    ok = np.zeros_like(grid, dtype=bool)
    for r in table.itertuples():
        i, j = np.searchsorted(ys, r.y0), np.searchsorted(xs, r.x0)
        grid[i, j], ok[i, j] = r.vote_deg, bool(r.valid)
    return grid, ok


def _heat(image: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Per pixel: the mean vote of the valid regions covering it (NaN where none does)."""
    h, w = image.shape[:2]
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for r in table[table["valid"].astype(bool)].itertuples():
        total[r.y0:r.y1, r.x0:r.x1] += r.vote_deg
        count[r.y0:r.y1, r.x0:r.x1] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _vote_figure(page: _Page, path: Path, tag: str, examples: list[tuple[str, dict[str, Any]]]) -> str:
    import cv2

    loaded = []
    for title, ex in examples:
        img = cv2.imread(str(path / str(ex["image"])), cv2.IMREAD_COLOR)
        if img is None:
            raise PDNError(f"{path / str(ex['image'])}: not a readable image")
        table = _read_csv(path / str(ex["votes"]), ["y0", "x0", "y1", "x1", "vote_deg", "valid"])
        loaded.append((title, ex, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), table))
    lim = max(float(np.nanmax(np.abs(t["vote_deg"]))) for *_, t in loaded) or 1.0
    fig = Figure(figsize=(11, 2.6 * len(loaded) + 0.3))
    axes = np.atleast_2d(fig.subplots(len(loaded), 2, gridspec_kw={"width_ratios": [2, 1]}))
    for (title, ex, img, table), (a1, a2) in zip(loaded, axes):
        a1.imshow(img)
        im = a1.imshow(_heat(img, table), cmap="coolwarm", vmin=-lim, vmax=lim, alpha=0.55)
        a1.axis("off")
        facts = [f"output {ex['output_deg']:+.2f} deg ({ex.get('aggregate', '')})"]
        if "label_deg" in ex:
            facts.append(f"label {ex['label_deg']:+.2f}")
        if "lo_deg" in ex and np.isfinite(ex["lo_deg"]):
            facts.append(f"certified [{ex['lo_deg']:+.2f}, {ex['hi_deg']:+.2f}]")
        a1.set_title(f"{title}: " + ", ".join(facts), fontsize=8)
        grid, ok = _votes_grid(table)
        a2.imshow(np.where(ok, grid, np.nan), cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            a2.text(j, i, f"{v:+.1f}" if ok[i, j] else "×", ha="center", va="center", fontsize=7)
        a2.set(xticks=[], yticks=[], title="region votes (deg)")
        fig.colorbar(im, ax=a2, fraction=0.05, label="vote (deg, + = left)")
    return page.figure(fig, f"{tag}_votes", "Region votes of one frame as a heat map over the image (mean vote of "
                                            "the regions covering each pixel) and as the grid of votes")


def _bench_section(page: _Page, path: Path, tag: str) -> str:
    """One benchmark file as tables: the ratio table of ``pdn bench`` first (when present), then every
    other measurement as key / value rows."""
    del page, tag  # tables only
    obj = _read_json(path)
    ratios = obj.pop("ratios", None)
    out = _head(path)
    if isinstance(ratios, list):
        rows = [[r.get("measure"), r.get("value"), r.get("detail")] for r in ratios if isinstance(r, dict)]
        out += _table(rows, ["ratio (two measurements side by side in one run)", "value", "measurements"])
    return out + _table(_flatten(obj), ["key", "value"])


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 0.9em; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0.5em 0; }} figure img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }} .big {{ font-size: 1.4em; font-weight: bold; }}
#summary {{ background: #f6f8fa; border: 1px solid #d0d7de; padding: 0.2em 1em 0.5em; }}
#summary h2 {{ margin: 0.4em 0; }} .findings li {{ margin: 0.35em 0; line-height: 1.35; }}
.findings li.weak {{ border-left: 4px solid #d4a72c; padding-left: 0.5em; list-style: none; margin-left: -1.2em; }}
.notes {{ font-size: 0.85em; color: #555; }} .notes-title {{ margin: 0.3em 0 0; font-size: 0.85em; }}
</style></head>
<body><h1>{title}</h1><nav>{nav}</nav>
{body}</body></html>
"""
