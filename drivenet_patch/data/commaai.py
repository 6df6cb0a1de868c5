"""comma.ai research driving data (HDF5), format ``commaai``.

Layout (github.com/commaai/research)::

    <root>/camera/2016-01-30--11-24-51.h5   X: uint8 (N, 3, 160, 320), RGB frames at 20 Hz
    <root>/log/2016-01-30--11-24-51.h5      steering_angle, cam1_ptr, ... sampled at 100 Hz

``cam1_ptr[k]`` is the index (stored as float) of the camera frame current at log sample ``k``.
The label of camera frame ``j`` is the mean ``steering_angle`` over the samples whose
``cam1_ptr`` equals ``j``; frames that no sample points to are dropped (``labels.frame`` keeps the
original index).

Units and sign (assumptions, with the evidence):

* ``steering_angle`` is fixed point, tenths of a steering-wheel degree: values reach +-5000 and
  George Hotz answered "that is fixed point. Divide by 10" (commaai/research issue #32); the
  repository's ``view_steering_model.py`` also divides by 10. ``angle_scale = 0.1``.
* Positive = RIGHT (the Honda CAN convention, which openpilot's DBC flips with a -0.1 factor):
  ``view_steering_model.py`` draws the path for ``-steering_angle / 10`` with a curvature whose
  positive sign bends to image-left in its own ground-to-pixel calibration. We negate.
* Steering ratio 15.3: the Acura ILX 2016 figure the same script uses.

``steering_deg = -steering_angle * angle_scale / steering_ratio``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drivenet_patch.data._imagelog import PathGuard, positive
from drivenet_patch.data.base import CropResize, LogDataset
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_H5_ELEMENTS, MAX_H5_FRAMES, MAX_IMAGE_SIDE, h5_elements, open_h5
from drivenet_patch.world.camera import Camera

#: Source camera, fitted (least squares, max residual ~8 px) to the ten ground-point/pixel pairs
#: of ``view_steering_model.py``: about 22 deg horizontal field of view, 1.2 m high, pitched 4 deg
#: down (horizon near row 20). The narrow field of view is what those pairs imply; treat it as
#: approximate.
COMMA_CAMERA = Camera(
    height=160, width=320, hfov_deg=22.0, mount_height_m=1.2, pitch_deg=4.1, lateral_m=0.0, forward_m=1.5
)
#: Default crop (top, bottom, left, right): 25 rows of sky above the horizon, 20 rows of bonnet.
COMMA_MARGINS = (25, 20, 0, 0)

H5_HINT = "pip install 'patchdrivenet[h5]'"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise PDNError(f"the commaai format needs h5py, which is not installed: {H5_HINT}") from None
    return h5py


class CommaAiDataset(LogDataset):
    """comma.ai research HDF5 pairs; frames are read lazily, one at a time, from ``camera/*.h5``.

    Args:
        path: the folder holding ``camera/`` and ``log/``, or one ``camera/<name>.h5`` file.
        files: names (``2016-01-30--11-24-51`` or ``...h5``) of the recordings to use; default all.
        steering_ratio: steering-wheel to road-wheel ratio (15.3, Acura ILX 2016).
        angle_scale: steering-wheel degrees per ``steering_angle`` unit (0.1: fixed point).
        crop: crop and output size; default removes 25 rows of sky and 20 of bonnet.
        size: output ``(H, W)``; overrides ``crop.size``; default (66, 200).
        camera: source camera; default :data:`COMMA_CAMERA`.
        allow_outside: accept a ``camera/`` or ``log/`` file that resolves outside the folder.

    ``labels`` columns: ``steering_deg``, ``camera``, ``source_file`` (camera file),
    ``source_row`` (= ``frame``, index in that file), ``frame``, ``file_index``, ``log_file``,
    ``log_samples`` (samples averaged), ``steering_raw`` (their mean, raw units).

    HDF5 handles are opened on first use in each process (safe with DataLoader workers) and
    dropped when pickling; :meth:`close` closes them.
    """

    format = "commaai"
    source_camera, margins, empty = COMMA_CAMERA, COMMA_MARGINS, "camera frame has a log sample"

    @classmethod
    def detect(cls, folder: Path) -> bool:
        return (folder / "camera").is_dir() and (folder / "log").is_dir() and any((folder / "camera").glob("*.h5"))

    @classmethod
    def names_log(cls, path: Path) -> bool:
        return path.suffix == ".h5" and path.parent.name == "camera"

    def __init__(
        self,
        path: str | Path,
        *,
        files: Sequence[str] | None = None,
        steering_ratio: float = 15.3,
        angle_scale: float = 0.1,
        crop: CropResize | None = None,
        size: tuple[int, int] | None = None,
        camera: Camera | None = None,
        allow_outside: bool = False,
    ) -> None:
        _h5py()
        self.steering_ratio = positive(steering_ratio, "steering_ratio")
        self.angle_scale = positive(angle_scale, "angle_scale")
        self.allow_outside = bool(allow_outside)
        self._names = files  # the recordings asked for; read() finds their camera files (self.files)
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        super().__init__(path, crop=crop, size=size, camera=camera, allow_outside=allow_outside)
        self._file_index = self.labels["file_index"].to_numpy()
        self._frame = self.labels["frame"].to_numpy()

    def read(self, path: Path, allow_outside: bool) -> tuple[Path, pd.DataFrame, tuple[int, int] | None]:
        h5py = _h5py()
        root, self.files = _camera_files(path, self._names)
        guard = PathGuard(root, allow_outside)
        tables = []
        shape = None
        for k, cam_path in enumerate(self.files):
            log_path = root / "log" / cam_path.name
            for p in (cam_path, log_path):
                guard.check(p, where=str(p))
            n_frames, frame_shape = _camera_shape(h5py, cam_path, allow_outside)
            shape = shape or frame_shape
            raw_mean, counts = _frame_labels(h5py, log_path, n_frames, allow_outside)
            keep = np.flatnonzero(counts > 0)
            tables.append(
                pd.DataFrame(
                    {
                        "steering_deg": -raw_mean[keep] * self.angle_scale / self.steering_ratio,
                        "camera": "center",
                        "source_file": str(cam_path),
                        "source_row": keep,
                        "frame": keep,
                        "file_index": k,
                        "log_file": str(log_path),
                        "log_samples": counts[keep],
                        "steering_raw": raw_mean[keep],
                    }
                )
            )
        labels = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        return root, labels, shape  # the camera's size is the stored one

    # ------------------------------------------------------------------ lazy HDF5 access
    def _x(self, k: int) -> Any:
        if self._pid != os.getpid():  # forked worker: never share the parent's handles
            self._handles, self._pid, self._lock = {}, os.getpid(), threading.Lock()
        handle = self._handles.get(k)
        if handle is None:
            with self._lock:  # check_dataset decodes from threads
                handle = self._handles.get(k)
                if handle is None:
                    handle = self._handles[k] = _open(_h5py(), self.files[k], self.allow_outside)
        return handle["X"]

    def where(self, i: int) -> str:
        """Origin of frame ``i``: ``<camera file>: frame <j>``."""
        return f"{self.files[int(self._file_index[i])]}: frame {int(self._frame[i])}"

    def source_frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as stored: uint8 (160, 320, 3) RGB, before crop and resize."""
        i = int(i)
        k, j = int(self._file_index[i]), int(self._frame[i])
        try:
            chw = np.asarray(self._x(k)[j])
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise PDNError(f"{self.where(i)}: cannot read ({exc})") from None
        return np.ascontiguousarray(chw.transpose(1, 2, 0))

    def frame(self, i: int) -> np.ndarray:
        return self.crop.apply(self.source_frame(i), where=self.where(i))

    def close(self) -> None:
        """Close the HDF5 files this process opened."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()
        self._lock = threading.Lock()


def _camera_files(path: Path, files: Sequence[str] | None) -> tuple[Path, list[Path]]:
    if path.is_file():
        if path.parent.name != "camera":
            raise PDNError(f"{path}: expected a file inside a camera/ folder (with its twin in log/)")
        return path.parent.parent, [path]
    if not path.is_dir():
        raise PDNError(f"{path}: no such file or folder")
    cam_dir = path / "camera"
    if not cam_dir.is_dir() or not (path / "log").is_dir():
        raise PDNError(f"{path}: a commaai dataset needs camera/ and log/ folders")
    if files is None:
        found = sorted(cam_dir.glob("*.h5"))
    else:
        names = [files] if isinstance(files, str) else list(files)
        found = [cam_dir / (n if n.endswith(".h5") else f"{n}.h5") for n in names]
        for f in found:
            if not f.is_file():
                raise PDNError(f"{f}: missing (asked for by files=)")
    if not found:
        raise PDNError(f"{cam_dir}: no .h5 files (the dataset is empty)")
    return path, found


def _open(h5py: Any, path: Path, allow_outside: bool = False) -> Any:
    """Open through :func:`~drivenet_patch.safety.inputs.open_h5`: no external storage, links or virtual datasets."""
    return open_h5(path, allow_outside)


def _camera_shape(h5py: Any, path: Path, allow_outside: bool = False) -> tuple[int, tuple[int, int]]:
    with _open(h5py, path, allow_outside) as f:
        x = f.get("X")
        if x is None or not isinstance(x, h5py.Dataset):
            raise PDNError(f"{path}: no dataset 'X' (expected camera frames uint8 (N, 3, H, W))")
        if x.ndim != 4 or x.shape[1] != 3 or x.dtype != np.uint8:
            raise PDNError(f"{path}: 'X' is {x.dtype} {x.shape}, expected uint8 (N, 3, H, W)")
        if x.shape[2] < 2 or x.shape[3] < 2:
            raise PDNError(f"{path}: 'X' holds {x.shape[2]}x{x.shape[3]} frames, too small for a camera image")
        if x.shape[0] > MAX_H5_FRAMES or max(x.shape[2:]) > MAX_IMAGE_SIDE:
            raise PDNError(f"{path}: 'X' declares {x.shape}, beyond the limits of {MAX_H5_FRAMES} frames "
                           f"and {MAX_IMAGE_SIDE} pixels a side")
        return int(x.shape[0]), (int(x.shape[2]), int(x.shape[3]))


def _frame_labels(h5py: Any, log_path: Path, n_frames: int, allow_outside: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per camera frame: mean raw steering over the log samples pointing to it, and their count."""
    if not log_path.exists():
        raise PDNError(f"{log_path}: missing (every camera/<name>.h5 needs log/<name>.h5)")
    with _open(h5py, log_path, allow_outside) as f:
        arrays = {}
        for key in ("steering_angle", "cam1_ptr"):
            ds = f.get(key)
            if ds is None or not isinstance(ds, h5py.Dataset):
                raise PDNError(f"{log_path}: no dataset {key!r}")
            if ds.dtype.kind not in "biuf":  # a complex cast would drop the imaginary part silently
                raise PDNError(f"{log_path}: {key!r} holds {ds.dtype}, expected real numbers")
            if ds.ndim != 1 and not (ds.ndim == 2 and ds.shape[1] == 1):  # no silent flattening of a table
                raise PDNError(f"{log_path}: {key!r} has shape {ds.shape}, expected one value per sample (N,)")
            if h5_elements(ds.shape) > MAX_H5_ELEMENTS:
                raise PDNError(f"{log_path}: {key!r} declares {h5_elements(ds.shape)} samples, more than "
                               f"the limit of {MAX_H5_ELEMENTS}")
            try:
                arrays[key] = np.asarray(ds[()], dtype=np.float64).reshape(-1)
            except (OSError, RuntimeError, ValueError, TypeError) as exc:
                raise PDNError(f"{log_path}: cannot read {key!r} ({exc})") from None
    steer, ptr = arrays["steering_angle"], arrays["cam1_ptr"]
    if len(steer) != len(ptr):
        raise PDNError(f"{log_path}: steering_angle has {len(steer)} samples but cam1_ptr has {len(ptr)}")
    for key, arr in (("steering_angle", steer), ("cam1_ptr", ptr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            raise PDNError(f"{log_path}: sample {int(bad[0])}: {key} is not a finite number")
    pos = np.floor(ptr + 1e-6)
    inside = (pos >= 0) & (pos < n_frames)  # decided on floats: a huge pointer would not cast to int64
    idx = pos[inside].astype(np.int64)
    counts = np.bincount(idx, minlength=n_frames)
    sums = np.bincount(idx, weights=steer[inside], minlength=n_frames)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mean, counts
