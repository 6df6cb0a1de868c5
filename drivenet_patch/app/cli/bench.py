"""``pdn bench`` and its sub-commands: benchmarks, ratios measured side by side in one process."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from drivenet_patch.app.cli.common import (
    Parser,
    add_device_and_json,
    add_json,
    emit,
    load_run,
)
from drivenet_patch.app.cli.common import add_command as command
from drivenet_patch.app.cli.flags import (
    EOT_BATCH,
    MAX_BENCH_BATCHES,
    MAX_BENCH_FRAMES,
    MAX_BENCH_STEPS,
    MAX_DRIVE_ROADS,
    MAX_STICKER_STEPS,
    check_batch,
    check_work,
    count,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_ROAD_KM

#: Steps of a closed-loop drive per km (10 m/s, 0.1 s steps: drivenet_patch.driving.drive.ClosedLoopConfig).
STEPS_PER_KM = 1000
#: ``pdn bench monitor`` drives its roads this many times (with and without the monitor, best of 3).
MONITOR_DRIVES = 6


def _refuse_group_flags(args: argparse.Namespace) -> None:
    """``pdn bench --frames N world``: the group's flag would be overridden by the sub-command's: refused."""
    for dest in ("all_frames", "all_attack_steps"):
        if getattr(args, dest, None) is not None:
            flag = "--" + dest.removeprefix("all_").replace("_", "-")
            raise PDNError(f"{flag} {getattr(args, dest)} before the sub-command {args.subcommand!r} applies to "
                           f"pdn bench without a sub-command only: put it after {args.subcommand!r}, or drop it")


def cmd_bench_world(args: argparse.Namespace) -> int:
    from drivenet_patch.bench.timing import bench_world, format_table

    _refuse_group_flags(args)

    result = bench_world(frames=args.frames, compile=args.compile, device=args.device)
    emit(result, args.json, format_table(result))
    return 0


def train_models(model: str | None = None, items: list[str] | None = None) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The models ``pdn bench train`` measures: ``model`` with its ``--model-arg`` items, or by default
    PilotNet, PatchVote with each region layout of ``defenses.regions.LAYOUTS`` and every other registered
    PatchVote preset (a ``patchvote_*`` model, the small test models left out)."""
    from defenses.regions import LAYOUTS
    from drivenet_patch.models import parse_model_args
    from drivenet_patch.models.registry import list_models

    if model is not None:
        return ((model, parse_model_args(model, items or [], where="--model-arg")),)
    if items:
        raise PDNError("--model-arg needs --model (the model whose config key it sets)")
    presets = [n for n in list_models() if n.startswith("patchvote_") and not n.endswith("_tiny")]
    return (("pilotnet", {}), *(("patchvote", {"layout": layout}) for layout in LAYOUTS),
            *((n, {}) for n in presets))


def cmd_bench_train(args: argparse.Namespace) -> int:
    from drivenet_patch.bench.timing import bench_train

    _refuse_group_flags(args)
    models = train_models(args.model, args.model_arg)
    result = bench_train(batches=args.batches, device=args.device, compile=args.compile, models=models,
                         data=args.data)
    text = train_table(result)
    if args.breakdown:
        from drivenet_patch.bench.timing import train_breakdown

        result["breakdown_ms_per_batch"] = train_breakdown(args.data, batches=args.batches or 30, device=args.device)
        text += "\nPilotNet, ms per batch of 64, stage by stage: " + ", ".join(
            f"{k} {v}" for k, v in result["breakdown_ms_per_batch"].items())
    emit(result, args.json, text)
    return 0


def train_table(result: dict[str, Any]) -> str:
    """``pdn bench train``'s plain-text table: one row per model."""
    head = (f"{'model':<28} {'e2e img/s':>10} {'bare img/s':>11} {'e2e/bare':>9} {'infer img/s':>12} "
            f"{'train/PilotNet':>15} {'infer/PilotNet':>15}")
    lines = [head, "-" * len(head)]
    for r in result["models"]:
        name = r["model"] + (f" ({r['layout']})" if r.get("layout") else "")
        lines.append(f"{name:<28} {r['e2e_img_s']:>10.0f} {r['bare_img_s']:>11.0f} {r['e2e_over_bare']:>9.3f} "
                     f"{r['infer_img_s']:>12.0f} {r.get('train_over_pilotnet', float('nan')):>15.3f} "
                     f"{r.get('infer_over_pilotnet', float('nan')):>15.3f}")
    pilot = next((r for r in result["models"] if r["model"] == "pilotnet"), None)
    lines.append(f"matmul 2048x2048: {result['matmul_gflops']} GFLOP/s" + (
        f"; PilotNet bare train step {pilot['train_gflops']} GFLOP/s ({pilot['train_share_of_matmul']:.0%}), "
        f"inference {pilot['infer_gflops']} GFLOP/s ({pilot['infer_share_of_matmul']:.0%})" if pilot else ""))
    if "compile_s" in result:
        lines.append(f"PilotNet bare step eager / torch.compile: {result['train_step_img_s_eager']} / "
                     f"{result['train_step_img_s_compiled']} img/s (compile {result['compile_s']} s)")
    return "\n".join(lines)


