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

from drivenet_patch.app.cli.report import register as add_report_command
from drivenet_patch.app.report import build_report, detect_kind
from drivenet_patch.safety.errors import PDNError

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


def _model_dir(root: Path, name: str) -> Path:
    d = root / f"model_{name}"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"format_version": 1, "model": {"name": name}}))
    return d


def _attack(root: Path, name: str = "atk", model: str = "pilotnet", size: tuple[float, float] = (2.0, 3.5),
            scale: float = 4.0) -> Path:
    d = root / name
    d.mkdir()
    (d / "attack.json").write_text(json.dumps({"attack": {"target": "left", "steps": 5, "texture_hw": [8, 14]},
                                               "distance_m": [5.0, 15.0], "size_m": list(size),
                                               "model": str(_model_dir(root, model))}))
    sticker = (np.random.default_rng(1).random((8, 14, 3)) * 255).astype(np.uint8)
    assert cv2.imwrite(str(d / "sticker.png"), sticker)
    assert cv2.imwrite(str(d / "sticker_palette.png"), sticker // 64 * 64)
    assert cv2.imwrite(str(d / "examples.png"), np.full((20, 60, 3), 128, np.uint8))
    _write_csv(d / "history.csv", {"step": range(5), "loss": [5, 4, 3, 2, 1.0], "objective": [5, 4, 3, 2, 1.0],
                                   "deviation_deg": [0.0, 0.5, 1.2, 2.0, 2.4], "nps": [0.0] * 5, "tv": [0.1] * 5})
    n = 8
    dist = np.linspace(5, 15, n)
    frames = []
    for tex, k in (("sticker", scale), ("noise", 0.1), ("grey", 0.05)):
        dev = k * (15 - dist) / 10
        frames.append(pd.DataFrame({"texture": tex, "road": 0, "distance_m": dist, "clean_deg": 0.1,
                                    "adv_deg": 0.1 + dev, "delta_deg": dev, "deviation_deg": dev,
                                    "success": dev > 3.0}))
    pd.concat(frames).to_csv(d / "eval_frames.csv", index=False)
    rel = np.linspace(-25, 20, 30)
    tracks = [pd.DataFrame({"texture": tex, "road": 0, "sticker_s": s_c, "rel_s": rel,
                            "offset_m": k * np.exp(-((rel - 2) / 6) ** 2)})
              for tex, k in (("none", 0.05), ("sticker", 1.2), ("noise", 0.1), ("grey", 0.08)) for s_c in (60, 160)]
    pd.concat(tracks).to_csv(d / "eval_tracks.csv", index=False)
    ev = {**EVAL, "mean_dev_deg": EVAL["mean_dev_deg"] * scale / 4, "no_sticker": {"departure_rate": 0.0,
                                                                                   "n_approaches": 2},
          "placement": {"width_m": size[0], "length_m": size[1], "kind": "road", "lateral_m": 0.0},
          "lane_departure_m": 0.85, "lane_width_m": 3.5}
    (d / "eval.json").write_text(json.dumps(ev))
    return d


def _data(root: Path) -> Path:
    from drivenet_patch.data.synthesize import synthesize

    d = root / "data"
    synthesize(d, 12, seed=3, episode_steps=40, progress=False)
    return d


def _saliency(root: Path) -> Path:
    d = root / "sal"
    d.mkdir()
    assert cv2.imwrite(str(d / "saliency_grid.png"), np.full((40, 120, 3), 90, np.uint8))
    (d / "saliency.json").write_text(json.dumps({"frames": 2, "indices": [0, 5], "prediction_deg": [0.5, -1.0]}))
    return d


def _write_example(d: Path, name: str, votes: list[float]) -> dict:
    assert cv2.imwrite(str(d / f"{name}.png"), np.full((66, 200, 3), 100, np.uint8))
    x0 = np.arange(len(votes)) * 20
    _write_csv(d / f"{name}_votes.csv", {"region": range(len(votes)), "y0": 0, "x0": x0, "y1": 66, "x1": x0 + 40,
                                         "vote_deg": votes, "valid": [True] * (len(votes) - 1) + [False]})
    return {"image": f"{name}.png", "votes": f"{name}_votes.csv", "output_deg": float(np.median(votes[:-1])),
            "aggregate": "median", "label_deg": 1.0, "lo_deg": -0.5, "hi_deg": 2.0}


def _certify(root: Path) -> Path:
    d = root / "cert"
    d.mkdir()
    clean = _write_example(d, "example_clean", [1.0, 1.2, 0.8, 1.1, 0.9, 1.3, 1.0, 0.7, 5.0])
    stuck = _write_example(d, "example_sticker", [1.0, 1.2, -9.0, -8.0, 0.9, 1.3, 1.0, 0.7, 5.0])
    (d / "certify.json").write_text(json.dumps({"certified_acc": 0.613, "clean_acc": 0.998, "violations": 0,
                                                "delta_deg": 1.39259, "aggregate": "median", "patch": [17, 17],
                                                "examples": {"clean": clean, "sticker": {**stuck, "clean": clean}}}))
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


@pytest.fixture
def more(inputs: list[Path]) -> list[Path]:
    """A dataset, saliency, a smaller sticker against the same model and one against a PatchVote."""
    src = inputs[0].parent
    return [_data(src), _saliency(src), _attack(src, "atk_small", size=(1.0, 1.75), scale=1.5),
            _attack(src, "atk_pv", model="patchvote", scale=0.5)]


def _parse(index: Path) -> _Collect:
    page = _Collect()
    page.feed(index.read_text(encoding="utf-8"))
    return page


def _check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape[0] > 0 and img.shape[1] > 0, path


def test_detect_kind(inputs: list[Path], more: list[Path]) -> None:
    assert [detect_kind(p) for p in inputs] == ["train", "drive", "attack", "certify", "bench"]
    assert [detect_kind(p) for p in more] == ["data", "saliency", "attack", "attack"]


def test_report_all_sections(inputs: list[Path], more: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = build_report([*inputs, *more], out)
    index = Path(result["index"])
    assert index == out / "index.html"
    assert result["sections"] == ["Data", "Model", "Attack", "Defense", "Benchmarks"]
    page = _parse(index)
    assert page.h2 == ["Summary", *result["sections"]]  # the findings open the page
    # Every image referenced exists and is a real PNG; copied attack images keep their size.
    assert page.imgs and all(not s.startswith(("http", "/", "data:")) for s in page.imgs)
    for src in page.imgs:
        _check_png(out / src)
    sticker = cv2.imread(str(next(out / s for s in page.imgs if s.endswith("_sticker.png"))))
    assert sticker.shape == (8, 14, 3)
    # Every generated figure is on the page and has its PDF.
    expected = {"curves", "scatter", "trajectory", "offset", "optimisation", "distance", "delta_hist", "vs_delta",
                "vs_patch", "halfwidth", "labels", "samples", "trajectories", "votes", "vs_size", "vs_undefended"}
    assert {f.split("_", 1)[1].removesuffix(".png") for f in result["figures"]} == expected
    assert "saliency1_grid.png" in page.imgs
    for fig in result["figures"]:
        assert fig in page.imgs
        pdf = out / fig.replace(".png", ".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert pdf.name in page.links
    # No leftover temporary files from the atomic writers (the folder's marker is its only hidden file).
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".pdn-folder.json"]


def test_attack_vs_controls_table(inputs: list[Path], tmp_path: Path) -> None:
    page = _parse(Path(build_report([inputs[2]], tmp_path / "r")["index"]))
    assert ["texture", "mean_dev_deg", "success_rate", "departure_rate"] in page.rows
    want = {"sticker": EVAL, "control: noise": EVAL["control_noise"], "control: grey": EVAL["control_grey"]}
    for name, ref in want.items():
        row = next(r for r in page.rows if r and r[0] == name)
        got = [float(x) for x in row[1:]]
        assert got == pytest.approx([ref["mean_dev_deg"], ref["success_rate"], ref["departure_rate"]], rel=1e-3)
    # the settings table says which model, what size and which variant
    assert ["size_m", "2, 3.5"] in page.rows and ["target", "left"] in page.rows
    assert not any(r and r[0] in ("saliency_weight", "dirt") for r in page.rows)
    meta = json.loads((inputs[2] / "attack.json").read_text())
    meta["attack"].update(saliency_weight=2.0, dirt=False)
    (inputs[2] / "attack.json").write_text(json.dumps(meta))
    page = _parse(Path(build_report([inputs[2]], tmp_path / "r2")["index"]))
    assert ["saliency_weight", "2"] in page.rows and not any(r and r[0] == "dirt" for r in page.rows)


def test_bench_table_and_only_present_sections(inputs: list[Path], tmp_path: Path) -> None:
    result = build_report([inputs[4]], tmp_path / "r")
    assert result["sections"] == ["Benchmarks"] and result["figures"] == []
    page = _parse(Path(result["index"]))
    assert ["speedup", "1.823"] in page.rows and ["layouts.pilotnet", "cl"] in page.rows


def test_saliency_caption_names_the_method(tmp_path: Path) -> None:
    """VisualBackProp overlays and a patch model's selected patches get their own captions."""
    vbp = _saliency(tmp_path)
    patches = tmp_path / "sal_patches"
    patches.mkdir()
    assert cv2.imwrite(str(patches / "saliency_grid.png"), np.full((40, 120, 3), 90, np.uint8))
    (patches / "saliency.json").write_text(json.dumps({"frames": 2, "indices": [0, 5], "prediction_deg": [0.5, -1],
                                                       "method": "patches", "patch_size": 32}))
    html_text = Path(build_report([vbp, patches], tmp_path / "r")["index"]).read_text(encoding="utf-8")
    captions = [c.split("</figcaption>")[0] for c in html_text.split("<figcaption>")[1:]]
    assert len(captions) == 2
    assert "VisualBackProp" in captions[0] and "patches" not in captions[0]
    assert "32 px patches it selects" in captions[1] and "VisualBackProp" not in captions[1]


def test_bench_all_ratios_are_a_table_of_their_own(tmp_path: Path) -> None:
    """``pdn bench --json`` output: its ratio list becomes rows (measure, value, detail), not a repr."""
    ratios = [{"measure": "models: PatchDrive / PilotNet multiply-adds", "value": 1.22780064, "detail": "33.0 vs 26.9"},
              {"measure": "defense: PatchVote / PilotNet inference", "value": 0.5724, "detail": "1014 vs 1771 img/s"}]
    p = tmp_path / "bench_all.json"
    p.write_text(json.dumps({"ratios": ratios, "models": {"patchdrive_160x320_macs": 32998790}}))
    page = _parse(Path(build_report([p], tmp_path / "r")["index"]))
    assert ["models: PatchDrive / PilotNet multiply-adds", "1.228", "33.0 vs 26.9"] in page.rows
    assert ["defense: PatchVote / PilotNet inference", "0.5724", "1014 vs 1771 img/s"] in page.rows
    assert ["models.patchdrive_160x320_macs", "32998790"] in page.rows
    assert not any("ratios" in row[0] for row in page.rows)


def test_optional_files_absent(inputs: list[Path], tmp_path: Path) -> None:
    (inputs[0] / "predictions.csv").unlink()
    (inputs[3] / "sweep.csv").unlink()
    (inputs[2] / "eval_tracks.csv").unlink()
    cert = json.loads((inputs[3] / "certify.json").read_text())
    del cert["examples"]
    (inputs[3] / "certify.json").write_text(json.dumps(cert))
    result = build_report([inputs[0], inputs[2], inputs[3]], tmp_path / "r")
    assert {f.split("_", 1)[1] for f in result["figures"]} == {"curves.png", "halfwidth.png", "optimisation.png",
                                                               "distance.png", "delta_hist.png"}


def test_cross_attack_figures_need_their_inputs(inputs: list[Path], more: list[Path], tmp_path: Path) -> None:
    # One size per model: no size figure; no PatchVote attack: no defended-vs-undefended figure.
    names = build_report([inputs[2], more[3]], tmp_path / "a")["figures"]
    assert "defended_vs_undefended.png" in names and "attack_vs_size.png" not in names
    names = build_report([inputs[2], more[2]], tmp_path / "b")["figures"]
    assert "attack_vs_size.png" in names and "defended_vs_undefended.png" not in names
    page = _parse(tmp_path / "b" / "index.html")
    row = next(r for r in page.rows if r and r[0] == "atk_small")
    assert row[1:3] == ["pilotnet", "1 x 1.75"]


def test_models_compared_when_several_runs(inputs: list[Path], tmp_path: Path) -> None:
    import torch

    from drivenet_patch.models import create_model
    from drivenet_patch.models.checkpoint import save_model

    runs = []
    for name in ("pilotnet_tiny", "patchvote_tiny"):
        run = tmp_path / name
        save_model(run, create_model(name, generator=torch.Generator().manual_seed(0)))
        (run / "metrics.csv").write_text((inputs[0] / "metrics.csv").read_text())
        runs.append(run)
    # a PatchDrive trained with the patch-selection loss shows its lambda and effective patches
    gated = tmp_path / "gated"
    save_model(gated, create_model("patchdrive_tiny", selection_weight=0.1))
    (gated / "selection.json").write_text(json.dumps({"effective_patches_fusion": 2.5}))
    (gated / "metrics.csv").write_text((inputs[0] / "metrics.csv").read_text())
    runs.append(gated)
    (runs[0] / "predictions.csv").write_text((inputs[0] / "predictions.csv").read_text())
    drive = json.loads((inputs[1] / "drive.json").read_text())
    (inputs[1] / "drive.json").write_text(json.dumps({**drive, "model": str(runs[0])}))
    # two stickers against the first run: the table names and shows the stronger one, whatever the order
    src = tmp_path / "atk_src"
    src.mkdir()
    weak, strong = _attack(src, "weak", scale=1.0), _attack(src, "strong", scale=4.0)
    for atk in (weak, strong):
        meta = json.loads((atk / "attack.json").read_text())
        (atk / "attack.json").write_text(json.dumps({**meta, "model": str(runs[0])}))
    page = _parse(Path(build_report([*runs, inputs[1], strong, weak], tmp_path / "r")["index"]))
    rows = {r[0]: r for r in page.rows if r and r[0] in {str(p) for p in runs}}
    strong_dev = json.loads((strong / "eval.json").read_text())["mean_dev_deg"]
    assert rows[str(runs[0])][8] == "strong" and float(rows[str(runs[0])][9]) == pytest.approx(strong_dev, rel=1e-3)
    assert rows[str(runs[1])][8:] == ["None", "None", "None", "None"]
    p = pd.read_csv(runs[0] / "predictions.csv")
    rmse = float(np.sqrt(((p["predicted_deg"] - p["steering_deg"]) ** 2).mean()))
    small = rows[str(runs[0])]
    assert small[1:3] == ["pilotnet_tiny", "66x200"] and float(small[5]) == pytest.approx(rmse, rel=1e-3)
    assert float(small[7]) == 97.5  # the drive of that run
    n_params = sum(t.numel() for t in create_model("patchvote_tiny").parameters())
    assert int(rows[str(runs[1])][3]) == n_params and rows[str(runs[1])][5] == "None"
    assert rows[str(gated)][1] == "patchdrive_tiny (lambda 0.1)" and float(rows[str(gated)][11]) == 2.5


def test_vote_heat_is_the_mean_of_covering_valid_regions() -> None:
    from drivenet_patch.app.report.votes import heat as _heat
    from drivenet_patch.app.report.votes import votes_grid as _votes_grid

    table = pd.DataFrame({"y0": [0, 0, 0], "x0": [0, 2, 4], "y1": [2, 2, 2], "x1": [4, 6, 8],
                          "vote_deg": [1.0, 3.0, 100.0], "valid": [True, True, False]})
    heat = _heat(np.zeros((3, 8, 3)), table)
    assert heat[0, :2].tolist() == [1.0, 1.0] and heat[0, 2:4].tolist() == [2.0, 2.0]
    assert heat[1, 4:6].tolist() == [3.0, 3.0]  # the invalid region's 100 is ignored
    assert np.isnan(heat[0, 6:]).all() and np.isnan(heat[2]).all()
    grid, ok = _votes_grid(table)
    assert grid.tolist() == [[1.0, 3.0, 100.0]] and ok.tolist() == [[True, True, False]]


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
    args = parser.parse_args(["report", str(inputs[1]), str(inputs[4]), "--out", str(out), "--note", "made by hand",
                              "--json"])
    assert args.fn(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sections"] == ["Model", "Benchmarks"]
    assert json.loads(Path(summary["summary"]).read_text())["notes"] == ["made by hand"]
    assert Path(summary["index"]).is_file() and len(summary["figures"]) == 2


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_summary_opens_the_page_with_findings_that_link_to_their_sections(
        inputs: list[Path], more: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = build_report([*inputs, *more], out, notes=["PatchVote is not driven in --quick."])
    assert result["summary"] == str(out / "summary.json")
    summary = _summary(out)
    f = {x["key"]: x for x in summary["findings"]}
    assert set(f) == {"model", "attack", "defense_patch", "adaptive"}
    text = Path(result["index"]).read_text(encoding="utf-8")
    assert text.index('id="summary"') < min(text.index(f'id="{s.lower()}"') for s in result["sections"])
    ids = {s.lower() for s in result["sections"]}
    page = _parse(Path(result["index"]))
    for x in summary["findings"]:  # every finding links to a section that exists
        assert x["section"] in ids and f"#{x['section']}" in page.links
    # The numbers are the inputs' own, and the sentences carry them.
    ev = json.loads((inputs[2] / "eval.json").read_text())
    assert f["attack"]["numbers"]["mean_dev_deg"] == pytest.approx(ev["mean_dev_deg"])
    assert f"{ev['mean_dev_deg']:.2f} deg" in f["attack"]["text"]
    ratio = ev["mean_dev_deg"] / max(ev["control_noise"]["mean_dev_deg"], ev["control_grey"]["mean_dev_deg"])
    assert f["attack"]["numbers"]["dev_over_controls"] == pytest.approx(ratio) and not f["attack"]["weak"]
    assert "1 x 1.75 m" in f["attack"]["text"]  # the smaller sticker against the same model
    cert = json.loads((inputs[3] / "certify.json").read_text())
    assert f["defense_patch"]["numbers"]["certified_acc"] == cert["certified_acc"] >= 0.5
    assert not f["defense_patch"]["weak"]
    assert "97.5% autonomy" in f["model"]["text"] and f["model"]["weak"]  # it needed an intervention
    assert "patchvote" in f["adaptive"]["text"] and "0 certificate violations" not in f["adaptive"]["text"]
    # The defended model's departures under its sticker come with its departures without one.
    assert "departures" in f["adaptive"]["text"] and "with no sticker" in f["adaptive"]["text"]
    assert summary["notes"] == ["PatchVote is not driven in --quick."] and "not driven in --quick" in text


def test_summary_says_in_words_when_a_finding_is_weak(inputs: list[Path], tmp_path: Path) -> None:
    # The model leaves its lane with no sticker, and the certificate covers under half of the frames.
    ev = json.loads((inputs[2] / "eval.json").read_text())
    ev["no_sticker"] = {"departure_rate": 0.5, "n_approaches": 6}
    (inputs[2] / "eval.json").write_text(json.dumps(ev))
    cert = json.loads((inputs[3] / "certify.json").read_text())
    (inputs[3] / "certify.json").write_text(json.dumps({**cert, "certified_acc": 0.13, "attack_runs": 8,
                                                        "violations": 1}))
    build_report(inputs, tmp_path / "r")
    f = {x["key"]: x for x in _summary(tmp_path / "r")["findings"]}
    assert f["attack"]["weak"] and "with no sticker at all" in f["attack"]["text"]
    assert f["defense_patch"]["weak"] and "covers less than 50%" in f["defense_patch"]["text"]
    assert f["adaptive"]["weak"] and "1 certificate violations" in f["adaptive"]["text"]
    # A sticker no stronger than its controls is called out too.
    ev["mean_dev_deg"] = 1.5 * ev["control_noise"]["mean_dev_deg"]
    (inputs[2] / "eval.json").write_text(json.dumps(ev))
    build_report([inputs[2]], tmp_path / "r2")
    (attack,) = _summary(tmp_path / "r2")["findings"]
    assert attack["weak"] and "not clearly" in attack["text"]


def test_summary_says_when_a_layout_cannot_certify_and_the_attack_check_is_vacuous(
        inputs: list[Path], tmp_path: Path) -> None:
    # 9 thin strips: a 17 px patch touches 6, so no frame has a finite interval; 0 violations then proves nothing.
    cert = json.loads((inputs[3] / "certify.json").read_text())
    (inputs[3] / "certify.json").write_text(json.dumps({**cert, "certified_acc": 0.0, "certified_share": 0.0,
                                                        "k_max": 6, "n_regions": 9, "n": 3000,
                                                        "attack_runs": 8, "violations": 0}))
    build_report(inputs, tmp_path / "r")
    f = {x["key"]: x for x in _summary(tmp_path / "r")["findings"]}
    assert "touch 6 of its 9 regions" in f["defense_patch"]["text"]
    assert "3,000 held-out frames" in f["defense_patch"]["text"]
    assert "vacuous" in f["adaptive"]["text"]
    # A layout that bounds some frames is not called vacuous.
    (inputs[3] / "certify.json").write_text(json.dumps({**cert, "certified_acc": 0.4, "certified_share": 0.7,
                                                        "k_max": 3, "n_regions": 9, "n": 3000,
                                                        "attack_runs": 8, "violations": 0}))
    build_report(inputs, tmp_path / "r2")
    f = {x["key"]: x for x in _summary(tmp_path / "r2")["findings"]}
    assert "outvote" not in f["defense_patch"]["text"] and "vacuous" not in f["adaptive"]["text"]


def test_summary_of_a_physical_certificate(inputs: list[Path], tmp_path: Path) -> None:
    cert = json.loads((inputs[3] / "certify.json").read_text())
    threat = {"width_m": 2.0, "length_m": 3.5, "place": "road", "distance_m": [5.0, 30.0]}
    (inputs[3] / "certify.json").write_text(json.dumps({**cert, "threat": threat}))
    build_report([inputs[3]], tmp_path / "r")
    (f,) = _summary(tmp_path / "r")["findings"]
    assert f["key"] == "defense_physical" and f["section"] == "certified-in-metres"
    assert "the 2x3.5 m sticker is certified on 61% of ? held-out frames (any road sticker at 5-30 m ahead" in f["text"]


# ------------------------------------------------------------------ sticker-size sweeps and the certificate in metres
def _sweep(root: Path, name: str, model: str, departures: list[float], none: float = 0.0) -> Path:
    """A ``pdn attack sweep`` folder: areas 2, 7, 28, 112 m² with these sticker departure rates."""
    from attacks.sweep import DRP_AREA_M2, break_area, sticker_size

    d = root / name
    d.mkdir()
    areas = [2.0, 7.0, 28.0, 112.0]
    sizes = [sticker_size(a) for a in areas]
    table = pd.DataFrame({"area_m2": areas, "width_m": [s[0] for s in sizes], "length_m": [s[1] for s in sizes],
                          "departure_rate": departures, "noise_departure_rate": [0.0, 0.0, 0.2, 0.2],
                          "grey_departure_rate": [0.0, 0.0, 0.0, 0.2], "no_sticker_departure_rate": none,
                          "mean_dev_deg": [0.3, 2.0, 5.0, 9.0], "success_rate": [0.0, 0.3, 0.7, 0.9],
                          "n_approaches": 10, "n_frames": 32, "seconds": 30.0})
    table.to_csv(d / "sweep.csv", index=False)
    (d / "sweep.json").write_text(json.dumps({
        "out": str(d), "break_area_m2": break_area(table), "drp_area_m2": DRP_AREA_M2, "areas": areas,
        "model": str(_model_dir(root, model)), "aspect": "along", "closed_loop": False, "steps": 100, "roads": 4,
        "poses": 16, "loop_roads": 2, "km": 0.5, "seed": 0}))
    return d


def _physical(root: Path, name: str, accs: dict[float, float], run: Path | None = None, own: float = 0.5) -> Path:
    """A ``pdn certify --physical 2.0x3.5 --sweep`` folder whose certified accuracy per swept area (both aspects,
    at its delta of 1 deg) is ``accs``; ``run``: the PatchVote run folder it names."""
    d = root / name
    d.mkdir()
    threat = {"width_m": 2.0, "length_m": 3.5, "place": "road", "distance_m": [5.0, 30.0],
              "lateral_m": [-2.5, 2.5], "yaw_deg": 15.0, "area_m2": 7.0}
    (d / "certify.json").write_text(json.dumps({
        "certified_acc": own, "clean_acc": 0.95, "delta_deg": 1.0, "k_max": 4, "n_regions": 9, "n_sets": 5, "n": 48,
        "threat": threat, "aggregate": "median", "model": str(run or root / "gone"), "source": "world",
        "spacing_m": 2.0, "margin_px": 0.5, "cells": 42,
        "certified_acc_by_distance": {"5-10": 0.1, "10-15": 0.3, "15-20": 0.5, "20-25": 0.7, "25-30": 0.8,
                                      "30-35": 0.9}}))
    _write_csv(d / "certify_frames.csv", {"label_deg": [0.0, 1.0], "output_deg": [0.1, 1.1], "lo_deg": [-0.5, 0.5],
                                          "hi_deg": [0.5, 1.5], "certified": True, "clean_ok": True,
                                          "certified_ok": True})
    rows = [{"area_m2": a, "aspect": aspect, "width_m": 1.0, "length_m": a, "delta_deg": delta,
             "certified_acc": acc if delta == 1.0 else acc / 2, "clean_acc": 0.95, "k_max": 3, "n_regions": 9,
             "n": 48, "n_sets": 4}
            for a, acc in accs.items() for aspect in ("along", "across") for delta in (0.5, 1.0, 2.0)]
    pd.DataFrame(rows).to_csv(d / "sweep_physical.csv", index=False)
    return d


def _patchvote_run(root: Path) -> Path:
    import torch

    from drivenet_patch.models import create_model
    from drivenet_patch.models.checkpoint import save_model

    run = root / "pv_run"
    save_model(run, create_model("patchvote_tiny", generator=torch.Generator().manual_seed(0)))
    return run


def test_draw_sweep_marks_drp_break_areas_and_the_certified_area() -> None:
    from matplotlib.figure import Figure

    from attacks.sweep import DRP_AREA_M2, draw_sweep

    t = pd.DataFrame({"area_m2": [2.0, 7.0, 28.0], "departure_rate": [0.0, 0.5, 1.0],
                      "noise_departure_rate": 0.0, "grey_departure_rate": 0.0, "no_sticker_departure_rate": 0.0})
    ax = Figure().subplots()
    draw_sweep(ax, {"pilotnet": t, "patchvote": t.assign(departure_rate=0.1)}, None, certified={"certified": 4.0})
    vertical = [ln.get_xdata()[0] for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2]
    assert DRP_AREA_M2 in vertical and 4.0 in vertical
    assert any("DRP" in t.get_text() and "108" in t.get_text() for t in ax.texts)
    labels = ax.get_legend_handles_labels()[1]
    assert "pilotnet: breaks at 28 m²" in labels and not any(lb.startswith("patchvote: breaks") for lb in labels)
    assert {"pilotnet: noise control", "pilotnet: grey control", "pilotnet: no sticker"} <= set(labels)
    assert ax.get_xscale() == "log" and ax.get_xlim()[1] > DRP_AREA_M2


def test_draw_sweep_draws_the_certified_share_beside_the_departures() -> None:
    """The third curve: the defended model's certified share per area, in percent on the departures' axis."""
    from matplotlib.figure import Figure

    from attacks.sweep import draw_sweep

    t = pd.DataFrame({"area_m2": [7.0, 28.0], "departure_rate": [0.2, 1.0], "noise_departure_rate": 0.0,
                      "grey_departure_rate": 0.0, "no_sticker_departure_rate": 0.0})
    ax = Figure().subplots()
    curve = pd.Series([0.69, 0.51, 0.0], index=[1.0, 7.0, 14.0])
    draw_sweep(ax, {"pilotnet": t}, None, certified_curves={"patchvote_road": curve})
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "patchvote_road: frames certified (%)"]
    assert list(line.get_xdata()) == [1.0, 7.0, 14.0] and list(line.get_ydata()) == [69.0, 51.0, 0.0]
    assert 1.0 in list(ax.get_xticks()) and "certified" in ax.get_ylabel()


def test_the_certified_curve_reads_the_aspect_of_the_attack_sweep(tmp_path: Path) -> None:
    """A report with a defended model's sweep certificate draws its certified share for stickers laid the way
    the attack sweep lays them (along the road), not the worse of both aspects."""
    from drivenet_patch.app.report.break_size import certified_by_area

    sweep = pd.DataFrame({"area_m2": [2.0, 2.0, 7.0, 7.0], "aspect": ["along", "across"] * 2,
                          "certified_acc": [0.6, 0.5, 0.5, 0.0]})
    assert certified_by_area(sweep, "along").to_dict() == {2.0: 0.6, 7.0: 0.5}
    assert certified_by_area(sweep, "line").to_dict() == {2.0: 0.5, 7.0: 0.0}  # no such rows: the worse


def test_report_shows_the_sticker_size_that_breaks_each_model(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    pilot = _sweep(src, "sweep_pilotnet", "pilotnet", [0.1, 0.6, 0.95, 1.0])
    pv = _sweep(src, "sweep_patchvote", "patchvote", [0.0, 0.0, 0.1, 0.5])
    assert detect_kind(pilot) == "sweep"
    result = build_report([pilot, pv], tmp_path / "r")
    assert result["sections"] == ["Sticker size that breaks the model"]
    assert result["figures"] == ["sweep_departures.png"]
    _check_png(tmp_path / "r" / "sweep_departures.png")
    page = _parse(Path(result["index"]))
    assert page.h2 == ["Summary", "Sticker size that breaks the model"]
    assert "#sticker-size-that-breaks-the-model" in page.links
    html_text = Path(result["index"]).read_text(encoding="utf-8")
    assert "DRP&#x27;s painted region" in html_text and "108 m²" in html_text
    assert ["break area", "28 m²", "", "", "", "none up to 112 m²", "", "", ""] in page.rows
    assert ["28", "95%", "20%", "0%", "0%", "10%", "20%", "0%", "0%"] in page.rows
    (f,) = _summary(tmp_path / "r")["findings"]
    assert f["key"] == "break_size" and not f["weak"]
    assert "pilotnet leaves its lane in >= 90% of approaches from 28 m² on" in f["text"]
    assert "no size up to 112 m² made patchvote leave its lane in >= 90% of approaches" in f["text"]
    assert f["numbers"]["models"]["pilotnet"]["break_area_m2"] == 28.0


def test_sweep_plot_marks_the_defended_models_certified_area(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    pilot = _sweep(src, "sweep_pilotnet", "pilotnet", [0.1, 0.6, 0.95, 1.0], none=0.1)
    cert = _physical(src, "phys", {0.5: 0.95, 1.0: 0.9, 2.0: 0.85, 4.0: 0.6}, run=_model_dir(src, "patchvote"))
    result = build_report([pilot, cert], tmp_path / "r")
    html_text = Path(result["index"]).read_text(encoding="utf-8")
    assert "the share of held-out frames on which no sticker of that area (along the road" in html_text
    assert "the largest area certified on &gt;= 80% of frames" in html_text
    brk = next(f for f in _summary(tmp_path / "r")["findings"] if f["key"] == "break_size")
    assert brk["weak"] and "with no sticker" in brk["text"]  # the model departs on its own: said


def test_report_certified_in_metres_says_the_largest_certified_area(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    run = _patchvote_run(src)
    good = _physical(src, "phys_a", {0.5: 1.0, 1.0: 0.95, 2.0: 0.9, 4.0: 0.82, 7.0: 0.5}, run=run)
    other = _physical(src, "phys_b", {0.5: 0.9, 1.0: 0.4}, run=None)  # its model folder is gone
    assert detect_kind(good) == "certify_physical"
    result = build_report([good, other], tmp_path / "r")
    assert result["sections"] == ["Certified in metres"]
    assert result["figures"] == ["metres_vs_area.png", "metres_vs_distance.png", "metres_touch_sets.png"]
    for fig in result["figures"]:
        _check_png(tmp_path / "r" / fig)
    html_text = Path(result["index"]).read_text(encoding="utf-8")
    sentence = ("Certified against any road sticker up to 4 m² at 5-30 m ahead (lateral -2.5 to 2.5 m, yaw up to "
                "±15 deg, long side along or across the road), at delta = 1.00 deg, on 82% of 48 held-out frames.")
    assert sentence in html_text
    assert "Certified against any road sticker up to 0.5 m²" in html_text  # the second folder, side by side
    assert f"Touch sets of {other} not drawn" in html_text
    f = [x for x in _summary(tmp_path / "r")["findings"] if x["key"] == "defense_physical"]
    assert len(f) == 2 and f[0]["section"] == "certified-in-metres"
    assert "certified against any road sticker up to 4 m²" in f[0]["text"]
    assert f[0]["numbers"]["certified_area_m2"] == 4.0


def test_touch_set_figure_draws_the_context_of_a_road_model(tmp_path: Path) -> None:
    """A road model's votes all read its context: the touch-set figure shades it and its caption says what it
    is; a strips model's figure has no such shading."""
    import torch

    from drivenet_patch.models import create_model
    from drivenet_patch.models.checkpoint import save_model

    src = tmp_path / "in"
    src.mkdir()
    road = src / "road_run"
    save_model(road, create_model("patchvote_road", generator=torch.Generator().manual_seed(0), channels=[4, 6, 8, 8],
                                  hidden=[8], context_channels=[4, 6, 8, 8, 8], context_hidden=8, joint=8))
    result = build_report([_physical(src, "phys", {0.5: 0.9, 1.0: 0.8}, run=road)], tmp_path / "r")
    assert "metres_touch_sets.png" in result["figures"]
    html_text = Path(result["index"]).read_text(encoding="utf-8")
    assert "blue: the context a patchvote_road model" in html_text
    strips = build_report([_physical(src, "phys_s", {0.5: 0.9}, run=_patchvote_run(src))], tmp_path / "r2")
    assert "blue: the context" not in Path(strips["index"]).read_text(encoding="utf-8")


def test_certified_in_metres_says_so_when_no_area_reaches_80_percent(tmp_path: Path) -> None:
    from drivenet_patch.app.report.metres import certified_area

    cert = _physical(tmp_path, "phys", {0.5: 0.6, 1.0: 0.4, 2.0: 0.1}, own=0.31)
    build_report([cert], tmp_path / "r")
    html_text = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "No swept area is certified on &gt;= 80% of frames; at 2x3.5 m it is 31%" in html_text
    assert "Certified against" not in html_text
    (f,) = _summary(tmp_path / "r")["findings"]
    assert "no swept area is certified on >= 80% of frames" in f["text"] and f["weak"]
    # "up to X": a size that fails ends the run even if a larger one passes again
    table = pd.DataFrame({"area_m2": [0.5, 0.5, 1.0, 1.0, 2.0, 2.0], "aspect": ["along", "across"] * 3,
                          "certified_acc": [0.9, 0.85, 0.9, 0.7, 0.95, 0.95]})
    assert certified_area({}, table) == (0.5, 0.85)
    # without a sweep the run's own sticker is the only size
    assert certified_area({"certified_acc": 0.9, "threat": {"width_m": 2.0, "length_m": 3.5}}, None) == (7.0, 0.9)
    assert certified_area({"certified_acc": 0.5, "threat": {"width_m": 2.0, "length_m": 3.5}}, None) == (None, None)


def test_bench_train_models_are_a_table_of_their_own(tmp_path: Path) -> None:
    """``pdn bench train --json`` output: one row per model, not a repr of the list."""
    models = [{"model": "pilotnet", "layout": None, "e2e_img_s": 700.0, "bare_img_s": 760.0, "e2e_over_bare": 0.921,
               "infer_img_s": 1900.0, "train_over_pilotnet": 1.0, "infer_over_pilotnet": 1.0,
               "train_share_of_matmul": 0.4},
              {"model": "patchvote", "layout": "strips", "e2e_img_s": 400.0, "bare_img_s": 420.0,
               "e2e_over_bare": 0.952, "infer_img_s": 1000.0, "train_over_pilotnet": 0.571,
               "infer_over_pilotnet": 0.526, "train_share_of_matmul": 0.3}]
    p = tmp_path / "bench_train.json"
    p.write_text(json.dumps({"models": models, "matmul_gflops": 180.0}))
    page = _parse(Path(build_report([p], tmp_path / "r")["index"]))
    assert any(row[:3] == ["patchvote", "strips", "400"] for row in page.rows)
    assert ["matmul_gflops", "180"] in page.rows
    assert not any(row[0] == "models" for row in page.rows)
