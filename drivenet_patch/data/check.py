"""``pdn data check``: open a dataset, decode its frames, summarise labels, list problems.

Structural errors (missing log or image file, unparsable row, empty dataset) raise
:class:`~drivenet_patch.safety.errors.PDNError` as when opening. Everything that still leaves a usable
dataset is reported in ``problems`` instead: images that cannot be decoded, mixed image sizes,
straight-driving imbalance, constant or physically implausible labels.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from drivenet_patch.data.registry import open_dataset
from drivenet_patch.safety.errors import PDNError

#: At most this many frames are decoded; larger datasets are sampled with ``default_rng(0)``.
MAX_DECODE = 20_000
#: |steering| below this (road-wheel degrees) counts as straight driving.
STRAIGHT_DEG = 1.0
#: A straight share above this is reported as an imbalance.
STRAIGHT_SHARE = 0.6
#: No car's road wheels turn further than this (degrees); larger labels point at wrong units.
IMPLAUSIBLE_DEG = 45.0
#: Unreadable frames listed one by one before the rest are summarised.
MAX_LISTED = 20


def check_dataset(path: str | Path, format: str = "auto", **options: Any) -> dict[str, Any]:
    """Open and scan a dataset.

    Args:
        path: dataset folder or log file.
        format: ``"auto"`` or a format name (see :data:`~drivenet_patch.data.registry.FORMATS`).
        **options: loader options, as for :func:`~drivenet_patch.data.registry.open_dataset`
            (``size`` included).

    Returns:
        A JSON-ready dict: ``format``, ``path``, ``frames``, ``height``, ``width`` (output frame
        size), ``source_sizes`` (``{"HxW": count}`` over decoded frames), ``decoded``,
        ``unreadable``, ``steering_mean``, ``steering_std``, ``steering_min``, ``steering_max``
        (road-wheel degrees, positive = left), ``straight_share``, ``left_share``,
        ``right_share``, ``cameras`` (``{name: count}``), ``problems`` (list of one-line strings)
        and ``ok`` (no problems).

    Raises:
        PDNError: the dataset cannot be opened at all.
    """
    ds = open_dataset(path, format=format, **options)
    n = len(ds)
    steer = ds.labels["steering_deg"].to_numpy(dtype=np.float64)  # (n,)
    if n > MAX_DECODE:
        idx = np.sort(np.random.default_rng(0).choice(n, size=MAX_DECODE, replace=False))
    else:
        idx = np.arange(n)
    results = _decode_all(ds, idx)
    bad = [(i, msg) for i, shape, msg in results if shape is None]
    sizes = Counter(f"{shape[0]}x{shape[1]}" for _, shape, _ in results if shape is not None)

    problems: list[str] = []
    for i, msg in bad[:MAX_LISTED]:
        problems.append(f"frame {i}: {msg}")
    if len(bad) > MAX_LISTED:
        problems.append(
            f"... and {len(bad) - MAX_LISTED} more unreadable frames ({len(bad)} of {len(idx)} decoded)"
        )
    if len(sizes) > 1:
        listed = ", ".join(f"{k} ({v})" for k, v in sizes.most_common())
        problems.append(f"source images come in {len(sizes)} different sizes: {listed}")
    straight = float(np.mean(np.abs(steer) < STRAIGHT_DEG))
    if np.ptp(steer) == 0.0:
        problems.append(f"all {n} labels are the same ({steer[0]:g} deg): constant labels carry no signal")
    if straight > STRAIGHT_SHARE:
        problems.append(
            f"{straight:.0%} of frames have |steering| < {STRAIGHT_DEG:g} deg "
            "(straight-driving imbalance; rebalance or subsample straight frames)"
        )
    wild = int(np.sum(np.abs(steer) > IMPLAUSIBLE_DEG))
    if wild:
        problems.append(
            f"{wild} frames have |steering| > {IMPLAUSIBLE_DEG:g} deg, beyond any car's road-wheel lock "
            "(wrong units or steering ratio, or glitches in the log)"
        )
    cameras = ds.labels["camera"].astype(str).value_counts().to_dict() if "camera" in ds.labels else {}
    return {
        "format": ds.format,
        "path": str(path),
        "frames": n,
        "height": int(ds.size[0]),
        "width": int(ds.size[1]),
        "source_sizes": dict(sizes.most_common()),
        "decoded": len(idx),
        "unreadable": len(bad),
        "steering_mean": float(np.mean(steer)),
        "steering_std": float(np.std(steer)),
        "steering_min": float(np.min(steer)),
        "steering_max": float(np.max(steer)),
        "straight_share": straight,
        "left_share": float(np.mean(steer >= STRAIGHT_DEG)),
        "right_share": float(np.mean(steer <= -STRAIGHT_DEG)),
        "cameras": {str(k): int(v) for k, v in cameras.items()},
        "problems": problems,
        "ok": not problems,
    }


def _decode_all(ds: Any, idx: np.ndarray) -> list[tuple[int, tuple[int, int] | None, str]]:
    """Decode frames ``idx`` (threads: OpenCV releases the GIL); (index, source (h, w) or None, error)."""
    source = getattr(ds, "source_frame", None)

    def one(i: int) -> tuple[int, tuple[int, int] | None, str]:
        try:
            if source is None:
                img = ds.frame(i)
            else:
                img = source(i)
                ds.crop.apply(img, where=ds.where(i))
        except PDNError as exc:
            return i, None, str(exc)
        return i, (int(img.shape[0]), int(img.shape[1])), ""

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, (int(i) for i in idx)))


def format_report(d: dict[str, Any]) -> str:
    """Human-readable text of a :func:`check_dataset` result (no trailing newline)."""
    sizes = ", ".join(f"{k} ({v})" for k, v in d.get("source_sizes", {}).items()) or "none decoded"
    cams = ", ".join(f"{k} {v}" for k, v in d.get("cameras", {}).items()) or "-"
    lines = [
        f"dataset   {d['path']}  [{d['format']}]",
        f"frames    {d['frames']}  (decoded {d.get('decoded', '?')}, unreadable {d.get('unreadable', 0)})",
        f"size      {d['height']}x{d['width']} output; source {sizes}",
        f"cameras   {cams}",
        (
            f"steering  mean {d['steering_mean']:+.2f} deg, std {d['steering_std']:.2f}, "
            f"min {d['steering_min']:+.2f}, max {d['steering_max']:+.2f} (road wheel, positive = left)"
        ),
    ]
    if "straight_share" in d:
        lines.append(
            f"balance   {d['straight_share']:.0%} straight (|steering| < {STRAIGHT_DEG:g} deg), "
            f"{d.get('left_share', 0.0):.0%} left, {d.get('right_share', 0.0):.0%} right"
        )
    problems = d.get("problems", [])
    if problems:
        lines.append(f"problems  {len(problems)}")
        lines.extend(f"  - {p}" for p in problems)
    else:
        lines.append("problems  none")
    return "\n".join(lines)
