"""Shared machinery of the real-log loaders: path checks, image decoding, a file-backed base class.

Every loader parses its log once, at construction, and refuses bad input there with a
:class:`~drivenet_patch.safety.errors.PDNError` naming the file and row: unparsable or non-finite
steering, a wrong header, an image file that does not exist, a path that leaves the dataset
folder. Decoding happens lazily in :meth:`ImageLogDataset.frame`; an image that exists but
cannot be decoded raises there (``check_dataset`` decodes everything up front and reports).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import ClassVar, TextIO

import cv2
import numpy as np
import pandas as pd

from drivenet_patch.data.base import CropResize, LogDataset
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_IMAGE_BYTES, check_image_header, read_bytes, regular_file
from drivenet_patch.world.camera import Camera

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: The labels columns of every image log, before the format's own.
LOG_COLUMNS = ("steering_deg", "camera", "image", "source_file", "source_row")


def label_rows(*own: str) -> dict[str, list]:
    """Empty labels columns to fill row by row: :data:`LOG_COLUMNS`, then the format's ``own``."""
    return {k: [] for k in (*LOG_COLUMNS, *own)}


def positive(value: float, name: str) -> float:
    """``value`` as a float if it is a finite positive number, else a one-line PDNError naming ``name``."""
    if not (math.isfinite(value) and value > 0):
        raise PDNError(f"{name} must be a positive number, got {value}")
    return float(value)


def find_log(path: str | Path, name: str, layout: str) -> Path:
    """The log file: ``path`` itself, or ``path / name`` for a folder; a PDNError if it is missing.

    ``layout`` completes the message, e.g. "a sullychen dataset is a folder with data.txt and the images".
    """
    path = Path(path)
    log = path / name if path.is_dir() else path
    if not log.exists():
        raise PDNError(f"{log}: missing ({layout})")
    return regular_file(log, "log file")  # a FIFO or device would block the reader


