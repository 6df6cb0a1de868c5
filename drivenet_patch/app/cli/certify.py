"""``pdn certify``: certified steering intervals of a PatchVote model over a dataset, with sweeps and
adaptive attacks; the work is done by :mod:`defenses.evaluate`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from drivenet_patch.app.cli.common import (
    add_device_and_json,
    add_format,
    emit,
    load_run,
    positive_int,
    progress,
    run_home,
)
from drivenet_patch.safety.errors import PDNError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``certify`` to the ``pdn`` sub-commands ``sub``."""
    help_ = "certified steering intervals of a PatchVote model under any patch of a given size"
    c = sub.add_parser("certify", help=help_, description=help_ + ". Writes certify.json and certify_frames.csv "
                       "(and sweep.csv, attacks.csv; with --physical sweep_physical.csv, attacks_physical.csv) into --out.")
    c.add_argument("--model", required=True, help="PatchVote run folder (pdn train --model patchvote)")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--data", help="dataset folder or log file")
    src.add_argument("--world", action="store_true", help="render held-out world frames (default when no --data)")
    add_format(c, "dataset format for --data")
    c.add_argument("--frames", type=positive_int, help="frames: --world renders this many (default 1000); "
                   "--data uses the first this many (default all)")
    c.add_argument("--patch", default="2%", help="patch HxW pixels at the model input, or a share of its area "
                   "(default 2%%)")
    c.add_argument("--camera-patch", action="store_true",
                   help="--patch is in camera pixels (a share: of the camera image); it is mapped through the "
                        "dataset's crop and resize to the largest patch it can become at the model input")
    c.add_argument("--aggregate", help="median | trimmed | vote | reject (default: the model's)")
    c.add_argument("--delta", default="10%", help="tolerance in degrees, or a share of the labels' range "
                   "(max - min) such as 10%% (default)")
    c.add_argument("--sweep", action="store_true", help="also tabulate patch sizes x tolerances (sweep.csv)")
    c.add_argument("--attack", type=int, default=0, help="adaptive attack runs (PGD patches at random positions, "
                   "aimed at the aggregate and at the votes); reports violations. With --physical: stickers of the "
                   "threat at random places inside it on held-out world roads, their textures optimised through the "
                   "renderer's maps; writes attacks_physical.csv")
    c.add_argument("--sticker", type=Path, help="attack folder (pdn attack): composite its sticker into held-out "
                   "world approach scenes and check each output against the certificate of the sticker's footprint")
    c.add_argument("--physical", metavar="WxL", help="certify against any physical sticker of WIDTHxLENGTH metres "
                   "(road: across x along; billboard: width x height) anywhere in the threat region below, instead "
                   "of a pixel patch; JSON gains threat, n_sets and certified_acc_by_distance")
    c.add_argument("--place", default="road", help="--physical: road | billboard (default road)")
    c.add_argument("--distance", default="5-30", help="--physical: camera distances to the sticker centre, NEAR-FAR "
                   "metres (default 5-30)")
    c.add_argument("--lateral", default="-2.5:2.5", help="--physical: the centre's offset left of the camera axis, "
                   "LO:HI metres (default -2.5:2.5; a billboard to the right: e.g. --lateral=-8:-4, with \"=\" since the "
                   "value starts with a minus)")
    c.add_argument("--yaw", type=float, default=15.0, help="--physical: largest rotation of the sticker, degrees "
                   "(default 15)")
    c.add_argument("--bottom", default="1.5", help="--physical billboard: height of its lower edge, LO-HI metres "
                   "(default 1.5)")
    c.add_argument("--spacing", type=float, default=0.25, help="--physical: grid spacing of the covering, metres "
                   "(default 0.25; finer is tighter and slower)")
    c.add_argument("--attack-steps", type=positive_int, default=20, help="PGD steps per attack run (patch pixels, or "
                   "the sticker texture with --physical; default 20)")
    c.add_argument("--batch", type=positive_int, default=256, help="frames per forward pass (default 256)")
    c.add_argument("--seed", type=int, default=0, help="seed of --world frames and of the attacks")
    c.add_argument("--out", type=Path, help="output folder (default RUN/certify)")
    add_device_and_json(c)
    c.set_defaults(fn=cmd_certify)


