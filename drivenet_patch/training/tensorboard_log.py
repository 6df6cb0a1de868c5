"""TensorBoard logging of a training run (``pdn train --tensorboard DIR``; the ``tensorboard`` extra).

Per epoch: ``train/loss``, ``val/rmse_deg`` (and the other validation metrics), ``train/lr`` and
``train/images_per_s`` as scalars at step = epoch; once, a few input frames as images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from drivenet_patch.safety.errors import PDNError

EXTRA_HINT = "pip install -e '.[tensorboard]'"
#: metrics.csv column -> TensorBoard tag.
TAGS = {"train_loss": "train/loss", "lr": "train/lr", "train_img_s": "train/images_per_s",
        "seconds": "train/epoch_seconds"}


class TensorBoardLog:
    """A callable for :func:`drivenet_patch.training.train.train`'s ``on_epoch``, writing event files under ``logdir``.

    Raises:
        PDNError: tensorboard is not installed (one line naming the extra).
    """

    def __init__(self, logdir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PDNError(f"TensorBoardLog needs the tensorboard extra: {EXTRA_HINT}") from None
        self.logdir = Path(logdir)
        if self.logdir.exists() and not self.logdir.is_dir():
            raise PDNError(f"logdir: {self.logdir} exists and is not a folder")
        self.writer = SummaryWriter(str(self.logdir))

    def frames(self, frames: np.ndarray, tag: str = "input/frames") -> None:
        """Log uint8 (n, H, W, 3) RGB frames once."""
        self.writer.add_images(tag, np.asarray(frames, dtype=np.uint8), 0, dataformats="NHWC")
        self.writer.flush()

    def __call__(self, row: dict[str, Any]) -> None:
        """Log one epoch's metrics row (``epoch`` is the step)."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                continue
            tag = TAGS.get(key) or (f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}")
            self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
