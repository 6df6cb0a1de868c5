"""``pdn attack`` (optimise a printable sticker) and ``pdn attack eval`` (judge it against controls).

``pdn attack eval`` is routed by :func:`route_argv` (``attack`` takes options of its own, so ``eval``
cannot be an argparse sub-command of it).

World mode (default): the sticker sits at a fixed place on procedural roads. Optimisation uses
approach poses on ``--roads`` roads; the numbers in ``attack.json`` come from other roads (held out),
and ``pdn attack eval`` draws yet other roads from its own ``--seed``. The road-seed bases are in
:mod:`drivenet_patch.world.seeds`; the scene sets are built by :mod:`attacks.approach`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from drivenet_patch.app.cli.common import (
    add_device_and_json,
    add_format,
    emit,
    load_run,
    progress,
)
from drivenet_patch.app.cli.flags import (
    ANGLE,
    EOT_BATCH,
    FRAMES,
    KM,
    LATERAL_M,
    MAX_DRIVE_ROADS,
    MAX_LR,
    MAX_POSES,
    MAX_SCENE_ROADS,
    MAX_SCENES,
    MAX_STICKER_STEPS,
    SEED,
    check_batch,
    check_work,
    count,
    fill,
    real,
    refuse_given,
    weight,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_ROAD_KM
from drivenet_patch.world.seeds import ATTACK_SEED_BASE, EVAL_SEED_BASE, HELDOUT_SEED_BASE, LOOP_SEED_BASE


def route_argv(argv: list[str]) -> list[str]:
    """``pdn attack eval|sweep ...`` -> ``pdn attack-eval|attack-sweep ...`` (the parser's names for them)."""
    if len(argv) >= 2 and argv[0] == "attack" and argv[1] in ("eval", "sweep"):
        return [f"attack-{argv[1]}", *argv[2:]]
    return argv


def parse_metres(text: str, name: str = "--size") -> tuple[float, float]:
    """``"3.5x2.0"`` -> (3.5, 2.0) metres (width across the road, length along it / billboard height)."""
    parts = str(text).lower().split("x")
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        raise PDNError(f"{name} must be WIDTHxLENGTH in metres, e.g. 3.5x2.0, got {text!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise PDNError(f"{name} must be two numbers > 0 (metres), got {text!r}")
    if w > 20 or h > 40:  # 40 m along the road: DRP's painted region is about 38 m long
        raise PDNError(f"{name}: at most 20 m across and 40 m along, got {text!r}")
    return w, h


def parse_range(text: str, name: str = "--distance", allow_zero: bool = False) -> tuple[float, float]:
    """``"5-20"`` -> (5.0, 20.0); a single number -> (x, x); NEAR > 0 unless ``allow_zero``."""
    parts = str(text).split("-")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise PDNError(f"{name} must be NEAR-FAR in metres, e.g. 5-20, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    ok_near = vals[0] >= 0 if allow_zero else vals[0] > 0
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals) or not (ok_near and vals[0] <= vals[1]):
        raise PDNError(f"{name} must be NEAR-FAR with {'0 <=' if allow_zero else '0 <'} NEAR <= FAR, got {text!r}")
    if vals[1] > 60:
        raise PDNError(f"{name}: at most 60 m, got {text!r}")
    return vals[0], vals[1]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``attack`` and ``attack-eval`` (shown as ``attack eval``) to the ``pdn`` sub-commands."""
    help_ = "optimise a printable adversarial sticker against a steering model (then: pdn attack eval)"
    c = sub.add_parser("attack", help=help_, description=help_ + ". Writes sticker.png, sticker_print.pdf (unless --no-print), "
                       "sticker_palette.png, attack.json, history.csv and examples.png into --out.")
    c.add_argument("--model", required=True, help="run folder of the attacked model")
    c.add_argument("--out", required=True, type=Path, help="attack folder to write")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--world", action="store_true", help="sticker in the built-in world (default)")
    src.add_argument("--data", help="real frames: a flat road sticker ahead of the car in every frame")
    add_format(c, "dataset format for --data")
    c.add_argument("--frames", type=FRAMES, help="--data: frames used (default 256)")
    c.add_argument("--target", default="left", help="left | right | away (default left)")
    c.add_argument("--angle", type=ANGLE, default=15.0, help="push in degrees (default 15)")
    c.add_argument("--loss", default="hinge", help="hinge | mse (default hinge)")
    c.add_argument("--size", default="3.5x2.0", help="sticker WIDTHxLENGTH in metres (default 3.5x2.0)")
    c.add_argument("--place", default="road", help="road | billboard (default road)")
    c.add_argument("--lateral", type=LATERAL_M, default=0.0,
                   help="sticker centre's offset from the ego-lane centre in metres, + = left (default 0; "
                        "a billboard's default side is 4.75 m right of it)")
    c.add_argument("--distance", default="5-20", help="camera distances to the sticker, NEAR-FAR metres (default 5-20)")
    c.add_argument("--steps", type=count(MAX_STICKER_STEPS, "a number of optimisation steps"), default=300,
                   help=f"optimisation steps, at most {MAX_STICKER_STEPS} (default 300)")
    c.add_argument("--batch", type=EOT_BATCH, default=32, help="EOT samples per step (default 32)")
    c.add_argument("--lr", type=real(0.0, MAX_LR, "a learning rate", low_open=True), default=0.1,
                   help="Adam learning rate on the texture logits (default 0.1)")
    c.add_argument("--texels", default="32x56", help="texture resolution HxW (default 32x56)")
    c.add_argument("--nps-weight", type=weight(), default=0.25, help="non-printability weight (default 0.25)")
    c.add_argument("--tv-weight", type=weight(), default=0.25, help="total-variation weight (default 0.25)")
    c.add_argument("--palette", help="printer palette CSV (r,g,b in 0-255 or 0-1; default: packaged)")
    c.add_argument("--dirt", action="store_true", help="darken-only grey dirt instead of a printed sticker")
    c.add_argument("--saliency-weight", type=weight(), default=0.0,
                   help="patchdrive only: weight of an extra objective that pulls the model's saliency (its "
                        "selected high-resolution patches) onto the sticker (default 0: off)")
    c.add_argument("--roads", type=count(MAX_SCENE_ROADS, "a number of roads"),
                   help="world roads used for optimisation (default 8)")
    c.add_argument("--poses", type=count(MAX_POSES, "a number of poses"),
                   help=f"world: approach poses per road (default 32; --roads x --poses at most {MAX_SCENES:,})")
    c.add_argument("--paper", help="print paper: A4 | Letter | A3 (default A4; not with --no-print)")
    c.add_argument("--no-print", action="store_true",
                   help="skip sticker_print.pdf, the tiled 1:1 print file (about 15 s for 2.0x3.5 m on A4)")
    c.add_argument("--closed-loop", action="store_true",
                   help="world only: closed-loop-aware optimisation (DRP): re-simulate the approaches under the "
                        "current sticker and optimise the lateral displacement the car accumulates")
    c.add_argument("--resim-every", type=count(MAX_STICKER_STEPS, "a number of steps"), default=None,
                   help="--closed-loop: re-simulate every this many steps, 1 .. --steps (default 25)")
    c.add_argument("--stickers", type=count(16, "a number of stickers"), default=1,
                   help="--closed-loop: spend the --size area on this many equal stickers in a row along the lane, "
                        "optimised together (a line, at most 0.5 m wide, is cut into N lengths; any other shape "
                        "becomes N stickers of the 2.0x3.5 m shape) (default 1)")
    c.add_argument("--segment", default=None,
                   help="--closed-loop: the road segment the stickers sit on: any | straight | curve_entry | "
                        "curve_exit (a curve turning away from --target; add _left or _right to choose) (default any)")
    c.add_argument("--search", type=count(64, "a number of placements", low=0), default=0,
                   help="--closed-loop: try this many placements (segment, position along the approach, gap, "
                        "lateral offset, yaw; the first is the plain one) with --search-steps each, keep the one "
                        "that pushes the car furthest, then optimise it (default 0: no search)")
    c.add_argument("--search-steps", type=count(MAX_STICKER_STEPS, "a number of steps"), default=None,
                   help="--search: optimisation steps per placement tried (default --steps / 4)")
    c.add_argument("--seed", type=SEED, default=0, help="seed (same seed -> same sticker)")
    add_device_and_json(c)
    c.set_defaults(fn=cmd_attack)

    help_ = "evaluate a sticker on held-out roads and closed loop, beside noise and grey controls"
    e = sub.add_parser("attack-eval", help=help_ + " (pdn attack eval)", description=help_,
                       prog="pdn attack eval")
    e.add_argument("--model", required=True, help="run folder of the model under attack")
    e.add_argument("--sticker", required=True, type=Path, help="attack folder (from pdn attack)")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--world", action="store_true", help="held-out world roads (default)")
    src.add_argument("--data", help="real frames (offline numbers only)")
    add_format(e, "dataset format for --data")
    e.add_argument("--frames", type=FRAMES, help="--data: frames used (default 256)")
    e.add_argument("--threshold", type=ANGLE, default=3.0,
                   help="success: deviation in the target direction >= this (deg)")
    e.add_argument("--roads", type=count(MAX_SCENE_ROADS, "a number of roads"),
                   help="world: held-out roads for offline scenes (default 8)")
    e.add_argument("--poses", type=count(MAX_POSES, "a number of poses"),
                   help=f"world: approach poses per held-out road (default 32; --roads x --poses at most {MAX_SCENES:,})")
    e.add_argument("--loop-roads", type=count(MAX_DRIVE_ROADS, "a number of roads", low=0),
                   help="world: closed-loop roads (0: skip closed loop; default 10)")
    e.add_argument("--km", type=KM, help="closed-loop km per road (default 0.5: 5 stickers each; 4 drives of "
                   f"--loop-roads x --km at most {MAX_ROAD_KM:g} road-km in all)")
    e.add_argument("--seed", type=SEED, default=1, help="seed of the held-out roads, poses and controls (default 1)")
    e.add_argument("--out", type=Path, help="write eval.json, frames.csv, approaches.csv here (default: the sticker folder)")
    add_device_and_json(e)
    e.set_defaults(fn=cmd_attack_eval)


# ---------------------------------------------------------------------------- pdn attack
def cmd_attack(args: argparse.Namespace) -> int:
    import torch

    from attacks.approach import approach_scenes, frame_scene_set, world_placement, world_scene_sets
    from attacks.artifact import save_result
    from attacks.eot import EOTConfig
    from attacks.evaluate import offline_eval
    from attacks.examples import write_examples
    from attacks.export import export_print_pdf, paper_size, save_palette_png
    from attacks.printability import load_palette, quantize
    from attacks.saliency_grab import saliency_capture
    from attacks.sticker import StickerConfig, optimize_sticker
    from drivenet_patch.models.patchdrive import has_patches
    from drivenet_patch.models.registry import parse_input_size
    from drivenet_patch.storage.atomic import write_csv
    from drivenet_patch.storage.folders import prepare_output_folder

    check_attack_flags(args)
    size = parse_metres(args.size)
    distance = parse_range(args.distance)
    texels = parse_input_size(args.texels, "--texels")
    if args.place not in ("road", "billboard"):
        raise PDNError(f"--place must be road or billboard, got {args.place!r}")
    if args.data and args.place != "road":
        raise PDNError("--data supports --place road only (a flat sticker on the ground ahead)")
    if args.out.exists() and not args.out.is_dir():
        raise PDNError(f"--out: {args.out} exists and is not a folder")
    paper_size(args.paper)  # a bad --paper fails before the optimisation, not after it
    palette = load_palette(args.palette)
    cfg = StickerConfig(steps=args.steps, lr=args.lr, batch=args.batch, texture_hw=texels, target=args.target,
                        angle_deg=args.angle, loss=args.loss, nps_weight=args.nps_weight, tv_weight=args.tv_weight,
                        dirt=args.dirt, palette=args.palette, eot=EOTConfig(), seed=max(int(args.seed), 0),
                        saliency_weight=args.saliency_weight)
    ccfg = closed_loop_settings(args)
    grouped = group_mode(args, ccfg)
    if grouped:
        cfg = replace(cfg, texture_hw=(texels[0], texels[1] * args.stickers))  # one atlas column block per sticker
    model = load_run(args.model, args.device)
    check_batch("--batch", args.batch, model.input_size)  # EOT samples of one step, rendered at the model input
    if args.data:
        check_batch("--frames", args.frames, model.input_size)  # the frames are held in memory
    if args.saliency_weight and not has_patches(model):
        raise PDNError(f"--saliency-weight {args.saliency_weight:g} needs a patch-selecting model (e.g. patchdrive), "
                       f"not {model.name}; drop it")
    if args.data:
        train = frame_scene_set(model, args.data, args.format, args.frames, distance, size, args.device, 0,
                                args.lateral)
        held = frame_scene_set(model, args.data, args.format, args.frames, distance, size, args.device, 1,
                               args.lateral)
    else:
        placement = world_placement(args.place, size, args.lateral)
        if ccfg is None:
            train, held = world_scene_sets(model, placement, distance, args.roads, args.poses, args.seed,
                                           (ATTACK_SEED_BASE, HELDOUT_SEED_BASE), args.device)
        else:  # the closed-loop attack renders its own frames: only the held-out check is precomputed
            held = approach_scenes(model, placement, distance, max(1, args.roads // 2), args.poses, args.seed,
                                   HELDOUT_SEED_BASE, args.device)
            train = held
    generator = torch.Generator(device=args.device).manual_seed(cfg.seed)
    search_table = None
    if ccfg is None:
        result = optimize_sticker(model, train, cfg, generator, progress=progress(args), palette=palette)
    elif grouped:
        result, placement, search_table = group_attack(model, size, cfg, ccfg, args, generator, palette)
        held = approach_scenes(model, placement, distance, max(1, args.roads // 2), args.poses, args.seed,
                               HELDOUT_SEED_BASE, args.device)
        train = held
    else:
        result = closed_loop_attack(model, placement, cfg, ccfg, args, generator, palette)
    texture = result.texture
    _, summary = offline_eval(model, held, texture, args.target, dirt=args.dirt)
    metrics: dict[str, Any] = {"heldout": summary, "train_frames": len(train) if ccfg is None else None,
                               "heldout_frames": len(held)}
    if not args.dirt:
        q = quantize(texture, palette.to(texture.device))
        _, qsum = offline_eval(model, held, q, args.target)
        metrics["heldout_palette"] = qsum
        metrics["palette_keeps"] = (qsum["mean_dev_deg"] / summary["mean_dev_deg"]
                                    if summary["mean_dev_deg"] > 0 else None)
    if has_patches(model):  # patchdrive: how often the sticker sits in one of the selected patches
        metrics["heldout_saliency"] = saliency_capture(model, held, texture, args.dirt)
    extra = {"metrics": metrics, "model": str(args.model), "source": "data" if args.data else "world",
             "size_m": list(size), "distance_m": list(distance), "lateral_m": float(args.lateral),
             "seed": int(args.seed), "closed_loop": ccfg is not None,
             "road_seed_bases": None if args.data else [ATTACK_SEED_BASE, HELDOUT_SEED_BASE]}
    if grouped:
        extra.update(stickers=int(args.stickers), area_m2=float(placement.area_m2),
                     where=placement_text(placement, args.target),
                     placement_search=None if search_table is None else search_table.to_dict(orient="records"))
    prepare_output_folder(args.out, "attack")  # checked before the work too; now created and marked
    out = save_result(args.out, result, train, extra)
    write_csv(out / "history.csv", result.history, float_format="%.6g")
    if search_table is not None:
        write_csv(out / "placement_search.csv", search_table, float_format="%.6g")
    export_tex = texture if not args.dirt else texture.expand(3, -1, -1)
    width_m, length_m = size
    if grouped:
        from drivenet_patch.storage.atomic import write_text

        write_text(out / "placement.txt", "\n".join(extra["where"]) + "\n")
        n = len(placement.parts)
        cols = export_tex.shape[-1] // n
        if not args.no_print:
            for k, part in enumerate(placement.parts):
                export_print_pdf(export_tex[:, :, k * cols:(k + 1) * cols].cpu(), part.width_m, part.length_m,
                                 out / f"sticker_{k + 1}_print.pdf", paper=args.paper, palette=palette)
    elif not args.no_print:
        export_print_pdf(export_tex.cpu(), width_m, length_m, out / "sticker_print.pdf", paper=args.paper,
                         palette=None if args.dirt else palette)
    save_palette_png(export_tex.cpu(), palette, out / "sticker_palette.png", scale=8)
    write_examples(out / "examples.png", model, held, texture, args.dirt)
    report = {"out": str(out), **{k: metrics["heldout"][k] for k in ("mean_dev_deg", "success_rate", "n_frames")},
              "mean_dev_5_15m_deg": metrics["heldout"].get("mean_dev_5_15m_deg"),
              "palette_keeps": metrics.get("palette_keeps"), "steps": cfg.steps,
              "final_train_deviation_deg": float(result.history["deviation_deg"].iloc[-1]),
              "closed_loop": ccfg is not None}
    if ccfg is not None:
        report["rollout_departure_rate"] = float(result.history["rollout_departure_rate"].iloc[-1])
    if grouped:
        report.update(stickers=int(args.stickers), area_m2=float(placement.area_m2), segment=placement.segment,
                      where=extra["where"])
    if "heldout_saliency" in metrics:
        report["in_topk_rate"] = metrics["heldout_saliency"]["in_topk_rate"]
    text = (f"sticker written to {out}: held-out mean |dev| {report['mean_dev_deg']:.2f} deg, "
            f"success {100 * report['success_rate']:.0f}% over {report['n_frames']} frames"
            + (f", palette keeps {100 * report['palette_keeps']:.0f}%" if report["palette_keeps"] is not None else "")
            + f"; next: pdn attack eval --model {args.model} --sticker {out}")
    emit(report, args.json, text)
    return 0


def check_attack_flags(args: argparse.Namespace) -> None:
    """The flags of ``pdn attack`` checked together before any work: those of the mode not chosen are refused
    (``--frames`` is for ``--data``, ``--roads`` and ``--poses`` for the world, ``--paper`` for the print file),
    their defaults filled in, and the world's roads x poses bounded."""
    if args.data:
        refuse_given(args, ["--roads", "--poses"], "with --data (its frames are the scenes)")
    else:
        refuse_given(args, ["--frames"], "without --data (the world renders its own scenes)", "give --data or drop it")
    if args.no_print:
        refuse_given(args, ["--paper"], "with --no-print (no print file is made)", "drop one of them")
    fill(args, frames=256, roads=8, poses=32, paper="A4")
    if not args.data:
        check_work("approach scenes", [("--roads", args.roads), ("--poses", args.poses)], MAX_SCENES,
                   "give fewer roads or poses")


def check_eval_flags(args: argparse.Namespace) -> None:
    """The flags of ``pdn attack eval`` checked together before any work (as :func:`check_attack_flags`); the
    closed loop drives ``--loop-roads`` x ``--km`` four times (the sticker, two controls, no sticker)."""
    if args.data:
        refuse_given(args, ["--roads", "--poses", "--loop-roads", "--km"],
                     "with --data (offline numbers on its frames, no world roads)")
    else:
        refuse_given(args, ["--frames"], "without --data (the world renders its own scenes)", "give --data or drop it")
        if args.loop_roads == 0:
            refuse_given(args, ["--km"], "with --loop-roads 0 (no closed loop)", "drop one of them")
    fill(args, frames=256, roads=8, poses=32, loop_roads=0 if args.data else 10, km=0.5)
    if not args.data:
        check_work("approach scenes", [("--roads", args.roads), ("--poses", args.poses)], MAX_SCENES,
                   "give fewer roads or poses")
        if args.loop_roads:
            check_work("road-km", [("--loop-roads", args.loop_roads), ("--km", args.km), ("drives", 4)], MAX_ROAD_KM,
                       "give fewer --loop-roads or a smaller --km")


def closed_loop_settings(args: argparse.Namespace) -> Any:
    """The :class:`~attacks.closed_loop.ClosedLoopAttackConfig` of ``--closed-loop`` (None without it)."""
    from attacks.closed_loop import ClosedLoopAttackConfig

    if args.resim_every is not None and not args.closed_loop:
        raise PDNError("--resim-every needs --closed-loop")
    if not args.closed_loop:
        return None
    if args.data:
        raise PDNError("--closed-loop needs the world (the car must be re-simulated); drop --data")
    if args.place != "road":
        raise PDNError("--closed-loop supports --place road only")
    every = 25 if args.resim_every is None else args.resim_every
    if not 1 <= every <= args.steps:
        raise PDNError(f"--resim-every must be an integer in [1, --steps = {args.steps}], got {every}")
    return ClosedLoopAttackConfig(resim_every=min(every, 500))


def closed_loop_attack(model: Any, placement: Any, cfg: Any, ccfg: Any, args: argparse.Namespace, generator: Any,
                       palette: Any) -> Any:
    """Optimise closed-loop-aware on ``--roads`` roads of the attack's seed base (the open-loop attack's roads)."""
    import numpy as np

    from attacks.approach import approach_roads, model_camera
    from attacks.closed_loop import make_approaches, optimize_closed_loop, rollout_road_length
    from drivenet_patch.driving.drive import ClosedLoopConfig
    from drivenet_patch.world.render import Renderer

    drive = ClosedLoopConfig()
    roads = approach_roads(ATTACK_SEED_BASE, args.seed, args.roads, rollout_road_length(placement, ccfg, drive))
    approaches = make_approaches(roads, placement, ccfg, np.random.default_rng([int(args.seed), ATTACK_SEED_BASE]),
                                 drive, args.device)
    return optimize_closed_loop(model, approaches, cfg, ccfg, Renderer(model_camera(model), device=args.device),
                                generator, progress=progress(args), palette=palette, drive=drive)


def group_mode(args: argparse.Namespace, ccfg: Any) -> bool:
    """True when ``--stickers``, ``--segment`` or ``--search`` asks for placed stickers (they need --closed-loop)."""
    from drivenet_patch.world.sticker import SEGMENTS

    if args.segment is not None and args.segment not in SEGMENTS:
        raise PDNError(f"--segment must be one of {', '.join(SEGMENTS)}, got {args.segment!r}")
    if args.search_steps is not None and not args.search:
        raise PDNError("--search-steps needs --search")
    grouped = args.stickers > 1 or args.segment is not None or args.search > 0
    if grouped and ccfg is None:
        raise PDNError("--stickers, --segment and --search need --closed-loop (placements are judged by rollouts)")
    if grouped and args.target not in ("left", "right"):
        raise PDNError(f"--stickers, --segment and --search need --target left or right, got {args.target!r}")
    return grouped


def placement_text(placement: Any, target: str) -> list[str]:
    """Where to put each sticker of a group, one line each (for ``placement.txt`` and the print)."""
    from drivenet_patch.world.road import EGO_LANE_D

    where = {"any": "any point of the lane", "straight": "a straight stretch (straight 20 m either side)"}
    seg = placement.segment
    anchor = where.get(seg) or (f"the point where a {seg.rsplit('_', 1)[-1]} curve "
                                f"{'begins' if seg.startswith('curve_entry') else 'ends'}")
    lines = [f"{len(placement.parts)} stickers, {placement.area_m2:.2f} m² in all, pushing the car {target}; "
             f"distances along the ego lane from {anchor}, + = further on:"]
    for k, p in enumerate(placement.parts):
        side = placement.d - EGO_LANE_D + p.dd
        lines.append(f"sticker {k + 1}: {p.width_m:.2f} m across x {p.length_m:.2f} m along, centre {p.ds:+.2f} m "
                     f"along the road, {abs(side):.2f} m {'left' if side >= 0 else 'right'} of the lane centre, "
                     f"turned {p.yaw_deg:+.1f} deg (counter-clockwise); texture row 0 at the far end")
    return lines


def group_attack(model: Any, size: tuple[float, float], cfg: Any, ccfg: Any, args: argparse.Namespace,
                 generator: Any, palette: Any) -> tuple[Any, Any, Any]:
    """``--stickers`` / ``--segment`` / ``--search``: the group's placement (searched or given), then its textures
    optimised together closed-loop-aware. Returns ``(result, placement, search table or None)``."""
    from dataclasses import replace as dc_replace

    import numpy as np

    from attacks.approach import model_camera
    from attacks.closed_loop import make_approaches, optimize_closed_loop
    from attacks.placement_search import (
        PlacementCandidate,
        part_size,
        random_candidates,
        rollout_score,
        search_placement,
        segment_roads,
    )
    from attacks.sweep import LINE_WIDTH_M
    from drivenet_patch.driving.drive import ClosedLoopConfig
    from drivenet_patch.world.render import Renderer

    drive = ClosedLoopConfig()
    renderer = Renderer(model_camera(model), device=args.device)
    n = int(args.stickers)
    # N equal stickers: a line (at most twice a lane marking's width) cut into N lengths, any other shape the
    # 2.0 x 3.5 m shape at 1/N of the area
    psize = size if n == 1 else (size[0], size[1] / n) if size[0] <= 2 * LINE_WIDTH_M else part_size(size[0] * size[1], n)
    first = PlacementCandidate(segment=args.segment or "any", lateral_m=float(args.lateral))
    rng = np.random.default_rng([int(args.seed), ATTACK_SEED_BASE, 7])

    def approaches_for(placement: Any, roads: int) -> Any:
        found = segment_roads(ATTACK_SEED_BASE, args.seed, roads, placement, ccfg, drive)
        return make_approaches(found, placement, ccfg, np.random.default_rng([int(args.seed), ATTACK_SEED_BASE]),
                               drive, args.device)

    table = None
    best = first
    if args.search:
        cands = random_candidates(args.search, rng, first=first)
        search_roads = max(2, args.roads // 2)
        steps = args.search_steps or max(1, args.steps // 4)
        scfg = dc_replace(cfg, steps=steps)
        sccfg = dc_replace(ccfg, resim_every=min(ccfg.resim_every, steps))
        cache: dict[int, Any] = {}

        def optimise(placement: Any, i: int) -> Any:
            cache[i] = approaches_for(placement, search_roads)
            g = torch_generator(args.device, cfg.seed + i)
            return optimize_closed_loop(model, cache[i], scfg, sccfg, renderer, g, palette=palette, drive=drive)

        def score(placement: Any, result: Any) -> dict:
            i = max(cache)
            return rollout_score(model, cache[i], result.texture, renderer, args.target, drive)

        idx, table = search_placement(cands, optimise, score, psize, n, args.target)
        best = cands[idx]
    placement = best.placement(psize, n, args.target)
    approaches = approaches_for(placement, args.roads)
    result = optimize_closed_loop(model, approaches, cfg, ccfg, renderer, generator, progress=progress(args),
                                  palette=palette, drive=drive)
    result.config["placement"] = best.to_dict()
    return result, placement, table


def torch_generator(device: str, seed: int) -> Any:
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


# ---------------------------------------------------------------------------- pdn attack eval
def cmd_attack_eval(args: argparse.Namespace) -> int:
    import torch

    from attacks.approach import approach_scenes, check_scene_counts, frame_scene_set, model_camera
    from attacks.base import model_device
    from attacks.evaluate import CONTROLS, ApproachWindow, closed_loop_eval, control_textures, offline_eval
    from attacks.saliency_grab import saliency_capture
    from drivenet_patch.driving.drive import LANE_DEPARTURE_M, MAX_ROADS, ClosedLoopConfig, make_roads
    from drivenet_patch.models.patchdrive import has_patches
    from drivenet_patch.storage.atomic import write_csv, write_json
    from drivenet_patch.storage.folders import (
        check_output_folder,
        is_kind,
        prepare_output_folder,
        same_folder,
    )
    from drivenet_patch.world.road import EGO_LANE_D, LANE_WIDTH_M

    check_eval_flags(args)
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise PDNError(f"--threshold must be > 0 degrees, got {args.threshold}")
    if not 0 <= args.loop_roads <= MAX_ROADS:
        raise PDNError(f"--loop-roads must lie in [0, {MAX_ROADS}], got {args.loop_roads}")
    if args.loop_roads:
        ClosedLoopConfig().steps_for(float(args.km))  # a bad --km fails before the offline evaluation
    if not args.data:
        check_scene_counts(args.roads, args.poses)
    from attacks.artifact import read_attack

    check_output_folder(args.out or args.sticker, "attack eval")  # default: the attack folder itself
    if args.out is not None and not same_folder(args.out, args.sticker) and is_kind(args.out, "attack"):
        raise PDNError(f"--out: {args.out} is the attack folder of another sticker (its eval files are that "
                       "sticker's); choose a new or empty folder, or the --sticker folder itself")
    texture, placement, meta = read_attack(args.sticker)
    settings = meta["attack"]
    target = settings.get("target", "left")
    dirt = meta.get("mode") == "dirt"
    if dirt:
        texture = texture[:1]  # the grey multiplier was saved as an RGB image
    distance = tuple(meta.get("distance_m") or (5.0, 20.0))
    model = load_run(args.model, args.device)
    controls = control_textures(tuple(texture.shape[1:]), torch.Generator().manual_seed(int(args.seed)), dirt,
                                tuple(settings.get("dirt_range", (0.3, 1.0))))
    textures = {"sticker": texture, **controls}
    if args.data:
        size = (placement.width_m, placement.length_m)
        scenes = frame_scene_set(model, args.data, args.format, args.frames, distance, size, args.device, 1,
                                 float(meta.get("lateral_m", 0.0)))
    else:
        scenes = approach_scenes(model, placement, distance, args.roads, args.poses, args.seed, EVAL_SEED_BASE,
                                 args.device)
    results: dict[str, dict[str, Any]] = {}
    frames_tables, approach_tables, track_tables = [], [], []
    clean = None
    for name, tex in textures.items():
        frames, summary = offline_eval(model, scenes, tex, target, args.threshold, dirt, clean=clean)
        clean = torch.tensor(frames["clean_deg"].to_numpy(), device=model_device(model))
        frames.insert(0, "texture", name)
        frames_tables.append(frames)
        results[name] = summary
        if has_patches(model):  # patchdrive: share of frames whose sticker is inside a selected patch
            results[name].update(saliency_capture(model, scenes, tex, dirt))
    n_approaches = 0
    if args.loop_roads and not args.data:
        if dirt:
            raise PDNError("closed-loop evaluation of dirt-mode stickers is not supported (the renderer pastes "
                           "textures); pass --loop-roads 0 for the offline numbers")
        cfg = ClosedLoopConfig()
        steps = cfg.steps_for(float(args.km))
        roads = make_roads(args.loop_roads, steps, cfg, LOOP_SEED_BASE + 1000 * int(args.seed))
        # A sticker longer than the demo's 3.5 m widens the window by its extra half-length at both ends,
        # so the approach still begins 25 m before its near edge (a 32 m one is seen from 36 m before its centre).
        extra = max(0.0, 0.5 * placement.length_m - 1.75) if placement.kind == "road" else 0.0
        window = ApproachWindow(25.0 + extra, 20.0 + extra)
        for name, tex in [*textures.items(), ("none", None)]:  # "none": the same roads without any sticker
            approaches, summary, tracks = closed_loop_eval(model, tex, placement, roads, steps, model_camera(model), cfg,
                                                           seed=int(args.seed), window=window,
                                                           progress=progress(args), tracks=True)
            approaches.insert(0, "texture", name)
            tracks.insert(0, "texture", name)
            approach_tables.append(approaches)
            track_tables.append(tracks)
            results.setdefault(name, {}).update(summary)
            n_approaches = summary["n_approaches"]
    else:
        for r in results.values():
            r["departure_rate"] = None
    out_dir = prepare_output_folder(args.out or args.sticker, "attack eval")
    result = {**{k: results["sticker"].get(k) for k in ("mean_dev_deg", "mean_signed_dev_deg", "success_rate",
                                                          "departure_rate", "mean_dev_5_15m_deg", "autonomy_pct")},
              **({k: results["sticker"][k] for k in ("in_topk_rate", "in_top1_rate", "clean_in_topk_rate",
                                                      "weight_on_sticker", "clean_weight_on_sticker")}
                 if "in_topk_rate" in results["sticker"] else {}),
              **{f"control_{c}": results[c] for c in CONTROLS},
              "n_frames": results["sticker"]["n_frames"], "n_approaches": n_approaches,
              **({"no_sticker": results["none"]} if "none" in results else {}),
              "placement": {"width_m": placement.width_m, "length_m": placement.length_m, "kind": placement.kind,
                            "lateral_m": placement.d - EGO_LANE_D, "segment": placement.segment,
                            "area_m2": placement.area_m2,
                            "parts": [dict(vars(p)) for p in placement.parts]},
              "lane_departure_m": LANE_DEPARTURE_M, "lane_width_m": LANE_WIDTH_M,
              "target": target, "threshold_deg": float(args.threshold), "seed": int(args.seed),
              "model": str(args.model), "sticker": str(args.sticker), "source": "data" if args.data else "world"}
    import pandas as pd

    write_csv(Path(out_dir) / "eval_frames.csv", pd.concat(frames_tables, ignore_index=True), float_format="%.6g")
    if approach_tables:
        write_csv(Path(out_dir) / "eval_approaches.csv", pd.concat(approach_tables, ignore_index=True),
                  float_format="%.6g")
        write_csv(Path(out_dir) / "eval_tracks.csv", pd.concat(track_tables, ignore_index=True), float_format="%.5g")
    write_json(Path(out_dir) / "eval.json", result)

    def line(name: str, r: dict) -> str:
        dep = "n/a" if r.get("departure_rate") is None else f"{100 * r['departure_rate']:.0f}%"
        return (f"{name:8s} mean |dev| {r['mean_dev_deg']:6.2f} deg  success {100 * r['success_rate']:5.1f}%  "
                f"departures {dep}")

    text = "\n".join([f"{result['n_frames']} held-out frames, {n_approaches} closed-loop approaches "
                      f"(target {target}, threshold {args.threshold} deg)"]
                     + [line(n, results[n]) for n in ("sticker", *CONTROLS)])
    emit(result, args.json, text)
    return 0


cmd_attack.out_kind = "attack"  # type: ignore[attr-defined]  # --out's folder kind
cmd_attack_eval.out_kind = "attack eval"  # type: ignore[attr-defined]  # --out's folder kind
