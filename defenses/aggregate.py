"""Aggregators: N region votes -> one steering angle, as pure tensor functions.

Every function takes ``votes`` (B, N) in degrees (positive = left) and an optional ``valid``
mask, (B, N) or (N,) bool, where ``False`` marks an abstaining region whose vote is ignored.
Votes should be finite: a frame with a NaN or infinite vote is never certified
(:mod:`defenses.certify`). A frame with no valid vote aggregates to NaN. The parameters (trim,
bin width, outlier threshold) must be finite and bounded.

- :func:`median`: the median of the valid votes (mean of the two middle ones for an even
  count), as in median smoothing (Chiang et al. 2020, "Detection as Regression: Certified
  Object Detection by Median Smoothing").
- :func:`trimmed_mean`: drop the ``trim`` lowest and ``trim`` highest valid votes, average
  the rest.
- :func:`bin_vote`: majority vote over steering bins of ``bin_deg`` (bin ``j`` is
  ``[(j - 1/2) w, (j + 1/2) w)``, so bin 0 is centred on straight ahead); the output is the
  median of the votes in the winning bin. The vote is the classification-style aggregate of
  derandomized smoothing (Levine & Feizi 2020) and PatchGuard (Xiang et al. 2021) applied to
  steering bins.
- :func:`outlier_mean`: votes farther than ``tau_deg`` from the median are dropped, the rest
  averaged (the median alone if none is left).

Certificates for each live in :mod:`defenses.certify`; they rely on the exact arithmetic
written here (:func:`midpoint`, sums in float64), so keep the two in step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from drivenet_patch.deploy.onboard import MAX_AGGREGATE_DEG, MAX_REGIONS
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import bounded_float, bounded_int

#: Aggregator names accepted by :func:`aggregate_votes` and :func:`defenses.certify.certify_votes`.
METHODS = ("median", "trimmed", "vote", "reject")


def check_votes(votes: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes once and broadcast the mask.

    Args:
        votes: (B, N) floating point, degrees.
        valid: None (all valid), (N,) or (B, N) bool.

    Returns:
        ``(votes, valid)`` with ``valid`` (B, N) bool on the votes' device.

    Raises:
        PDNError: wrong rank, dtype or mask shape.
    """
    if votes.ndim != 2 or not votes.is_floating_point():
        raise PDNError(f"votes must be a (B, N) floating-point tensor, got {tuple(votes.shape)} {votes.dtype}")
    if valid is None:
        return votes, torch.ones_like(votes, dtype=torch.bool)
    valid = valid.to(device=votes.device, dtype=torch.bool)
    if valid.shape == votes.shape[1:]:
        valid = valid[None, :].expand_as(votes)
    if valid.shape != votes.shape:
        raise PDNError(f"valid mask must be (N,) or (B, N) matching votes {tuple(votes.shape)}, got {tuple(valid.shape)}")
    return votes, valid


def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a + b) / 2``: the one formula every median here and in the certificates uses."""
    return (a + b) * 0.5


def sort_valid(votes: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Valid votes sorted ascending, abstentions moved to the end as ``+inf``.

    Returns:
        ``sorted`` (B, N), ``perm`` (B, N) int64 (``sorted = key.gather(1, perm)``), and
        ``n`` (B,) int64, the number of valid votes.
    """
    key = torch.where(valid, votes, torch.full_like(votes, torch.inf))
    s, perm = torch.sort(key, dim=1)
    return s, perm, valid.sum(1)


