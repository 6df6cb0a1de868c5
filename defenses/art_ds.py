"""Baseline: ART's derandomized smoothing (column ablation) on steering bins.

Issue 5 puts PatchVote side by side with the only off-the-shelf certified patch defense,
derandomized smoothing (Levine & Feizi 2020, "(De)Randomized Smoothing for Certifiable Defense
against Patch Attacks", arXiv:2002.10733), as implemented by ART's
``PyTorchDeRandomizedSmoothing(algorithm="levine2020", ablation_type="column")``. It classifies,
so steering is cut into bins (:class:`SteeringBins`) and a PilotNet-shaped CNN
(:class:`DSPilotNet`) learns the bin from one retained band of ``ablation_size`` columns.

How ART does it (read from ``art/estimators/certification/derandomized_smoothing``, ART 1.20.1):

- **Input encoding**: the ablator turns a (B, 3, H, W) image into (B, 6, H, W) = ``[x, 1 - x]``
  and zeroes every column outside the retained band (the band wraps around the right edge),
  so "ablated" (0 in both halves) differs from any real pixel. The classifier therefore takes
  **6** input channels; ART doubles ``input_shape[0]`` itself.
- **Training** (``fit``): one uniformly random band position per mini-batch (Python's global
  ``random.randint(0, W)``, both ends inclusive, so position 0 is drawn twice as often),
  cross-entropy on the bin index, batches shuffled with ``random.shuffle``.
- **Prediction** (``predict``): the classifier runs on all ``W`` band positions; at each one,
  every class whose softmax is ``>= threshold`` gets a vote. Output: (N, n_classes) vote
  counts (a position may vote for several classes, or none).
- **Certificate** (``ablator.certify``): a patch ``p`` columns wide overlaps at most
  ``Δ = p + ablation_size - 1`` bands, each of which can take one vote from the top class and
  give one to another, so the top class ``c`` is certified when
  ``count[c] - count[runner-up] > 2Δ`` (or ``== 2Δ`` with ``c`` the smaller index, ART's
  tie-break). It covers any patch at most ``p`` columns wide, of any height.

Metrics (:func:`certify_counts`), with ``ĉ`` the smoothed class (argmax of the counts, ties to
the smaller index, as in ART) and ``centre(c)`` its bin centre in degrees:

- ``clean_acc``: share of frames with ``|centre(ĉ) - label| <= delta_deg``.
- ``certified_acc``: share of frames that ART certifies for a ``patch_width_px`` patch **and**
  ``|centre(ĉ) - label| <= delta_deg``. A certified frame outputs ``centre(ĉ)`` under every
  such patch (a certified margin is >= 2, so ``ĉ`` is the unique top class), so this is
  PatchVote's "whole interval within delta" with a zero-width interval; ``certified_acc <=
  clean_acc`` by construction, and it can only fall as the patch widens.
- ``clean_bin_acc`` / ``certified_bin_acc``: ART's own exact-class versions (the smoothed /
  certified class equals the label's bin), equal to what ``eval_and_certify`` returns.

Randomness: model initialisation and ART's draws (band positions, shuffling) come from the
global torch, numpy and Python generators, so every ART call runs inside
:func:`art_global_rng`, which seeds them from the caller's seed and restores them afterwards
(and silences the tqdm bar ART's ``fit`` always draws).

Speed: ART runs the classifier once per band position, W passes per frame (200 at 66x200),
with a numpy round trip and a DataLoader per position. On a CPU shared with another torch job,
give this process one thread (``torch.set_num_threads(1)``): with two OpenMP threads on two
busy cores we measured ART's predict 40x slower.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing
from art.estimators.certification.derandomized_smoothing import pytorch as _art_ds_module
from torch import nn

from defenses.aggregate import bin_index
from drivenet_patch.art_wrapper import seeded_global_rng
from drivenet_patch.errors import PDNError
from drivenet_patch.models.pilotnet import PILOTNET_CONVS, conv_output_size, min_input_size
from drivenet_patch.tensors import check_frames, to_tensor

__all__ = [
    "DSPilotNet",
    "SteeringBins",
    "art_ds_counts",
    "art_ds_img_s",
    "art_global_rng",
    "certify_art_ds",
    "certify_counts",
    "make_art_ds",
    "train_art_ds",
]

DEFAULT_ABLATION = 24  # columns retained: ~12% of a 200-px-wide frame, Levine's ImageNet ratio (25/224)
DEFAULT_THRESHOLD = 0.3  # softmax level at which a band position votes for a class
TINY = {"channels": (4, 6, 8, 8, 8), "hidden": (16,)}  # a fast classifier for tests and timing smoke runs


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
        y = _labels(labels_deg, None, "labels_deg")
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
        y = _labels(labels_deg, None, "labels_deg")
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


# ------------------------------------------------------------------------------------ ART plumbing


@contextlib.contextmanager
def art_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's, numpy's and Python's global generators for a block of ART calls; restore them.

    Also silences the progress bar that ART's ``fit`` draws unconditionally (its module-level
    ``tqdm`` is swapped for a disabled one for the block). Not thread-safe (nothing using the
    global generators is).
    """
    py_state = random.getstate()
    shown = _art_ds_module.tqdm
    try:
        with seeded_global_rng(seed):
            random.seed(seed)
            _art_ds_module.tqdm = functools.partial(shown, disable=True)
            yield
    finally:
        _art_ds_module.tqdm = shown
        random.setstate(py_state)


