"""Udacity self-driving-car simulator recordings (``driving_log.csv`` + ``IMG/``), format ``udacity-sim``.

Layout::

    <root>/driving_log.csv   center,left,right,steering,throttle,brake,speed  (header optional)
    <root>/IMG/center_2016_12_01_13_30_48_287.jpg, left_..., right_...

The simulator writes ``", "`` separators, usually no header row, and the absolute paths of the
machine that recorded (``C:\\Users\\x\\IMG\\center_....jpg`` or ``/home/x/IMG/...``); Udacity's
sample data has a header and relative ``IMG/...`` paths. Images are 320x160 JPEGs.

Steering: the log holds the normalised input ``s`` in [-1, 1]; the car's front wheels turn by
``s * m_MaximumSteerAngle`` (``CarController.Move`` in udacity/self-driving-car-sim), 25 deg in
the shipped car. Unity's ``WheelCollider.steerAngle`` is clockwise seen from above (left-handed
frame, Y up), so positive ``s`` turns RIGHT; the community recipe "left image: s + 0.2" agrees.
We therefore label ``steering_deg = -s * max_steer_deg`` (positive = left).

Side cameras: the left camera sees the road as if the car stood further left, so the label that
brings it back to the centre camera's path steers further RIGHT: with positive = left,
``left = centre - correction_deg`` and ``right = centre + correction_deg``. The default 5 deg is
the usual 0.2 normalised units times 25 deg; it is a heuristic, not a measurement.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from drivenet_patch.data._imagelog import (
    IMAGE_SUFFIXES,
    ImageLogDataset,
    PathGuard,
    is_absolute_any,
    label_rows,
    open_log,
    parse_finite,
    refuse_special,
)
from drivenet_patch.data.base import CropResize
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import regular_file
from drivenet_patch.world.camera import Camera

COLUMNS = ("center", "left", "right", "steering", "throttle", "brake", "speed")
CAMERAS = ("center", "left", "right")

#: Source camera (assumed). 320x160 frames; Unity's default vertical field of view of 60 deg gives
#: a horizontal one of 2 atan(2 tan 30 deg) = 98.2 deg; the horizon sits near row 70, hence a
#: 4 deg downward pitch; 1.5 m mount height and 1.6 m ahead of the rear axle are guesses.
SIM_CAMERA = Camera(
    height=160, width=320, hfov_deg=98.2, mount_height_m=1.5, pitch_deg=4.0, lateral_m=0.0, forward_m=1.6
)
#: Default crop (top, bottom, left, right): 70 rows of sky and trees, 25 rows of bonnet (the
#: margins of Udacity's behavioural-cloning lesson).
SIM_MARGINS = (70, 25, 0, 0)
#: Assumed lateral offset of the side cameras (m), written to the ``lateral_m`` label column; the
#: PilotNet-style 0.6 m the synth world uses, not a measurement of the simulator.
SIDE_OFFSET_M = 0.6


class UdacitySimDataset(ImageLogDataset):
    """Udacity simulator recording; one frame per (log row, selected camera).

    Args:
        path: the recording folder, or its ``driving_log.csv`` (any name) directly.
        cameras: which cameras to use, a subset of ``("center", "left", "right")``.
        max_steer_deg: road-wheel angle at ``steering = +-1`` (25 deg in the stock simulator).
        correction_deg: road-wheel degrees added to the right camera and subtracted from the left.
        crop: crop and output size; default removes 70 rows of sky and 25 of bonnet.
        size: output ``(H, W)``; overrides ``crop.size``; default (66, 200).
        camera: source camera; default :data:`SIM_CAMERA` (an assumption, see module docs).
        allow_outside: accept image paths outside the dataset folder.

    ``labels`` columns: ``steering_deg``, ``camera``, ``image``, ``source_file``, ``source_row``,
    ``steering_raw``, ``throttle``, ``brake``, ``speed``, ``lateral_m``.
    """

    format = "udacity-sim"
    log_names = ("driving_log.csv",)
    layout = "a udacity-sim dataset is a folder with driving_log.csv and IMG/"
    source_camera, margins = SIM_CAMERA, SIM_MARGINS

    def __init__(
        self,
        path: str | Path,
        *,
        cameras: Sequence[str] = ("center",),
        max_steer_deg: float = 25.0,
        correction_deg: float = 5.0,
        crop: CropResize | None = None,
        size: tuple[int, int] | None = None,
        camera: Camera | None = None,
        allow_outside: bool = False,
    ) -> None:
        cams = (cameras,) if isinstance(cameras, str) else tuple(cameras)
        if not cams or any(c not in CAMERAS for c in cams) or len(set(cams)) != len(cams):
            raise PDNError(f"cameras: expected distinct names from {CAMERAS}, got {cams}")
        if not (math.isfinite(max_steer_deg) and max_steer_deg > 0):
            raise PDNError(f"max_steer_deg must be a positive number, got {max_steer_deg}")
        if not math.isfinite(correction_deg):
            raise PDNError(f"correction_deg must be a finite number, got {correction_deg}")
        self.cameras = cams
        self.max_steer_deg = float(max_steer_deg)
        self.correction_deg = float(correction_deg)
        super().__init__(path, crop=crop, size=size, camera=camera, allow_outside=allow_outside)

    @classmethod
    def find_log(cls, path: Path) -> Path:
        """``path`` itself (a log of any name), or ``driving_log.csv`` in the folder ``path``."""
        if path.is_dir():
            return super().find_log(path)
        if path.exists():
            return regular_file(path, "log file")
        raise PDNError(f"{path}: no such file or folder")

    def parse(self, log: Path, guard: PathGuard) -> pd.DataFrame:
        return _parse_log(log, self.cameras, self.max_steer_deg, self.correction_deg, guard)


def _parse_log(
    log: Path, cams: tuple[str, ...], max_deg: float, corr_deg: float, guard: PathGuard
) -> pd.DataFrame:
    sign = {"center": 0.0, "left": -1.0, "right": 1.0}
    lateral = {"center": 0.0, "left": SIDE_OFFSET_M, "right": -SIDE_OFFSET_M}
    img_dir = log.parent / "IMG"
    rows = label_rows("steering_raw", "throttle", "brake", "speed", "lateral_m")
    with open_log(log) as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        first = True
        try:
            for fields in reader:
                n = reader.line_num
                fields = [f.strip() for f in fields]
                if not fields or all(not f for f in fields):
                    continue
                where = f"{log}: row {n}"
                if first:
                    first = False
                    if _is_header(fields):
                        if [f.lower() for f in fields] != list(COLUMNS):
                            raise PDNError(
                                f"{where}: unexpected header {','.join(fields)!r}, expected {','.join(COLUMNS)!r}"
                            )
                        continue
                if len(fields) != len(COLUMNS):
                    raise PDNError(
                        f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(fields)}"
                    )
                steer = parse_finite(fields[3], "steering", where)
                if abs(steer) > 1.0 + 1e-6:
                    raise PDNError(f"{where}: steering {steer} is outside [-1, 1] (not a simulator log?)")
                throttle = parse_finite(fields[4], "throttle", where)
                brake = parse_finite(fields[5], "brake", where)
                speed = parse_finite(fields[6], "speed", where)
                for cam in cams:
                    image = _locate(fields[CAMERAS.index(cam)], cam, img_dir, guard, where)
                    rows["steering_deg"].append(-steer * max_deg + sign[cam] * corr_deg)
                    rows["camera"].append(cam)
                    rows["image"].append(image)
                    rows["source_file"].append(str(log))
                    rows["source_row"].append(n)
                    rows["steering_raw"].append(steer)
                    rows["throttle"].append(throttle)
                    rows["brake"].append(brake)
                    rows["speed"].append(speed)
                    rows["lateral_m"].append(lateral[cam])
        except csv.Error as exc:
            raise PDNError(f"{log}: row {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError:
            raise PDNError(f"{log}: not a UTF-8 text file") from None
    return pd.DataFrame(rows)


def _is_header(fields: list[str]) -> bool:
    """A first row is a header when it names no image and its steering field is not a number."""
    if fields[0].lower().endswith(IMAGE_SUFFIXES):
        return False
    if len(fields) < 4:
        return True
    try:
        float(fields[3])
    except ValueError:
        return True
    return False


def _locate(raw: str, cam: str, img_dir: Path, guard: PathGuard, where: str) -> str:
    """Find the image a log field names.

    Absolute paths (recorded on some machine, Windows or POSIX) are looked up by file name in
    ``<root>/IMG/``; an absolute path that exists here is accepted only inside the dataset
    folder. Relative paths are taken from the log's folder, then by file name in ``IMG/``.
    """
    if not raw:
        raise PDNError(f"{where}: the {cam} image path is empty")
    norm = raw.replace("\\", "/")
    name = norm.rstrip("/").rsplit("/", 1)[-1]
    by_name = img_dir / name
    if is_absolute_any(raw):
        if name and by_name.is_file():
            return guard.check(by_name, where)
        if os.path.isabs(raw) and os.path.isfile(raw):
            return guard.check(raw, where)
        refuse_special(by_name, where)
        raise PDNError(f"{where}: {cam} image not found: {raw!r} (also looked for {by_name})")
    local = guard.check(img_dir.parent / norm, where)
    if os.path.isfile(local):
        return local
    if name and by_name.is_file():
        return guard.check(by_name, where)
    refuse_special(local, where)
    raise PDNError(f"{where}: {cam} image not found: {local}")
