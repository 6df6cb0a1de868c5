"""Certified steering intervals from region votes: pure tensor functions.

Threat model (``shared/design.md``): one axis-aligned patch of ``ph x pw`` model-input pixels
at any position, with any values. Region ``r``'s vote depends only on region ``r``'s pixels,
so the patch at position ``p`` can set the votes of the regions it touches, ``S_p`` (row
``p`` of :func:`defenses.regions.touch_matrix`), to anything and leaves the others as they
are. Abstention is fixed per region (not attacker-controlled). A certificate is an interval
``[lo, hi]`` (B,) that contains the aggregate for every position and every replacement.

Only the maximal sets ``S_p`` matter (an attacker on a superset can mimic one on a subset),
so the touch matrix is first reduced with :func:`defenses.regions.maximal_touch_sets`; the
per-set bounds are then computed for all frames and sets at once, from one sort of the
clean votes per frame (no per-position loop).

Bounds per aggregator, for a set S touching ``c`` valid votes, U = the untouched valid votes
sorted ascending, ``n`` = the number of valid votes:

- **median** (Chiang et al. 2020, median smoothing; PatchCleanser-style enumeration of the
  attacker's reach, Xiang et al. 2022): the median is monotone in every vote, so its extremes
  over S are reached with the touched votes at ``-inf`` / ``+inf``. With order indices
  ``i1 = (n-1)//2, i2 = n//2``: ``lo_S = (U[i1-c] + U[i2-c]) / 2`` and
  ``hi_S = (U[i1] + U[i2]) / 2`` (``-inf`` / ``+inf`` when an index leaves U). Tight: each
  bound is attained by some replacement.
- **trimmed mean** (trim ``t``): also monotone; with ``c <= t`` the extreme touched votes are
  trimmed away, ``lo_S = mean U[t-c : n-t-c]``, ``hi_S = mean U[t : n-t]``; ``c > t`` is
  unbounded. Tight up to a float rounding margin.
- **bin vote** (width ``w``; Levine & Feizi 2020, Xiang et al. 2021 PatchGuard counting
  argument): moving ``c`` votes can take at most ``c`` from the top bin and add at most
  ``c`` to the runner-up, so the winner is certain when ``n1 - n2 > 2 k``
  (``k = max_S c``; strict, so no tie-break is relied on). The output is then the median of
  the untouched top-bin votes plus up to ``c`` attacker votes anywhere in the top bin; the
  median is monotone and adding a vote at the bin's lower edge never raises it, so
  ``lo_S`` = median of U_top with ``c`` copies of the lower edge, ``hi_S`` likewise with the
  upper edge. Not certified: ``(-inf, +inf)``.
- **outlier rejection** (threshold ``tau``): whatever the attack, the attacked median ``m'``
  lies in the median's interval ``[mlo, mhi]`` and every vote kept lies within ``tau`` of
  ``m'``; the output is their mean (or ``m'`` itself), so it lies in
  ``[mlo - tau, mhi + tau]``. Sound, not tight.

A frame with any NaN or infinite vote is never certified (interval (-inf, inf)), and a certified
interval is always finite, whatever the aggregator's parameters.

Sums run in float64 and their bounds are widened by a rounding margin, so the bound holds
for the float arithmetic of :mod:`defenses.aggregate`, not only for real numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from defenses.aggregate import (
    METHODS,
    bin_edges,
    bin_index,
    bin_vote,
    bin_width,
    check_votes,
    median,
    midpoint,
    outlier_mean,
    outlier_threshold,
    sort_valid,
    trim_count,
    trimmed_mean,
)
from defenses.regions import maximal_touch_sets
from drivenet_patch.safety.errors import PDNError

#: Relative margin on float64 sums (covers summation-order rounding for N up to ~1000).
_SUM_MARGIN = 1e-12
#: Frames per chunk: keeps the (chunk, Q, N) intermediates in cache.
CHUNK = 8192


class Certificate(NamedTuple):
    """A certified steering interval per frame; all (B,).

    Attributes:
        output: the clean aggregate, degrees (positive = left).
        lo, hi: every attacked aggregate lies in ``[lo, hi]`` (``-inf`` / ``+inf`` if unbounded).
        certified: bool; the interval is finite (bin vote: the winning bin cannot change).
        k: int64, most valid regions one patch position touches in that frame.
    """

    output: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    certified: torch.Tensor
    k: torch.Tensor


class _Sets(NamedTuple):
    """Clean votes sorted once per frame, and what each maximal set touches, in sorted order.

    Per-set tensors are laid out (B, N, Q) (sorted position, then set), so running counts
    along the sorted axis add contiguous rows of Q.
    """

    s: torch.Tensor  # (B, N) sorted valid votes, +inf at the end for abstentions
    n: torch.Tensor  # (B,) valid votes
    valid_s: torch.Tensor  # (B, N) bool
    touched: torch.Tensor  # (B, N, Q) bool, valid and touched by set q
    c: torch.Tensor  # (B, Q) int64, touched valid votes per set


def _prepare(votes: torch.Tensor, valid: torch.Tensor, sets: torch.Tensor) -> _Sets:
    s, perm, n = sort_valid(votes, valid)
    valid_s = valid.gather(1, perm)
    touched = sets.T[perm] & valid_s[:, :, None]  # (B, N, Q)
    c = touched.sum(1, dtype=torch.int16).to(torch.int64)
    return _Sets(s, n, valid_s, touched, c)


def _cumcount(mask: torch.Tensor) -> torch.Tensor:
    """(B, N, Q) bool -> inclusive running count along the sorted axis (int16; N < 32768)."""
    return mask.cumsum(1, dtype=torch.int16)


def _kth_kept(s: torch.Tensor, cnt: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Value of the ``j``-th (0-based) kept entry of each sorted row, for every set.

    The entry sits at the first position whose running count reaches ``j + 1``, which is the
    number of positions whose count is still ``<= j`` (the count never decreases).

    Args:
        s: (B, N) sorted values.
        cnt: (B, N, Q) running count of kept entries (:func:`_cumcount`).
        j: (B, Q) int64 target ranks; entries outside ``[0, kept count)`` return an
            arbitrary value (callers replace them).

    Returns:
        (B, Q) values.
    """
    jj = j.clamp(-1, torch.iinfo(torch.int16).max).to(torch.int16)[:, None, :]
    pos = (cnt <= jj).sum(1, dtype=torch.int16).to(torch.int64).clamp(max=s.shape[1] - 1)  # (B, Q)
    return s.gather(1, pos)


