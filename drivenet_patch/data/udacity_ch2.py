"""Udacity Self-Driving Car Challenge 2 logs (``interpolated.csv``), format ``udacity-ch2``.

Layout, as written by ``udacity-driving-reader`` (rwightman) from the ROS bags::

    <root>/interpolated.csv   index,timestamp,width,height,frame_id,filename,angle,torque,speed,lat,long,alt
    <root>/center/1479425441182877835.jpg   (and left/, right/)

``frame_id`` is ``center_camera``, ``left_camera`` or ``right_camera``; only ``center_camera``
rows are kept. ``filename`` is relative to the CSV's folder. Images are 640x480 JPEGs.

Steering: ``angle`` is ``steering_wheel_angle`` of the Dataspeed ``dbw_mkz_msgs/SteeringReport``
in radians. Assumption: ROS REP 103 convention, counter-clockwise (left) positive, as in the
Dataspeed drive-by-wire kit, so no sign flip. Road-wheel degrees =
``degrees(angle) / steering_ratio`` with the Lincoln MKZ ratio 14.8 (the ``steer_ratio`` default
of Dataspeed's ``dbw_mkz_twist_controller``); a single linear ratio is itself an approximation.
"""

from __future__ import annotations

import csv
import math
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

HEADER = (
    "index",
    "timestamp",
    "width",
    "height",
    "frame_id",
    "filename",
    "angle",
    "torque",
    "speed",
    "lat",
    "long",
    "alt",
)
REQUIRED = ("frame_id", "filename", "angle")
CENTER = "center_camera"

#: Source camera (assumed). 640x480 Point Grey frames; a 60 deg horizontal field of view, a 1.4 m
#: windscreen mount 1.3 m ahead of the rear axle and a 4 deg downward pitch (horizon near row 200)
#: are estimates, not calibration data.
CH2_CAMERA = Camera(
    height=480, width=640, hfov_deg=60.0, mount_height_m=1.4, pitch_deg=4.0, lateral_m=0.0, forward_m=1.3
)
#: Default crop (top, bottom, left, right): sky above the horizon (~row 200) and the bonnet.
CH2_MARGINS = (200, 60, 0, 0)


class UdacityCh2Dataset(WheelAngleLog):
    """Udacity Challenge 2 ``interpolated.csv`` (centre camera only).

    Args:
        path: the folder holding ``interpolated.csv``, or the CSV itself.
        steering_ratio: steering-wheel to road-wheel ratio (14.8, Lincoln MKZ).
        crop: crop and output size; default removes the sky and bonnet (see :data:`CH2_MARGINS`).
        size: output ``(H, W)``; overrides ``crop.size``; default (66, 200).
        camera: source camera; default :data:`CH2_CAMERA` (an assumption).
        allow_outside: accept image paths outside the dataset folder.

    ``labels`` columns: ``steering_deg``, ``camera``, ``image``, ``source_file``, ``source_row``,
    ``angle_rad``, ``timestamp`` and, when present, ``torque``, ``speed``.
    """

    format = "udacity-ch2"
    log_names = ("interpolated.csv",)
    layout = "a udacity-ch2 dataset is a folder with interpolated.csv"
    source_camera, margins, empty = CH2_CAMERA, CH2_MARGINS, f"{CENTER} rows"

    def parse(self, log: Path, guard: PathGuard) -> pd.DataFrame:
        return _parse(log, self.steering_ratio, guard)


def _parse(log: Path, ratio: float, guard: PathGuard) -> pd.DataFrame:
    rows = label_rows("angle_rad", "timestamp", "torque", "speed")
    with open_log(log) as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
            if not header or any(col not in header for col in REQUIRED):
                raise PDNError(
                    f"{log}: row 1: unexpected header {','.join(header)!r}, expected {','.join(HEADER)!r}"
                )
            col = {name: header.index(name) for name in header}
            optional = {k: col.get(k) for k in ("timestamp", "torque", "speed")}
            for fields in reader:
                n = reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                where = f"{log}: row {n}"
                if len(fields) != len(header):
                    raise PDNError(
                        f"{where}: expected {len(header)} fields like the header, got {len(fields)}"
                    )
                if fields[col["frame_id"]].strip() != CENTER:
                    continue
                angle = parse_finite(fields[col["angle"]].strip(), "angle", where)
                name = fields[col["filename"]].strip()
                if not name:
                    raise PDNError(f"{where}: filename is empty")
                image = guard.check(log.parent / name.replace("\\", "/"), where)
                if not Path(image).is_file():
                    refuse_special(image, where)
                    raise PDNError(f"{where}: image not found: {image}")
                rows["steering_deg"].append(math.degrees(angle) / ratio)
                rows["camera"].append("center")
                rows["image"].append(image)
                rows["source_file"].append(str(log))
                rows["source_row"].append(n)
                rows["angle_rad"].append(angle)
                for key, idx in optional.items():
                    rows[key].append(fields[idx].strip() if idx is not None else "")
        except csv.Error as exc:
            raise PDNError(f"{log}: row {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError:
            raise PDNError(f"{log}: not a UTF-8 text file") from None
    labels = pd.DataFrame(rows)
    for key in ("torque", "speed"):
        labels[key] = pd.to_numeric(labels[key], errors="coerce")
    return labels
