"""The vehicle-side certifier: region votes + touch sets -> steering, certified interval, verified flag.

NumPy only (no torch, no project imports that pull torch in): what a car runs beside an ONNX
Runtime session of an exported PatchVote model (``pdn export``), whose outputs are the region
votes (B, N) and the validity mask. It computes the same certificate as
:func:`defenses.certify.certify_votes`, with the same arithmetic in the same order, so the two
agree exactly (a property test holds them to bit equality over random votes, abstentions and
touch sets). See :mod:`defenses.certify` for the bounds and the papers they come from; in
short, a threat that can reach the votes of a set S of regions moves an order-statistic
aggregate at most to the order statistics of the untouched votes, and the interval is the hull
over the threat's maximal sets.

Metadata format (``CERT_FORMAT``; stored as JSON under the ONNX metadata key ``CERT_KEY``)::

    {"format": "pdn-certificate/1", "n_regions": 9, "valid": [true, ...],
     "aggregate": "median", "trim": 3, "bin_deg": 2.0, "tau_deg": 3.0,
     "default_threat": "patch_2%",
     "threats": {"patch_2%": {"kind": "pixel_patch", "patch_px": [11, 24],
                              "touch_sets": [[0, 1], [1, 2, 3], ...]}, ...}}

Limits (checked before anything is allocated; each refusal is one :class:`PDNError` line naming the
field, its limit and what to do): :data:`MAX_REGIONS` regions, :data:`MAX_THREATS` threats,
:data:`MAX_TOUCH_SETS` touch sets over all threats and :data:`MAX_TOUCH_CELLS` set members over all threats,
``trim`` at most ``n_regions``, ``bin_deg`` in (0, :data:`MAX_AGGREGATE_DEG`], ``tau_deg`` in
[0, :data:`MAX_AGGREGATE_DEG`], booleans as JSON ``true``/``false`` only, and the JSON text bounded in size
and depth (:func:`drivenet_patch.safety.inputs.loads_json`).

A non-finite input is never certified: a frame with a NaN or infinite vote (or, given the frame,
pixel) gets ``certified = False`` and the interval (-inf, inf); :func:`input_faults` says why.

A threat is just a list of touch sets (region indices one attacker placement can reach), so a
physical sticker threat (metres on the road, mapped through the camera) is another entry with
its own ``kind`` and sets; the certifier does not care where the sets came from.

Exactness note: order statistics, midpoints and bin edges are the same IEEE operations as in
torch. The float64 sums of the trimmed mean and of outlier rejection may be added in another
order; their float32 result can then differ only when the float64 value lies within a
rounding error (~1e-16 relative) of a float32 rounding boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_JSON_DEPTH, json_depth, loads_json
from drivenet_patch.safety.values import (
    as_bool,
    bounded_float,
    bounded_int,
    check_fields,
    number,
    obj,
    text,
    whole,
)

#: Aggregators (the same names as :data:`defenses.aggregate.METHODS`).
METHODS = ("median", "trimmed", "vote", "reject")
#: ONNX metadata key holding the certificate metadata JSON.
CERT_KEY = "pdn.certificate"
CERT_FORMAT = "pdn-certificate/1"
#: Relative margin on float64 sums (the value of :mod:`defenses.certify`).
SUM_MARGIN = 1e-12
#: Most regions (votes per frame) a certificate may have (an exported PatchVote model has 9).
MAX_REGIONS = 1024
#: Most threats in one metadata.
MAX_THREATS = 64
#: Most touch sets over all threats of one metadata (the maximal-set reduction is quadratic in them; an
#: exported model has about 20). At the limits a metadata loads in about a second.
MAX_TOUCH_SETS = 1024
#: Most set members (region indices) over all threats of one metadata.
MAX_TOUCH_CELLS = 2**20
#: Largest bin width or outlier threshold, degrees (far above any steering angle).
MAX_AGGREGATE_DEG = 360.0
#: Work per chunk of frames: frames x regions x sets (keeps the per-set intermediates to ~100 MB).
_CHUNK_CELLS = 2**22
_FIX = "re-export the model with pdn export"
_I16 = np.int16


class OnboardCertificate(NamedTuple):
    """Per frame, all (B,): clean aggregate, interval ``[lo, hi]``, finite flag, most touched valid votes."""

    output: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    certified: np.ndarray
    k: np.ndarray


# ---------------------------------------------------------------------------- touch sets
def touch_rows(sets: Sequence[Sequence[int]] | np.ndarray, n_regions: int) -> np.ndarray:
    """(Q, N) bool rows from a list of region-index lists (or a ready bool matrix).

    Raises:
        PDNError: an index outside ``[0, n_regions)`` or a matrix of the wrong width.
    """
    n_regions = bounded_int("n_regions", n_regions, low=1, high=MAX_REGIONS)
    if isinstance(sets, np.ndarray) and sets.dtype == bool:
        if sets.ndim != 2 or sets.shape[1] != n_regions:
            raise PDNError(f"touch matrix must be (P, {n_regions}) for {n_regions} regions, got {sets.shape}")
        if not 1 <= sets.shape[0] <= MAX_TOUCH_SETS:
            raise PDNError(f"touch matrix has {sets.shape[0]} rows; a threat needs 1 to {MAX_TOUCH_SETS} touch sets")
        return sets
    if not isinstance(sets, (list, tuple, np.ndarray)):
        raise PDNError(f"touch_sets must be a list of region-index lists, not {type(sets).__name__}")
    if not 1 <= len(sets) <= MAX_TOUCH_SETS:
        raise PDNError(f"touch_sets has {len(sets):,} sets; a threat needs 1 to {MAX_TOUCH_SETS} touch sets "
                       f"(merge placements into maximal sets, or {_FIX})")
    rows = np.zeros((len(sets), n_regions), dtype=bool)
    for q, members in enumerate(sets):
        if not isinstance(members, (list, tuple, np.ndarray)) or len(members) > n_regions:
            raise PDNError(f"touch set {q} must be a list of at most {n_regions} region indices, got "
                           f"{type(members).__name__}" + (f" of {len(members):,}" if hasattr(members, "__len__") else ""))
        if len(members) == 0:
            continue
        kinds = set(map(type, members))
        a = None
        if not kinds & {bool, np.bool_, list, tuple, dict}:
            try:
                a = np.asarray(members)
            except (ValueError, TypeError):  # ragged or too deeply nested
                a = None
        ok = a is not None and a.ndim == 1 and a.dtype.kind in "iuf"
        if ok and a.dtype.kind == "f":
            ok = bool(np.isfinite(a).all() and (a == np.floor(a)).all())
        if ok:
            ok = bool(a.min() >= 0 and a.max() < n_regions)
        if not ok:
            bad = next((r for r in members if not _is_index(r, n_regions)), members[0])
            shown = f"a {type(bad).__name__}" if isinstance(bad, (list, tuple, dict)) else repr(str(bad)[:40])
            raise PDNError(f"touch set {q}: region index {shown} is not a whole number in [0, {n_regions}); {_FIX}")
        rows[q, a.astype(np.int64)] = True
    return rows


def _is_index(r: Any, n_regions: int) -> bool:
    """Whether ``r`` is a whole number in ``[0, n_regions)`` (not true/false; any size of int is safe here)."""
    if type(r) is bool or isinstance(r, np.bool_) or not isinstance(r, (int, float, np.integer, np.floating)):
        return False
    if isinstance(r, (float, np.floating)) and not (math.isfinite(r) and r == int(r)):
        return False
    return 0 <= int(r) < n_regions


def maximal_sets(touch: np.ndarray) -> np.ndarray:
    """Distinct rows of a (P, N) bool matrix not strictly contained in another row -> (Q, N)."""
    rows = np.unique(np.asarray(touch, dtype=bool), axis=0)
    if rows.shape[0] <= 1:
        return rows
    r = rows.astype(np.float32)
    inter = r @ r.T
    size = r.sum(1)
    contained = (inter == size[:, None]) & (size[None, :] > size[:, None])
    return rows[~contained.any(1)]


def sets_to_lists(touch: np.ndarray) -> list[list[int]]:
    """(Q, N) bool -> region-index lists (the metadata's ``touch_sets``)."""
    return [np.flatnonzero(row).tolist() for row in np.asarray(touch, dtype=bool)]


# ---------------------------------------------------------------------------- aggregates
def _midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b) * a.dtype.type(0.5)