def median(votes: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Median of the valid votes (mean of the two middle ones when their count is even).

    Shape:
        votes (B, N), valid (N,) or (B, N) -> (B,) degrees.
    """
    votes, valid = check_votes(votes, valid)
    s, _, n = sort_valid(votes, valid)
    i1 = ((n - 1) // 2).clamp(min=0)[:, None]
    i2 = (n // 2).clamp(max=votes.shape[1] - 1)[:, None]
    out = midpoint(s.gather(1, i1), s.gather(1, i2))[:, 0]
    return torch.where(n > 0, out, torch.full_like(out, torch.nan))


def trimmed_mean(votes: torch.Tensor, valid: torch.Tensor | None = None, trim: int = 1) -> torch.Tensor:
    """Mean of the valid votes after dropping the ``trim`` lowest and ``trim`` highest.

    The sum runs in float64 (the certificate bounds it with a rounding margin). Frames with
    ``2 * trim >= n`` valid votes give NaN.

    Shape:
        votes (B, N), valid (N,) or (B, N) -> (B,) degrees.
    """
    votes, valid = check_votes(votes, valid)
    t = trim_count(trim)
    s, _, n = sort_valid(votes, valid)
    rank = torch.arange(votes.shape[1], device=votes.device)[None, :]
    keep = (rank >= t) & (rank < (n - t)[:, None])
    total = torch.where(keep, s.double(), torch.zeros((), dtype=torch.float64, device=votes.device)).sum(1)
    count = (n - 2 * t).double()
    out = (total / count).to(votes.dtype)
    return torch.where(n > 2 * t, out, torch.full_like(out, torch.nan))


class BinVote(NamedTuple):
    """Result of :func:`bin_vote`; all (B,).

    Attributes:
        output: median of the votes in the winning bin, degrees.
        top_bin: winning bin index ``j`` (int64).
        top_count: votes in the winning bin.
        runner_up: votes in the fullest other bin (0 if none).
    """

    output: torch.Tensor
    top_bin: torch.Tensor
    top_count: torch.Tensor
    runner_up: torch.Tensor


def bin_index(votes: torch.Tensor, bin_deg: float) -> torch.Tensor:
    """Steering bin of each vote: ``floor(v / w + 1/2)``, int64 (bin 0 is centred on 0)."""
    q = torch.floor(votes.double() / float(bin_deg) + 0.5).clamp(-1e15, 1e15)
    return q.to(torch.int64)


def bin_edges(top_bin: torch.Tensor, bin_deg: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper edge of bin ``top_bin`` in ``dtype``, widened outward by rounding margins.

    Every vote that :func:`bin_index` puts into the bin lies within the returned edges.
    """
    w = float(bin_deg)
    lo = (top_bin.double() - 0.5) * w
    hi = (top_bin.double() + 0.5) * w
    pad = 1e-9 * (lo.abs() + hi.abs() + w)
    lo, hi = (lo - pad).to(dtype), (hi + pad).to(dtype)
    return torch.nextafter(lo, torch.full_like(lo, -torch.inf)), torch.nextafter(hi, torch.full_like(hi, torch.inf))


def bin_vote(votes: torch.Tensor, valid: torch.Tensor | None = None, bin_deg: float = 2.0) -> BinVote:
    """Majority vote over steering bins of width ``bin_deg`` degrees.

    The bin with the most valid votes wins; ties go to the bin nearest straight ahead, then
    to the one on the right (smaller index). The output is the median of the winning bin's
    votes, so it keeps sub-bin resolution.

    Shape:
        votes (B, N), valid (N,) or (B, N) -> :class:`BinVote` of (B,) tensors.
    """
    votes, valid = check_votes(votes, valid)
    bin_deg = bin_width(bin_deg)
    big = torch.iinfo(torch.int64).max
    ids = bin_index(votes, bin_deg)  # (B, N)
    ids_s, _ = torch.sort(torch.where(valid, ids, big), dim=1)  # abstentions sort last
    # Votes in each vote's bin: the length of its run of equal ids in the sorted row.
    counts = torch.searchsorted(ids_s, ids_s, side="right") - torch.searchsorted(ids_s, ids_s, side="left")
    ok = ids_s != big
    counts = torch.where(ok, counts, torch.zeros_like(counts))  # (B, N)
    top_count = counts.max(1).values  # (B,)
    # Tie-break key: nearest to 0, then the smaller index; unique per bin.
    key = 2 * ids_s.clamp(-(2**60), 2**60).abs() + (ids_s > 0).to(torch.int64)
    key = torch.where(ok & (counts == top_count[:, None]), key, big)
    top_bin = ids_s.gather(1, key.argmin(1, keepdim=True))[:, 0]
    runner_up = torch.where(ok & (ids_s != top_bin[:, None]), counts, torch.zeros_like(counts)).max(1).values
    out = median(votes, valid & (ids == top_bin[:, None]))
    return BinVote(out, top_bin, top_count, runner_up)


def outlier_mean(votes: torch.Tensor, valid: torch.Tensor | None = None, tau_deg: float = 3.0) -> torch.Tensor:
    """Mean of the valid votes within ``tau_deg`` of their median (the median if none is).

    Distances and the mean run in float64.

    Shape:
        votes (B, N), valid (N,) or (B, N) -> (B,) degrees.
    """
    votes, valid = check_votes(votes, valid)
    tau_deg = outlier_threshold(tau_deg)
    med = median(votes, valid)  # (B,)
    v64 = votes.double()
    keep = valid & ((v64 - med.double()[:, None]).abs() <= float(tau_deg))
    total = torch.where(keep, v64, torch.zeros((), dtype=torch.float64, device=votes.device)).sum(1)
    count = keep.sum(1)
    mean = (total / count.clamp(min=1).double()).to(votes.dtype)
    return torch.where(count > 0, mean, med)


def aggregate_votes(
    votes: torch.Tensor,
    valid: torch.Tensor | None = None,
    method: str = "median",
    *,
    trim: int = 1,
    bin_deg: float = 2.0,
    tau_deg: float = 3.0,
) -> torch.Tensor:
    """Aggregate votes with one of :data:`METHODS` (see the module docstring).

    Shape:
        votes (B, N), valid (N,) or (B, N) -> (B,) degrees.

    Raises:
        PDNError: unknown method or invalid parameter.
    """
    if method == "median":
        return median(votes, valid)
    if method == "trimmed":
        return trimmed_mean(votes, valid, trim)
    if method == "vote":
        return bin_vote(votes, valid, bin_deg).output
    if method == "reject":
        return outlier_mean(votes, valid, tau_deg)
    raise PDNError(f"unknown aggregate {method!r}; valid aggregates: {', '.join(METHODS)}")


def trim_count(trim: int) -> int:
    """``trim`` (votes dropped at each end by the trimmed mean) checked to be an integer >= 0."""
    return bounded_int("trim", trim, low=0, high=MAX_REGIONS, hint="give the votes dropped at each end")


def bin_width(bin_deg: float) -> float:
    """The bin vote's width, checked: a finite number of degrees in (0, MAX_AGGREGATE_DEG]."""
    return bounded_float("bin width (bin_deg)", bin_deg, low=0.0, high=MAX_AGGREGATE_DEG, low_open=True,
                         hint="give a bin width in degrees")


def outlier_threshold(tau_deg: float) -> float:
    """Outlier rejection's threshold, checked: a finite number of degrees in [0, MAX_AGGREGATE_DEG]."""
    return bounded_float("outlier threshold (tau_deg)", tau_deg, low=0.0, high=MAX_AGGREGATE_DEG,
                         hint="give a threshold in degrees")