def _median_bounds(
    s: torch.Tensor, keep: torch.Tensor, c: torch.Tensor, low_fill: torch.Tensor | float, high_fill: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Median of (kept entries + ``c`` copies of a fill value) with the fill below / above all.

    Args:
        s: (B, N) sorted values; keep: (B, N, Q) bool; c: (B, Q) copies of the fill.
        low_fill, high_fill: the fill for the lower / upper bound (a float or (B, 1)).

    Returns:
        ``lo`` and ``hi``, each (B, Q).
    """
    cnt = _cumcount(keep)
    kept = cnt[:, -1, :].to(torch.int64)  # (B, Q)
    m = kept + c  # entries in the attacked multiset
    i1, i2 = ((m - 1) // 2).clamp(min=0), m // 2  # median order indices
    lf = torch.as_tensor(low_fill, dtype=s.dtype, device=s.device)
    hf = torch.as_tensor(high_fill, dtype=s.dtype, device=s.device)
    # Lower: [fill]*c + U, so entry i is the fill if i < c, else U[i - c].
    lo1 = torch.where(i1 < c, lf, _kth_kept(s, cnt, i1 - c))
    lo2 = torch.where(i2 < c, lf, _kth_kept(s, cnt, i2 - c))
    # Upper: U + [fill]*c, so entry i is U[i] if i < |U|, else the fill.
    hi1 = torch.where(i1 < kept, _kth_kept(s, cnt, i1), hf)
    hi2 = torch.where(i2 < kept, _kth_kept(s, cnt, i2), hf)
    empty = m == 0
    return midpoint(lo1, lo2).masked_fill(empty, -torch.inf), midpoint(hi1, hi2).masked_fill(empty, torch.inf)


def _abs_margin(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, 1) absolute rounding margin for float64 sums of a frame's valid votes (any order)."""
    mag = torch.where(valid, values.double().abs(), torch.zeros((), dtype=torch.float64, device=values.device))
    return _SUM_MARGIN * (mag.max(1, keepdim=True).values + 1.0)


def _interval(lo_q: torch.Tensor, hi_q: torch.Tensor, sets: _Sets) -> tuple[torch.Tensor, torch.Tensor]:
    """Hull over the sets, unbounded for frames without a valid vote."""
    none = sets.n == 0
    return lo_q.min(1).values.masked_fill(none, -torch.inf), hi_q.max(1).values.masked_fill(none, torch.inf)


# ---------------------------------------------------------------------------- per aggregator
def _median_chunk(votes: torch.Tensor, valid: torch.Tensor, sets: torch.Tensor) -> Certificate:
    st = _prepare(votes, valid, sets)
    keep = st.valid_s[:, :, None] & ~st.touched
    lo, hi = _interval(*_median_bounds(st.s, keep, st.c, -torch.inf, torch.inf), st)
    return Certificate(median(votes, valid), lo, hi, torch.isfinite(lo) & torch.isfinite(hi), st.c.max(1).values)


def _trimmed_chunk(votes: torch.Tensor, valid: torch.Tensor, sets: torch.Tensor, trim: int) -> Certificate:
    t = trim
    st = _prepare(votes, valid, sets)
    keep = st.valid_s[:, :, None] & ~st.touched  # (B, N, Q) untouched valid
    cnt = _cumcount(keep)  # at a kept entry: its rank among the untouched, plus 1
    c = st.c[:, None, :].to(torch.int16)  # (B, 1, Q)
    n = st.n[:, None, None].to(torch.int16)
    count = (st.n - 2 * t).double()[:, None]  # (B, 1)
    # Untouched votes of rank in [t - c, n - t - c) (lower bound) and [t, n - t) (upper bound).
    lo_mask = keep & (cnt > t - c) & (cnt <= n - t - c)
    hi_mask = keep & (cnt > t) & (cnt <= n - t)
    s64 = torch.where(st.valid_s, st.s.double(), 0.0)  # no +inf abstentions: 0 * inf would be NaN
    sums = torch.bmm(s64[:, None, :], torch.cat([lo_mask, hi_mask], 2).double())[:, 0]  # (B, 2Q)
    lo_sum, hi_sum = sums.chunk(2, dim=1)
    margin = _abs_margin(st.s, st.valid_s)
    bad = (st.c > t) | (st.n <= 2 * t)[:, None]
    lo_q = (lo_sum / count - margin).masked_fill(bad, -torch.inf).to(votes.dtype)
    hi_q = (hi_sum / count + margin).masked_fill(bad, torch.inf).to(votes.dtype)
    lo, hi = _interval(lo_q, hi_q, st)
    out = trimmed_mean(votes, valid, t)
    return Certificate(out, lo, hi, torch.isfinite(lo) & torch.isfinite(hi), st.c.max(1).values)


def _vote_chunk(votes: torch.Tensor, valid: torch.Tensor, sets: torch.Tensor, bin_deg: float) -> Certificate:
    result = bin_vote(votes, valid, bin_deg)
    st = _prepare(votes, valid, sets)
    k = st.c.max(1).values  # (B,)
    sure = (result.top_count - result.runner_up > 2 * k) & (st.n > 0)
    in_top_s = st.valid_s & (bin_index(st.s, bin_deg) == result.top_bin[:, None])  # (B, N)
    keep = in_top_s[:, :, None] & ~st.touched  # untouched votes of the winning bin
    edge_lo, edge_hi = bin_edges(result.top_bin, bin_deg, votes.dtype)  # (B,)
    lo_q, hi_q = _median_bounds(st.s, keep, st.c, edge_lo[:, None], edge_hi[:, None])
    lo = torch.where(sure, lo_q.min(1).values, torch.full_like(edge_lo, -torch.inf))
    hi = torch.where(sure, hi_q.max(1).values, torch.full_like(edge_hi, torch.inf))
    return Certificate(result.output, lo, hi, sure, k)


def _reject_chunk(votes: torch.Tensor, valid: torch.Tensor, sets: torch.Tensor, tau_deg: float) -> Certificate:
    med = _median_chunk(votes, valid, sets)
    margin = (_abs_margin(votes, valid) + _SUM_MARGIN * tau_deg)[:, 0]
    lo = (med.lo.double() - tau_deg - margin).to(votes.dtype)
    hi = (med.hi.double() + tau_deg + margin).to(votes.dtype)
    return Certificate(outlier_mean(votes, valid, tau_deg), lo, hi, med.certified, med.k)


def _run(
    chunk_fn: Callable[..., Certificate], votes: torch.Tensor, touch: torch.Tensor, valid: torch.Tensor | None,
    **kw: Any,
) -> Certificate:
    votes, valid = check_votes(votes, valid)
    if touch.ndim != 2 or touch.shape[1] != votes.shape[1]:
        raise PDNError(f"touch matrix must be (P, {votes.shape[1]}) for {votes.shape[1]} regions, got {tuple(touch.shape)}")
    sets = maximal_touch_sets(touch.to(device=votes.device, dtype=torch.bool))  # (Q, N)
    parts = [_never_certify_nonfinite(chunk_fn(votes[i : i + CHUNK], valid[i : i + CHUNK], sets, **kw),
                                      votes[i : i + CHUNK])
             for i in range(0, max(votes.shape[0], 1), CHUNK)]
    if len(parts) == 1:
        return parts[0]
    return Certificate(*(torch.cat(field) for field in zip(*parts, strict=True)))


def _never_certify_nonfinite(cert: Certificate, votes: torch.Tensor) -> Certificate:
    """A frame with any NaN or infinite vote (valid or abstaining) is not certified: interval (-inf, inf).
    Every certified interval is finite. (The same rule as :mod:`drivenet_patch.deploy.onboard`.)"""
    finite = torch.isfinite(votes).all(1)
    ok = cert.certified & finite & torch.isfinite(cert.lo) & torch.isfinite(cert.hi)
    return cert._replace(certified=ok, lo=cert.lo.masked_fill(~finite, -torch.inf),
                         hi=cert.hi.masked_fill(~finite, torch.inf))


def certify_median(votes: torch.Tensor, touch: torch.Tensor, valid: torch.Tensor | None = None) -> Certificate:
    """Tight certified interval of the median (see the module docstring).

    Args:
        votes: (B, N) degrees.
        touch: (P, N) bool, regions each patch position touches (any rows; reduced to the
            maximal sets here).
        valid: None, (N,) or (B, N) bool; False = abstaining region.

    Returns:
        :class:`Certificate`; ``certified`` where the interval is finite (``c < n/2`` for every set).
    """
    return _run(_median_chunk, votes, touch, valid)


def certify_trimmed(
    votes: torch.Tensor, touch: torch.Tensor, valid: torch.Tensor | None = None, trim: int = 1
) -> Certificate:
    """Certified interval of the trimmed mean; finite iff every set touches at most ``trim`` valid votes.

    Args:
        votes, touch, valid: as in :func:`certify_median`.
        trim: votes dropped at each end (``trim >= k`` is needed for a finite interval).
    """
    return _run(_trimmed_chunk, votes, touch, valid, trim=trim_count(trim))


def certify_vote(
    votes: torch.Tensor, touch: torch.Tensor, valid: torch.Tensor | None = None, bin_deg: float = 2.0
) -> Certificate:
    """Certificate of the bin vote: certified iff ``top - runner_up > 2 k``, then the top-bin median bounds.

    Args:
        votes, touch, valid: as in :func:`certify_median`.
        bin_deg: bin width in degrees.
    """
    return _run(_vote_chunk, votes, touch, valid, bin_deg=bin_width(bin_deg))


def certify_reject(
    votes: torch.Tensor, touch: torch.Tensor, valid: torch.Tensor | None = None, tau_deg: float = 3.0
) -> Certificate:
    """Certificate of outlier rejection: the median's interval widened by ``tau_deg`` (sound, not tight).

    Args:
        votes, touch, valid: as in :func:`certify_median`.
        tau_deg: rejection threshold in degrees.
    """
    return _run(_reject_chunk, votes, touch, valid, tau_deg=outlier_threshold(tau_deg))


def certify_votes(
    votes: torch.Tensor,
    touch: torch.Tensor,
    valid: torch.Tensor | None = None,
    method: str = "median",
    *,
    trim: int = 1,
    bin_deg: float = 2.0,
    tau_deg: float = 3.0,
) -> Certificate:
    """Certified interval for aggregator ``method`` (one of :data:`defenses.aggregate.METHODS`).

    Shape:
        votes (B, N), touch (P, N), valid None / (N,) / (B, N) -> :class:`Certificate` of (B,).

    Raises:
        PDNError: unknown method, bad shapes or parameters.
    """
    if method == "median":
        return certify_median(votes, touch, valid)
    if method == "trimmed":
        return certify_trimmed(votes, touch, valid, trim)
    if method == "vote":
        return certify_vote(votes, touch, valid, bin_deg)
    if method == "reject":
        return certify_reject(votes, touch, valid, tau_deg)
    raise PDNError(f"unknown aggregate {method!r}; valid aggregates: {', '.join(METHODS)}")


def within(cert: Certificate, labels: torch.Tensor, delta: float) -> torch.Tensor:
    """(B,) bool: the whole certified interval lies within ``delta`` degrees of the label."""
    y = labels.to(device=cert.lo.device, dtype=torch.float64)
    return (cert.lo.double() >= y - delta) & (cert.hi.double() <= y + delta)


def certified_accuracy(cert: Certificate, labels: torch.Tensor, delta: float) -> float:
    """Share of frames whose whole certified interval lies within ``delta`` of the label."""
    ok = within(cert, labels, delta)
    return float(ok.double().mean()) if ok.numel() else float("nan")
