"""Aggregators and certificates: hand-built votes, brute-force soundness at every patch position, tightness."""

from __future__ import annotations

import pytest
import torch

import defenses
from defenses import aggregate as agg
from defenses import certify as cert
from defenses.regions import RegionLayout, touch_matrix
from drivenet_patch.safety.errors import PDNError

PARAMS = {"trim": 2, "bin_deg": 2.0, "tau_deg": 1.5}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_package_exports() -> None:
    assert sorted(defenses.__all__) == sorted(set(defenses.__all__))
    for name in defenses.__all__:
        assert getattr(defenses, name) is not None


def test_aggregators_on_hand_made_votes() -> None:
    v = torch.tensor([[1.0, 5.0, 2.0, 100.0, 3.0], [0.0, 0.5, 0.7, -9.0, 4.4]])
    torch.testing.assert_close(agg.median(v), torch.tensor([3.0, 0.5]))
    torch.testing.assert_close(agg.median(v[:, :4]), torch.tensor([3.5, 0.25]))  # even count: mean of the middle two
    valid = torch.tensor([True, True, True, False, True])
    torch.testing.assert_close(agg.median(v, valid), torch.tensor([2.5, 0.6]))
    torch.testing.assert_close(agg.trimmed_mean(v, trim=1), torch.tensor([10 / 3, 1.2 / 3]))
    torch.testing.assert_close(agg.trimmed_mean(v, valid, trim=1), torch.tensor([2.5, 0.6]))
    assert torch.isnan(agg.trimmed_mean(v, valid, trim=2)).all()  # 4 valid votes, 2 * 2 trimmed
    torch.testing.assert_close(agg.outlier_mean(v, tau_deg=2.0), torch.tensor([(1 + 5 + 2 + 3) / 4, (0 + 0.5 + 0.7) / 3]))
    # Bin vote, width 2: bins of [-1, 1), [1, 3), ... Frame 0: {1, 2} in bin 1, so bin 1 wins.
    bv = agg.bin_vote(v, bin_deg=2.0)
    assert bv.top_bin.tolist() == [1, 0] and bv.top_count.tolist() == [2, 3] and bv.runner_up.tolist() == [1, 1]
    torch.testing.assert_close(bv.output, torch.tensor([1.5, 0.5]))
    # Ties go to the bin nearest straight ahead, then to the right (negative).
    assert agg.bin_vote(torch.tensor([[-2.1, -2.0, 2.0, 2.1]]), bin_deg=2.0).top_bin.item() == -1
    assert agg.bin_vote(torch.tensor([[-4.0, -4.1, 0.2, 0.1]]), bin_deg=2.0).top_bin.item() == 0
    none = torch.zeros(2, 5, dtype=torch.bool)
    for method in agg.METHODS:
        out = agg.aggregate_votes(v, none, method, **PARAMS)
        assert out.shape == (2,) and torch.isnan(out).all()


def test_bad_inputs_raise_one_clear_error() -> None:
    v = torch.zeros(3, 4)
    with pytest.raises(PDNError, match="valid aggregates: median, trimmed, vote, reject"):
        agg.aggregate_votes(v, method="mean")
    with pytest.raises(PDNError, match=r"votes must be a \(B, N\)"):
        agg.median(torch.zeros(4))
    with pytest.raises(PDNError, match="valid mask"):
        agg.median(v, torch.ones(5, dtype=torch.bool))
    with pytest.raises(PDNError, match="trim"):
        agg.trimmed_mean(v, trim=-1)
    with pytest.raises(PDNError, match="touch matrix"):
        cert.certify_votes(v, torch.ones(7, 5, dtype=torch.bool))
    with pytest.raises(PDNError, match="valid aggregates"):
        cert.certify_votes(v, torch.ones(7, 4, dtype=torch.bool), method="mode")
    with pytest.raises(PDNError, match="bin width"):
        cert.certify_votes(v, torch.ones(7, 4, dtype=torch.bool), method="vote", bin_deg=0.0)


