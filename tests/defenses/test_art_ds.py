"""ART derandomized-smoothing baseline: bins, ART training, ART's certificate, timing, bad input."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from defenses import art_ds
from defenses.aggregate import bin_index
from defenses.art_ds import art_ds_counts, certify_art_ds, certify_counts, train_art_ds
from defenses.ds_classifier import SteeringBins
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import to_tensor

TINY = {"channels": (4, 6, 8, 8, 8), "hidden": (16,)}
H, W, ABL = 66, 64, 8


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: ART makes W small calls per frame, which extra threads only slow down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def halves(n: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Trivially separable frames: left half bright -> about -4 deg, right half bright -> about +4 deg."""
    rng = np.random.default_rng(seed)
    left = rng.integers(0, 2, n).astype(bool)
    frames = rng.integers(0, 60, (n, H, W, 3)).astype(np.uint8)
    frames[left, :, : W // 2] += 180
    frames[~left, :, W // 2 :] += 180
    labels = np.where(left, -4.0, 4.0) + rng.uniform(-0.5, 0.5, n)
    return frames, labels


@pytest.fixture(scope="module")
def trained() -> tuple:
    frames, labels = halves()
    est, bins = train_art_ds(frames, labels, bin_deg=2.0, ablation_size=ABL, epochs=20, batch=16, seed=0, lr=3e-3, **TINY)
    return est, bins, frames, labels


# ----------------------------------------------------------------------------------------- bins


def test_bins_round_trip_and_match_patchvote_bins() -> None:
    y = np.random.default_rng(1).uniform(-9.3, 7.1, 500)
    bins = SteeringBins.from_labels(y, bin_deg=2.0)
    c = bins.classes(y)
    assert c.min() == 0 and c.max() == bins.n_classes - 1
    assert np.all(np.abs(bins.centres(c) - y) <= 1.0 + 1e-12)  # every label within half a bin of its centre
    np.testing.assert_array_equal(bins.classes(bins.centres(np.arange(bins.n_classes))), np.arange(bins.n_classes))
    # Same bins as PatchVote's bin vote (bin 0 centred on straight ahead).
    np.testing.assert_array_equal(bins.first + c, bin_index(torch.from_numpy(y), 2.0).numpy())
    assert bins.centres_deg[0] == bins.first * 2.0 and 0.0 in bins.centres_deg
    # Beyond the training range: clipped to the end classes; the range itself clipped to +-max_deg.
    assert bins.classes([-100.0, 100.0]).tolist() == [0, bins.n_classes - 1]
    wide = SteeringBins.from_labels([-100.0, 3.0], bin_deg=5.0, max_deg=20.0)
    assert wide.centres_deg[0] == -20.0 and wide.centres_deg[-1] == 5.0
    assert SteeringBins.from_labels([0.3, 0.4], bin_deg=2.0).n_classes == 2  # ART needs a runner-up class


# ------------------------------------------------------------------------------------ estimator


def test_art_feeds_six_channels_and_ablates_columns() -> None:
    est = art_ds.make_art_ds((H, W), 5, ablation_size=ABL, **TINY)
    assert est.input_shape == (6, H, W) and est.model.net[0].in_channels == 6
    x = np.full((2, 3, H, W), 0.25, np.float32)
    a = est.ablator.forward(np.copy(x), column_pos=W - 3).numpy()  # band wraps around the right edge
    kept = np.zeros(W, bool)
    kept[[W - 3, W - 2, W - 1, 0, 1, 2, 3, 4]] = True
    np.testing.assert_allclose(a[:, :3, :, kept], 0.25)
    np.testing.assert_allclose(a[:, 3:, :, kept], 0.75)  # the [x, 1 - x] encoding
    assert not a[:, :, :, ~kept].any()


def test_training_via_art_learns_separable_bins(trained: tuple) -> None:
    est, bins, frames, labels = trained
    untrained, _ = train_art_ds(frames, labels, ablation_size=ABL, epochs=0, seed=0, **TINY)
    before = certify_art_ds(untrained, bins, frames[:32], labels[:32], patch_width_px=4, delta_deg=1.0)
    after = certify_art_ds(est, bins, frames[:32], labels[:32], patch_width_px=4, delta_deg=1.0)
    assert after["clean_bin_acc"] > before["clean_bin_acc"] and after["clean_acc"] >= 0.9
    assert after["certified_acc"] >= 0.9  # each band alone tells the class here, so the margin is wide
    assert not est.model.training


def test_certify_properties_and_agreement_with_art_eval_and_certify(trained: tuple) -> None:
    est, bins, frames, labels = trained
    x, y = frames[:48], labels[:48]
    y = y + np.where(np.arange(48) % 3 == 0, 2.0, 0.0)  # some labels off their bins, so delta matters
    counts = art_ds_counts(est, x)
    assert counts.shape == (48, bins.n_classes) and counts.min() >= 0 and counts.max() <= W
    prev = 1.0
    for p in range(1, W + 1):
        r = certify_counts(est, bins, counts, y, p, delta_deg=1.5)
        for key in ("certified_acc", "clean_acc", "certified_bin_acc", "clean_bin_acc"):
            assert 0.0 <= r[key] <= 1.0
        assert r["certified_acc"] <= r["clean_acc"] and r["certified_bin_acc"] <= r["clean_bin_acc"]
        assert r["certified_acc"] <= prev
        prev = r["certified_acc"]
    assert prev == 0.0  # a patch as wide as the image certifies nothing
    # The exact-bin numbers are ART's own eval_and_certify.
    clean, cert = est.eval_and_certify(to_tensor(x).numpy(), bins.classes(y), size_to_certify=4, verbose=False)
    r = certify_art_ds(est, bins, x, y, patch_width_px=4, delta_deg=1.5)
    assert r["clean_bin_acc"] == pytest.approx(float(clean)) and r["certified_bin_acc"] == pytest.approx(float(cert))
    assert r["n"] == 48 and r["s_per_frame"] > 0
    # A float tensor gives the same answer as the uint8 frames.
    t = certify_art_ds(est, bins, to_tensor(x), y, patch_width_px=4, delta_deg=1.5)
    np.testing.assert_array_equal(t["certified"], r["certified"])


def test_certificate_holds_against_patches(trained: tuple) -> None:
    """Brute force: a p-column patch anywhere (inverted or saturated pixels) never moves a certified class."""
    est, bins, frames, labels = trained
    p = 4
    r = certify_art_ds(est, bins, frames[:8], labels[:8], patch_width_px=p, delta_deg=1.0)
    idx = np.flatnonzero(r["certified"])[:2]
    assert len(idx)
    x = to_tensor(frames[idx])  # (k, 3, H, W)
    want = bins.classes(r["pred_deg"][idx])
    for start in range(0, W - p + 1, 6):
        for fill in ("invert", "white"):
            z = x.clone()
            z[..., start : start + p] = 1.0 - z[..., start : start + p] if fill == "invert" else 1.0
            got = art_ds_counts(est, z).argmax(axis=1)
            np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ seeds and timing


def test_same_seed_same_model_and_global_rng_restored() -> None:
    frames, labels = halves(32)
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002 - checking that the globals are left alone
    torch.manual_seed(123)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state())  # noqa: NPY002
    a, _ = train_art_ds(frames, labels, ablation_size=ABL, epochs=1, batch=8, seed=5, **TINY)
    b, _ = train_art_ds(frames, labels, ablation_size=ABL, epochs=1, batch=8, seed=5, **TINY)
    c, _ = train_art_ds(frames, labels, ablation_size=ABL, epochs=1, batch=8, seed=6, **TINY)
    assert random.getstate() == states[0]
    np.testing.assert_array_equal(np.random.get_state()[1], states[1])  # noqa: NPY002
    assert torch.equal(torch.random.get_rng_state(), states[2])
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.model.parameters(), c.model.parameters()))


