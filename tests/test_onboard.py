"""The vehicle-side certifier (numpy only) equals defenses.certify.certify_votes exactly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from defenses.certify import certify_votes
from defenses.regions import make_layout, parse_patch, touch_matrix
from drivenet_patch.deploy import onboard
from drivenet_patch.safety.errors import PDNError


def _assert_same(ref, got) -> None:
    for name in ("output", "lo", "hi", "certified", "k"):
        a = getattr(ref, name).numpy()
        b = getattr(got, name)
        assert a.dtype == b.dtype or name == "k", (name, a.dtype, b.dtype)
        np.testing.assert_array_equal(b, a, err_msg=name)


@st.composite
def _case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b, n = draw(st.integers(1, 40)), draw(st.integers(1, 14))
    scale = draw(st.sampled_from([0.5, 3.0, 20.0]))
    votes = rng.normal(0, scale, (b, n)).astype(np.float32)
    if draw(st.booleans()):  # ties: votes on a coarse grid
        votes = np.round(votes).astype(np.float32)
    valid = rng.random((b, n)) > draw(st.sampled_from([0.0, 0.2, 0.6]))
    touch = rng.random((draw(st.integers(1, 12)), n)) < draw(st.sampled_from([0.1, 0.3, 0.6]))
    method = draw(st.sampled_from(onboard.METHODS))
    kw = dict(trim=draw(st.integers(0, 3)), bin_deg=draw(st.sampled_from([0.5, 2.0, 5.0])),
              tau_deg=draw(st.sampled_from([0.0, 1.0, 3.0])))
    return votes, valid, touch, method, kw


@given(_case())
def test_equals_certify_votes_on_random_votes_abstentions_and_touch_sets(case) -> None:
    votes, valid, touch, method, kw = case
    ref = certify_votes(torch.from_numpy(votes), torch.from_numpy(touch), torch.from_numpy(valid), method, **kw)
    _assert_same(ref, onboard.certify(votes, touch, valid, method, **kw))


@pytest.mark.parametrize("method", onboard.METHODS)
def test_equals_certify_votes_with_real_touch_sets_and_metadata(method) -> None:
    rng = np.random.default_rng(1)
    layout = make_layout((66, 200), "bands")
    touch = touch_matrix(layout, parse_patch("2%"))
    valid = np.ones(layout.n, dtype=bool)
    valid[0] = False
    votes = (rng.normal(0, 0.4, (500, layout.n)) + rng.normal(0, 5, (500, 1))).astype(np.float32)
    meta = onboard.certificate_metadata(
        layout.n, valid, method, 3, 2.0, 3.0,
        {"patch": {"kind": "pixel_patch", "touch_sets": onboard.sets_to_lists(onboard.maximal_sets(touch.numpy()))}},
        "patch")
    cert = onboard.Certifier.from_metadata(meta)(votes)
    ref = certify_votes(torch.from_numpy(votes), touch, torch.from_numpy(valid), method, trim=3)
    _assert_same(ref, cert)
    assert cert.certified.any()


def test_verified_flag_and_bad_metadata() -> None:
    cert = onboard.certify(np.array([[0.0, 0.1, 0.2, 5.0, 0.15]], np.float32), [[3]])
    assert onboard.verified(cert, 1.0).tolist() == [True]
    assert onboard.verified(cert, 0.01).tolist() == [False]
    with pytest.raises(PDNError, match="region index"):
        onboard.touch_rows([[0, 9]], 5)
    with pytest.raises(PDNError, match="format"):
        onboard.Certifier.from_metadata({"format": "other"})


def test_importing_the_vehicle_certifier_does_not_import_torch() -> None:
    code = ("import sys, numpy as np; import drivenet_patch.deploy.onboard as o; "
            "o.certify(np.zeros((2, 3), np.float32), [[0]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