def make_votes(n_frames: int, n: int, seed: int) -> torch.Tensor:
    """Frames of three kinds: tight agreement (certifiable), moderate spread, and ties on a 0.5 grid."""
    g = gen(seed)
    label = torch.randn(n_frames, 1, generator=g) * 8
    spread = torch.tensor([0.2, 1.5, 6.0]).repeat(n_frames // 3 + 1)[:n_frames, None]
    v = label + torch.randn(n_frames, n, generator=g) * spread
    v[1::4] = torch.round(v[1::4] * 2) / 2  # ties
    v[0::5, 0] = 40.0  # one wild vote
    return v


def attacked_votes(v: torch.Tensor, touch: torch.Tensor, bin_deg: float, seed: int) -> torch.Tensor:
    """Every frame x position x replacement: touched votes set to extremes, random values, ties, bin edges.

    Returns:
        (B, P, R, N).
    """
    g = gen(seed)
    b, n = v.shape
    lo, hi = v.min(1).values[:, None], v.max(1).values[:, None]
    top = agg.bin_vote(v, bin_deg=bin_deg).top_bin.double()[:, None]
    reps = [
        torch.full((b, n), 1e6),
        torch.full((b, n), -1e6),
        torch.where(torch.arange(n) % 2 == 0, 1e6, -1e6).expand(b, n),
        torch.randn(b, n, generator=g) * 30,
        lo + (hi - lo) * torch.rand(b, n, generator=g),  # inside the clean range
        v[:, torch.randperm(n, generator=g)],  # copies of other votes: ties
        ((top - 0.5) * bin_deg).float().expand(b, n),  # the winning bin's lower edge
        ((top + 0.5) * bin_deg - 1e-4).float().expand(b, n),  # just below its upper edge
        ((top + 1.0) * bin_deg).float().expand(b, n),  # the neighbouring bin
        ((top - 1.0) * bin_deg).float().expand(b, n),
    ]
    r = torch.stack(reps, 1)  # (B, R, N)
    return torch.where(touch[None, :, None, :], r[:, None], v[:, None, None, :])  # (B, P, R, N)


LAYOUTS = [
    (RegionLayout((12, 18), (4, 6), (4, 3)), (2, 2)),  # overlapping 3x5 grid, N = 15, k = 4
    (RegionLayout((6, 40), (6, 6), (6, 3)), (2, 3)),  # overlapping bands, N = 13, k = 3
    (RegionLayout((12, 12), (3, 3), (3, 3)), (2, 2)),  # 4x4 grid, N = 16, k = 4
    (RegionLayout((12, 16), (3, 4), (3, 4)), (1, 1)),  # a one-pixel patch: k = 1
    (RegionLayout((6, 20), (6, 6), (6, 3)), (2, 3)),  # N = 6, k = 3: the median is never certified
]


@pytest.mark.parametrize("method", agg.METHODS)
@pytest.mark.parametrize(("lay", "patch"), LAYOUTS)
@pytest.mark.parametrize("abstain", [False, True])
def test_no_attack_at_any_position_leaves_the_certified_interval(
    method: str, lay: RegionLayout, patch: tuple[int, int], abstain: bool
) -> None:
    touch = touch_matrix(lay, patch)
    n, k = lay.n, k_of(touch)
    v = make_votes(24, n, seed=n)
    valid = torch.ones(24, n, dtype=torch.bool)
    if abstain:  # fixed abstainers plus a per-frame mask with one frame that has no vote at all
        valid[:, [0, n // 2]] = False
        valid[3, 1] = False
        valid[5] = False
    att = attacked_votes(v, touch, PARAMS["bin_deg"], seed=n)  # (B, P, R, N)
    b, p, r, _ = att.shape
    vmask = valid[:, None, None, :].expand(b, p, r, n).reshape(-1, n)
    # The trimmed mean with trim = k (certifiable) and k - 1 (one touched vote too many).
    for params in [PARAMS] if method != "trimmed" else [{**PARAMS, "trim": k}, {**PARAMS, "trim": k - 1}]:
        c = cert.certify_votes(v, touch, valid, method, **params)
        torch.testing.assert_close(c.output, agg.aggregate_votes(v, valid, method, **params), equal_nan=True)
        got = agg.aggregate_votes(att.reshape(-1, n), vmask, method, **params).view(b, p, r)
        inside = (got >= c.lo[:, None, None]) & (got <= c.hi[:, None, None])
        nan_ok = torch.isnan(got) & ~c.certified[:, None, None]  # only frames without enough votes
        assert (inside | nan_ok).all(), f"{int((~(inside | nan_ok)).sum())} attacked outputs left their interval"
        ok = c.certified
        assert (c.lo[ok] <= c.output[ok]).all() and (c.output[ok] <= c.hi[ok]).all()
        assert torch.equal(c.k, (touch[None] & valid[:, None, :]).sum(-1).amax(-1))
        if 2 * k < n and params.get("trim", k) >= k and not abstain:  # not vacuous
            assert ok.sum() >= 4


def k_of(touch: torch.Tensor) -> int:
    return int(touch.sum(1).max())


@pytest.mark.parametrize(("lay", "patch"), LAYOUTS[:4])
def test_the_median_bound_is_attained(lay: RegionLayout, patch: tuple[int, int]) -> None:
    touch = touch_matrix(lay, patch)
    v = make_votes(24, lay.n, seed=1)
    c = cert.certify_median(v, touch)
    att = attacked_votes(v, touch, 2.0, seed=1)[:, :, :2]  # the +-1e6 replacements
    got = agg.median(att.reshape(-1, lay.n)).view(24, -1)
    ok = c.certified
    assert ok.any()
    assert torch.equal(got.min(1).values[ok], c.lo[ok]) and torch.equal(got.max(1).values[ok], c.hi[ok])
    # Trimmed mean: attained up to the rounding margin.
    t = cert.certify_trimmed(v, touch, trim=k_of(touch))
    got = agg.trimmed_mean(att.reshape(-1, lay.n), trim=k_of(touch)).view(24, -1)
    assert t.certified.all()
    torch.testing.assert_close(got.min(1).values, t.lo)
    torch.testing.assert_close(got.max(1).values, t.hi)


def test_median_interval_by_hand() -> None:
    # 5 bands, a patch touches 2 neighbours: sets {0,1}, {1,2}, {2,3}, {3,4}.
    touch = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    v = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    c = cert.certify_median(v, touch)
    # {3,4} -> -inf leaves 1, 2, 3: median 1. {0,1} -> +inf leaves 3, 4, 5: median 5.
    assert (c.lo.item(), c.hi.item(), c.output.item(), c.k.item()) == (1.0, 5.0, 3.0, 2)
    # Three touched of five: unbounded, not certified.
    wide = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    c = cert.certify_median(v, wide)
    assert c.lo.item() == -torch.inf and c.hi.item() == torch.inf and not c.certified.item()
    # The trimmed mean needs trim >= k.
    assert not cert.certify_trimmed(v, touch, trim=1).certified.item()
    t = cert.certify_trimmed(v, touch, trim=2)
    assert t.certified.item() and t.lo.item() == pytest.approx(1.0) and t.hi.item() == pytest.approx(5.0)


def test_bin_vote_certified_only_when_the_margin_exceeds_2k() -> None:
    touch = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)  # k = 2
    # 6 votes in bin 0, 2 in bin 5: margin 4 = 2k, not enough (the attacker can tie 4 : 4).
    v = torch.tensor([[0.1, 0.2, 0.3, -0.2, 0.0, 0.4, 10.0, 10.2]])
    assert not cert.certify_vote(v, touch, bin_deg=2.0).certified.item()
    # 7 : 1 -> margin 6 > 4: certified, and the output stays inside bin 0.
    v = torch.tensor([[0.1, 0.2, 0.3, -0.2, 0.0, 0.4, 0.5, 10.2]])
    c = cert.certify_vote(v, touch, bin_deg=2.0)
    assert c.certified.item() and -1.0 - 1e-6 <= c.lo.item() <= c.output.item() <= c.hi.item() <= 1.0 + 1e-6


def test_reject_interval_is_the_median_interval_widened_by_tau() -> None:
    touch = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    v = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    m = cert.certify_median(v, touch)
    r = cert.certify_reject(v, touch, tau_deg=0.5)
    assert r.lo.item() == pytest.approx(m.lo.item() - 0.5) and r.hi.item() == pytest.approx(m.hi.item() + 0.5)
    assert r.lo.item() <= m.lo.item() - 0.5 and r.hi.item() >= m.hi.item() + 0.5  # rounded outward


def test_chunked_certificates_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    touch = touch_matrix(*LAYOUTS[0])
    v = make_votes(50, 15, seed=4)
    whole = {m: cert.certify_votes(v, touch, method=m, **PARAMS) for m in agg.METHODS}
    monkeypatch.setattr(cert, "CHUNK", 7)
    for m in agg.METHODS:
        part = cert.certify_votes(v, touch, method=m, **PARAMS)
        for a, b in zip(whole[m], part, strict=True):
            assert torch.equal(a, b)
    empty = cert.certify_votes(v[:0], touch)
    assert empty.lo.shape == (0,)


def test_certified_accuracy_counts_whole_intervals() -> None:
    c = cert.Certificate(
        output=torch.tensor([0.0, 1.0, 2.0]),
        lo=torch.tensor([-1.0, 0.5, -torch.inf]),
        hi=torch.tensor([1.0, 3.5, torch.inf]),
        certified=torch.tensor([True, True, False]),
        k=torch.tensor([2, 2, 2]),
    )
    y = torch.tensor([0.0, 1.0, 2.0])
    assert cert.within(c, y, 1.0).tolist() == [True, False, False]
    assert cert.certified_accuracy(c, y, 1.0) == pytest.approx(1 / 3)
    assert cert.certified_accuracy(c, y, 3.0) == pytest.approx(2 / 3)
