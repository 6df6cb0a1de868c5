"""SullyChen's driving datasets (``data.txt``), format ``sullychen``.

Layouts (github.com/SullyChen/driving-datasets)::

    driving_dataset/data.txt, driving_dataset/0.jpg ...        2017 "Dataset 1": "0.jpg 0.000000"
    07012018/data.txt, 07012018/data/0.jpg ...                 07/01/2018: "0.jpg 0.000000,2018-07-01 17:09:44:912"

Each image is looked up next to ``data.txt`` first, then in ``data/``. Images are 455x256 JPEGs.

Steering: steering-wheel degrees. Sign: SullyChen's own viewer (``run_dataset.py`` in
Autopilot-TensorFlow) draws the wheel with ``cv2.getRotationMatrix2D(centre, -angle, 1)``; a
positive OpenCV angle turns the picture counter-clockwise, so a positive label turns the wheel
clockwise, i.e. RIGHT. We negate. Ratio: the car is not documented; 14.8 (a typical passenger-car
ratio, the same as the MKZ's) is an assumption, hence the ``steering_ratio`` option.
``steering_deg = -angle / steering_ratio``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from drivenet_patch.data._imagelog import (
    PathGuard,
    WheelAngleLog,
    label_rows,
    open_log,
    parse_finite,
    refuse_special,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.camera import Camera

#: Source camera (assumed): a dashboard camera, 455x256 frames, 60 deg horizontal field of view,
#: 1.2 m above the road, 1.5 m ahead of the rear axle, 3 deg downward pitch (horizon near row 106).
SULLY_CAMERA = Camera(
    height=256, width=455, hfov_deg=60.0, mount_height_m=1.2, pitch_deg=3.0, lateral_m=0.0, forward_m=1.5
)
#: Default crop (top, bottom, left, right): the author's own training code keeps the bottom 150
#: rows (``image[-150:]``), i.e. drops 106 rows of sky; the frames show no bonnet.
SULLY_MARGINS = (106, 0, 0, 0)


class SullyChenDataset(WheelAngleLog):
    """SullyChen ``data.txt`` with ``<file> <angle>`` or ``<file> <angle>,<timestamp>`` lines.

    Args:
        path: the dataset folder, or its ``data.txt``.
        steering_ratio: steering-wheel to road-wheel ratio (default 14.8, an assumption).
        crop: crop and output size; default drops the top 106 rows.
        size: output ``(H, W)``; overrides ``crop.size``; default (66, 200).
        camera: source camera; default :data:`SULLY_CAMERA` (an assumption).
        allow_outside: accept image paths outside the dataset folder.

    ``labels`` columns: ``steering_deg``, ``camera``, ``image``, ``source_file``, ``source_row``,
    ``wheel_deg`` (the raw value), ``timestamp`` (empty for the 2017 format).
    """

    format = "sullychen"
    log_names = ("data.txt",)
    layout = "a sullychen dataset is a folder with data.txt and the images"
    source_camera, margins, empty = SULLY_CAMERA, SULLY_MARGINS, "data lines"

    def parse(self, log: Path, guard: PathGuard) -> pd.DataFrame:
        return _parse(log, self.steering_ratio, guard)


def _parse(log: Path, ratio: float, guard: PathGuard) -> pd.DataFrame:
    rows = label_rows("wheel_deg", "timestamp")
    root = log.parent
    with open_log(log) as fh:
        try:
            text = fh.read()
        except UnicodeDecodeError:
            raise PDNError(f"{log}: not a UTF-8 text file") from None
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{log}: row {n}"
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise PDNError(f"{where}: expected '<file>.jpg <angle>[,<timestamp>]', got {line!r}")
        name, rest = parts
        angle_text, _, stamp = rest.partition(",")
        angle = parse_finite(angle_text.strip(), "steering angle", where)
        rel = name.replace("\\", "/")
        image = None
        for cand in (root / rel, root / "data" / rel):
            checked = guard.check(cand, where)
            if os.path.isfile(checked):
                image = checked
                break
        if image is None:
            for cand in (root / rel, root / "data" / rel):
                refuse_special(cand, where)
            raise PDNError(f"{where}: image not found: {name!r} (looked in {root} and {root / 'data'})")
        rows["steering_deg"].append(-angle / ratio)
        rows["camera"].append("center")
        rows["image"].append(image)
        rows["source_file"].append(str(log))
        rows["source_row"].append(n)
        rows["wheel_deg"].append(angle)
        rows["timestamp"].append(stamp.strip())
    return pd.DataFrame(rows)
