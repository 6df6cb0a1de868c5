"""One dataset interface for the built-in world and for real driving logs.

Every dataset yields frames as uint8 (H, W, 3) RGB at the model size together with the
steering label in road-wheel degrees, positive = left. Real formats crop and resize their
source frames with a :class:`CropResize`; their camera geometry (:class:`~drivenet_patch.world.camera.Camera`
of the *source* image plus the crop) lets viewpoint augmentation and sticker placement work
with a flat-ground homography.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pandas as pd

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_STEERING_DEG
from drivenet_patch.world.camera import Camera


@dataclass(frozen=True)
class CropResize:
    """Crop a source frame, then resize it to the model size.

    Attributes:
        top, bottom, left, right: pixels removed from each side of the source frame.
        size: output ``(H, W)``.
    """

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0
    size: tuple[int, int] = (66, 200)

    def __post_init__(self) -> None:
        if min(self.top, self.bottom, self.left, self.right) < 0:
            raise PDNError(f"crop margins must be >= 0, got {self.top, self.bottom, self.left, self.right}")
        if self.size[0] < 8 or self.size[1] < 8:
            raise PDNError(f"output size must be at least 8x8, got {self.size}")

    def apply(self, frame: np.ndarray, where: str = "frame") -> np.ndarray:
        """Crop then resize a uint8 (h, w, 3) frame to ``size`` (INTER_AREA when shrinking)."""
        h, w = frame.shape[:2]
        if self.top + self.bottom >= h or self.left + self.right >= w:
            raise PDNError(f"{where}: crop {self.top, self.bottom, self.left, self.right} leaves nothing of a {h}x{w} image")
        cropped = frame[self.top : h - self.bottom, self.left : w - self.right]
        out_h, out_w = self.size
        if cropped.shape[:2] == (out_h, out_w):
            return np.ascontiguousarray(cropped)
        shrink = cropped.shape[0] >= out_h and cropped.shape[1] >= out_w
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return cv2.resize(cropped, (out_w, out_h), interpolation=interp)

    def matrix(self, source_hw: tuple[int, int]) -> np.ndarray:
        """3x3 map from source pixels to output pixels (OpenCV pixel-centre convention)."""
        h, w = source_hw
        ch, cw = h - self.top - self.bottom, w - self.left - self.right
        sx, sy = self.size[1] / cw, self.size[0] / ch
        # cv2.resize maps pixel centres: x_out = (x_in + 0.5) * s - 0.5
        return np.array(
            [
                [sx, 0.0, (0.5 - self.left) * sx - 0.5],
                [0.0, sy, (0.5 - self.top) * sy - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )


#: Output ``(H, W)`` of a real-log loader when neither ``crop`` nor ``size`` is given.
DEFAULT_SIZE: tuple[int, int] = (66, 200)


def make_crop(
    margins: tuple[int, int, int, int], crop: CropResize | None, size: tuple[int, int] | None
) -> CropResize:
    """The crop to use: ``crop`` as given, else the format's default ``margins`` at ``size``.

    Args:
        margins: the format's default ``(top, bottom, left, right)`` in source pixels.
        crop: a caller's crop; wins over ``margins`` (its own ``size`` is kept unless ``size`` is given).
        size: output ``(H, W)``; ``None`` keeps ``crop.size`` or the default (66, 200).
    """
    if crop is not None:
        if size is None or tuple(size) == tuple(crop.size):
            return crop
        return CropResize(crop.top, crop.bottom, crop.left, crop.right, size=(int(size[0]), int(size[1])))
    out = DEFAULT_SIZE if size is None else (int(size[0]), int(size[1]))
    top, bottom, left, right = margins
    return CropResize(top=top, bottom=bottom, left=left, right=right, size=out)


class DriveDataset:
    """Base class: frames (uint8 HWC RGB, model size) + steering labels in degrees.

    Subclasses set ``labels`` (a DataFrame with at least ``steering_deg``, one row per frame),
    ``size`` ``(H, W)``, ``camera`` (the source camera) and ``crop`` (a :class:`CropResize`),
    and implement :meth:`frame`.
    """

    format: ClassVar[str] = "base"
    #: File names that are this format's log: a path naming one of them is a dataset of this format.
    log_names: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def detect(cls, folder: Path) -> bool:
        """True when ``folder`` looks like a dataset of this format (default: one of ``log_names`` is there;
        ``exists()``, not ``is_file()``: a FIFO in a log's place is found here and refused by the loader)."""
        return any((folder / n).exists() for n in cls.log_names)

    @classmethod
    def names_log(cls, path: Path) -> bool:
        """True when the file ``path`` is this format's log (default: its name is one of ``log_names``)."""
        return path.name in cls.log_names

    def __init__(self, root: str | Path, labels: pd.DataFrame, camera: Camera, crop: CropResize) -> None:
        self.root = Path(root)
        self.labels = labels.reset_index(drop=True)
        steer = pd.to_numeric(self.labels["steering_deg"], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(steer))
        if len(bad):  # e.g. a finite raw value divided by a tiny steering ratio
            i = int(bad[0])
            raise PDNError(f"{self._label_row(i)}: steering label {steer[i]} deg is not a finite number "
                           "(check the unit options)")
        bad = np.flatnonzero(np.abs(steer) > MAX_STEERING_DEG)
        if len(bad):  # a road wheel cannot turn further; such a label is corrupt or in the wrong unit
            i = int(bad[0])
            raise PDNError(f"{self._label_row(i)}: steering label {steer[i]:.6g} deg is beyond +-{MAX_STEERING_DEG:g} "
                           "deg road-wheel angle (check the unit options)")
        self.camera = camera
        self.crop = crop
        self.size = crop.size

    def _label_row(self, i: int) -> str:
        """Where label ``i`` comes from: ``<log>: row <n>`` when the labels say, else ``<root>: frame <i>``."""
        if {"source_file", "source_row"} <= set(self.labels.columns):
            return f"{self.labels.at[i, 'source_file']}: row {self.labels.at[i, 'source_row']}"
        return f"{self.root}: frame {i}"

    def __len__(self) -> int:
        return len(self.labels)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as uint8 (H, W, 3) RGB at the model size."""
        raise NotImplementedError

    def steering(self, i: int) -> float:
        return float(self.labels.at[int(i), "steering_deg"])

    def __getitem__(self, i: int) -> tuple[np.ndarray, float]:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(i)
        i = int(i) % len(self)
        return self.frame(i), self.steering(i)

    def release(self) -> None:
        """Let go of frame memory this process holds only as a cache (streaming loops call it now and
        then so resident memory stays bounded on datasets larger than RAM). Default: nothing to do."""

    def frames(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """Several frames stacked as (n, H, W, 3) uint8."""
        return np.stack([self.frame(int(i)) for i in indices]) if len(indices) else np.zeros((0, *self.size, 3), np.uint8)

    def image_to_ground(self) -> np.ndarray:
        """3x3 homography from model-size pixels to vehicle-frame ground points (X, Y, 1)."""
        src_to_out = self.crop.matrix((self.camera.height, self.camera.width))
        return np.linalg.inv(src_to_out @ self.camera.ground_homography())


class LogDataset(DriveDataset):
    """Base of the real-log loaders: the constructor they share.

    A loader names its format's ``source_camera`` (field of view and mount; the size becomes that of
    the stored frames), its default crop ``margins`` (top, bottom, left, right) and ``empty`` (what a
    log without frames holds none of), and implements :meth:`read`. Its constructor checks its own
    settings, then calls this one with the keyword arguments every loader takes.

    Args:
        path: the dataset folder, or its log file.
        crop: crop and output size; default: the format's ``margins`` at ``size``.
        size: output ``(H, W)``; overrides ``crop.size``; default (66, 200).
        camera: source camera; default the format's ``source_camera``.
        allow_outside: accept files the log names outside the dataset folder.
    """

    source_camera: ClassVar[Camera]
    margins: ClassVar[tuple[int, int, int, int]]
    empty: ClassVar[str] = "data rows"

    def __init__(self, path: str | Path, *, crop: CropResize | None = None, size: tuple[int, int] | None = None,
                 camera: Camera | None = None, allow_outside: bool = False) -> None:
        log, labels, source_hw = self.read(Path(path), allow_outside)
        if labels.empty:
            raise PDNError(f"{log}: no {self.empty} (the dataset is empty)")
        camera = camera or self.source_camera
        if source_hw is not None:
            camera = camera.with_size(*source_hw)
        root = log if log.is_dir() else log.parent
        super().__init__(root, labels, camera, make_crop(self.margins, crop, size))

    def read(self, path: Path, allow_outside: bool) -> tuple[Path, pd.DataFrame, tuple[int, int] | None]:
        """Parse the log once, refusing bad input with a PDNError that names the file and row.

        Returns:
            ``(log, labels, source_hw)``: the log file (or the dataset folder when the log is several
            files), one labels row per frame (``steering_deg`` and where the frame comes from), and the
            stored frames' ``(h, w)`` (``None`` when it cannot be told; the camera's size stays).
        """
        raise NotImplementedError