def make_art_ds(
    input_size: tuple[int, int],
    n_classes: int,
    ablation_size: int = DEFAULT_ABLATION,
    threshold: float = DEFAULT_THRESHOLD,
    lr: float = 1e-3,
    channels: Sequence[int] = (24, 36, 48, 64, 64),
    hidden: Sequence[int] = (100, 50),
    seed: int = 0,
) -> PyTorchDeRandomizedSmoothing:
    """An untrained ART column-smoothing estimator around a fresh :class:`DSPilotNet` (CPU).

    Args:
        input_size: ``(H, W)`` of the frames.
        n_classes: number of steering bins.
        ablation_size: width in pixels of the retained column band.
        threshold: softmax level at which a band position votes for a class (ART's ``threshold``).
        lr: Adam learning rate for ART's ``fit``.
        channels, hidden: classifier widths (see :class:`DSPilotNet`).
        seed: seeds the classifier's initial weights.

    Returns:
        ``PyTorchDeRandomizedSmoothing`` with ``input_shape=(3, H, W)``, ``clip_values=(0, 1)``,
        cross-entropy loss, ``device_type="cpu"``.

    Raises:
        PDNError: ``ablation_size`` not in ``[1, W]``, ``threshold`` not in ``(0, 1]``, image too small.
    """
    h, w = _size(input_size)
    _ablation(ablation_size, w)
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise PDNError(f"threshold: must lie in (0, 1], got {threshold!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise PDNError(f"lr: must be a positive number, got {lr!r}")
    with art_global_rng(seed):
        model = DSPilotNet((h, w), n_classes, channels, hidden)
    return PyTorchDeRandomizedSmoothing(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(3, h, w),
        nb_classes=int(n_classes),
        ablation_size=int(ablation_size),
        algorithm="levine2020",
        ablation_type="column",
        optimizer=torch.optim.Adam(model.parameters(), lr=float(lr)),
        threshold=float(threshold),
        logits=True,
        clip_values=(0.0, 1.0),
        preprocessing=None,
        device_type="cpu",
        verbose=False,
    )


def train_art_ds(
    frames_uint8: Any,
    labels_deg: Any,
    bin_deg: float = 2.0,
    ablation_size: int = DEFAULT_ABLATION,
    epochs: int = 3,
    batch: int = 64,
    seed: int = 0,
    *,
    lr: float = 1e-3,
    threshold: float = DEFAULT_THRESHOLD,
    max_deg: float = 30.0,
    channels: Sequence[int] = (24, 36, 48, 64, 64),
    hidden: Sequence[int] = (100, 50),
    chunk: int = 1024,
) -> tuple[PyTorchDeRandomizedSmoothing, SteeringBins]:
    """Train a column-smoothing classifier of steering bins with ART's own ``fit``.

    Each epoch visits the frames in a fresh order drawn from ``np.random.default_rng(seed)``,
    in chunks of ``chunk`` frames (so a memory-mapped dataset is never loaded whole); each chunk
    is one ART ``fit`` call (one epoch over the chunk: ART shuffles it, ablates one random band
    position per mini-batch and steps Adam on cross-entropy).

    Args:
        frames_uint8: uint8 (N, H, W, 3) RGB frames (numpy or memory-mapped).
        labels_deg: (N,) steering labels in degrees; they also set the bins' range.
        bin_deg: bin width in degrees.
        ablation_size: width in pixels of the retained column band.
        epochs: passes over the frames (0 = untrained, e.g. for timing).
        batch: mini-batch size.
        seed: seeds initial weights, frame order and ART's draws.
        lr, threshold, max_deg, channels, hidden: see :func:`make_art_ds` and
            :meth:`SteeringBins.from_labels`.
        chunk: frames per ART ``fit`` call.

    Returns:
        ``(estimator, bins)``; the classifier is left in eval mode.

    Raises:
        PDNError: bad frames, mismatched lengths, bad bin width, ablation size, epochs or batch.
    """
    frames = _frames_uint8(frames_uint8)
    y = _labels(labels_deg, len(frames), "labels_deg")
    epochs, batch, chunk = _count(epochs, "epochs", 0), _count(batch, "batch", 1), _count(chunk, "chunk", 1)
    bins = SteeringBins.from_labels(y, bin_deg, max_deg)
    cls = bins.classes(y)
    est = make_art_ds(frames.shape[1:3], bins.n_classes, ablation_size, threshold, lr, channels, hidden, seed)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(frames))
        for start in range(0, len(order), chunk):
            idx = np.sort(order[start : start + chunk])  # sorted: fast memory-mapped reads; ART shuffles
            x = to_tensor(np.asarray(frames[idx])).numpy()  # (n, 3, H, W) float32
            with art_global_rng(int(rng.integers(2**31 - 1))):
                est.fit(x, cls[idx], batch_size=batch, nb_epochs=1, verbose=False)
    est.model.eval()  # ART's fit leaves the classifier in train mode
    return est, bins


