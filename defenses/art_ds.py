"""Baseline: ART's derandomized smoothing (column ablation) on steering bins.

PatchVote is measured side by side with the only off-the-shelf certified patch defense,
derandomized smoothing (Levine & Feizi 2020, "(De)Randomized Smoothing for Certifiable Defense
against Patch Attacks", arXiv:2002.10733), as implemented by ART's
``PyTorchDeRandomizedSmoothing(algorithm="levine2020", ablation_type="column")``. It classifies,
so steering is cut into bins (:class:`SteeringBins`) and a PilotNet-shaped CNN
(:class:`DSPilotNet`) learns the bin from one retained band of ``ablation_size`` columns (both
in :mod:`defenses.ds_classifier`; this module wraps them in ART, trains and certifies).

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
from typing import Any

import numpy as np
import torch
from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing
from art.estimators.certification.derandomized_smoothing import pytorch as _art_ds_module
from torch import nn

from defenses.ds_classifier import DSPilotNet, SteeringBins, check_labels
from drivenet_patch.models.art import seeded_global_rng
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import check_frames, to_tensor

__all__ = [
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
    y = check_labels(labels_deg, len(frames), "labels_deg")
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
    y = check_labels(labels_deg, len(counts), "labels_deg")
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