def _sort_valid(votes: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = np.where(valid, votes, votes.dtype.type(np.inf))
    perm = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(key, perm, 1), perm, valid.sum(1)


def _median(votes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    s, _, n = _sort_valid(votes, valid)
    return _median_sorted(s, n)


def _median_sorted(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Median of rows sorted by :func:`_sort_valid` with ``n`` (B,) valid entries each."""
    rows = np.arange(s.shape[0])
    out = _midpoint(s[rows, np.maximum((n - 1) // 2, 0)], s[rows, np.minimum(n // 2, s.shape[1] - 1)])
    return np.where(n > 0, out, s.dtype.type(np.nan))


def _sum64(x: np.ndarray) -> np.ndarray:
    return x.sum(1)


def _trimmed_mean(votes: np.ndarray, valid: np.ndarray, t: int) -> np.ndarray:
    s, _, n = _sort_valid(votes, valid)
    rank = np.arange(votes.shape[1])[None, :]
    keep = (rank >= t) & (rank < (n - t)[:, None])
    total = _sum64(np.where(keep, s.astype(np.float64), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (total / (n - 2 * t).astype(np.float64)).astype(votes.dtype)
    return np.where(n > 2 * t, out, votes.dtype.type(np.nan))


def _bin_index(v: np.ndarray, bin_deg: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.clip(np.floor(v.astype(np.float64) / float(bin_deg) + 0.5), -1e15, 1e15).astype(np.int64)


def _bin_edges(top_bin: np.ndarray, bin_deg: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    w = float(bin_deg)
    lo = (top_bin.astype(np.float64) - 0.5) * w
    hi = (top_bin.astype(np.float64) + 0.5) * w
    pad = 1e-9 * (np.abs(lo) + np.abs(hi) + w)
    lo, hi = (lo - pad).astype(dtype), (hi + pad).astype(dtype)
    return np.nextafter(lo, dtype.type(-np.inf)), np.nextafter(hi, dtype.type(np.inf))


def _bin_vote(votes: np.ndarray, valid: np.ndarray, bin_deg: float) -> tuple[np.ndarray, ...]:
    big = np.iinfo(np.int64).max
    ids = _bin_index(votes, bin_deg)  # (B, N)
    ids_s = np.sort(np.where(valid, ids, big), axis=1)
    counts = (ids_s[:, :, None] == ids_s[:, None, :]).sum(2)  # length of each vote's run of equal ids
    ok = ids_s != big
    counts = np.where(ok, counts, 0)
    top_count = counts.max(1)
    key = 2 * np.abs(np.clip(ids_s, -(2**60), 2**60)) + (ids_s > 0).astype(np.int64)
    key = np.where(ok & (counts == top_count[:, None]), key, big)
    top_bin = np.take_along_axis(ids_s, key.argmin(1)[:, None], 1)[:, 0]
    runner_up = np.where(ok & (ids_s != top_bin[:, None]), counts, 0).max(1)
    out = _median(votes, valid & (ids == top_bin[:, None]))
    return out, top_bin, top_count, runner_up


def _outlier_mean(votes: np.ndarray, valid: np.ndarray, tau: float) -> np.ndarray:
    med = _median(votes, valid)
    v64 = votes.astype(np.float64)
    with np.errstate(invalid="ignore"):
        keep = valid & (np.abs(v64 - med.astype(np.float64)[:, None]) <= float(tau))
    total = _sum64(np.where(keep, v64, 0.0))
    count = keep.sum(1)
    mean = (total / np.maximum(count, 1).astype(np.float64)).astype(votes.dtype)
    return np.where(count > 0, mean, med)


# ---------------------------------------------------------------------------- bounds
class _Sets(NamedTuple):
    s: np.ndarray  # (B, N) sorted, +inf for abstentions
    n: np.ndarray  # (B,)
    valid_s: np.ndarray  # (B, N)
    touched: np.ndarray  # (B, N, Q)
    c: np.ndarray  # (B, Q)


def _prepare(votes: np.ndarray, valid: np.ndarray, sets: np.ndarray) -> _Sets:
    s, perm, n = _sort_valid(votes, valid)
    valid_s = np.take_along_axis(valid, perm, 1)
    touched = sets.T[perm] & valid_s[:, :, None]
    return _Sets(s, n, valid_s, touched, touched.sum(1).astype(np.int64))


def _kth_kept(s: np.ndarray, cnt: np.ndarray, j: np.ndarray) -> np.ndarray:
    jj = np.clip(j, -1, np.iinfo(_I16).max).astype(_I16)[:, None, :]
    pos = np.minimum((cnt <= jj).sum(1).astype(np.int64), s.shape[1] - 1)  # (B, Q)
    return np.take_along_axis(s, pos, 1)


def _median_bounds(s: np.ndarray, keep: np.ndarray, c: np.ndarray, low_fill: Any, high_fill: Any
                   ) -> tuple[np.ndarray, np.ndarray]:
    cnt = keep.cumsum(1, dtype=_I16)
    kept = cnt[:, -1, :].astype(np.int64)
    m = kept + c
    i1, i2 = np.maximum((m - 1) // 2, 0), m // 2
    lf = np.asarray(low_fill, dtype=s.dtype)
    hf = np.asarray(high_fill, dtype=s.dtype)
    lo1 = np.where(i1 < c, lf, _kth_kept(s, cnt, i1 - c))
    lo2 = np.where(i2 < c, lf, _kth_kept(s, cnt, i2 - c))
    hi1 = np.where(i1 < kept, _kth_kept(s, cnt, i1), hf)
    hi2 = np.where(i2 < kept, _kth_kept(s, cnt, i2), hf)
    empty = m == 0
    with np.errstate(invalid="ignore"):
        lo, hi = _midpoint(lo1, lo2), _midpoint(hi1, hi2)
    return np.where(empty, s.dtype.type(-np.inf), lo), np.where(empty, s.dtype.type(np.inf), hi)


def _abs_margin(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    mag = np.where(valid, np.abs(values.astype(np.float64)), 0.0)
    return SUM_MARGIN * (mag.max(1, keepdims=True) + 1.0)


def _interval(lo_q: np.ndarray, hi_q: np.ndarray, st: _Sets) -> tuple[np.ndarray, np.ndarray]:
    none = st.n == 0
    dt = lo_q.dtype.type
    return np.where(none, dt(-np.inf), lo_q.min(1)), np.where(none, dt(np.inf), hi_q.max(1))


def _cert_median(votes: np.ndarray, valid: np.ndarray, sets: np.ndarray) -> OnboardCertificate:
    st = _prepare(votes, valid, sets)
    keep = st.valid_s[:, :, None] & ~st.touched
    lo, hi = _interval(*_median_bounds(st.s, keep, st.c, -np.inf, np.inf), st)
    return OnboardCertificate(_median_sorted(st.s, st.n), lo, hi, np.isfinite(lo) & np.isfinite(hi), st.c.max(1))


def _cert_trimmed(votes: np.ndarray, valid: np.ndarray, sets: np.ndarray, t: int) -> OnboardCertificate:
    st = _prepare(votes, valid, sets)
    keep = st.valid_s[:, :, None] & ~st.touched
    cnt = keep.cumsum(1, dtype=_I16)
    c = st.c[:, None, :].astype(_I16)
    n = st.n[:, None, None].astype(_I16)
    count = (st.n - 2 * t).astype(np.float64)[:, None]
    lo_mask = keep & (cnt > t - c) & (cnt <= n - t - c)
    hi_mask = keep & (cnt > t) & (cnt <= n - t)
    s64 = np.where(st.valid_s, st.s.astype(np.float64), 0.0)
    lo_sum = np.einsum("bn,bnq->bq", s64, lo_mask.astype(np.float64))
    hi_sum = np.einsum("bn,bnq->bq", s64, hi_mask.astype(np.float64))
    margin = _abs_margin(st.s, st.valid_s)
    bad = (st.c > t) | (st.n <= 2 * t)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_q = np.where(bad, -np.inf, lo_sum / count - margin).astype(votes.dtype)
        hi_q = np.where(bad, np.inf, hi_sum / count + margin).astype(votes.dtype)
    lo, hi = _interval(lo_q, hi_q, st)
    return OnboardCertificate(_trimmed_mean(votes, valid, t), lo, hi, np.isfinite(lo) & np.isfinite(hi), st.c.max(1))


def _cert_vote(votes: np.ndarray, valid: np.ndarray, sets: np.ndarray, bin_deg: float) -> OnboardCertificate:
    out, top_bin, top_count, runner_up = _bin_vote(votes, valid, bin_deg)
    st = _prepare(votes, valid, sets)
    k = st.c.max(1)
    sure = (top_count - runner_up > 2 * k) & (st.n > 0)
    in_top_s = st.valid_s & (_bin_index(st.s, bin_deg) == top_bin[:, None])
    keep = in_top_s[:, :, None] & ~st.touched
    edge_lo, edge_hi = _bin_edges(top_bin, bin_deg, votes.dtype)
    lo_q, hi_q = _median_bounds(st.s, keep, st.c, edge_lo[:, None], edge_hi[:, None])
    lo = np.where(sure, lo_q.min(1), votes.dtype.type(-np.inf))
    hi = np.where(sure, hi_q.max(1), votes.dtype.type(np.inf))
    return OnboardCertificate(out, lo, hi, sure, k)


def _cert_reject(votes: np.ndarray, valid: np.ndarray, sets: np.ndarray, tau: float) -> OnboardCertificate:
    med = _cert_median(votes, valid, sets)
    margin = (_abs_margin(votes, valid) + SUM_MARGIN * tau)[:, 0]
    lo = (med.lo.astype(np.float64) - tau - margin).astype(votes.dtype)
    hi = (med.hi.astype(np.float64) + tau + margin).astype(votes.dtype)
    return OnboardCertificate(_outlier_mean(votes, valid, tau), lo, hi, med.certified, med.k)


def certify(
    votes: np.ndarray,
    touch: np.ndarray | Sequence[Sequence[int]],
    valid: np.ndarray | None = None,
    method: str = "median",
    *,
    trim: int = 1,
    bin_deg: float = 2.0,
    tau_deg: float = 3.0,
    reduced: bool = False,
) -> OnboardCertificate:
    """Certified steering interval of ``method`` from votes; equals :func:`defenses.certify.certify_votes`.

    Args:
        votes: (B, N) float32 (or float64) degrees, abstaining entries arbitrary but not NaN.
        touch: (P, N) bool, or a list of region-index lists: the regions each placement of
            the threat reaches.
        valid: None, (N,) or (B, N) bool; False = abstaining region.
        method: ``median``, ``trimmed``, ``vote`` or ``reject``.
        trim, bin_deg, tau_deg: the aggregator's parameters.
        reduced: ``touch`` already holds only maximal sets (skips the reduction).

    Returns:
        :class:`OnboardCertificate` of (B,) arrays.

    Raises:
        PDNError: bad shapes, method or parameters.
    """
    v = _array("votes", votes)
    if v.ndim != 2 or not np.issubdtype(v.dtype, np.floating):
        raise PDNError(f"votes must be a (B, N) floating-point array, got {v.shape} {v.dtype}")
    b, n = v.shape
    if not 1 <= n <= MAX_REGIONS:
        raise PDNError(f"votes have {n} regions per frame; the certifier takes 1 to {MAX_REGIONS}")
    m = _valid_mask(valid, b, n)
    if method not in METHODS:
        raise PDNError(f"unknown aggregate {str(method)[:40]!r}; valid aggregates: {', '.join(METHODS)}")
    params = _parameters(method, trim, bin_deg, tau_deg)
    rows = touch_rows(touch, n)
    sets = rows if reduced else maximal_sets(rows)
    step = max(1, _CHUNK_CELLS // (n * sets.shape[0]))
    parts = [_certify_chunk(v[i:i + step], m[i:i + step], sets, method, params) for i in range(0, max(b, 1), step)]
    if len(parts) == 1:
        return parts[0]
    return OnboardCertificate(*(np.concatenate(field) for field in zip(*parts, strict=True)))


def _array(name: str, value: Any) -> np.ndarray:
    """``value`` as a numpy array; a ragged or too deeply nested sequence is refused in one line."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, RecursionError):
        raise PDNError(f"{name} must be an array of numbers (a ragged or too deeply nested list was given)") from None


def _valid_mask(valid: Any, b: int, n: int) -> np.ndarray:
    """(B, N) bool from None, (N,) or (B, N) booleans (or 0/1 integers); anything else is refused."""
    if valid is None:
        return np.ones((b, n), dtype=bool)
    m = _array("valid mask", valid)
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.integer) or not np.isin(m, (0, 1)).all():
            raise PDNError(f"valid mask must hold booleans (or 0/1), got {m.dtype} values")
        m = m.astype(bool)
    if m.shape == (n,):
        m = np.broadcast_to(m[None, :], (b, n))
    if m.shape != (b, n):
        raise PDNError(f"valid mask must be (N,) or (B, N) matching votes {(b, n)}, got {m.shape}")
    return m


def _parameters(method: str, trim: Any, bin_deg: Any, tau_deg: Any) -> float | int | None:
    """The one parameter ``method`` uses, checked: finite and bounded (an infinite one would certify nothing
    while looking certified)."""
    if method == "trimmed":
        return bounded_int("trim", trim, low=0, high=MAX_REGIONS, hint="give the votes dropped at each end")
    if method == "vote":
        return bounded_float("bin width (bin_deg)", bin_deg, low=0.0, high=MAX_AGGREGATE_DEG, low_open=True,
                             hint="give a bin width in degrees")
    if method == "reject":
        return bounded_float("outlier threshold (tau_deg)", tau_deg, low=0.0, high=MAX_AGGREGATE_DEG,
                             hint="give a threshold in degrees")
    return None


def _certify_chunk(v: np.ndarray, m: np.ndarray, sets: np.ndarray, method: str, param: Any) -> OnboardCertificate:
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite votes: their frames are uncertified below
        return _never_certify_nonfinite(_aggregate_bounds(v, m, sets, method, param), v)


def _aggregate_bounds(v: np.ndarray, m: np.ndarray, sets: np.ndarray, method: str, param: Any) -> OnboardCertificate:
    if method == "median":
        cert = _cert_median(v, m, sets)
    elif method == "trimmed":
        cert = _cert_trimmed(v, m, sets, int(param))
    elif method == "vote":
        cert = _cert_vote(v, m, sets, float(param))
    else:
        cert = _cert_reject(v, m, sets, float(param))
    return cert


def _never_certify_nonfinite(cert: OnboardCertificate, votes: np.ndarray) -> OnboardCertificate:
    """A frame with any NaN or infinite vote (valid or abstaining) is not certified: interval (-inf, inf).
    Every certified interval is finite, whatever an aggregator's parameters."""
    finite = np.isfinite(votes).all(1)
    ok = cert.certified & finite & np.isfinite(cert.lo) & np.isfinite(cert.hi)
    dt = cert.lo.dtype.type
    return cert._replace(certified=ok, lo=np.where(finite, cert.lo, dt(-np.inf)),
                         hi=np.where(finite, cert.hi, dt(np.inf)))


def input_faults(votes: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
    """(B,) reason per frame why it cannot be certified from its inputs: ``"non-finite pixel"``,
    ``"non-finite vote"`` or ``""`` (inputs fine).

    Args:
        votes: (B, N) votes.
        frames: the (B, ...) camera frames the votes came from, or None.
    """
    v = _array("votes", votes)
    if v.ndim != 2 or v.dtype.kind not in "fc":
        raise PDNError(f"votes must be a (B, N) floating-point array, got {v.shape} {v.dtype}")
    reasons = np.where(np.isfinite(v).reshape(v.shape[0], -1).all(1), "", "non-finite vote").astype("<U24")
    if frames is not None:
        f = _array("frames", frames)
        if f.shape[:1] != v.shape[:1]:
            raise PDNError(f"frames must have one row per frame of the votes ({v.shape[0]}), got {f.shape}")
        if f.dtype.kind in "fc":
            bad = ~np.isfinite(f.reshape(f.shape[0], -1)).all(1)
            reasons = np.where(bad, "non-finite pixel", reasons).astype("<U24")
    return reasons


# ---------------------------------------------------------------------------- the vehicle's view
@dataclass(frozen=True)
class Certifier:
    """A deployed model's certificate settings: aggregator, abstentions and threats' touch sets.

    Build it with :meth:`from_metadata` (the JSON of ``CERT_KEY``) or :meth:`from_onnx_session`.

    Attributes:
        n_regions: N.
        valid: (N,) bool.
        aggregate, trim, bin_deg, tau_deg: the aggregator.
        threats: name -> (Q, N) bool maximal touch sets.
        default_threat: the threat :meth:`__call__` uses by default.
    """

    n_regions: int
    valid: np.ndarray
    aggregate: str
    trim: int
    bin_deg: float
    tau_deg: float
    threats: Mapping[str, np.ndarray]
    default_threat: str

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any] | str) -> Certifier:
        """Parse the certificate metadata (a dict or its JSON text; format in the module docstring).

        Raises:
            PDNError: a wrong format, missing key or bad touch set.
        """
        if isinstance(meta, (str, bytes)):
            meta = loads_json(meta, CERT_KEY, finite=True)
        elif json_depth(meta) > MAX_JSON_DEPTH:
            raise PDNError(f"{CERT_KEY}: nested deeper than {MAX_JSON_DEPTH} levels; {_FIX}")
        if isinstance(meta, Mapping) and not isinstance(meta, dict):
            meta = dict(meta)
        fields = check_fields(CERT_KEY, meta, {
            "format": text((CERT_FORMAT,)), "n_regions": whole(1, MAX_REGIONS), "aggregate": text(METHODS),
            "trim": whole(0, MAX_REGIONS), "bin_deg": number(0.0, MAX_AGGREGATE_DEG, low_open=True),
            "tau_deg": number(0.0, MAX_AGGREGATE_DEG), "default_threat": text(), "threats": obj()},
            required=("format", "n_regions", "valid", "aggregate", "trim", "bin_deg", "tau_deg", "default_threat",
                      "threats"), hint=_FIX)
        n = fields["n_regions"]
        raw_valid = meta["valid"]
        if not isinstance(raw_valid, list) or len(raw_valid) != n:
            raise PDNError(f"{CERT_KEY}: valid must be a list of {n} true/false values (one per region); {_FIX}")
        valid = np.array([as_bool(f"{CERT_KEY}: valid[{i}]", x) for i, x in enumerate(raw_valid)], dtype=bool)
        if fields["trim"] > n:
            raise PDNError(f"{CERT_KEY}: trim = {fields['trim']} is outside 0..{n} (the number of regions); {_FIX}")
        raw_threats = fields["threats"]
        if not 1 <= len(raw_threats) <= MAX_THREATS:
            raise PDNError(f"{CERT_KEY}: threats has {len(raw_threats):,} entries; give 1 to {MAX_THREATS}; {_FIX}")
        cells = count = 0
        for name, t in raw_threats.items():
            sets = t.get("touch_sets") if isinstance(t, dict) else None
            if not isinstance(sets, list):
                raise PDNError(f"{CERT_KEY}: threats.{str(name)[:40]}.touch_sets must be a list of region-index "
                               f"lists; {_FIX}")
            count += len(sets)
            if count > MAX_TOUCH_SETS:
                raise PDNError(f"{CERT_KEY}: the threats hold {count:,}+ touch sets (threats.{str(name)[:40]} has "
                               f"{len(sets):,}), over the limit of {MAX_TOUCH_SETS} in all; keep the maximal sets "
                               f"only, or {_FIX}")
            cells += sum(len(s) if isinstance(s, list) else 1 for s in sets)
            if cells > MAX_TOUCH_CELLS:
                raise PDNError(f"{CERT_KEY}: the touch sets hold more than {MAX_TOUCH_CELLS:,} region indices in all, "
                               f"over the limit; keep the maximal sets only, or {_FIX}")
        threats = {}
        for name, t in raw_threats.items():
            try:
                threats[name] = maximal_sets(touch_rows(t["touch_sets"], n))
            except PDNError as exc:
                raise PDNError(f"{CERT_KEY}: threats.{str(name)[:40]}: {exc}") from None
        default = fields["default_threat"]
        if default not in threats:
            raise PDNError(f"{CERT_KEY}: default_threat {default[:40]!r} is not among the threats "
                           f"({', '.join(sorted(threats))[:120]}); {_FIX}")
        return cls(n, valid, fields["aggregate"], fields["trim"], fields["bin_deg"], fields["tau_deg"], threats,
                   default)

    @classmethod
    def from_onnx_session(cls, session: Any) -> Certifier:
        """From an ``onnxruntime.InferenceSession`` of an exported PatchVote model (its custom metadata)."""
        meta = session.get_modelmeta().custom_metadata_map
        if CERT_KEY not in meta:
            raise PDNError(f"this ONNX model has no {CERT_KEY} metadata (not an exported PatchVote model)")
        return cls.from_metadata(meta[CERT_KEY])

    def __call__(self, votes: np.ndarray, valid: np.ndarray | None = None, threat: str | None = None,
                 frames: np.ndarray | None = None) -> OnboardCertificate:
        """Certificate of (B, N) votes against ``threat`` (default: :attr:`default_threat`).

        ``frames`` (B, ...), the camera frames the votes came from: a frame with a NaN or infinite pixel
        is not certified either (see :func:`input_faults`).
        """
        name = self.default_threat if threat is None else threat
        if not isinstance(name, str) or name not in self.threats:
            raise PDNError(f"unknown threat {str(name)[:40]!r}; known: {', '.join(sorted(self.threats))[:160]}")
        v = _array("votes", votes)
        if v.ndim != 2 or v.shape[1] != self.n_regions:
            raise PDNError(f"votes must be (B, {self.n_regions}): one vote per region of this certificate, got "
                           f"shape {v.shape}")
        cert = certify(v, self.threats[name], self.valid if valid is None else valid, self.aggregate,
                       trim=self.trim, bin_deg=self.bin_deg, tau_deg=self.tau_deg, reduced=True)
        if frames is None:
            return cert
        ok = input_faults(v, frames) == ""
        dt = cert.lo.dtype.type
        return cert._replace(certified=cert.certified & ok, lo=np.where(ok, cert.lo, dt(-np.inf)),
                             hi=np.where(ok, cert.hi, dt(np.inf)))


def verified(cert: OnboardCertificate, delta_deg: float) -> np.ndarray:
    """(B,) bool: the certified interval is finite and at most ``delta_deg`` wide."""
    delta = bounded_float("delta", delta_deg, low=0.0, low_open=True, hint="give the tolerance in degrees")
    lo, hi = np.asarray(cert.lo, dtype=np.float64), np.asarray(cert.hi, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(cert.certified, dtype=bool) & np.isfinite(lo) & np.isfinite(hi) & ((hi - lo) <= delta)


def certificate_metadata(n_regions: int, valid: Sequence[bool], aggregate: str, trim: int, bin_deg: float,
                         tau_deg: float, threats: Mapping[str, Mapping[str, Any]], default_threat: str) -> dict[str, Any]:
    """The metadata dict (format in the module docstring); ``threats`` values hold ``kind``, ``touch_sets`` and extras.

    Raises:
        PDNError: a value :meth:`Certifier.from_metadata` would refuse (checked here, before it is exported).
    """
    def plain(v: Any) -> Any:  # numpy scalars as Python numbers and booleans; anything else as given
        return v.item() if isinstance(v, np.generic) else v

    if not isinstance(threats, Mapping) or not all(isinstance(t, Mapping) for t in threats.values()):
        raise PDNError("threats must map each threat's name to an object with its touch_sets")
    meta = {"format": CERT_FORMAT, "n_regions": plain(n_regions), "valid": [plain(v) for v in valid],
            "aggregate": aggregate, "trim": plain(trim), "bin_deg": plain(bin_deg), "tau_deg": plain(tau_deg),
            "default_threat": default_threat, "threats": {k: dict(v) for k, v in threats.items()}}
    Certifier.from_metadata(meta)  # validate once
    return meta


__all__ = ["CERT_FORMAT", "CERT_KEY", "MAX_AGGREGATE_DEG", "MAX_REGIONS", "MAX_THREATS", "MAX_TOUCH_CELLS",
           "MAX_TOUCH_SETS", "METHODS", "Certifier", "OnboardCertificate", "certificate_metadata", "certify",
           "input_faults", "maximal_sets", "sets_to_lists", "touch_rows", "verified"]