# ------------------------------------------------------------------------------------ certification


def art_ds_counts(est: PyTorchDeRandomizedSmoothing, frames: Any, batch: int = 64) -> np.ndarray:
    """ART's smoothed vote counts: the classifier at every band position, thresholded and summed.

    Args:
        est: from :func:`train_art_ds` / :func:`make_art_ds`.
        frames: uint8 (N, H, W, 3) or float tensor (N, 3, H, W) in [0, 1], at the estimator's size.
        batch: frames per ART ``predict`` call (ART ablates a whole call's frames at once).

    Returns:
        (N, n_classes) float64 vote counts (each in ``[0, W]``).
    """
    src = _check_frames(frames, est)
    batch = _count(batch, "batch", 1)
    out = np.zeros((len(src), est.nb_classes))
    with art_global_rng(0):  # ART's predict draws nothing today; this keeps it so
        for start in range(0, len(src), batch):
            out[start : start + batch] = est.predict(_as_f32(src[start : start + batch]), batch_size=batch)
    return out


def certify_counts(
    est: PyTorchDeRandomizedSmoothing,
    bins: SteeringBins,
    counts: np.ndarray,
    labels_deg: Any,
    patch_width_px: int,
    delta_deg: float,
) -> dict[str, Any]:
    """Certified and clean accuracy from vote counts, with ART's certificate (``ablator.certify``).

    Args:
        est: the estimator that produced ``counts`` (its ablator holds the band width).
        bins: the classes' bins.
        counts: (N, n_classes) from :func:`art_ds_counts`.
        labels_deg: (N,) true steering in degrees.
        patch_width_px: width of the patch (any height) to certify against, in model pixels.
        delta_deg: tolerance in degrees.

    Returns:
        ``certified_acc``, ``clean_acc``, ``certified_bin_acc``, ``clean_bin_acc``, ``mae_deg``
        (of the smoothed class's bin centre), ``n``, and the settings; see the module docstring.
        Per frame: ``pred_deg`` (N,), ``certified`` (N,) bool.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != bins.n_classes or est.nb_classes != bins.n_classes:
        raise PDNError(f"counts: expected (N, {bins.n_classes}) for these bins and estimator, got {counts.shape}")
    y = _labels(labels_deg, len(counts), "labels_deg")
    width = est.input_shape[-1]
    p = _count(patch_width_px, "patch_width_px", 1)
    if p > width:
        raise PDNError(f"patch_width_px: {p} is wider than the {width}-px image")
    if not (isinstance(delta_deg, (int, float)) and math.isfinite(delta_deg) and delta_deg >= 0):
        raise PDNError(f"delta_deg: must be a non-negative number of degrees, got {delta_deg!r}")
    if not len(y):
        raise PDNError("certify: no frames")
    cls = bins.classes(y)
    cert, cert_exact, top = est.ablator.certify(counts, size_to_certify=p, label=cls)
    cert, cert_exact, top = cert.cpu().numpy(), cert_exact.cpu().numpy(), top.cpu().numpy()
    pred = bins.centres(top)
    near = np.abs(pred - y) <= delta_deg
    return {
        "certified_acc": float(np.mean(cert & near)),
        "clean_acc": float(np.mean(near)),
        "certified_bin_acc": float(np.mean(cert_exact)),
        "clean_bin_acc": float(np.mean(top == cls)),
        "mae_deg": float(np.mean(np.abs(pred - y))),
        "n": len(y),
        "patch_width_px": p,
        "delta_deg": float(delta_deg),
        "ablation_size": int(est.ablation_size[0]),
        "n_positions": int(width),
        "threshold": float(est.threshold),
        "bin_deg": bins.bin_deg,
        "n_classes": bins.n_classes,
        "pred_deg": pred,
        "certified": cert.astype(bool),
    }


def certify_art_ds(
    est: PyTorchDeRandomizedSmoothing,
    bins: SteeringBins,
    frames: Any,
    labels_deg: Any,
    patch_width_px: int,
    delta_deg: float,
    batch: int = 64,
) -> dict[str, Any]:
    """Vote counts (:func:`art_ds_counts`) then the certificate (:func:`certify_counts`), timed.

    Returns:
        :func:`certify_counts`'s dict plus ``s_per_frame``: wall seconds per frame of the whole
        certification (all ``W`` band positions through the classifier, then the certificate).
    """
    t0 = time.perf_counter()
    counts = art_ds_counts(est, frames, batch)
    out = certify_counts(est, bins, counts, labels_deg, patch_width_px, delta_deg)
    out["s_per_frame"] = (time.perf_counter() - t0) / len(counts)
    return out


def art_ds_img_s(
    input_size: tuple[int, int] = (66, 200),
    ablation_size: int = DEFAULT_ABLATION,
    batch: int = 64,
    repeats: int = 3,
    *,
    n_classes: int = 12,
    channels: Sequence[int] = (24, 36, 48, 64, 64),
    hidden: Sequence[int] = (100, 50),
) -> float:
    """Frames per second of ART's smoothed prediction (all ``W`` band positions), untrained classifier.

    Times ``repeats`` calls of ``predict`` on ``batch`` random frames after one warm-up call and
    returns ``batch / median(seconds per call)``. Timing only: the weights are random.
    """
    h, w = _size(input_size)
    batch, repeats = _count(batch, "batch", 1), _count(repeats, "repeats", 1)
    est = make_art_ds((h, w), n_classes, ablation_size, channels=channels, hidden=hidden, seed=0)
    x = np.random.default_rng(0).random((batch, 3, h, w), dtype=np.float32)
    times = []
    with art_global_rng(0):
        est.predict(x, batch_size=batch)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            est.predict(x, batch_size=batch)
            times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


# ---------------------------------------------------------------------------------------- checks


def _size(input_size: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise PDNError(f"input_size: expected (H, W), got {input_size!r}") from None
    if h < 1 or w < 1:
        raise PDNError(f"input_size: expected positive (H, W), got {input_size!r}")
    return h, w


def _ablation(ablation_size: Any, width: int) -> int:
    if isinstance(ablation_size, bool) or not isinstance(ablation_size, (int, np.integer)):
        raise PDNError(f"ablation_size: expected a whole number of columns, got {ablation_size!r}")
    if not 1 <= ablation_size <= width:
        raise PDNError(f"ablation_size: must lie in [1, {width}] (the image width), got {ablation_size}")
    return int(ablation_size)


def _count(value: Any, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise PDNError(f"{name}: expected a whole number >= {lo}, got {value!r}")
    return int(value)


def _labels(labels: Any, n: int | None, name: str) -> np.ndarray:
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


def _frames_uint8(frames: Any) -> np.ndarray:
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise PDNError(f"frames: expected uint8 (N, H, W, 3), got {got}")
    if not len(frames):
        raise PDNError("frames: no frames")
    return frames


def _check_frames(frames: Any, est: PyTorchDeRandomizedSmoothing) -> np.ndarray | torch.Tensor:
    """uint8 (N, H, W, 3) array or float (N, 3, H, W) tensor in [0, 1], at the estimator's size."""
    x = check_frames(frames) if isinstance(frames, torch.Tensor) else _frames_uint8(frames)
    hw = tuple(x.shape[2:]) if isinstance(x, torch.Tensor) else tuple(x.shape[1:3])
    want = tuple(est.input_shape[-2:])
    if hw != want:
        raise PDNError(f"frames: {hw[0]}x{hw[1]} images for an estimator built for {want[0]}x{want[1]}")
    return x


def _as_f32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A checked chunk -> float32 (n, 3, H, W) numpy in [0, 1] (what ART's ``predict`` takes)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return to_tensor(np.asarray(x)).numpy()
