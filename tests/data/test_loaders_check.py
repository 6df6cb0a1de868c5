"""``check_dataset`` / ``format_report``: decode everything, report problems, raise on structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

import drivenet_patch.data.check as check_mod
from drivenet_patch.data import check_dataset, format_report
from drivenet_patch.safety.errors import PDNError

KEYS = {
    "format",
    "frames",
    "height",
    "width",
    "steering_mean",
    "steering_std",
    "steering_min",
    "steering_max",
    "problems",
}


def test_reports_corrupt_image_by_name(make_sim):
    root = make_sim([0.1, -0.2, 0.3, 0.0])
    bad = root / "IMG" / "center_2016_12_01_13_30_48_002.jpg"
    bad.write_bytes(b"\xff\xd8 truncated garbage")
    d = check_dataset(root)
    assert KEYS <= set(d)
    assert d["format"] == "udacity-sim"
    assert (d["frames"], d["decoded"], d["unreadable"]) == (4, 4, 1)
    assert (d["height"], d["width"]) == (66, 200)
    assert d["source_sizes"] == {"160x320": 3}
    assert d["steering_min"] == pytest.approx(-7.5) and d["steering_max"] == pytest.approx(5.0)
    assert d["steering_mean"] == pytest.approx(np.mean([-2.5, 5.0, -7.5, 0.0]))
    hits = [p for p in d["problems"] if bad.name in p]
    assert len(hits) == 1 and "driving_log.csv: row 3" in hits[0]
    assert not d["ok"]
    json.dumps(d)  # JSON-ready for --json
    text = format_report(d)
    assert "udacity-sim" in text and bad.name in text and "problems  " in text


def test_constant_and_straight_labels(make_sully):
    d = check_dataset(make_sully([0.0, 0.0, 0.0]), format="sullychen")
    assert d["straight_share"] == 1.0
    assert any("constant labels" in p for p in d["problems"])
    assert any("100% of frames have |steering| < 1 deg" in p for p in d["problems"])


def test_clean_dataset_and_options(make_sim):
    d = check_dataset(make_sim([0.4, -0.4, 0.2]), cameras=("center", "right"), size=(33, 100))
    assert d["problems"] == [] and d["ok"]
    assert d["cameras"] == {"center": 3, "right": 3}
    assert (d["height"], d["width"]) == (33, 100)
    assert "problems  none" in format_report(d)


def test_implausible_labels(make_comma):
    # 9000 raw = 900 wheel deg -> ~59 road-wheel deg
    d = check_dataset(make_comma(2, [9000.0, 0.0], [0.0, 1.0]))
    assert d["format"] == "commaai" and d["decoded"] == 2 and d["unreadable"] == 0
    assert any("|steering| > 45 deg" in p for p in d["problems"])


def test_sampling_is_bounded_and_deterministic(make_sim, monkeypatch):
    monkeypatch.setattr(check_mod, "MAX_DECODE", 3)
    root = make_sim([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    a, b = check_dataset(root), check_dataset(root)
    assert a["decoded"] == 3 and a["frames"] == 6
    assert a == b


def test_structural_errors_still_raise(tmp_path, make_sim):
    with pytest.raises(PDNError, match="no such file"):
        check_dataset(tmp_path / "missing")
    root = make_sim([0.0, "x"])
    with pytest.raises(PDNError, match=r"driving_log\.csv: row 2: steering is not a number"):
        check_dataset(root)


def test_synth(make_synth):
    d = check_dataset(make_synth(n=5))
    assert d["format"] == "synth" and d["decoded"] == 5 and d["source_sizes"] == {"66x200": 5}
    assert d["steering_max"] == 4.0