def cmd_bench_models(args: argparse.Namespace) -> int:
    from drivenet_patch.bench.timing import bench_models, format_table

    _refuse_group_flags(args)
    result = bench_models(batch=args.batch, device=args.device, onnx=not args.no_onnx)
    emit(result, args.json, format_table(result))
    return 0


def cmd_bench_attack(args: argparse.Namespace) -> int:
    import torch

    from attacks.bench import bench_attack
    from drivenet_patch.bench.timing import format_table
    from drivenet_patch.models import create_model

    if args.model:
        model, name = load_run(args.model, args.device), str(args.model)
    else:  # timings hold for any weights; the deviations mean little for an untrained model
        model = create_model("pilotnet", generator=torch.Generator().manual_seed(0)).to(args.device).eval()
        name = "untrained pilotnet (seed 0)"
    _refuse_group_flags(args)
    check_batch("--batch", args.batch, model.input_size)
    result = {"model": name, **bench_attack(model, steps=args.steps, batch=args.batch, device=args.device)}
    emit(result, args.json, format_table(result))
    return 0


def cmd_bench_defense(args: argparse.Namespace) -> int:
    from defenses.bench import bench_defense
    from drivenet_patch.bench.timing import format_table

    _refuse_group_flags(args)
    model, name = None, "untrained patchvote (seed 0)"
    if args.model:
        model, name = load_run(args.model, args.device), str(args.model)
        if not hasattr(model, "votes"):
            raise PDNError(f"--model: {args.model} is not a PatchVote model")
    result = {"model": name, **bench_defense(model, device=args.device, art=not args.no_art)}
    emit(result, args.json, format_table(result))
    return 0


# ---------------------------------------------------------------------------- parser
def cmd_bench_monitor(args: argparse.Namespace) -> int:
    from defenses.bench import bench_monitor
    from drivenet_patch.bench.timing import format_table

    _refuse_group_flags(args)
    check_work("road-steps", [("--roads", args.roads), ("--steps", args.steps), ("drives", MONITOR_DRIVES)],
               MAX_ROAD_KM * STEPS_PER_KM, "give fewer roads or steps")
    model = load_run(args.model, "cpu") if args.model else None
    result = {"model": args.model or "untrained patchvote (seed 0)",
              **bench_monitor(model, roads=args.roads, steps=args.steps)}
    emit(result, args.json, format_table(result))
    return 0