def test_timing_helper_positive() -> None:
    v = art_ds.art_ds_img_s((H, W), ablation_size=ABL, batch=2, repeats=1, **TINY)
    assert math.isfinite(v) and v > 0


# ------------------------------------------------------------------------------------ bad input


def test_bad_input_raises_one_line_pdnerror(trained: tuple) -> None:
    est, bins, frames, labels = trained
    f, y = frames[:8], labels[:8]
    cases = [
        (lambda: SteeringBins.from_labels(y, bin_deg=0.0), "bin_deg"),
        (lambda: SteeringBins.from_labels(y, bin_deg=float("nan")), "bin_deg"),
        (lambda: train_art_ds(f, y, bin_deg=-2.0, ablation_size=ABL, **TINY), "bin_deg"),
        (lambda: train_art_ds(f, y, ablation_size=W + 1, **TINY), "ablation_size"),
        (lambda: train_art_ds(f, y, ablation_size=0, **TINY), "ablation_size"),
        (lambda: train_art_ds(f, y[:7], ablation_size=ABL, **TINY), "7 labels for 8 frames"),
        (lambda: train_art_ds(f.astype(np.float32), y, ablation_size=ABL, **TINY), "uint8"),
        (lambda: train_art_ds(f[:, :33, :60], y, ablation_size=ABL, **TINY), "too small"),
        (lambda: train_art_ds(f, y, ablation_size=ABL, epochs=-1, **TINY), "epochs"),
        (lambda: certify_art_ds(est, bins, f, y[:5], 4, 1.0), "5 labels for 8 frames"),
        (lambda: certify_art_ds(est, bins, f, y, 0, 1.0), "patch_width_px"),
        (lambda: certify_art_ds(est, bins, f, y, W + 1, 1.0), "patch_width_px"),
        (lambda: certify_art_ds(est, bins, f, y, 4, -1.0), "delta_deg"),
        (lambda: certify_art_ds(est, bins, f[:, :, :40], y, 4, 1.0), "estimator built for"),
        (lambda: certify_art_ds(est, bins, to_tensor(f) * 2, y, 4, 1.0), "[0, 1]"),
        (lambda: art_ds.art_ds_img_s((H, W), ablation_size=W + 5, **TINY), "ablation_size"),
    ]
    for call, words in cases:
        with pytest.raises(PDNError) as info:
            call()
        msg = str(info.value)
        assert words in msg and "\n" not in msg, msg
