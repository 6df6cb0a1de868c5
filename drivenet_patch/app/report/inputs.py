"""The report's inputs, checked field by field before anything is drawn or written.

Every JSON file the report reads from an input folder has its fields typed and bounded here
(:data:`REPORT_FIELDS`, by file name), with the same checks as every other value from outside
(:mod:`drivenet_patch.safety.values`): a number that is a string, a list or an object, a NaN, a share
outside [0, 1] or a count that is not a whole number is refused with one line naming the file and
the field, so no page says "Autonomy: high %" and no figure raises a traceback. ``null`` is accepted
where the toolkit writes it for "not measured" (or, since its JSON is strict, "not a finite number").
CSV tables are checked by :func:`check_table`: each column the report plots must be numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import (
    MAX_FRAMES,
    FieldCheck,
    check_fields,
    number,
    obj,
    pair,
    rate,
    text,
    whole,
)
from drivenet_patch.world.sticker_file import ATTACK_JSON_FIELDS, MAX_STICKER_D_M, MAX_STICKER_SIDE_M

__all__ = ["METRICS_ROW", "REPORT_FIELDS", "TEXT_COLUMNS", "check_inputs", "check_report_json", "check_rows", "check_table"]

_HINT = "fix the field, or write the folder again with the pdn command that made it"
#: Largest count the report reads (frames, approaches, runs, regions).
_MAX_COUNT = 10 * MAX_FRAMES

_DEG = number(-1e6, 1e6, null=True)
_AMOUNT = number(0.0, 1e18, null=True)
_COUNT = whole(0, _MAX_COUNT, null=True)
_PCT = number(0.0, 100.0, null=True)
#: PilotNet autonomy (1 - interventions x 6 s / elapsed) x 100 is not clipped: a short drive with many
#: interventions is below 0 %, never above 100 %.
_AUTONOMY = number(-1e18, 100.0, null=True)
_TEXT = text(null=True)


def _width(name: str, value: Any) -> float | None:
    """A half-width in degrees: a number >= 0, null, or +Infinity (an unbounded interval, in files written
    before the toolkit's JSON was strict)."""
    if isinstance(value, float) and value == math.inf:
        return value
    return _AMOUNT(name, value)


def _shares_by_distance(name: str, value: Any) -> dict | None:
    """``{"5-10": share, ...}``: keys are distance bins ``NEAR-FAR`` in metres, values shares in [0, 1] or null."""
    if value is None:
        return None
    obj()(name, value)
    for k, v in value.items():
        near, _, far = str(k).partition("-")
        try:
            ok = math.isfinite(float(near)) and math.isfinite(float(far))
        except ValueError:
            ok = False
        if not ok:
            raise PDNError(f"{name} has the key {str(k)[:40]!r}; keys are distance bins NEAR-FAR in metres")
        rate()(f"{name}.{k}", v)
    return value


def _placement(name: str, value: Any) -> dict | None:
    """An evaluation's sticker placement: an object whose ``width_m`` comes with a ``length_m``."""
    if value is None:
        return None
    obj()(name, value)
    if "width_m" in value and "length_m" not in value:
        raise PDNError(f"{name}.length_m is missing (it gives width_m)")
    return value


def _whole_pair(name: str, value: Any) -> Any:
    """``[ph, pw]`` pixels, or null."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise PDNError(f"{name} = {str(value)[:40]} must be a list of two whole numbers [H, W]")
    return [whole(0, 1 << 20)(f"{name}[{i}]", v) for i, v in enumerate(value)]


_RESULT = {"mean_dev_deg": _AMOUNT, "mean_signed_dev_deg": _DEG, "mean_dev_5_15m_deg": _AMOUNT,
           "success_rate": rate(), "departure_rate": rate(), "autonomy_pct": _AUTONOMY, "n_frames": _COUNT,
           "n_approaches": _COUNT, "in_topk_rate": rate(), "in_top1_rate": rate(), "clean_in_topk_rate": rate()}

def _bound(name: str, value: Any) -> float | None:
    """An interval end in degrees: a finite number, null, or -/+Infinity (unbounded, in files written before
    the toolkit's JSON was strict)."""
    if isinstance(value, float) and math.isinf(value):
        return value
    return _DEG(name, value)


#: The fields of one example frame of ``certify.json`` (the votes figure reads them).
_EXAMPLE = {"image": text(), "votes": text(), "output_deg": number(-1e6, 1e6), "label_deg": _DEG, "lo_deg": _bound,
            "hi_deg": _bound, "aggregate": _TEXT}
_EXAMPLES = {f"examples.{where}{k}": v for where in ("clean.", "sticker.", "sticker.clean.") for k, v in _EXAMPLE.items()}

#: The fields of each JSON file the report reads, by file name (``bench`` is a benchmark ``.json`` input).
REPORT_FIELDS: dict[str, dict[str, FieldCheck]] = {
    "attack.json": ATTACK_JSON_FIELDS,
    "eval.json": {
        **_RESULT, "model": _TEXT, "target": _TEXT, "threshold_deg": _AMOUNT,
        "lane_width_m": number(0.0, 100.0, low_open=True), "lane_departure_m": number(0.0, 100.0, null=True),
        "placement": _placement, "placement.kind": text(("road", "billboard"), null=True),
        "placement.width_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True),
        "placement.length_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True),
        "placement.lateral_m": number(-MAX_STICKER_D_M, MAX_STICKER_D_M),
        **{f"control_{c}": obj(null=True) for c in ("noise", "grey")},
        **{f"control_{c}.{k}": v for c in ("noise", "grey") for k, v in _RESULT.items()},
        "no_sticker": obj(null=True), **{f"no_sticker.{k}": v for k, v in _RESULT.items()},
    },
    "drive.json": {
        "autonomy_pct": _AUTONOMY, "distance_km": _AMOUNT, "roads": _COUNT, "interventions": _COUNT,
        "departures": _COUNT, "departure_events": _COUNT, "mean_abs_offset_m": _AMOUNT, "max_abs_offset_m": _AMOUNT,
        "mean_abs_steer_error_deg": _AMOUNT, "km_per_road": _AMOUNT, "model": _TEXT, "config": obj(),
        "config.intervention_m": number(0.0, 100.0, null=True), "monitor": obj(null=True),
    },
    "certify.json": {
        "certified_acc": rate(), "clean_acc": rate(), "certified_share": rate(), "delta_deg": number(0.0, 360.0),
        "n": _COUNT, "violations": _COUNT, "attack_runs": _COUNT, "sticker_frames": _COUNT,
        "sticker_violations": _COUNT, "sticker_certified": _COUNT, "k_max": whole(0, _MAX_COUNT),
        "margin_px": number(0.0, 1e4), "spacing_m": number(0.0, 1e3, low_open=True), "n_regions": _COUNT,
        "n_sets": _COUNT, "cells": _COUNT, "sweep_rows": _COUNT, "mae_deg": _AMOUNT, "median_halfwidth_deg": _width,
        "attack_mean_shift_deg": _AMOUNT, "attack_max_shift_deg": _AMOUNT, "sticker_mean_shift_deg": _AMOUNT,
        "patch": _whole_pair, "patch_spec": _TEXT, "aggregate": _TEXT, "model": _TEXT, "source": _TEXT,
        "examples": obj(null=True), **{f"examples.{w}": obj(null=True) for w in ("clean", "sticker", "sticker.clean")},
        **_EXAMPLES, "certified_acc_by_distance": _shares_by_distance, "label_range_deg": pair(-1e6, 1e6, null=True),
        "threat": obj(null=True), "threat.place": text(("road", "billboard"), null=True),
        "threat.width_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True),
        "threat.length_m": number(0.0, MAX_STICKER_SIDE_M, low_open=True),
        "threat.area_m2": _AMOUNT, "threat.distance_m": pair(0.0, 1e4, null=True),
        "threat.lateral_m": pair(-1e4, 1e4, null=True), "threat.yaw_deg": number(0.0, 180.0, null=True),
    },
    "sweep.json": {"break_area_m2": number(0.0, 1e6, null=True), "drp_area_m2": number(0.0, 1e6, null=True),
                   "model": _TEXT},
    "selection.json": {"effective_patches": _AMOUNT, "effective_patches_fusion": _AMOUNT, "macs": _AMOUNT,
                       "ms_per_image": _AMOUNT},
    "config.json": {"model": obj(), "model.name": _TEXT},
    "saliency.json": {"method": _TEXT},
    "bench": {"ratios": lambda name, v: v if v is None or isinstance(v, list) else obj()(name, v),
              "models": lambda name, v: v if v is None or isinstance(v, (list, dict)) else obj()(name, v)},
}

#: The rows of a training run's ``metrics.csv`` (a blank validation RMSE: trained without a validation set).
METRICS_ROW: dict[str, FieldCheck] = {"epoch": whole(0, 10**6), "train_loss": number(-1e30, 1e30, null=True),
                                      "val_rmse_deg": number(0.0, 1e6, null=True),
                                      "val_zero_rmse_deg": number(0.0, 1e6, null=True)}

#: Columns of the report's CSV tables that hold text (every other column it reads must be numbers).
TEXT_COLUMNS = frozenset({"texture", "patch", "aggregate", "aspect", "camera", "file", "frame"})


def check_report_json(path: str | Path, data: Any, kind: str | None = None) -> dict[str, Any]:
    """``data`` (the parsed JSON of ``path``) with the fields the report reads checked; returns it.

    Args:
        path: the file, named in errors; its name picks the fields (:data:`REPORT_FIELDS`).
        data: the parsed JSON.
        kind: the key of :data:`REPORT_FIELDS` to use instead of the file name (``"bench"``).

    Raises:
        PDNError: one line naming the file and the field.
    """
    spec = REPORT_FIELDS.get(kind or Path(path).name, {})
    check_fields(str(path), data, spec, hint=_HINT)
    return data


def check_table(path: str | Path, df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` with its ``columns`` (other than :data:`TEXT_COLUMNS`) as numbers; text where a number belongs
    is refused.

    Empty cells are fine (not measured); ``inf`` is a number (an unbounded interval); true/false columns
    stay as they are.

    Raises:
        PDNError: one line naming the file, the column and the first bad row.
    """
    for c in columns:
        if c in TEXT_COLUMNS or c not in df.columns:
            continue
        col = df[c]
        if col.dtype == bool or pd.api.types.is_numeric_dtype(col):
            continue
        values = pd.to_numeric(col, errors="coerce")
        bad = values.isna() & col.notna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise PDNError(f"{path}: column {c!r} must hold numbers, row {i + 2} holds {str(col.iloc[i])[:40]!r}; "
                           f"{_HINT}")
        df[c] = values
    return df


def check_inputs(inputs: Sequence[tuple[Path, str]]) -> None:
    """Check every JSON file of the report's inputs (``(path, kind)`` pairs) before anything is written.

    Raises:
        PDNError: the first file with a bad field (one line naming the file and the field).
    """
    from drivenet_patch.safety.inputs import read_json

    for path, kind in inputs:
        if kind == "data":  # a dataset: its loader checks it
            continue
        if kind == "bench":
            check_report_json(path, read_json(path, "benchmark file"), "bench")
            continue
        for name in REPORT_FIELDS:
            if (path / name).is_file():
                check_report_json(path / name, read_json(path / name, "report input"))


def check_rows(path: str | Path, df: pd.DataFrame, spec: dict[str, FieldCheck]) -> pd.DataFrame:
    """Check each row of a CSV table with field checks (an empty cell is null), naming the file and row.

    Raises:
        PDNError: ``<file> row <n>: <column> = <value> ...`` for the first bad cell.
    """
    columns = [c for c in spec if c in df.columns]
    for i, values in enumerate(df[columns].itertuples(index=False, name=None)):
        row = {c: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v)
               for c, v in zip(columns, values, strict=True)}
        check_fields(f"{path} row {i + 2}", row, {c: spec[c] for c in columns}, hint=_HINT)
    return df