def parse_threat(args: argparse.Namespace) -> Any:
    """``--physical`` and its options -> :class:`defenses.physical.PhysicalThreat` (one-line errors)."""
    from defenses.physical import PhysicalThreat
    from drivenet_patch.app.cli.attack import parse_metres, parse_range

    w, length = parse_metres(args.physical, "--physical")
    parts = str(args.lateral).split(":")
    try:
        lateral = tuple(float(p) for p in parts)
        if len(lateral) != 2 or not all(math.isfinite(v) for v in lateral) or lateral[0] > lateral[1]:
            raise ValueError
    except ValueError:
        raise PDNError(f"--lateral must be LO:HI metres with LO <= HI, e.g. -2.5:2.5, got {args.lateral!r}") from None
    bottom = parse_range(args.bottom, "--bottom", allow_zero=True)
    if not (math.isfinite(args.spacing) and 0.02 <= args.spacing <= 5.0):
        raise PDNError(f"--spacing must lie in [0.02, 5] metres, got {args.spacing}")
    if args.place not in ("road", "billboard"):
        raise PDNError(f"--place must be road or billboard, got {args.place!r}")
    return PhysicalThreat(w, length, place=args.place, distance_m=parse_range(args.distance, "--distance"),
                          lateral_m=lateral, yaw_deg=args.yaw, bottom_m=bottom)


