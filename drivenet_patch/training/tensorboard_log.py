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
from drivenet_patch.storage.folders import check_output_folder, prepare_output_folder

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
        check_output_folder(self.logdir, "tensorboard", "logdir")  # never a dataset's or a user's folder
        self._summary_writer = SummaryWriter
        self._writer: Any = None
        self._pending: list[tuple[np.ndarray, str]] = []

    @property
    def writer(self) -> Any:
        """The ``SummaryWriter``, made with the first epoch's row: a run refused before it leaves no folder."""
        if self._writer is None:
            prepare_output_folder(self.logdir, "tensorboard", "logdir")
            self._writer = self._summary_writer(str(self.logdir))
            for frames, tag in self._pending:
                self._writer.add_images(tag, frames, 0, dataformats="NHWC")
            self._pending.clear()
        return self._writer

    def frames(self, frames: np.ndarray, tag: str = "input/frames") -> None:
        """Log uint8 (n, H, W, 3) RGB frames once (written with the first epoch's row)."""
        self._pending.append((np.asarray(frames, dtype=np.uint8), tag))

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
        if self._writer is not None:
            self._writer.close()
