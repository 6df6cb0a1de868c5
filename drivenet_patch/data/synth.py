"""Datasets rendered from the built-in driving world (``pdn data synth``).

A synth dataset folder holds ``images.npy`` (uint8 N x H x W x 3, opened memory-mapped),
``labels.csv`` (``steering_deg``, ``episode``, ``t``, ``camera``, pose columns ...) and
``meta.json`` (camera, world parameters, version).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from drivenet_patch.data.base import CropResize, DriveDataset
from drivenet_patch.errors import PDNError
from drivenet_patch.world.camera import Camera


class SynthDataset(DriveDataset):
    """A dataset written by ``pdn data synth``; frames are memory-mapped, never loaded whole."""

    format = "synth"

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        for name in ("images.npy", "labels.csv", "meta.json"):
            if not (root / name).is_file():
                raise PDNError(f"{root / name}: missing (a synth dataset needs images.npy, labels.csv, meta.json)")
        try:
            meta = json.loads((root / "meta.json").read_text())
            cam = Camera(**meta["camera"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PDNError(f"{root / 'meta.json'}: not a valid synth meta file ({exc})") from None
        try:
            images = np.load(root / "images.npy", mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise PDNError(f"{root / 'images.npy'}: cannot read ({exc})") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise PDNError(f"{root / 'images.npy'}: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        try:
            labels = pd.read_csv(root / "labels.csv")
        except (ValueError, pd.errors.ParserError) as exc:
            raise PDNError(f"{root / 'labels.csv'}: cannot parse ({exc})") from None
        if "steering_deg" not in labels.columns:
            raise PDNError(f"{root / 'labels.csv'}: no steering_deg column")
        if len(labels) != len(images):
            raise PDNError(f"{root / 'labels.csv'}: {len(labels)} rows but images.npy holds {len(images)} frames")
        steer = pd.to_numeric(labels["steering_deg"], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(steer.to_numpy(dtype=np.float64)))
        if len(bad):
            raise PDNError(f"{root / 'labels.csv'}: row {int(bad[0]) + 2}: steering_deg is not a finite number")
        self.meta = meta
        self.images = images
        super().__init__(root, labels, cam, CropResize(size=(int(images.shape[1]), int(images.shape[2]))))

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.images[int(i)])

    def frames(self, indices: np.ndarray | list[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return np.asarray(self.images[np.sort(idx)])[np.argsort(np.argsort(idx))] if len(idx) else self.images[:0].copy()

