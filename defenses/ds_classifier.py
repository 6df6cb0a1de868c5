"""The classifier side of the derandomized-smoothing baseline: steering bins and the band classifier.

Derandomized smoothing (Levine & Feizi 2020) certifies a *classifier*, so steering is cut into
bins (:class:`SteeringBins`) and a PilotNet-shaped CNN (:class:`DSPilotNet`) learns the bin from
one retained band of columns; :mod:`defenses.art_ds` wraps it in ART's estimator, trains and
certifies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from defenses.aggregate import bin_index
from drivenet_patch.models.pilotnet import PILOTNET_CONVS, conv_output_size, min_input_size
from drivenet_patch.safety.errors import PDNError

__all__ = ["DSPilotNet", "SteeringBins", "check_labels"]


def check_labels(labels: Any, n: int | None, name: str) -> np.ndarray:
    """Steering labels in degrees, (N,) or (N, 1), finite (and ``n`` of them when given) -> float64 (N,)."""
    try:
        y = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise PDNError(f"{name}: expected numbers in degrees") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise PDNError(f"{name}: expected shape (N,), got {y.shape}")
    if n is not None and len(y) != n:
        raise PDNError(f"{name}: {len(y)} labels for {n} frames")
    if not np.isfinite(y).all():
        raise PDNError(f"{name}: entry {int(np.flatnonzero(~np.isfinite(y))[0])} is not a finite number")
    return y


# --------------------------------------------------------------------------------------------- bins


@dataclass(frozen=True)
class SteeringBins:
    """Steering classes for a classifier: consecutive bins of ``bin_deg`` degrees.

    Class ``c`` is the bin of :func:`defenses.aggregate.bin_index` number ``first + c``, i.e.
    the interval ``[(first + c - 1/2) * bin_deg, (first + c + 1/2) * bin_deg)`` with centre
    ``(first + c) * bin_deg``; bin 0 is centred on straight ahead, as in PatchVote's bin vote.
    Labels beyond the end bins go to the end classes.

    Attributes:
        bin_deg: bin width in degrees (> 0).
        first: bin number of class 0.
        n_classes: number of classes (>= 2; ART's certificate needs a runner-up).
    """

    bin_deg: float
    first: int
    n_classes: int

    def __post_init__(self) -> None:
        if not (isinstance(self.bin_deg, (int, float)) and math.isfinite(self.bin_deg) and self.bin_deg > 0):
            raise PDNError(f"bin_deg: must be a positive number of degrees, got {self.bin_deg!r}")
        if int(self.n_classes) != self.n_classes or self.n_classes < 2:
            raise PDNError(f"steering bins: need at least 2 classes, got {self.n_classes!r}")
        object.__setattr__(self, "bin_deg", float(self.bin_deg))
        object.__setattr__(self, "first", int(self.first))
        object.__setattr__(self, "n_classes", int(self.n_classes))

    @classmethod
    def from_labels(cls, labels_deg: Any, bin_deg: float = 2.0, max_deg: float = 30.0) -> SteeringBins:
        """Bins covering ``labels_deg`` (e.g. the training labels) clipped to ``±max_deg``."""
        SteeringBins(bin_deg, 0, 2)  # validates bin_deg
        if not (isinstance(max_deg, (int, float)) and math.isfinite(max_deg) and max_deg > 0):
            raise PDNError(f"max_deg: must be a positive number of degrees, got {max_deg!r}")
        y = check_labels(labels_deg, None, "labels_deg")
        if not len(y):
            raise PDNError("labels_deg: no labels to take the steering range from")
        lo = float(np.clip(y.min(), -max_deg, max_deg))
        hi = float(np.clip(y.max(), -max_deg, max_deg))
        b = bin_index(torch.tensor([lo, hi], dtype=torch.float64), bin_deg).tolist()
        return cls(bin_deg, b[0], max(b[1] - b[0] + 1, 2))

    @property
    def centres_deg(self) -> np.ndarray:
        """(n_classes,) float64 bin centres in degrees."""
        return (self.first + np.arange(self.n_classes)) * self.bin_deg

    def classes(self, labels_deg: Any) -> np.ndarray:
        """Labels in degrees (N,) -> class indices (N,) int64 in ``[0, n_classes)``."""
        y = check_labels(labels_deg, None, "labels_deg")
        b = bin_index(torch.tensor(y), self.bin_deg).numpy()  # a copy: y may be a read-only view
        return np.clip(b - self.first, 0, self.n_classes - 1).astype(np.int64)

    def centres(self, classes: Any) -> np.ndarray:
        """Class indices (N,) -> bin centres (N,) float64 in degrees."""
        c = np.asarray(classes)
        if c.size and (not np.issubdtype(c.dtype, np.integer) or c.min() < 0 or c.max() >= self.n_classes):
            raise PDNError(f"classes: expected integers in [0, {self.n_classes}), got {c.dtype} {c.min()}..{c.max()}")
        return (self.first + c.astype(np.int64)) * self.bin_deg


# --------------------------------------------------------------------------------------- classifier


class DSPilotNet(nn.Module):
    """PilotNet's five convolutions and an MLP head, classifying steering bins.

    Takes ART's levine2020 encoding: channels ``[x, 1 - x]`` with ablated columns zero in all
    six. No colour normalisation (it would blur the "0 = ablated" code).

    Args:
        input_size: ``(H, W)`` of the images (at least PilotNet's 61x61).
        n_classes: number of steering bins.
        channels: widths of the five convolutions (PilotNet's by default).
        hidden: widths of the hidden fully connected layers.

    Shape:
        (B, 6, H, W) -> (B, n_classes) logits.
    """

    def __init__(
        self,
        input_size: tuple[int, int],
        n_classes: int,
        channels: Sequence[int] = (24, 36, 48, 64, 64),
        hidden: Sequence[int] = (100, 50),
    ) -> None:
        super().__init__()
        h, w = input_size
        fh, fw = conv_output_size(h), conv_output_size(w)
        if fh < 1 or fw < 1:
            m = min_input_size()
            raise PDNError(f"input_size {h}x{w} is too small for DSPilotNet (needs at least {m}x{m})")
        if len(channels) != len(PILOTNET_CONVS):
            raise PDNError(f"channels: DSPilotNet needs {len(PILOTNET_CONVS)} conv widths, got {len(channels)}")
        layers: list[nn.Module] = []
        c_in = 6
        for c_out, (k, s) in zip(channels, PILOTNET_CONVS, strict=True):
            layers += [nn.Conv2d(c_in, int(c_out), k, stride=s), nn.ELU()]
            c_in = int(c_out)
        layers.append(nn.Flatten())
        width = c_in * fh * fw
        for h_out in hidden:
            layers += [nn.Linear(width, int(h_out)), nn.ELU()]
            width = int(h_out)
        layers.append(nn.Linear(width, int(n_classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, n_classes)
