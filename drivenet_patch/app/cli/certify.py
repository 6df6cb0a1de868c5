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
    progress,
    run_home,
)
from drivenet_patch.app.cli.flags import (
    BATCH,
    FRAMES,
    MAX_ATTACK_STEPS,
    SEED,
    check_batch,
    check_work,
    count,
    fill,
    given,
    real,
    refuse_given,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import (
    MAX_ATTACK_RUNS,
    MAX_ATTACK_WORK,
    MAX_CELLS,
    MAX_PHYSICAL_ATTACK_WORK,
    bounded_float,
    flag_type,
)

#: ``--delta``: at most this many degrees (a road wheel turns less), or a share of at most 100 %.
MAX_DELTA_DEG = 90.0
#: Flags of ``--physical`` only, and their defaults; ``--bottom`` is for a billboard only.
PHYSICAL_FLAGS = {"place": "road", "distance": "5-30", "lateral": "-2.5:2.5", "yaw": 15.0, "bottom": "1.5",
                  "spacing": 0.25}
#: Flags of the pixel patch only (without ``--physical``), and their defaults.
PIXEL_FLAGS = {"patch": "2%", "camera_patch": False, "sticker": None}


def delta_value(name: str, text: str, hint: str = "") -> str:
    """``--delta`` checked as text: degrees in (0, 90] or a share ``P%`` with P in (0, 100]; the text itself
    (a share becomes degrees once the labels are known, :func:`parse_delta`)."""
    s = str(text).strip()
    if s.endswith("%"):
        bounded_float(name, s[:-1], low=0.0, high=100.0, low_open=True, hint=hint)
    else:
        bounded_float(name, s, low=0.0, high=MAX_DELTA_DEG, low_open=True, hint=hint)
    return s


DELTA_HINT = f"give degrees in (0, {MAX_DELTA_DEG:g}] or a share of the labels' range in (0%, 100%], e.g. 2 or 10%"
DELTA = flag_type(delta_value, hint=DELTA_HINT)


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
    c.add_argument("--frames", type=FRAMES, help="frames: --world renders this many (default 1000); "
                   "--data uses the first this many (default all)")
    c.add_argument("--patch", help="patch HxW pixels at the model input, or a share of its area "
                   "(default 2%%; not with --physical)")
    c.add_argument("--camera-patch", action="store_true",
                   help="--patch is in camera pixels (a share: of the camera image); it is mapped through the "
                        "dataset's crop and resize to the largest patch it can become at the model input")
    c.add_argument("--aggregate", help="median | trimmed | vote | reject (default: the model's)")
    c.add_argument("--delta", type=DELTA, default="10%", help="tolerance in degrees, or a share of the labels' range "
                   "(max - min) such as 10%% (default); at most 90 degrees or 100%%")
    c.add_argument("--sweep", action="store_true", help="also tabulate patch sizes x tolerances (sweep.csv)")
    c.add_argument("--attack", type=count(MAX_ATTACK_RUNS, "attack runs", low=0), default=0,
                   help="adaptive attack runs (PGD patches at random positions, "
                   "aimed at the aggregate and at the votes); reports violations. With --physical: stickers of the "
                   "threat at random places inside it on held-out world roads, their textures optimised through the "
                   "renderer's maps; writes attacks_physical.csv. --attack x --attack-steps at most "
                   f"{MAX_ATTACK_WORK:,} (with --physical {MAX_PHYSICAL_ATTACK_WORK:,})")
    c.add_argument("--sticker", type=Path, help="attack folder (pdn attack): composite its sticker into held-out "
                   "world approach scenes and check each output against the certificate of the sticker's footprint "
                   "(not with --physical)")
    c.add_argument("--physical", metavar="WxL", help="certify against any physical sticker of WIDTHxLENGTH metres "
                   "(road: across x along; billboard: width x height) anywhere in the threat region below, instead "
                   "of a pixel patch; JSON gains threat, n_sets and certified_acc_by_distance")
    c.add_argument("--place", help="--physical: road | billboard (default road)")
    c.add_argument("--distance", help="--physical: camera distances to the sticker centre, NEAR-FAR "
                   "metres (default 5-30)")
    c.add_argument("--lateral", help="--physical: the centre's offset left of the camera axis, "
                   "LO:HI metres (default -2.5:2.5; a billboard to the right: e.g. --lateral=-8:-4, with \"=\" since the "
                   "value starts with a minus)")
    c.add_argument("--yaw", type=real(0.0, 90.0, "degrees"), help="--physical: largest rotation of the sticker, "
                   "degrees (default 15; at most 90)")
    c.add_argument("--bottom", help="--physical billboard: height of its lower edge, LO-HI metres "
                   "(default 1.5)")
    c.add_argument("--spacing", type=real(0.02, 5.0, "metres"), help="--physical: grid spacing of the covering, "
                   f"metres (default 0.25; finer is tighter and slower: at most {MAX_CELLS:,} cells in all)")
    c.add_argument("--attack-steps", type=count(MAX_ATTACK_STEPS, "PGD steps"), help="--attack: PGD steps per "
                   "attack run (patch pixels, or the sticker texture with --physical; default 20)")
    c.add_argument("--batch", type=BATCH, default=256, help="frames per forward pass (default 256)")
    c.add_argument("--seed", type=SEED, default=0, help="seed of --world frames and of the attacks")
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


def check_flags(args: argparse.Namespace) -> Any:
    """Every flag of ``pdn certify`` checked together, before any work: flags of the other mode are refused,
    the mode's defaults filled in, the attack's runs x steps and the covering's cells bounded.

    Returns:
        The :class:`defenses.physical.PhysicalThreat` of ``--physical``, else None.
    """
    physical = args.physical is not None  # --physical "" is a malformed threat, not the pixel patch
    if physical:
        refuse_given(args, ["--patch", "--camera-patch", "--sticker"],
                     "with --physical (it certifies against every sticker of the threat, not a pixel patch)")
        if given(args, "--bottom") and args.place != "billboard":
            raise PDNError(f"--bottom {args.bottom!r} applies to --place billboard only; drop it")
        if args.attack and args.data:
            raise PDNError("--physical --attack renders its own world frames at the model input; drop --data "
                           "(certify the dataset and attack in two calls)")
    else:
        refuse_given(args, ["--" + k.replace("_", "-") for k in PHYSICAL_FLAGS],
                     "without --physical (it describes the physical threat)", "give --physical WxL or drop it")
    if given(args, "--attack-steps") and not args.attack:
        raise PDNError(f"--attack-steps {args.attack_steps} applies to --attack runs only; give --attack N or drop it")
    fill(args, attack_steps=20, **(PHYSICAL_FLAGS if physical else PIXEL_FLAGS))
    if args.attack:
        limit = MAX_PHYSICAL_ATTACK_WORK if physical else MAX_ATTACK_WORK
        check_work("run-steps" + (" of rendered stickers" if physical else " of PGD"),
                   [("--attack", args.attack), ("--attack-steps", args.attack_steps)], limit,
                   "give fewer runs or steps")
    if not physical:
        return None
    threat = parse_threat(args)
    check_cells(args, threat)
    return threat


def check_cells(args: argparse.Namespace, threat: Any) -> int:
    """The covering's grid cells (each one footprint raster, about 1 ms), its ``--sweep`` coverings included,
    refused past ``MAX_CELLS`` before anything is computed."""
    from defenses.evaluate import PHYSICAL_SWEEP_AREAS_M2
    from defenses.physical import cell_count

    n = cell_count(threat, args.spacing)
    coverings = 1 + (2 * len(PHYSICAL_SWEEP_AREAS_M2) if args.sweep else 0)  # the sweep: each area, both aspects
    if n * coverings > MAX_CELLS:
        raise PDNError(f"--distance {args.distance} x --lateral {args.lateral} at --spacing {args.spacing:g} m is "
                       f"{n:,} grid cells" + (f" x {coverings} coverings with --sweep" if args.sweep else "")
                       + f" = {n * coverings:,}, over the limit of {MAX_CELLS:,}: give a coarser --spacing or a "
                       "smaller region" + (", or drop --sweep" if args.sweep else ""))
    return n


def parse_delta(text: str, labels: Any) -> float:
    """``"2"`` -> 2.0 degrees; ``"10%"`` -> 10 % of ``max(labels) - min(labels)`` (the text checked by
    :func:`delta_value`, as the flag's type does)."""
    import numpy as np

    s = delta_value("--delta", text, DELTA_HINT)
    value = float(s[:-1]) / 100.0 * float(np.ptp(labels)) if s.endswith("%") else float(s)
    if not (math.isfinite(value) and value > 0):
        raise PDNError(f"--delta must come to a number of degrees > 0, got {text!r} ({value}): the labels' range is 0")
    return value


def cmd_certify(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from defenses.aggregate import METHODS
    from defenses.evaluate import (
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
    threat = check_flags(args)  # every flag, before the model loads
    model = load_run(args.model, args.device)
    check_batch("--batch", args.batch, model.input_size)
    if not hasattr(model, "votes") or not hasattr(model, "layout"):
        raise PDNError(f"--model: {run} holds a {model.name} model; pdn certify needs a PatchVote model "
                       "(pdn train --model patchvote)")
    method = args.aggregate or model.aggregate_name
    out_dir = args.out or run_home(args.model) / "certify"
    check_output_folder(out_dir, "certify")  # new, empty or a certify folder; created just before its first file
    if threat is not None:
        return _certify_physical(args, model, threat, method, out_dir)
    if not args.camera_patch:
        parse_patch(args.patch, model.input_size)  # before the frames are rendered or read
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
            geom, limit = ImageGeometry.world(model.input_size), None
        touch = physical_touch(threat, geom, model.layout, args.spacing)
        out_of_view = check_in_view(args, touch)  # before a frame is rendered or a vote computed
        reached = context_reached(model, threat, geom)
        if not args.data:
            dataset = world_dataset(model, args.frames or 1000, args.seed, Path(tmp) / "world")
        votes, labels = collect_votes(model, dataset, args.batch, args.device, limit, progress(args))
    delta = parse_delta(args.delta, labels)
    metrics, frames = physical_certificate(model, votes, labels, touch, method, delta)
    result: dict[str, Any] = {**metrics, "threat": threat.to_dict(), "aggregate": method, "model": str(args.model),
                              "source": "data" if args.data else "world", "spacing_m": float(args.spacing),
                              "cells": len(touch.distance_m), "cells_out_of_view": out_of_view,
                              "margin_px": geom.margin_px,
                              "label_range_deg": [float(labels.min()), float(labels.max())]}
    if reached is not None:
        result.update(context_threat=model.layout.threat, context_px_reached=reached)
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
    if reached:
        c = model.layout.threat
        text = (f"this model's votes all read the context of a {c['width_m']:g} x {c['length_m']:g} m {c['place']} "
                f"sticker at {c['distance_m'][0]:g}-{c['distance_m'][1]:g} m; this threat reaches {reached} of its "
                "pixels, so a sticker there touches every vote; " + text)
    emit(result, args.json, text)
    return 0


def context_reached(model: Any, threat: Any, geom: Any) -> int | None:
    """Context pixels of a model whose votes all read a threat's context (``patchvote_road``) that ``threat``'s
    stickers can reach (0: none, the context adds no touch); None for a model without context."""
    import torch

    from defenses.physical import threat_zone

    context = getattr(model.layout, "context", None)
    if context is None:
        return None
    return int((torch.from_numpy(threat_zone(threat, geom)) & context.cpu()).sum())


def check_in_view(args: argparse.Namespace, touch: Any) -> int:
    """Refuse a threat that the camera never sees (every cell's footprint misses the model input): its
    certificate would hold vacuously, with no region touched. Returns how many cells lie out of view."""
    outside = int((touch.footprint_px == 0).sum())
    if outside == len(touch.footprint_px) or not bool(touch.touch.any()):
        raise PDNError(f"--physical {args.physical}: no sticker of this threat is in the camera's view (none of its "
                       f"{len(touch.footprint_px):,} cells at --distance {args.distance} --lateral {args.lateral} "
                       "reaches the model input), so it could only be certified vacuously: move --distance and "
                       "--lateral into view")
    return outside


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
