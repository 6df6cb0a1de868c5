"""``pdn certify`` and the adaptive attacks behind ``--attack``: certificates hold against PGD patches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from defenses.adaptive import count_violations, draw_runs, patch_pgd
from drivenet_patch.app.cli import main
from drivenet_patch.app.cli.certify import parse_delta
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.safety.errors import PDNError


def tiny(seed: int = 0, **cfg) -> torch.nn.Module:
    # A large output scale makes the untrained votes spread out and react strongly to pixels.
    cfg = {"out_scale": 100.0, **cfg}
    return create_model("patchvote_tiny", generator=torch.Generator().manual_seed(seed), **cfg).eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 66, 200, generator=g)
    return (base + 0.2 * torch.rand(6, 3, 66, 200, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("cfg", [{}, {"aggregate": "trimmed"}, {"aggregate": "reject"},
                                 {"aggregate": "vote", "out_scale": 2.0, "bin_deg": 4.0}])
def test_pgd_patches_never_leave_the_certificate(frames: torch.Tensor, cfg: dict) -> None:
    # (the bin vote certifies only frames whose votes agree: smaller votes, wider bins)
    model = tiny(**cfg)
    patch = (17, 17)
    g = torch.Generator().manual_seed(1)
    f, y0, x0, obj = draw_runs(24, len(frames), (66, 200), patch, g)
    runs = patch_pgd(model, frames, patch, f, y0, x0, obj, steps=8, step_size=0.2, generator=g)
    violations, cert = count_violations(model, frames, runs, patch)
    assert violations == 0
    # the attack has teeth (it moves the output), and the check can fail: outputs pushed far
    # outside are counted, for every frame the aggregator certified
    assert float((runs.output - runs.clean).abs().max()) > (0.01 if cfg.get("aggregate") == "vote" else 0.5)
    far = dataclasses.replace(runs, output=runs.clean + 1e4)
    broken, cert = count_violations(model, frames, far, patch)
    assert broken == int(cert.certified.sum()) > 0


def test_draw_runs_is_seeded_and_in_bounds() -> None:
    a = draw_runs(50, 7, (66, 200), (17, 20), torch.Generator().manual_seed(3))
    b = draw_runs(50, 7, (66, 200), (17, 20), torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    f, y0, x0, obj = a
    assert f.max() < 7 and y0.max() <= 66 - 17 and x0.max() <= 200 - 20 and set(obj.tolist()) == {0, 1, 2, 3}
    with pytest.raises(PDNError):
        draw_runs(0, 7, (66, 200), (17, 20), torch.Generator())


def test_parse_delta() -> None:
    labels = np.array([-3.0, 1.0, 7.0])
    assert parse_delta("2", labels) == 2.0 and parse_delta("10%", labels) == pytest.approx(1.0)
    for bad in ("0", "-1", "x", "0%", "150%"):
        with pytest.raises(PDNError, match="--delta"):
            parse_delta(bad, labels)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cert")
    save_model(root / "pv", tiny())
    save_model(root / "pilot", create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0)))
    return root / "pv", root / "pilot"


def test_cli_certify_sweep_and_attack(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pv, _ = runs
    out = tmp_path / "c"
    rc = main(["certify", "--model", str(pv), "--world", "--frames", "48", "--sweep", "--attack", "12",
               "--attack-steps", "3", "--out", str(out), "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("certified_acc", "clean_acc", "mae_deg", "median_halfwidth_deg", "k_max", "n_regions", "n"):
        assert key in r
    assert r["n"] == 48 and r["violations"] == 0 and r["attack_runs"] == 12
    assert 0 <= r["certified_acc"] <= r["clean_acc"] <= 1  # a certified frame is also clean-correct
    frames = pd.read_csv(out / "certify_frames.csv")
    assert len(frames) == 48 and (frames["lo_deg"] <= frames["output_deg"] + 1e-6).all()
    assert (frames["output_deg"] <= frames["hi_deg"] + 1e-6).all()
    assert (~frames["certified_ok"] | frames["clean_ok"]).all()  # whole interval within delta => output too
    sweep = pd.read_csv(out / "sweep.csv")
    med = sweep[(sweep["aggregate"] == "median") & (sweep["delta_deg"] == 2.0)].sort_values("ph")
    assert np.all(np.diff(med["certified_acc"].to_numpy()) <= 1e-12)  # bigger patch, never more certified
    assert np.all(np.diff(med["k_max"].to_numpy()) >= 0)
    assert len(pd.read_csv(out / "attacks.csv")) == 12
    # The report's vote example: a certified frame; its saved votes and output are the model's own.
    ex = r["examples"]["clean"]
    assert frames["certified"].iloc[ex["frame"]]
    img = cv2.cvtColor(cv2.imread(str(out / ex["image"])), cv2.COLOR_BGR2RGB)
    model = load_model(pv)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    votes = pd.read_csv(out / ex["votes"])
    assert len(votes) == model.n_regions and votes["valid"].tolist() == model.valid.tolist()
    with torch.no_grad():
        np.testing.assert_allclose(votes["vote_deg"], model.votes(x)[0].numpy(), atol=1e-4)  # uint8 frames: lossless
    assert ex["output_deg"] == pytest.approx(frames["output_deg"].iloc[ex["frame"]], abs=1e-4)
    assert ex["lo_deg"] <= ex["output_deg"] + 1e-6 and ex["output_deg"] <= ex["hi_deg"] + 1e-6


@pytest.mark.parametrize("argv, needle", [
    (["--patch", "0x3"], "patch"),
    (["--delta=-1"], "argument --delta: '-1' is outside (0, 90]"),
    (["--delta", "1e300"], "argument --delta: '1e300' is outside (0, 90]"),
    (["--aggregate", "mean"], "--aggregate"),
    (["--attack=-2"], "argument --attack: '-2' is outside 0..100000"),
])
def test_cli_certify_bad_input_is_one_line(runs: tuple[Path, Path], capsys: pytest.CaptureFixture,
                                           argv: list[str], needle: str) -> None:
    rc = main(["certify", "--model", str(runs[0]), "--frames", "8", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1


def test_cli_certify_refuses_a_model_without_votes(runs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["certify", "--model", str(runs[1]), "--frames", "8"]) == 2
    assert "PatchVote" in capsys.readouterr().err


def test_bench_defense_reports_both_models_and_certify_rate() -> None:
    from defenses.bench import bench_defense

    r = bench_defense(tiny(), batch=4, repeats=1, cert_frames=2000, art=False)
    for key in ("patchvote_img_s", "pilotnet_img_s", "road_img_s", "certify_frames_s"):
        assert np.isfinite(r[key]) and r[key] > 0
    assert r["patchvote_over_pilotnet"] == pytest.approx(r["patchvote_img_s"] / r["pilotnet_img_s"], rel=1e-2)
    assert r["road_over_pilotnet"] == pytest.approx(r["road_img_s"] / r["pilotnet_img_s"], rel=1e-2)
    assert r["art_ds_img_s"] is None


def test_sticker_footprint_certificate_holds_for_world_stickers() -> None:
    from attacks.scenes import ApproachConfig, world_scenes
    from defenses.adaptive import footprint_touch, sticker_violations
    from drivenet_patch.world import Camera, Renderer, Road, StickerPlacement

    model = tiny()
    # footprint_touch: one pixel touches exactly the regions whose box holds it
    mask = torch.zeros(1, 66, 200, dtype=torch.bool)
    mask[0, 30, 45] = True
    expect = [y0 <= 30 < y1 and x0 <= 45 < x1 for (y0, x0, y1, x1) in model.layout.boxes()]
    assert footprint_touch(model.layout, mask)[0].tolist() == expect
    # far enough that the 3.5 m sticker spans few bands (at 5 m it covers most of the width: no certificate)
    scenes = world_scenes(Renderer(Camera(height=66, width=200)), Road.straight(120.0), StickerPlacement(s=40.0),
                          ApproachConfig(poses_per_road=12, distance_m=(15.0, 20.0)), np.random.default_rng(0))
    for seed in range(3):
        tex = torch.rand(3, 8, 14, generator=torch.Generator().manual_seed(seed))
        r = sticker_violations(model, scenes.background, scenes.apply(tex), scenes.mask.expand(len(scenes), -1, -1))
        assert r["violations"] == 0 and r["outside_mask_changed"] == 0 and r["frames"] == len(scenes)
        assert r["certified"] > 0 and r["mean_shift_deg"] > 0


def test_cli_certify_maps_a_camera_patch_through_the_crop(runs: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    import cv2

    from defenses.regions import camera_patch_to_model
    from drivenet_patch.data import open_dataset

    root = tmp_path / "sim"
    (root / "IMG").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, s in enumerate((0.1, -0.2, 0.0, 0.3)):
        names = []
        for cam in ("center", "left", "right"):
            name = f"IMG/{cam}_{i:03d}.jpg"
            cv2.imwrite(str(root / name), rng.integers(0, 255, (160, 320, 3), dtype=np.uint8))
            names.append(name)
        lines.append(", ".join([*names, str(s), "0.5", "0", "30.19"]))
    (root / "driving_log.csv").write_text("\n".join(lines) + "\n")
    ds = open_dataset(root, size=(66, 200))
    expect = camera_patch_to_model((16, 16), ds.crop, (ds.camera.height, ds.camera.width))
    rc = main(["certify", "--model", str(runs[0]), "--data", str(root), "--patch", "16x16", "--camera-patch",
               "--sweep", "--out", str(tmp_path / "c"), "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["camera_patch"] == [16, 16] and tuple(r["patch"]) == tuple(expect) and r["n"] == 4
    assert tuple(expect) != (16, 16)  # the resize changes the patch's size at the model input
