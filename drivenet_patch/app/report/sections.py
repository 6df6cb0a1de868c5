"""One report section per kind of input: training run, drive, attack, certify output, dataset, saliency,
benchmark file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from drivenet_patch.app.report.inputs import METRICS_ROW, check_rows
from drivenet_patch.app.report.page import (
    TEXTURE_COLOURS,
    TEXTURES,
    Page,
    flatten,
    fmt,
    heading,
    html_table,
    load_csv,
    load_json,
)
from drivenet_patch.app.report.votes import vote_figure
from drivenet_patch.safety.errors import PDNError

__all__ = ["attack_section", "bench_section", "certify_section", "data_section", "drive_section", "saliency_section",
           "train_section"]


def train_section(page: Page, path: Path, tag: str) -> str:
    cfg = load_json(path / "config.json")
    m = check_rows(path / "metrics.csv", load_csv(path / "metrics.csv", ["epoch", "train_loss", "val_rmse_deg"]),
                   METRICS_ROW)
    parts = [heading(path)]
    val = m["val_rmse_deg"]
    best = m.loc[val.idxmin()] if val.notna().any() else None  # none: trained without a validation set
    rows: list[tuple[str, Any]] = [("model", cfg.get("model", {}).get("name", "?")), ("epochs", len(m)),
                                   ("final val RMSE (deg)", float(val.iloc[-1])),
                                   ("best val RMSE (deg)", "n/a (no validation set)" if best is None else
                                    f"{best['val_rmse_deg']:.4g} (epoch {int(best['epoch'])})")]
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
        p = load_csv(pred_path, ["steering_deg", "predicted_deg"])
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
    parts += [html_table(rows), '<div class="figs">', *figs, "</div>"]
    return "".join(parts)


def drive_section(page: Page, path: Path, tag: str) -> str:
    d = load_json(path / "drive.json")
    log = load_csv(path / "drive_log.csv", ["road", "t", "x", "y", "offset_m"])
    keys = ["autonomy_pct", "distance_km", "roads", "interventions", "departures", "mean_abs_offset_m",
            "max_abs_offset_m", "mean_abs_steer_error_deg", "model", "sticker"]
    rows = [(k, d[k]) for k in keys if k in d]
    auto = d.get("autonomy_pct")
    lead = f'<p class="big">Autonomy: {fmt(auto)} %</p>' if auto is not None else ""

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
    monitor = d.get("monitor")
    if isinstance(monitor, dict):  # pdn drive --monitor: the certificate as a runtime safety monitor
        rows += [(f"monitor {k}", monitor[k]) for k in ("threat", "delta_deg", "fallback", "unverified_share",
                                                         "unverified_reasons") if k in monitor]
        if (path / "monitor_trace.png").is_file():
            figs.append(page.copy_image(path / "monitor_trace.png", f"{tag}_monitor_trace.png",
                                        "Runtime monitor, road 0: steering with its certified band over the drive, "
                                        "unverified frames shaded" + (" (sticker on the road)" if d.get("sticker") else
                                                                      " (no sticker)"), "max-width: 100%"))
    return "".join([heading(path), lead, html_table(rows), '<div class="figs">', *figs, "</div>"])


def attack_section(page: Page, path: Path, tag: str) -> str:
    a = load_json(path / "attack.json")
    cfg = a.get("attack", {})
    rows: list[tuple[str, Any]] = [(k, a[k]) for k in ("model", "size_m") if k in a]
    rows += [(k, cfg[k]) for k in ("target", "angle_deg", "loss", "steps", "texture_hw", "nps_weight", "tv_weight")
             if k in cfg]
    # the variants that change what the sticker is, only when used
    rows += [(k, cfg[k]) for k in ("saliency_weight", "dirt") if cfg.get(k)]
    if "distance_m" in a:
        rows.append(("distance_m", a["distance_m"]))
    parts = [heading(path), html_table(rows), '<div class="figs">']
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
        ev = load_json(ev_path)
        cols = ["mean_dev_deg", "success_rate", "departure_rate"]
        trows = [["sticker", *(ev.get(c) for c in cols)]]
        for name in ("noise", "grey"):
            ctrl = ev.get(f"control_{name}")
            if isinstance(ctrl, dict):
                trows.append([f"control: {name}", *(ctrl.get(c) for c in cols)])
        if isinstance(ev.get("no_sticker"), dict):
            trows.append(["no sticker", None, None, ev["no_sticker"].get("departure_rate")])
        parts += ["<h4>Attack vs controls</h4>", html_table(trows, ["texture", *cols]),
                  f"<p>success = deviation toward the target above {fmt(ev.get('threshold_deg'))} deg; "
                  f"{fmt(ev.get('n_frames'))} frames, {fmt(ev.get('n_approaches'))} closed-loop approaches.</p>"]

    figs: list[str] = []
    if ev_path.is_file() and (path / "eval_tracks.csv").is_file():
        parts.append(trajectory_figure(page, path, tag, load_json(ev_path)))
    hist_path = path / "history.csv"
    if hist_path.is_file():
        h = load_csv(hist_path, ["step", "deviation_deg"])
        fig = Figure(figsize=(5.5, 3.4))
        ax = fig.subplots()
        ax.plot(h["step"], h["deviation_deg"], lw=0.8, alpha=0.5, label="per step")
        ax.plot(h["step"], h["deviation_deg"].rolling(10, min_periods=1).mean(), lw=1.6, label="10-step mean")
        ax.set(xlabel="step", ylabel="deviation toward target (deg)", title="Sticker optimisation")
        ax.legend()
        figs.append(page.figure(fig, f"{tag}_optimisation", "Deviation toward the target during optimisation"))

    frames_path = path / "eval_frames.csv"
    if frames_path.is_file():
        f = load_csv(frames_path, ["texture", "distance_m", "delta_deg", "deviation_deg", "success"])
        present = [t for t in TEXTURES if t in set(f["texture"])] + sorted(set(f["texture"]) - set(TEXTURES))
        edges = np.linspace(f["distance_m"].min(), f["distance_m"].max() + 1e-9, 9)
        mids = (edges[:-1] + edges[1:]) / 2
        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.subplots()
        for t in present:
            g = f[f["texture"] == t]
            c = TEXTURE_COLOURS.get(t)
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
                    color=TEXTURE_COLOURS.get(t), label=t)
        ax.set(xlabel="steering change vs clean (deg)", ylabel="frames", title="Steering change per texture")
        ax.legend()
        figs.append(page.figure(fig, f"{tag}_delta_hist", "Histogram of the steering change caused by each texture"))
    if figs:
        parts += ['<div class="figs">', *figs, "</div>"]
    return "".join(parts)


def certify_section(page: Page, path: Path, tag: str) -> str:
    c = load_json(path / "certify.json")
    fr = load_csv(path / "certify_frames.csv", ["lo_deg", "hi_deg"])
    keys = ["certified_acc", "clean_acc", "violations", "delta_deg", "patch_spec", "patch", "aggregate", "mae_deg",
            "median_halfwidth_deg", "n", "attack_runs", "attack_max_shift_deg", "sticker_certified",
            "sticker_frames", "sticker_violations"]
    parts = [heading(path), html_table([(k, c[k]) for k in keys if k in c])]
    figs: list[str] = []

    sweep_path = path / "sweep.csv"
    if sweep_path.is_file():
        s = load_csv(sweep_path, ["patch", "ph", "pw", "aggregate", "certified_acc", "delta_deg"])
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
        figs.append(vote_figure(page, path, tag, shown))
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


def data_section(page: Page, path: Path, tag: str) -> str:
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
    return "".join([heading(path), html_table(rows), '<div class="figs">', *figs, "</div>"])


def saliency_section(page: Page, path: Path, tag: str) -> str:
    meta = load_json(path / "saliency.json")
    rows = [(k, meta[k]) for k in ("frames", "indices", "prediction_deg") if k in meta]
    if meta.get("method") == "patches":
        caption = (f"Where the patch model looks: its saliency map (green: the cells it scores high) and the "
                   f"{meta.get('patch_size', '')} px patches it selects (red; the most salient one drawn thicker)")
    else:
        caption = "VisualBackProp: where the model looks (green: pixels that drive the prediction)"
    img = page.copy_image(path / "saliency_grid.png", f"{tag}_grid.png", caption, "max-width: 100%")
    return "".join([heading(path), "<h4>Saliency</h4>", html_table(rows), img])


def lane_axes(ax: Any, ev: dict[str, Any], before: float, after: float) -> None:
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


def trajectory_figure(page: Page, path: Path, tag: str, ev: dict[str, Any]) -> str:
    t = load_csv(path / "eval_tracks.csv", ["texture", "road", "sticker_s", "rel_s", "offset_m"])
    order = [n for n in ("none", *TEXTURES) if n in set(t["texture"])]
    stats = {"none": ev.get("no_sticker") or {}, "sticker": ev,
             **{n: ev.get(f"control_{n}") or {} for n in ("noise", "grey")}}
    before, after = float(-t["rel_s"].min()), float(t["rel_s"].max())
    fig = Figure(figsize=(10, 1.9 * len(order) + 0.6))
    axes = np.atleast_1d(fig.subplots(len(order), 1, sharex=True))
    for ax, name in zip(axes, order):
        lane_axes(ax, ev, before, after)
        g = t[t["texture"] == name]
        for _, a in g.groupby(["road", "sticker_s"]):
            ax.plot(a["rel_s"], a["offset_m"], lw=0.9, color=TEXTURE_COLOURS.get(name, "tab:green"), alpha=0.8)
        st = stats.get(name, {})
        rate = st.get("departure_rate")
        label = {"none": "no sticker", "sticker": "adversarial sticker"}.get(name, f"control: {name}")
        ax.set_title(f"{label}: departures {fmt(None if rate is None else 100 * rate)} % of "
                     f"{fmt(st.get('n_approaches'))} approaches", fontsize=9)
        ax.set_ylabel("offset (m)")
    axes[-1].set_xlabel("metres from the sticker's centre along the road (car drives left to right)")
    return page.figure(fig, f"{tag}_trajectories",
                       "Closed-loop approaches seen from above in road coordinates (up = left): black lane edges, "
                       "red dashed departure limit, orange the sticker's footprint")


def bench_section(page: Page, path: Path, tag: str) -> str:
    """One benchmark file as tables: the ratio table of ``pdn bench`` first (when present), then every
    other measurement as key / value rows."""
    del page, tag  # tables only
    obj = load_json(path)
    ratios = obj.pop("ratios", None)
    out = heading(path)
    if isinstance(ratios, list):
        rows = [[r.get("measure"), r.get("value"), r.get("detail")] for r in ratios if isinstance(r, dict)]
        out += html_table(rows, ["ratio (two measurements side by side in one run)", "value", "measurements"])
    # pdn bench train: one row per model (alone, or as the "train" part of pdn bench)
    for holder in (obj, obj.get("train")):
        if isinstance(holder, dict) and isinstance(holder.get("models"), list):
            models = [m for m in holder.pop("models") if isinstance(m, dict)]
            keys = ["model", "layout", "e2e_img_s", "bare_img_s", "e2e_over_bare", "infer_img_s",
                    "train_over_pilotnet", "infer_over_pilotnet", "train_share_of_matmul"]
            out += html_table([[m.get(k) for k in keys] for m in models],
                              ["model", "layout", "training end to end (img/s)", "bare train step (img/s)",
                               "end to end / bare", "inference (img/s)", "training / PilotNet's",
                               "inference / PilotNet's", "bare step: share of the matmul ceiling"])
    return out + html_table(flatten(obj), ["key", "value"])
