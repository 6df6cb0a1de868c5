"""Blocks across inputs: the models compared, the attack against sticker size, undefended vs defended."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from drivenet_patch.app.report.page import (
    TEXTURE_COLOURS,
    Page,
    html_table,
    load_csv,
    load_json,
    model_name,
)

__all__ = ["attack_rows", "attack_summary", "defended_vs_undefended", "model_comparison", "same_path"]


def attack_rows(attacks: Sequence[Path]) -> pd.DataFrame:
    """One row per attack folder that has ``eval.json``: model, size and the sticker's and controls' numbers."""
    rows = []
    for path in attacks:
        if not (path / "eval.json").is_file():
            continue
        a, ev = load_json(path / "attack.json"), load_json(path / "eval.json")
        model = str(a.get("model", ev.get("model", "?")))
        name = model_name(model)
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


def same_path(a: Any, b: Path) -> bool:
    try:
        return Path(str(a)).resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def model_comparison(runs: Sequence[Path], drives: Sequence[Path], attack_rows: pd.DataFrame) -> str:
    """One row per training run: accuracy, closed-loop autonomy, inference cost and attack success."""
    if len(runs) < 2:
        return ""
    from drivenet_patch.models.checkpoint import load_model
    from drivenet_patch.models.patchdrive import model_macs

    drive_results = [load_json(d / "drive.json") for d in drives]
    rows = []
    for run in runs:
        model = load_model(run)
        macs = model_macs(model)
        lam = float(model.config.get("selection_weight") or 0.0)  # the patch-selection loss (lambda)
        row: list[Any] = [str(run), model.name + (f" (lambda {lam:g})" if lam else ""),
                          "x".join(map(str, model.input_size)), sum(p.numel() for p in model.parameters()), round(macs / 1e6, 1)]
        pred = run / "predictions.csv"
        if pred.is_file():
            p = load_csv(pred, ["steering_deg", "predicted_deg"])
            rmse = float(np.sqrt(((p["predicted_deg"] - p["steering_deg"]) ** 2).mean()))
            row += [rmse, rmse / max(float(np.sqrt((p["steering_deg"] ** 2).mean())), 1e-12)]
        else:
            row += [None, None]
        auto = [a.get("autonomy_pct") for a in drive_results if same_path(a.get("model"), run)]
        row.append(auto[0] if auto else "not driven")
        hit = attack_rows[[same_path(m, run) for m in attack_rows["model"]]] if not attack_rows.empty else attack_rows
        if len(hit):  # the strongest of the stickers given against this model
            best = hit.loc[pd.to_numeric(hit["mean_dev_deg"], errors="coerce").fillna(-1.0).idxmax()]
            row += [Path(best["attack"]).name, best["mean_dev_deg"], best["success_rate"]]
        else:
            row += [None, None, None]
        sel = load_json(run / "selection.json") if (run / "selection.json").is_file() else {}  # pdn selection
        row.append(sel.get("effective_patches_fusion"))
        rows.append(row)
    return "<h3>Models compared</h3>" + html_table(rows, [
        "run", "model", "input", "parameters", "MMACs / image", "eval RMSE (deg)", "RMSE / always-zero",
        "autonomy %", "strongest sticker given", "its mean |dev| (deg)", "its success",
        "effective patches (fusion)"])


def attack_summary(page: Page, df: pd.DataFrame) -> str:
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
                     c=TEXTURE_COLOURS[c], label=f"{c}, {lab}")
            ax2.plot(g["area_m2"], g[f"{c}_mean_dev_deg"].astype(float), marker=mk, ls="--", c=TEXTURE_COLOURS[c],
                     label=f"{c}, {lab}")
    ax1.set(xlabel="sticker area (m²)", ylabel="success rate", ylim=(-0.02, 1.02), title="Success rate vs sticker size")
    ax2.set(xlabel="sticker area (m²)", ylabel="mean |steering change| (deg)", title="Deviation vs sticker size")
    ax1.legend(fontsize=7)
    fig_html = page.figure(fig, "attack_vs_size", "Held-out success rate and mean deviation vs sticker area, "
                                                  "each size optimised separately, with the two controls")
    table = html_table([[Path(r.attack).name, r.model_name, f"{r.width_m:g} x {r.length_m:g}", r.mean_dev_deg,
                     r.success_rate, r.departure_rate, r.noise_mean_dev_deg, r.grey_mean_dev_deg]
                    for r in df.itertuples()],
                   ["attack", "model", "size (m)", "mean |dev| (deg)", "success", "departures",
                    "noise |dev|", "grey |dev|"])
    return "<h3>Sticker size</h3>" + table + f'<div class="figs">{fig_html}</div>'


def defended_vs_undefended(page: Page, df: pd.DataFrame) -> str:
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
                          color=TEXTURE_COLOURS.get(c, "tab:green"), label=c)
            ax.bar_label(bars, labels=["n/a" if not np.isfinite(v) else f"{v:.2g}" for v in vals], fontsize=6)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig_html = page.figure(fig, "defended_vs_undefended",
                           "The same attack (a sticker optimised white-box against each model) on the undefended "
                           "and the PatchVote-defended model, with the controls")
    return f'<h3>Undefended vs defended under attack</h3><div class="figs">{fig_html}</div>'