def parse_delta(text: str, labels: Any) -> float:
    """``"2"`` -> 2.0 degrees; ``"10%"`` -> 10 % of ``max(labels) - min(labels)``."""
    import numpy as np

    s = str(text).strip()
    try:
        if s.endswith("%"):
            share = float(s[:-1]) / 100.0
            if not (math.isfinite(share) and 0 < share <= 1):
                raise ValueError
            value = share * float(np.ptp(labels)) if len(labels) else float("nan")
        else:
            value = float(s)
    except ValueError:
        raise PDNError(f"--delta must be degrees > 0 or a share like 10%, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise PDNError(f"--delta must come to a number of degrees > 0, got {text!r} ({value})")
    return value


def cmd_certify(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from defenses.aggregate import METHODS
    from defenses.evaluate import (
        MAX_ATTACK_RUNS,
        MAX_ATTACK_STEPS,
        SWEEP_DELTAS_DEG,
        SWEEP_PATCHES,
        adaptive_check,
        certify_at,
        collect_votes,
        example_index,
        summarize,
        sweep_table,
        world_dataset,
        write_vote_example,
    )
    from defenses.regions import parse_patch
    from drivenet_patch.data import open_dataset
    from drivenet_patch.safety.tensors import to_tensor
    from drivenet_patch.storage.atomic import write_csv, write_json
    from drivenet_patch.storage.folders import check_output_folder, prepare_output_folder

    run = Path(args.model)
    if args.aggregate is not None and args.aggregate not in METHODS:
        raise PDNError(f"--aggregate must be one of {', '.join(METHODS)}, got {args.aggregate!r}")
    if not 0 <= args.attack <= MAX_ATTACK_RUNS:
        raise PDNError(f"--attack must lie in [0, {MAX_ATTACK_RUNS}] runs, got {args.attack}")
    if args.attack_steps > MAX_ATTACK_STEPS:
        raise PDNError(f"--attack-steps must be at most {MAX_ATTACK_STEPS}, got {args.attack_steps}")
    model = load_run(args.model, args.device)
    if not hasattr(model, "votes") or not hasattr(model, "layout"):
        raise PDNError(f"--model: {run} holds a {model.name} model; pdn certify needs a PatchVote model "
                       "(pdn train --model patchvote)")
    method = args.aggregate or model.aggregate_name
    out_dir = args.out or run_home(args.model) / "certify"
    check_output_folder(out_dir, "certify")  # new, empty or a certify folder; created just before its first file
    if args.physical:
        if args.camera_patch:
            raise PDNError("--physical: --camera-patch is not available with a physical threat")
        if args.attack and args.data:
            raise PDNError("--physical --attack renders its own world frames at the model input; drop --data "
                           "(certify the dataset and attack in two calls)")
        return _certify_physical(args, model, parse_threat(args), method, out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            dataset = open_dataset(args.data, format=args.format, size=model.input_size)
            limit = args.frames
        else:
            dataset = world_dataset(model, args.frames or 1000, args.seed, Path(tmp) / "world")
            limit = None
        if args.camera_patch:
            from defenses.regions import camera_patch_to_model

            cam = (dataset.camera.height, dataset.camera.width)
            camera_patch = parse_patch(args.patch, cam)
            patch = camera_patch_to_model(camera_patch, dataset.crop, cam)
        else:
            camera_patch, patch = None, parse_patch(args.patch, model.input_size)
        votes, labels = collect_votes(model, dataset, args.batch, args.device, limit, progress(args))
        delta = parse_delta(args.delta, labels)
        cert, k = certify_at(model, votes, patch, method)
        metrics, frames = summarize(cert, labels, delta, k, model.n_regions)
        result: dict[str, Any] = {**metrics, "patch": list(patch), "patch_spec": args.patch, "aggregate": method,
                                  "camera_patch": None if camera_patch is None else list(camera_patch),
                                  "model": str(run), "source": "data" if args.data else "world",
                                  "label_range_deg": [float(labels.min()), float(labels.max())]}
        prepare_output_folder(out_dir, "certify")
        write_csv(out_dir / "certify_frames.csv", frames, float_format="%.6g")
        if args.sweep:
            own = f"{patch[0]}x{patch[1]}" if camera_patch is not None else args.patch  # sweep is in model pixels
            specs = list(dict.fromkeys([*SWEEP_PATCHES, own]))
            sweep = sweep_table(model, votes, labels, specs, sorted({*SWEEP_DELTAS_DEG, round(delta, 6)}))
            write_csv(out_dir / "sweep.csv", sweep, float_format="%.6g")
            result["sweep_rows"] = len(sweep)
        pick = example_index(labels, frames)
        with torch.no_grad():
            frame = to_tensor(dataset.frames([pick]), args.device)
        result["examples"] = {"clean": write_vote_example(
            out_dir, "example_clean", model, frame, method,
            {"frame": pick, "label_deg": float(labels[pick]), "lo_deg": float(frames["lo_deg"].iloc[pick]),
             "hi_deg": float(frames["hi_deg"].iloc[pick])})}
        if args.attack:
            result.update(adaptive_check(model, dataset, labels, patch, method, args.attack, args.attack_steps,
                                         args.seed, args.device, out_dir, limit))
        if args.sticker:
            sticker_result, example = _sticker_check(model, method, args, out_dir)
            result.update(sticker_result)
            result["examples"]["sticker"] = example
    write_json(out_dir / "certify.json", result)
    result["out"] = str(out_dir)
    text = (f"{result['n']} frames, patch {patch[0]}x{patch[1]} px (touches <= {k} of {model.n_regions} regions), "
            f"{method}: certified accuracy {100 * result['certified_acc']:.1f}% at delta {delta:.2f} deg "
            f"(clean {100 * result['clean_acc']:.1f}%, MAE {result['mae_deg']:.3f} deg, median half-width "
            f"{result['median_halfwidth_deg']:.2f} deg)"
            + (f"; {result['attack_runs']} adaptive attacks, {result['violations']} violations" if args.attack else "")
            + (f"; sticker on {result['sticker_frames']} frames: {result['sticker_violations']} violations, "
               f"mean shift {result['sticker_mean_shift_deg']:.2f} deg" if args.sticker else "")
            + f"; written to {out_dir}")
    emit(result, args.json, text)
    return 0


def _sticker_check(model: Any, method: str, args: argparse.Namespace,
                   out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--sticker ATK``: the attack folder's sticker on held-out approach scenes (built here: the CLI may
    use both ``attacks`` and ``defenses``), checked by :func:`defenses.evaluate.sticker_check`."""
    from attacks.approach import approach_scenes
    from attacks.artifact import read_attack
    from defenses.evaluate import sticker_check
    from drivenet_patch.world.seeds import EVAL_SEED_BASE

    texture, placement, meta = read_attack(args.sticker)
    if meta.get("mode") == "dirt":
        raise PDNError("--sticker: dirt-mode stickers are not supported here yet")
    distance = tuple(meta.get("distance_m") or (5.0, 20.0))
    scenes = approach_scenes(model, placement, distance, 4, 32, args.seed, EVAL_SEED_BASE, args.device)
    result, example = sticker_check(model, method, texture, scenes, out_dir)
    return result | {"sticker": str(args.sticker)}, example


def _certify_physical(args: argparse.Namespace, model: Any, threat: Any, method: str, out_dir: Path) -> int:
    """``pdn certify --physical``: the certificate against every sticker of the threat (defenses.physical)."""
    import tempfile

    from defenses.evaluate import (
        SWEEP_DELTAS_DEG,
        collect_votes,
        physical_certificate,
        physical_sweep,
        world_dataset,
    )
    from defenses.physical import ImageGeometry, physical_touch
    from drivenet_patch.data import open_dataset
    from drivenet_patch.storage.atomic import write_csv, write_json
    from drivenet_patch.storage.folders import prepare_output_folder

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            dataset = open_dataset(args.data, format=args.format, size=model.input_size)
            geom, limit = ImageGeometry.from_dataset(dataset), args.frames
        else:
            dataset = world_dataset(model, args.frames or 1000, args.seed, Path(tmp) / "world")
            geom, limit = ImageGeometry.world(model.input_size), None
        touch = physical_touch(threat, geom, model.layout, args.spacing)
        votes, labels = collect_votes(model, dataset, args.batch, args.device, limit, progress(args))
    delta = parse_delta(args.delta, labels)
    metrics, frames = physical_certificate(model, votes, labels, touch, method, delta)
    result: dict[str, Any] = {**metrics, "threat": threat.to_dict(), "aggregate": method, "model": str(args.model),
                              "source": "data" if args.data else "world", "spacing_m": float(args.spacing),
                              "cells": len(touch.distance_m), "margin_px": geom.margin_px,
                              "label_range_deg": [float(labels.min()), float(labels.max())]}
    prepare_output_folder(out_dir, "certify")
    write_csv(out_dir / "certify_frames.csv", frames, float_format="%.6g")
    if args.sweep:
        sweep = physical_sweep(model, votes, labels, threat, geom, method, sorted({*SWEEP_DELTAS_DEG, round(delta, 6)}),
                               args.spacing)
        write_csv(out_dir / "sweep_physical.csv", sweep, float_format="%.6g")
        result["sweep_rows"] = len(sweep)
    if args.attack:
        result.update(_attack_physical(args, model, threat, method, out_dir))
    write_json(out_dir / "certify.json", result)
    result["out"] = str(out_dir)
    t = threat
    text = (f"{result['n']} frames; any {t.place} sticker of {t.width_m:g} x {t.length_m:g} m ({t.area_m2:g} m^2) at "
            f"{t.distance_m[0]:g}-{t.distance_m[1]:g} m, lateral {t.lateral_m[0]:g}:{t.lateral_m[1]:g} m, yaw <= "
            f"{t.yaw_deg:g} deg touches <= {result['k_max']} of {model.n_regions} regions ({result['n_sets']} maximal "
            f"sets); {method}: certified accuracy {100 * result['certified_acc']:.1f}% at delta {delta:.2f} deg (clean "
            f"{100 * result['clean_acc']:.1f}%, MAE {result['mae_deg']:.3f} deg); by distance: "
            + ", ".join(f"{k} m {100 * v:.0f}%" for k, v in result["certified_acc_by_distance"].items())
            + (f"; {result['attack_runs']} adaptive {t.place} stickers ({result['attack_runs_per_s']:.1f} runs/s): "
               f"{result['violations']} violations ({result['attack_certified_runs']} runs certified), "
               f"{result['vote_violations']} vote violations, {result['attack_cell_violations']} violations of "
               f"their cell's certificate ({result['attack_cell_certified_runs']} certified), max push "
               f"{result['max_push_deg']:.2f} deg" if args.attack else "")
            + f"; written to {out_dir}")
    emit(result, args.json, text)
    return 0


def _attack_physical(args: argparse.Namespace, model: Any, threat: Any, method: str, out_dir: Path) -> dict[str, Any]:
    """``--physical ... --attack N``: adaptive stickers inside the threat (:func:`defenses.physical_attack.physical_attack`);
    the runs go to ``attacks_physical.csv``."""
    from defenses.physical_attack import physical_attack
    from drivenet_patch.storage.atomic import write_csv

    # 64 runs per model call: a backward pass per step keeps every activation of the batch
    table, s = physical_attack(model, threat, args.attack, steps=args.attack_steps, seed=args.seed, method=method,
                               spacing_m=args.spacing, batch=min(args.batch, 64), device=args.device,
                               progress=progress(args))
    write_csv(out_dir / "attacks_physical.csv", table, float_format="%.6g")
    return {"attack_runs": s["runs"], "violations": s["violations"], "vote_violations": s["vote_violations"],
            "max_push_deg": s["max_push_deg"], "attack_steps": s["steps"], "attack_mean_push_deg": s["mean_push_deg"],
            "attack_certified_runs": s["certified_runs"], "attack_cell_violations": s["cell_violations"],
            "attack_cell_vote_violations": s["cell_vote_violations"],
            "attack_cell_certified_runs": s["cell_certified_runs"],
            "attack_outside_footprint_px": s["outside_footprint_px"], "attack_road_seed_base": s["road_seed_base"],
            "attack_seconds": s["seconds"], "attack_runs_per_s": s["runs_per_s"]}


cmd_certify.out_kind = "certify"  # type: ignore[attr-defined]  # --out's folder kind
