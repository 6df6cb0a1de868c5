"""How to train: :class:`TrainConfig` (validated on construction, stored in a run's ``config.json``),
the ``--quick`` recipe, the bounds that catch absurd values, and the device check."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from drivenet_patch.safety.errors import PDNError

__all__ = ["LOSSES", "MAX_BATCH", "MAX_EPOCHS", "MAX_SAMPLES_PER_EPOCH", "MAX_SEED", "PHOTOMETRIC", "QUICK",
           "TrainConfig", "autocast_for", "check_device"]

LOSSES = ("mse", "huber")
PHOTOMETRIC = ("albumentations", "torch")
#: Upper bounds that catch typos and absurd values before they exhaust memory or time.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_SAMPLES_PER_EPOCH = 100_000_000


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Validated on construction; stored in ``config.json``.

    Attributes:
        model: registry name (``pilotnet``, ``pilotnet_tiny``, ``resnet18``, ...).
        model_cfg: keyword arguments for :func:`~drivenet_patch.models.create_model`.
        epochs: passes over ``samples_per_epoch`` drawn frames.
        batch: batch size.
        lr: peak Adam learning rate (cosine decay to 5% over the run).
        weight_decay: AdamW decoupled weight decay.
        seed: run seed.
        loss: ``mse`` or ``huber`` (delta 1 degree).
        balance: sample frames inversely to the frequency of their |steering| bin, so curves
            are not drowned by straight driving.
        augment: photometric jitter, flips and viewpoint shifts with steering correction.
        samples_per_epoch: frames drawn per epoch (default: the training set size).
        shift_m, rot_deg: largest viewpoint shift (metres) and rotation (degrees) of augmentation.
        horizon_s: seconds in which the corrected label of a shifted view rejoins the path.
            None: the data's own expert (world data: its pure-pursuit lookahead / speed, so
            augmented labels follow the same controller as recorded ones) or PilotNet's 2 s.
        photometric: ``torch`` (default: batched on the tensor in the prefetch thread,
            :class:`~drivenet_patch.training.augment_batch.BatchPhotometric`) or ``albumentations`` (per
            image; measured 0.80-0.82 of the bare step end to end against 0.83-0.88 for torch).
        val_fraction: share of episodes held out when no separate validation set is given.
        channels_last: NHWC memory format for the model (faster convolutions on CPU).
        compile: ``torch.compile`` the training step's model.
        device: torch device.
        amp: on CUDA, run the forward pass and loss under bfloat16 autocast (weights, gradients and
            optimizer stay float32); ignored on the CPU.
    """

    model: str = "pilotnet"
    model_cfg: dict = field(default_factory=dict)
    epochs: int = 10
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    loss: str = "mse"
    balance: bool = True
    augment: bool = True
    samples_per_epoch: int | None = None
    val_fraction: float = 0.1
    shift_m: float = 0.6
    rot_deg: float = 3.0
    horizon_s: float | None = None
    photometric: str = "torch"
    channels_last: bool = True
    compile: bool = False
    device: str = "cpu"
    amp: bool = True

    def __post_init__(self) -> None:
        _check_int(self.epochs, "epochs", 1, MAX_EPOCHS)
        _check_int(self.batch, "batch", 1, MAX_BATCH)
        _check_int(self.seed, "seed", 0, MAX_SEED)
        if self.samples_per_epoch is not None:
            _check_int(self.samples_per_epoch, "samples_per_epoch", 1, MAX_SAMPLES_PER_EPOCH)
        if not isinstance(self.model, str) or not isinstance(self.model_cfg, dict) or not isinstance(self.device, str):
            raise PDNError("model and device must be strings and model_cfg an object")
        for name in ("lr", "weight_decay", "val_fraction", "shift_m", "rot_deg", "horizon_s"):
            value = getattr(self, name)
            if value is None and name == "horizon_s":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PDNError(f"{name} must be a finite number, got {value!r}")
        if not self.lr > 0:
            raise PDNError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or self.shift_m < 0 or self.rot_deg < 0:
            raise PDNError("weight_decay, shift_m and rot_deg must be >= 0")
        if self.horizon_s is not None and not self.horizon_s > 0:
            raise PDNError(f"horizon_s must be > 0, got {self.horizon_s}")
        for name in ("balance", "augment", "channels_last", "compile", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise PDNError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.loss not in LOSSES:
            raise PDNError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not 0.0 <= self.val_fraction < 0.9:
            raise PDNError(f"val_fraction must lie in [0, 0.9), got {self.val_fraction}")
        if self.photometric not in PHOTOMETRIC:
            raise PDNError(f"photometric must be one of {PHOTOMETRIC}, got {self.photometric!r}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < self.batch:
            raise PDNError(f"samples_per_epoch ({self.samples_per_epoch}) must be >= batch ({self.batch})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = dict(epochs=4, samples_per_epoch=6144, batch=64, lr=2e-3)


def _check_int(value: Any, name: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise PDNError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise PDNError(f"{name} must lie in [{lo}, {hi}], got {value}")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists here (:func:`drivenet_patch.safety.inputs.check_device`, the one
    check every command uses); a one-line PDNError naming the ``device`` argument otherwise."""
    from drivenet_patch.safety.inputs import check_device as check

    return torch.device(check(device, "device"))


def autocast_for(device: str | torch.device, amp: bool) -> Any:
    """The context the training step's forward pass runs in: bfloat16 autocast on CUDA when ``amp``,
    else a no-op (on the CPU autocast measured no faster for these small convolutions, and float32
    keeps CPU runs bit for bit reproducible)."""
    import contextlib

    device = torch.device(device)
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
