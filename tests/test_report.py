"""``pdn report``: tiny real inputs in every toolkit format -> index.html with valid figures."""

from __future__ import annotations

import argparse
import json
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from drivenet_patch.errors import PDNError
from drivenet_patch.report import build_report, detect_kind
from drivenet_patch.report_cli import add_report_command

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

EVAL = {"mean_dev_deg": 2.128094, "success_rate": 0.34765625, "departure_rate": 0.02, "threshold_deg": 3.0,
        "n_frames": 24, "n_approaches": 4,
        "control_noise": {"mean_dev_deg": 0.1083497, "success_rate": 0.0125, "departure_rate": 0.0},
        "control_grey": {"mean_dev_deg": 0.0945042, "success_rate": 0.0, "departure_rate": 0.0}}


class _Collect(HTMLParser):
    """Image sources, link targets, table rows and headings of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.rows: list[list[str]] = []
        self.h2: list[str] = []
        self._cell: list[str] | None = None
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._tag = tag
        if tag == "img":
            self.imgs.append(str(a["src"]))
        elif tag == "a":
            self.links.append(str(a["href"]))
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        self._tag = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._tag == "h2":
            self.h2.append(data.strip())


def _write_csv(path: Path, rows: dict[str, list]) -> None:
    pd.DataFrame(rows).to_csv(path, index=False)


def _train_run(root: Path) -> Path:
    d = root / "run"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"format_version": 1, "model": {"name": "pilotnet_tiny"}}))
    _write_csv(d / "metrics.csv", {"epoch": [1, 2, 3], "lr": [1e-3] * 3, "train_loss": [4.2, 1.4, 0.9],
                                   "val_rmse_deg": [0.55, 0.41, 0.35], "val_mae_deg": [0.4, 0.3, 0.25],
                                   "val_zero_rmse_deg": [2.9] * 3})
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 3, 40)
    _write_csv(d / "predictions.csv", {"index": range(40), "steering_deg": truth,
                                       "predicted_deg": truth + rng.normal(0, 0.3, 40),
                                       "error_deg": rng.normal(0, 0.3, 40), "episode": [0] * 40,
                                       "t": np.arange(40) * 0.2, "camera": ["center"] * 40})
    return d


def _drive(root: Path) -> Path:
    d = root / "drive"
    d.mkdir()
    (d / "drive.json").write_text(json.dumps({"autonomy_pct": 97.5, "distance_km": 0.04, "interventions": 1,
                                              "departures": 0, "roads": 2, "config": {"intervention_m": 1.0}}))
    t = np.arange(20) * 0.1
    rows = {"road": [0] * 20 + [1] * 20, "step": list(range(20)) * 2, "t": list(t) * 2,
            "x": list(t * 10) * 2, "y": list(np.sin(t)) + list(-np.sin(t)), "yaw": [0.0] * 40,
            "offset_m": list(0.1 * np.sin(3 * t)) * 2, "intervention": [False] * 39 + [True],
            "lane_departure": [False] * 40}
    _write_csv(d / "drive_log.csv", rows)
    return d


def _attack(root: Path) -> Path:
    d = root / "atk"
    d.mkdir()
    (d / "attack.json").write_text(json.dumps({"attack": {"target": "left", "steps": 5, "texture_hw": [8, 14]},
                                               "distance_m": [5.0, 15.0]}))
    sticker = (np.random.default_rng(1).random((8, 14, 3)) * 255).astype(np.uint8)
    assert cv2.imwrite(str(d / "sticker.png"), sticker)
    assert cv2.imwrite(str(d / "sticker_palette.png"), sticker // 64 * 64)
    assert cv2.imwrite(str(d / "examples.png"), np.full((20, 60, 3), 128, np.uint8))
    _write_csv(d / "history.csv", {"step": range(5), "loss": [5, 4, 3, 2, 1.0], "objective": [5, 4, 3, 2, 1.0],
                                   "deviation_deg": [0.0, 0.5, 1.2, 2.0, 2.4], "nps": [0.0] * 5, "tv": [0.1] * 5})
    n = 8
    dist = np.linspace(5, 15, n)
    frames = []
    for tex, scale in (("sticker", 4.0), ("noise", 0.1), ("grey", 0.05)):
        dev = scale * (15 - dist) / 10
        frames.append(pd.DataFrame({"texture": tex, "road": 0, "distance_m": dist, "clean_deg": 0.1,
                                    "adv_deg": 0.1 + dev, "delta_deg": dev, "deviation_deg": dev,
                                    "success": dev > 3.0}))
    pd.concat(frames).to_csv(d / "eval_frames.csv", index=False)
    (d / "eval.json").write_text(json.dumps(EVAL))
    return d


def _certify(root: Path) -> Path:
    d = root / "cert"
    d.mkdir()
    (d / "certify.json").write_text(json.dumps({"certified_acc": 0.613, "clean_acc": 0.998, "violations": 0,
                                                "delta_deg": 1.39259, "aggregate": "median", "patch": [17, 17]}))
    lo = np.linspace(-3, 2, 30)
    _write_csv(d / "certify_frames.csv", {"label_deg": lo + 0.5, "output_deg": lo + 0.6, "lo_deg": lo,
                                          "hi_deg": lo + np.linspace(0.5, 2.0, 30), "certified": True,
                                          "clean_ok": True, "certified_ok": lo > 0})
    rows = []
    for patch, ph in (("0.5%", 9), ("2%", 17), ("8%", 33)):
        for agg in ("median", "vote"):
            for delta in (0.5, 1.0, 1.39259, 2.0):
                rows.append({"patch": patch, "ph": ph, "pw": ph, "aggregate": agg,
                             "certified_acc": min(1.0, delta / 2 / (ph / 9)), "clean_acc": 0.99, "mae_deg": 0.25,
                             "median_halfwidth_deg": 0.8, "certified_share": 1, "delta_deg": delta, "k_max": 3,
                             "n_regions": 9, "n": 30})
    pd.DataFrame(rows).to_csv(d / "sweep.csv", index=False)
    return d


def _bench(root: Path) -> Path:
    p = root / "bench.json"
    p.write_text(json.dumps({"speedup": 1.8232, "steps": 40, "layouts": {"pilotnet": "cl"}}))
    return p


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    src = tmp_path / "in"
    src.mkdir()
    return [_train_run(src), _drive(src), _attack(src), _certify(src), _bench(src)]


def _parse(index: Path) -> _Collect:
    page = _Collect()
    page.feed(index.read_text(encoding="utf-8"))
    return page


def _check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape[0] > 0 and img.shape[1] > 0, path


def test_detect_kind(inputs: list[Path]) -> None:
    assert [detect_kind(p) for p in inputs] == ["train", "drive", "attack", "certify", "bench"]


def test_report_all_sections(inputs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = build_report(inputs, out)
    index = Path(result["index"])
    assert index == out / "index.html"
    assert result["sections"] == ["Model", "Drive", "Attack", "Defense", "Benchmarks"]
    page = _parse(index)
    assert page.h2 == result["sections"]
    # Every image referenced exists and is a real PNG; copied attack images keep their size.
    assert page.imgs and all(not s.startswith(("http", "/", "data:")) for s in page.imgs)
    for src in page.imgs:
        _check_png(out / src)
    sticker = cv2.imread(str(next(out / s for s in page.imgs if s.endswith("_sticker.png"))))
    assert sticker.shape == (8, 14, 3)
    # Every generated figure is on the page and has its PDF.
    expected = {"curves", "scatter", "trajectory", "offset", "optimisation", "distance", "delta_hist", "vs_delta",
                "vs_patch", "halfwidth"}
    assert {f.split("_", 1)[1].removesuffix(".png") for f in result["figures"]} == expected
    for fig in result["figures"]:
        assert fig in page.imgs
        pdf = out / fig.replace(".png", ".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert pdf.name in page.links
    # No leftover temporary files from the atomic writers.
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_attack_vs_controls_table(inputs: list[Path], tmp_path: Path) -> None:
    page = _parse(Path(build_report([inputs[2]], tmp_path / "r")["index"]))
    assert ["texture", "mean_dev_deg", "success_rate", "departure_rate"] in page.rows
    want = {"sticker": EVAL, "control: noise": EVAL["control_noise"], "control: grey": EVAL["control_grey"]}
    for name, ref in want.items():
        row = next(r for r in page.rows if r and r[0] == name)
        got = [float(x) for x in row[1:]]
        assert got == pytest.approx([ref["mean_dev_deg"], ref["success_rate"], ref["departure_rate"]], rel=1e-3)


def test_bench_table_and_only_present_sections(inputs: list[Path], tmp_path: Path) -> None:
    result = build_report([inputs[4]], tmp_path / "r")
    assert result["sections"] == ["Benchmarks"] and result["figures"] == []
    page = _parse(Path(result["index"]))
    assert ["speedup", "1.823"] in page.rows and ["layouts.pilotnet", "cl"] in page.rows


def test_optional_files_absent(inputs: list[Path], tmp_path: Path) -> None:
    (inputs[0] / "predictions.csv").unlink()
    (inputs[3] / "sweep.csv").unlink()
    result = build_report([inputs[0], inputs[3]], tmp_path / "r")
    assert {f.split("_", 1)[1] for f in result["figures"]} == {"curves.png", "halfwidth.png"}


@pytest.mark.parametrize("make", ["missing", "empty", "unknown", "text_file", "bad_csv"])
def test_bad_path_raises(make: str, inputs: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    if make == "empty":
        bad.mkdir()
    elif make == "unknown":
        bad.mkdir()
        (bad / "notes.txt").write_text("hi")
    elif make == "text_file":
        bad = tmp_path / "bad.txt"
        bad.write_text("hi")
    elif make == "bad_csv":
        bad = inputs[0]
        (bad / "metrics.csv").write_text("epoch,lr\n1,0.1\n")
    with pytest.raises(PDNError) as err:
        build_report([inputs[4], bad], tmp_path / "r")
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert make == "bad_csv" or not (tmp_path / "r").exists()  # unknown kinds are caught before writing


def test_cli_command(inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_report_command(sub)
    out = tmp_path / "cli"
    args = parser.parse_args(["report", str(inputs[1]), str(inputs[4]), "--out", str(out), "--json"])
    assert args.fn(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sections"] == ["Drive", "Benchmarks"]
    assert Path(summary["index"]).is_file() and len(summary["figures"]) == 2