def cmd_bench_all(args: argparse.Namespace) -> int:
    """``pdn bench`` with no sub-command: every benchmark in one process, then one table of ratios."""
    import torch

    from attacks.bench import bench_attack
    from defenses.bench import bench_defense
    from drivenet_patch.bench.timing import bench_models, bench_train, bench_world, machine, ratio_table
    from drivenet_patch.models import create_model

    frames = 512 if args.all_frames is None else args.all_frames
    steps = 40 if args.all_attack_steps is None else args.all_attack_steps
    echo = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else print
    parts: dict[str, Any] = {"machine": machine(), "device": args.device}
    echo("bench 1/5: world rendering ...")
    parts["world"] = bench_world(frames=frames, compile=args.compile, device=args.device)
    echo("bench 2/5: training and inference ...")
    parts["train"] = bench_train(device=args.device, compile=args.compile)
    echo("bench 3/5: sticker attack vs ART ...")
    model = create_model("pilotnet", generator=torch.Generator().manual_seed(0)).to(args.device).eval()
    parts["attack"] = bench_attack(model, steps=steps, batch=16, device=args.device)
    echo("bench 4/5: PatchVote vs PilotNet vs ART derandomized smoothing ...")
    parts["defense"] = bench_defense(None, device=args.device, art=not args.no_art)
    echo("bench 5/5: PatchDrive vs PilotNet inference cost ...")
    parts["models"] = bench_models(device=args.device)
    parts["ratios"] = ratio_table(parts)
    text = "\n".join(f"{r['measure']:<58} {r['value']:>10.3g}  {r['detail']}" for r in parts["ratios"])
    emit(parts, args.json, f"{'ratio (measured side by side)':<58} {'value':>10}\n" + "-" * 90 + "\n" + text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` (and its sub-commands) to the ``pdn`` sub-commands ``sub``."""
    help_ = "benchmarks (ratios measured side by side in one process); no sub-command: all of them"
    g = sub.add_parser("bench", help=help_, description=help_ + ", then one table of ratios")
    g.set_defaults(fn=cmd_bench_all)
    g.add_argument("--frames", dest="all_frames", metavar="FRAMES", type=count(MAX_BENCH_FRAMES, "a number of frames"),
                   help=f"world: frames per measurement (default 512; at most {MAX_BENCH_FRAMES:,})")
    g.add_argument("--attack-steps", dest="all_attack_steps", metavar="STEPS",
                   type=count(MAX_STICKER_STEPS, "a number of steps"),
                   help=f"attack: optimiser steps of each attack (default 40; at most {MAX_STICKER_STEPS})")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure torch.compile'd renderer and train step (default on)")
    g.add_argument("--no-art", action="store_true", help="skip the (slow) ART derandomized smoothing measurement")
    add_device_and_json(g)
    bench = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=Parser)
    c = command(bench, "world", "frames per second of batched world rendering", cmd_bench_world)
    c.add_argument("--frames", type=count(MAX_BENCH_FRAMES, "a number of frames"), default=512,
                   help=f"frames per measurement (default 512; at most {MAX_BENCH_FRAMES:,})")
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the torch.compile'd renderer (default on)")
    add_device_and_json(c)
    c = command(bench, "train", "end-to-end training vs the bare train step and inference, images/s, for PilotNet "
                "and each PatchVote layout", cmd_bench_train)
    c.add_argument("--batches", type=count(MAX_BENCH_BATCHES, "a number of batches"),
                   help="train steps per measurement (default: 6 to 30, about 0.75 s of each model's step)")
    c.add_argument("--model", help="measure this registered model only (default: PilotNet, PatchVote with each "
                                   "region layout and every PatchVote preset)")
    c.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="a config key of --model (repeatable), e.g. layout=strips")
    c.add_argument("--data", help="dataset folder to train from (default: 1,024 world frames rendered for it)")
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="also measure PilotNet's torch.compile'd train step (default off)")
    c.add_argument("--breakdown", action="store_true",
                   help="also time PilotNet's training batch stage by stage (gather, warp and flip, float "
                        "conversion with photometric jitter, forward, backward, optimizer), one after the other")
    add_device_and_json(c)
    c = command(bench, "models", "PatchDrive vs PilotNet inference: multiply-adds and images/s", cmd_bench_models)
    c.add_argument("--batch", type=count(1024, "a batch size"), default=64,
                   help="images per forward pass (default 64; at most 1024)")
    c.add_argument("--no-onnx", action="store_true",
                   help="skip the ONNX Runtime runs (default: with the deploy extra, export each model and time it "
                        "in ONNX Runtime beside PyTorch, same batch and threads; adds ResNet-18 and PatchVote)")
    add_device_and_json(c)
    c = command(bench, "attack", "sticker attack step vs ART AdversarialPatchPyTorch: s/step and deviation",
                cmd_bench_attack)
    c.add_argument("--model", help="trained run folder (default: an untrained PilotNet; timings only)")
    c.add_argument("--steps", type=count(MAX_STICKER_STEPS, "a number of steps"), default=40,
                   help=f"optimiser steps of each attack (default 40; at most {MAX_STICKER_STEPS})")
    c.add_argument("--batch", type=EOT_BATCH, default=16, help="frames per step (default 16)")
    add_device_and_json(c)
    c = command(bench, "defense", "PatchVote vs PilotNet vs ART derandomized smoothing images/s; certify frames/s",
                cmd_bench_defense)
    c.add_argument("--model", help="PatchVote run folder (default: an untrained PatchVote; speed is the same)")
    c.add_argument("--no-art", action="store_true", help="skip the (slow) ART derandomized smoothing measurement")
    add_device_and_json(c)
    c = command(bench, "monitor", "closed-loop step time with and without the certified runtime monitor; "
                "vehicle-side certifier frames/s", cmd_bench_monitor)
    c.add_argument("--model", help="PatchVote run folder (default: an untrained PatchVote; speed is the same)")
    c.add_argument("--roads", type=count(MAX_DRIVE_ROADS, "a number of roads"), default=10,
                   help="cars driven at once (default 10)")
    c.add_argument("--steps", type=count(MAX_BENCH_STEPS, "a number of steps"), default=30,
                   help=f"steps per timed drive (default 30; --roads x --steps x {MONITOR_DRIVES} drives at most "
                        f"{MAX_ROAD_KM * STEPS_PER_KM:,.0f})")
    add_json(c)
