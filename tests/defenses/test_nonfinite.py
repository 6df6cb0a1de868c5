"""A non-finite input is never certified: every aggregator, in the library and on the vehicle, and the monitor.

Also: an aggregation parameter that is infinite, NaN or huge is refused with one line, so no interval
(-inf, inf) can come out marked certified.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from defenses.aggregate import METHODS, aggregate_votes
from defenses.certify import certify_votes
from defenses.monitor import CertifiedMonitor
from drivenet_patch.deploy import onboard
from drivenet_patch.models import create_model
from drivenet_patch.safety.errors import PDNError

BAD = (math.nan, math.inf, -math.inf)
PARAMS = {"trim": 1, "bin_deg": 2.0, "tau_deg": 3.0}


def _votes(rng: np.random.Generator, b: int = 6, n: int = 9) -> np.ndarray:
    # Votes agree closely, so every clean frame is certified by every aggregator against a 1-region threat.
    return (rng.normal(0, 0.05, (b, n)) + 0.2).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", BAD)
def test_a_frame_with_a_non_finite_vote_is_never_certified(method: str, bad: float) -> None:
    rng = np.random.default_rng(0)
    votes = _votes(rng)
    touch = np.eye(9, dtype=bool)
    clean_lib = certify_votes(torch.from_numpy(votes), torch.from_numpy(touch), None, method, **PARAMS)
    assert clean_lib.certified.all(), "the clean frames must be certified for the test to mean anything"
    for where in (0, 4, 8):  # first, middle and last region: sorted to any position
        v = votes.copy()
        v[2, where] = bad
        lib = certify_votes(torch.from_numpy(v), torch.from_numpy(touch), None, method, **PARAMS)
        car = onboard.certify(v, touch, None, method, **PARAMS)
        for cert in (lib, car):
            certified = np.asarray(cert.certified)
            assert not certified[2], (method, bad, where)
            assert float(cert.lo[2]) == -math.inf and float(cert.hi[2]) == math.inf
            assert certified[[0, 1, 3, 4, 5]].all()  # the other frames are unaffected
        assert not onboard.verified(car, 1e6)[2]


@pytest.mark.parametrize("method", METHODS)
def test_a_non_finite_abstaining_vote_is_not_certified_either(method: str) -> None:
    votes = _votes(np.random.default_rng(1))
    votes[0, 3] = np.nan
    valid = np.ones(9, dtype=bool)
    valid[3] = False
    for cert in (certify_votes(torch.from_numpy(votes), torch.eye(9, dtype=torch.bool), torch.from_numpy(valid),
                               method, **PARAMS),
                 onboard.certify(votes, np.eye(9, dtype=bool), valid, method, **PARAMS)):
        assert not bool(cert.certified[0]) and bool(np.asarray(cert.certified)[1:].all())


@given(st.lists(st.sampled_from([0.0, 1.0, -3.5, 1e30, -1e30, math.nan, math.inf, -math.inf]), min_size=1,
                max_size=12), st.sampled_from(METHODS))
def test_certified_intervals_are_finite_and_need_finite_votes(values: list[float], method: str) -> None:
    votes = np.array([values], dtype=np.float32)
    n = votes.shape[1]
    touch = np.zeros((1, n), dtype=bool)
    touch[0, 0] = True
    for cert in (onboard.certify(votes, touch, None, method, **PARAMS),
                 certify_votes(torch.from_numpy(votes), torch.from_numpy(touch), None, method, **PARAMS)):
        c = bool(np.asarray(cert.certified)[0])
        lo, hi = float(cert.lo[0]), float(cert.hi[0])
        if c:
            assert np.isfinite(votes).all() and math.isfinite(lo) and math.isfinite(hi) and lo <= hi
        if not np.isfinite(votes).all():
            assert not c and lo == -math.inf and hi == math.inf


@pytest.mark.parametrize(("name", "value"), [("bin_deg", math.inf), ("bin_deg", math.nan), ("bin_deg", 0.0),
                                             ("bin_deg", 1e300), ("tau_deg", math.inf), ("tau_deg", -1.0),
                                             ("tau_deg", math.nan), ("trim", 10**12), ("trim", -1), ("trim", 1.5)])
def test_infinite_or_huge_parameters_are_refused_in_one_line(name: str, value: float) -> None:
    method = {"bin_deg": "vote", "tau_deg": "reject", "trim": "trimmed"}[name]
    votes = _votes(np.random.default_rng(2))
    kw = {**PARAMS, name: value}
    for call in (lambda: onboard.certify(votes, np.eye(9, dtype=bool), None, method, **kw),
                 lambda: certify_votes(torch.from_numpy(votes), torch.eye(9, dtype=torch.bool), None, method, **kw),
                 lambda: aggregate_votes(torch.from_numpy(votes), None, method, **kw)):
        with pytest.raises(PDNError) as info:
            call()
        assert "\n" not in str(info.value) and name.split("_")[0] in str(info.value)


def test_the_certifier_api_marks_a_frame_with_a_nan_pixel_unverified() -> None:
    votes = _votes(np.random.default_rng(3), b=3)
    meta = onboard.certificate_metadata(9, [True] * 9, "median", 1, 2.0, 3.0,
                                        {"one": {"kind": "test", "touch_sets": [[i] for i in range(9)]}}, "one")
    frames = np.zeros((3, 3, 4, 4), np.float32)
    frames[1, 0, 2, 2] = np.nan
    cert = onboard.Certifier.from_metadata(meta)(votes, frames=frames)
    assert cert.certified.tolist() == [True, False, True]
    assert onboard.verified(cert, 5.0).tolist() == [True, False, True]
    assert onboard.input_faults(votes, frames).tolist() == ["", "non-finite pixel", ""]


def test_the_monitor_never_verifies_a_nan_camera_frame_and_logs_why() -> None:
    model = create_model("patchvote_tiny", generator=torch.Generator().manual_seed(0), out_scale=2.0).eval()
    monitor = CertifiedMonitor(model, delta_deg=1e6)  # any finite interval would be verified
    frames = torch.rand(3, 3, *model.input_size)
    clean = monitor.step(frames, np.zeros(3), 0.0)
    frames = frames.clone()
    frames[1, :, 0, 0] = torch.nan
    frames[2, 0, 5, 5] = torch.inf
    step = monitor.step(frames, np.zeros(3), 0.1)
    assert step.record["verified"].tolist() == [bool(clean.record["verified"][0]), False, False]
    assert step.record["unverified_reason"][1] == "non-finite pixel"
    assert step.record["unverified_reason"][2] == "non-finite pixel"
    assert all(r == "" for r, ok in zip(step.record["unverified_reason"], step.record["verified"], strict=True) if ok)


def test_the_monitor_summary_counts_why_frames_were_unverified() -> None:
    import pandas as pd

    from defenses.monitor import summarize

    log = pd.DataFrame({"verified": [True, False, False, False], "fallback": [False] * 4,
                        "cert_lo": [0.0, -np.inf, 0.0, -np.inf], "cert_hi": [1.0, np.inf, 9.0, np.inf],
                        "unverified_reason": ["", "non-finite pixel", "wider than delta", "non-finite pixel"]})
    out = summarize(log)
    assert out["unverified_reasons"] == {"non-finite pixel": 2, "wider than delta": 1}
    assert out["unverified_share"] == 0.75
