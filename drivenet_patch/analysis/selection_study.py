"""The table of the patch-selection study (``make patchdrive-selection-study``).

Reads the per-step JSON results the make target writes into one folder
(``{run}_eval.json``, ``{run}_selection.json``, ``{run}_attack_eval.json`` and, for patch models,
``{run}_attack_sal_eval.json``; ``run`` is ``pilotnet`` or ``pd{lambda}``) and lays them out as
one row per model: held-out RMSE, effective patches, cost, and the sticker attack with and
without the saliency pull beside the noise and grey controls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import folder_file
from drivenet_patch.safety.values import MAX_FRAMES, FieldCheck, check_fields, number, obj, whole
from drivenet_patch.storage.atomic import write_csv, write_text
from drivenet_patch.storage.folders import prepare_output_folder

#: Columns of :func:`study_table`, in order, with their Markdown headers.
COLUMNS = {
    "run": "run", "selection_weight": "lambda", "rmse_deg": "held-out RMSE (deg)", "rmse_vs_lambda0": "RMSE / lambda=0",
    "effective_patches": "eff. patches (weights)", "effective_patches_fusion": "eff. patches (fusion)",
    "mmacs": "MMACs / image", "ms_per_image": "ms / image",
    "sticker_dev_deg": "sticker |dev| (deg)", "sticker_success": "sticker success",
    "sticker_in_topk": "sticker in a patch", "clean_in_topk": "bare road in a patch",
    "sticker_weight": "weight on sticker", "clean_weight": "bare road's weight",
    "sal_dev_deg": "sal. sticker |dev| (deg)", "sal_success": "sal. success", "sal_in_topk": "sal. in a patch",
    "sal_weight": "sal. weight on sticker",
    "noise_dev_deg": "noise |dev|", "grey_dev_deg": "grey |dev|", "noise_success": "noise success",
    "grey_success": "grey success", "noise_in_topk": "noise in a patch", "grey_in_topk": "grey in a patch",
    "n_frames": "frames / condition",
}


_SHARE = number(0.0, 1.0, null=True)
_AMOUNT = number(0.0, 1e18, null=True)
_ATTACK = {"mean_dev_deg": _AMOUNT, "success_rate": _SHARE, "in_topk_rate": _SHARE, "clean_in_topk_rate": _SHARE,
           "weight_on_sticker": _AMOUNT, "clean_weight_on_sticker": _AMOUNT, "n_frames": whole(0, MAX_FRAMES, null=True)}
#: The fields the table reads from each result file (by the end of its name), typed and bounded: a number
#: that is a string, a list or an object, or NaN, is refused with the file and field named.
_RESULT_FIELDS: dict[str, dict[str, FieldCheck]] = {
    "_attack_sal_eval.json": _ATTACK,
    "_attack_eval.json": {**_ATTACK, "control_noise": obj(null=True), "control_grey": obj(null=True),
                          **{f"control_{c}.{k}": v for c in ("noise", "grey") for k, v in _ATTACK.items()}},
    "_selection.json": {k: _AMOUNT for k in ("selection_weight", "effective_patches", "effective_patches_fusion",
                                             "macs", "ms_per_image")},
    "_eval.json": {"rmse_deg": _AMOUNT},
}


def _read(path: Path) -> dict[str, Any] | None:
    # the results folder is read like a dataset folder: a file that leads out of it is refused
    if folder_file(path.parent, path.name, "study result") is None:
        return None
    from drivenet_patch.safety.inputs import read_json

    result = read_json(path, "study result")  # size and depth bounded
    kind = next(k for k in _RESULT_FIELDS if path.name.endswith(k))
    check_fields(str(path), result, _RESULT_FIELDS[kind], hint="fix the field, or run this step of the study again")
    return result


def _runs(results: Path) -> list[str]:
    names = {p.name[: -len("_eval.json")] for p in results.glob("*_eval.json")}
    names = {n for n in names if not n.endswith(("_attack", "_attack_sal"))}

    def key(name: str) -> tuple[int, float, str]:
        if name.startswith("pd"):
            try:
                return (1, float(name[2:]), name)
            except ValueError:
                pass
        return (0, 0.0, name)

    return sorted(names, key=key)


def study_table(results: str | Path) -> pd.DataFrame:
    """One row per run found in ``results`` (see the module notes); missing steps give empty cells.

    Raises:
        PDNError: ``results`` is not a folder, holds no ``*_eval.json``, or a file is not JSON.
    """
    results = Path(results)
    if not results.is_dir():
        raise PDNError(f"results: {results} is not a folder")
    runs = _runs(results)
    if not runs:
        raise PDNError(f"results: {results} holds no *_eval.json")
    rows = []
    for run in runs:
        ev = _read(results / f"{run}_eval.json") or {}
        sel = _read(results / f"{run}_selection.json") or {}
        atk = _read(results / f"{run}_attack_eval.json") or {}
        sal = _read(results / f"{run}_attack_sal_eval.json") or {}
        noise, grey = atk.get("control_noise") or {}, atk.get("control_grey") or {}
        macs = sel.get("macs")
        rows.append({
            "run": run, "selection_weight": sel.get("selection_weight"), "rmse_deg": ev.get("rmse_deg"),
            "effective_patches": sel.get("effective_patches"),
            "effective_patches_fusion": sel.get("effective_patches_fusion"),
            "mmacs": None if macs is None else macs / 1e6, "ms_per_image": sel.get("ms_per_image"),
            "sticker_dev_deg": atk.get("mean_dev_deg"), "sticker_success": atk.get("success_rate"),
            "sticker_in_topk": atk.get("in_topk_rate"), "clean_in_topk": atk.get("clean_in_topk_rate"),
            "sticker_weight": atk.get("weight_on_sticker"), "clean_weight": atk.get("clean_weight_on_sticker"),
            "sal_dev_deg": sal.get("mean_dev_deg"), "sal_success": sal.get("success_rate"),
            "sal_in_topk": sal.get("in_topk_rate"), "sal_weight": sal.get("weight_on_sticker"),
            "noise_dev_deg": noise.get("mean_dev_deg"), "grey_dev_deg": grey.get("mean_dev_deg"),
            "noise_success": noise.get("success_rate"), "grey_success": grey.get("success_rate"),
            "noise_in_topk": noise.get("in_topk_rate"), "grey_in_topk": grey.get("in_topk_rate"),
            "n_frames": atk.get("n_frames"),
        })
    df = pd.DataFrame(rows)
    base = df.loc[(df["selection_weight"] == 0) & df["run"].str.startswith("pd"), "rmse_deg"]
    ref = float(base.iloc[0]) if len(base) and base.iloc[0] is not None else math.nan
    df.insert(3, "rmse_vs_lambda0", pd.to_numeric(df["rmse_deg"], errors="coerce") / ref)
    return df[list(COLUMNS)]


def to_markdown(df: pd.DataFrame) -> str:
    """The table as GitHub Markdown, numbers to 3 significant figures, empty cells blank."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(COLUMNS[c] for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_study_table(results: str | Path) -> dict[str, Any]:
    """Write ``table.csv`` and ``table.md`` into ``results`` (atomically); return the rows and paths."""
    results = Path(results)
    df = study_table(results)
    prepare_output_folder(results, "selection study", "results")  # never a user's table.csv or table.md
    write_csv(results / "table.csv", df, index=False, float_format="%.6g")
    write_text(results / "table.md", to_markdown(df))
    rows = json.loads(df.to_json(orient="records"))
    return {"results": str(results), "table_csv": str(results / "table.csv"), "table_md": str(results / "table.md"),
            "rows": rows}