def open_log(log: Path) -> TextIO:
    """Open a text log (BOM tolerated, newlines kept for the csv module); a PDNError if unreadable."""
    regular_file(log, "log file")
    try:
        return open(log, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise PDNError(f"{log}: cannot open ({exc.strerror or exc})") from None


def parse_finite(text: str, what: str, where: str) -> float:
    """``float(text)`` that must be finite, else a PDNError naming ``where`` (file and row)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise PDNError(f"{where}: {what} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise PDNError(f"{where}: {what} is not a finite number: {text!r}")
    return value


class PathGuard:
    """Resolve paths written in a log and keep them inside the dataset folder.

    A log is untrusted input: ``../../etc/passwd`` or ``/home/me/.ssh/id_rsa`` must not be
    read just because a CSV names it. Paths are resolved (symlinks followed) and must stay
    under the resolved dataset root unless ``allow_outside`` is set (also needed when the
    image folder is a symlink to another disk).
    """

    def __init__(self, root: Path, allow_outside: bool = False) -> None:
        self.root = Path(root)
        self.allow_outside = bool(allow_outside)
        self._real_root = os.path.realpath(self.root)
        self._prefix = self._real_root.rstrip(os.sep) + os.sep

    def check(self, path: Path | str, where: str) -> str:
        """Return ``path`` as a string, or raise when it leaves the dataset folder."""
        text = os.fspath(path)
        if "\x00" in text:
            raise PDNError(f"{where}: path {text!r} contains a NUL character")
        if self.allow_outside:
            return text
        real = os.path.realpath(text)
        if real != self._real_root and not real.startswith(self._prefix):
            raise PDNError(
                f"{where}: path {text!r} leaves the dataset folder {self.root} "
                "(pass allow_outside=True to permit it)"
            )
        return text


def refuse_special(path: str | Path, where: str) -> None:
    """A PDNError when ``path`` exists but is not a regular file (a FIFO or device named as an image
    would block the reader), naming ``where`` (log file and row); nothing when it is missing."""
    if os.path.exists(path) and not os.path.isfile(path):
        try:
            regular_file(path, "image")
        except PDNError as exc:
            raise PDNError(f"{where}: {exc}") from None


def is_absolute_any(path: str) -> bool:
    """True for POSIX absolute paths and Windows ones (``C:\\...``, ``C:/...``, ``\\\\server\\share``)."""
    p = path.replace("\\", "/")
    return p.startswith("/") or (len(p) >= 3 and p[1] == ":" and p[2] == "/" and p[0].isalpha())


def read_rgb(path: str, where: str) -> np.ndarray:
    """Decode an image file as uint8 (h, w, 3) RGB.

    Uses :func:`~drivenet_patch.safety.inputs.read_bytes` (regular files only, size bounded) + ``cv2.imdecode`` (same codec as ``cv2.imread``) so that a missing file
    and an undecodable one give different messages, and non-ASCII paths work on Windows.

    Raises:
        PDNError: naming the image and ``where`` (log file and row).
    """
    try:
        data = read_bytes(path, "image", MAX_IMAGE_BYTES)  # a FIFO or device would block np.fromfile
        if data:
            check_image_header(data, path)  # a small file may declare a gigapixel image: refused before decoding
    except PDNError as exc:
        raise PDNError(f"{exc} ({where})") from None
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] < 1 or bgr.shape[1] < 1:
        raise PDNError(f"{path}: cannot decode image, the file is corrupt or not an image ({where})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageLogDataset(LogDataset):
    """Base of the loaders whose frames are image files listed in a log (the constructor is
    :class:`~drivenet_patch.data.base.LogDataset`'s).

    A loader names its log (``log_names[0]`` in a dataset folder), ``layout`` (what such a folder
    holds, for the message when the log is missing) and implements :meth:`parse`. The source
    camera's size is taken from the first image (its field of view and mount stay those of the preset).
    """

    layout: ClassVar[str] = ""

    def read(self, path: Path, allow_outside: bool) -> tuple[Path, pd.DataFrame, tuple[int, int] | None]:
        log = self.find_log(path)
        labels = self.parse(log, PathGuard(log.parent, allow_outside)).reset_index(drop=True)
        self._images = labels["image"].astype(str).to_numpy() if len(labels) else np.array([], dtype=str)
        hw = None
        try:
            if len(labels):
                first = read_rgb(self._images[0], self._where_row(labels, 0))
                self.source_camera.with_size(first.shape[0], first.shape[1])  # refuses a size no camera has
                hw = (first.shape[0], first.shape[1])
        except PDNError:
            hw = None  # a corrupt (or 1x1) first image is reported by frame() / check_dataset, not here
        return log, labels, hw

    @classmethod
    def find_log(cls, path: Path) -> Path:
        """The log file: ``path`` itself, or the format's log in the folder ``path``."""
        return find_log(path, cls.log_names[0], cls.layout)

    def parse(self, log: Path, guard: PathGuard) -> pd.DataFrame:
        """One labels row per frame: ``steering_deg``, ``camera``, ``image`` (path of the image file),
        ``source_file`` (the log), ``source_row`` (1-based line of the log) and the format's own columns."""
        raise NotImplementedError

    @staticmethod
    def _where_row(labels: pd.DataFrame, i: int) -> str:
        return f"{labels.at[i, 'source_file']}: row {int(labels.at[i, 'source_row'])}"

    def where(self, i: int) -> str:
        """Human-readable origin of frame ``i``: ``<log file>: row <n>``."""
        return self._where_row(self.labels, int(i))

    def source_frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as decoded from disk: uint8 (h, w, 3) RGB, before crop and resize."""
        return read_rgb(self._images[int(i)], self.where(i))

    def frame(self, i: int) -> np.ndarray:
        img = self.source_frame(i)
        return self.crop.apply(img, where=f"{self._images[int(i)]} ({self.where(i)})")


class WheelAngleLog(ImageLogDataset):
    """Base of the image logs whose steering is the steering wheel's angle: road-wheel degrees are the
    wheel's divided by ``steering_ratio`` (a single linear ratio, itself an approximation).

    Args:
        path: the dataset folder, or its log file.
        steering_ratio: steering-wheel to road-wheel ratio.
        crop, size, camera, allow_outside: as :class:`~drivenet_patch.data.base.LogDataset`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        steering_ratio: float = 14.8,
        crop: CropResize | None = None,
        size: tuple[int, int] | None = None,
        camera: Camera | None = None,
        allow_outside: bool = False,
    ) -> None:
        self.steering_ratio = positive(steering_ratio, "steering_ratio")
        super().__init__(path, crop=crop, size=size, camera=camera, allow_outside=allow_outside)
