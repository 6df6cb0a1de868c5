"""Datasets rendered from the built-in driving world (``pdn data synth``).

A synth dataset folder holds ``images.npy`` (uint8 N x H x W x 3, opened memory-mapped),
``labels.csv`` (``steering_deg``, ``episode``, ``t``, ``camera``, pose columns ...) and
``meta.json`` (camera, world parameters, version).
"""

from __future__ import annotations

import math
import mmap
from pathlib import Path

import numpy as np
import pandas as pd

from drivenet_patch.data.base import CropResize, DriveDataset
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_IMAGE_SIDE, MAX_STEERING_DEG, contained_file, read_json
from drivenet_patch.world.camera import Camera


class SynthDataset(DriveDataset):
    """A dataset written by ``pdn data synth``; frames are memory-mapped, never loaded whole."""

    format = "synth"
    log_names = ("images.npy", "labels.csv", "meta.json")

    @classmethod
    def detect(cls, folder: Path) -> bool:
        return (folder / "images.npy").exists() and (folder / "meta.json").exists()

    def __init__(self, root: str | Path, allow_outside: bool = False) -> None:
        """Open the dataset folder ``root``; ``allow_outside`` accepts files that are symlinks out of it."""
        root = Path(root)
        for name in ("images.npy", "labels.csv", "meta.json"):
            if not (root / name).exists():
                raise PDNError(f"{root / name}: missing (a synth dataset needs images.npy, labels.csv, meta.json)")
            contained_file(root / name, root, allow_outside, what="dataset file")  # no FIFO, no symlink out of the folder
        meta, cam = _read_meta(root / "meta.json")
        try:
            images = np.load(root / "images.npy", mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise PDNError(f"{root / 'images.npy'}: cannot read ({exc})") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise PDNError(f"{root / 'images.npy'}: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) == 0:
            raise PDNError(f"{root / 'images.npy'}: no frames (the dataset is empty)")
        if max(images.shape[1:3]) > MAX_IMAGE_SIDE:
            raise PDNError(f"{root / 'images.npy'}: frames of {images.shape[1]}x{images.shape[2]} are larger than "
                           f"{MAX_IMAGE_SIDE} pixels a side")
        if min(images.shape[1:3]) < 8:
            raise PDNError(f"{root / 'images.npy'}: frames of {images.shape[1]}x{images.shape[2]} are smaller than 8x8")
        try:
            labels = pd.read_csv(root / "labels.csv")
        except (ValueError, OSError, pd.errors.ParserError) as exc:  # EmptyDataError, UnicodeDecodeError: ValueError
            raise PDNError(f"{root / 'labels.csv'}: cannot parse ({_first_line(exc)})") from None
        if "steering_deg" not in labels.columns:
            raise PDNError(f"{root / 'labels.csv'}: no steering_deg column")
        if len(labels) != len(images):
            raise PDNError(f"{root / 'labels.csv'}: {len(labels)} rows but images.npy holds {len(images)} frames")
        steer = pd.to_numeric(labels["steering_deg"], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(steer.to_numpy(dtype=np.float64)))
        if len(bad):
            raise PDNError(f"{root / 'labels.csv'}: row {int(bad[0]) + 2}: steering_deg is not a finite number")
        bad = np.flatnonzero(np.abs(steer.to_numpy(dtype=np.float64)) > MAX_STEERING_DEG)
        if len(bad):
            raise PDNError(f"{root / 'labels.csv'}: row {int(bad[0]) + 2}: steering_deg {steer.iat[int(bad[0])]:.6g} "
                           f"is beyond +-{MAX_STEERING_DEG:g} deg road-wheel angle")
        labels["steering_deg"] = steer.astype(np.float64)
        self.meta = meta
        self.images = images
        super().__init__(root, labels, cam, CropResize(size=(int(images.shape[1]), int(images.shape[2]))))

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.images[int(i)])

    def release(self) -> None:
        """Unmap the pages of ``images.npy`` read so far (``madvise(MADV_DONTNEED)``; they stay in the OS
        page cache, so reading them again costs no disk I/O). Pages of a memory-mapped file count as
        this process's resident memory until then: streaming 200,000 frames would otherwise reach 8 GB."""
        mm = getattr(self.images, "_mmap", None)
        if mm is not None and hasattr(mmap, "MADV_DONTNEED") and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED)

    def frames(self, indices: np.ndarray | list[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return np.asarray(self.images[np.sort(idx)])[np.argsort(np.argsort(idx))] if len(idx) else self.images[:0].copy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_meta(path: Path) -> tuple[dict, Camera]:
    """``meta.json`` as a dict and its source camera; a one-line PDNError naming the file otherwise."""
    meta = read_json(path, "synth meta file")
    if not isinstance(meta, dict) or not isinstance(meta.get("camera"), dict):
        raise PDNError(f"{path}: not a valid synth meta file (expected an object with a 'camera' object)")
    for key, value in meta["camera"].items():
        integral = key in ("height", "width")
        if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)) or not math.isfinite(value):
            kind = "an integer" if integral else "a finite number"
            raise PDNError(f"{path}: not a valid synth meta file (camera.{key} must be {kind}, got {value!r})")
    try:
        cam = Camera(**meta["camera"])
    except (TypeError, ValueError, PDNError) as exc:
        raise PDNError(f"{path}: not a valid synth meta file (camera: {_first_line(exc)})") from None
    drive = meta.get("drive")
    if drive is not None:  # training reads the expert's lookahead from here
        look = drive.get("lookahead_m") if isinstance(drive, dict) else None
        if isinstance(look, bool) or not isinstance(look, (int, float)) or not (math.isfinite(look) and look > 0):
            raise PDNError(f"{path}: drive.lookahead_m must be a positive number, got {look!r}")
    return meta, cam
