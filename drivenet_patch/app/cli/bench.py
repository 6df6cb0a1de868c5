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
    positive_int,
)
from drivenet_patch.app.cli.common import add_command as command
from drivenet_patch.safety.errors import PDNError


def cmd_bench_world(args: argparse.Namespace) -> int:
    from drivenet_patch.bench.timing import bench_world, format_table

    result = bench_world(frames=args.frames, compile=args.compile, device=args.device)
    emit(result, args.json, format_table(result))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from drivenet_patch.bench.timing import bench_train, format_table

    result = bench_train(batches=args.batches, device=args.device, compile=args.compile)
    emit(result, args.json, format_table(result))
    return 0


def cmd_bench_models(args: argparse.Namespace) -> int:
    from drivenet_patch.bench.timing import bench_models, format_table

    if args.batch > 1024:
        raise PDNError(f"--batch must be at most 1024, got {args.batch}")
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
    result = {"model": name, **bench_attack(model, steps=args.steps, batch=args.batch, device=args.device)}
    emit(result, args.json, format_table(result))
    return 0


def cmd_bench_defense(args: argparse.Namespace) -> int:
    from defenses.bench import bench_defense
    from drivenet_patch.bench.timing import format_table

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

    echo = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else print
    parts: dict[str, Any] = {"machine": machine(), "device": args.device}
    echo("bench 1/5: world rendering ...")
    parts["world"] = bench_world(frames=args.frames, compile=args.compile, device=args.device)
    echo("bench 2/5: training and inference ...")
    parts["train"] = bench_train(device=args.device, compile=args.compile)
    echo("bench 3/5: sticker attack vs ART ...")
    model = create_model("pilotnet", generator=torch.Generator().manual_seed(0)).to(args.device).eval()
    parts["attack"] = bench_attack(model, steps=args.attack_steps, batch=16, device=args.device)
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
    g.add_argument("--frames", type=positive_int, default=2048, help="world: frames per measurement")
    g.add_argument("--attack-steps", type=positive_int, default=40, help="attack: optimiser steps of each attack")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure torch.compile'd renderer and train step (default on)")
    g.add_argument("--no-art", action="store_true", help="skip the (slow) ART derandomized smoothing measurement")
    add_device_and_json(g)
    bench = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=Parser)
    c = command(bench, "world", "frames per second of batched world rendering", cmd_bench_world)
    c.add_argument("--frames", type=positive_int, default=2048, help="frames per measurement")
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the torch.compile'd renderer (default on)")
    add_device_and_json(c)
    c = command(bench, "train", "PilotNet train step, end-to-end training and inference images/s", cmd_bench_train)
    c.add_argument("--batches", type=positive_int, default=30, help="batches per end-to-end measurement")
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the torch.compile'd train step (default on)")
    add_device_and_json(c)
    c = command(bench, "models", "PatchDrive vs PilotNet inference: multiply-adds and images/s", cmd_bench_models)
    c.add_argument("--batch", type=positive_int, default=64, help="images per forward pass (default 64)")
    c.add_argument("--no-onnx", action="store_true",
                   help="skip the ONNX Runtime runs (default: with the deploy extra, export each model and time it "
                        "in ONNX Runtime beside PyTorch, same batch and threads; adds ResNet-18 and PatchVote)")
    add_device_and_json(c)
    c = command(bench, "attack", "sticker attack step vs ART AdversarialPatchPyTorch: s/step and deviation",
                cmd_bench_attack)
    c.add_argument("--model", help="trained run folder (default: an untrained PilotNet; timings only)")
    c.add_argument("--steps", type=positive_int, default=40, help="optimiser steps of each attack (default 40)")
    c.add_argument("--batch", type=positive_int, default=16, help="frames per step (default 16)")
    add_device_and_json(c)
    c = command(bench, "defense", "PatchVote vs PilotNet vs ART derandomized smoothing images/s; certify frames/s",
                cmd_bench_defense)
    c.add_argument("--model", help="PatchVote run folder (default: an untrained PatchVote; speed is the same)")
    c.add_argument("--no-art", action="store_true", help="skip the (slow) ART derandomized smoothing measurement")
    add_device_and_json(c)
    c = command(bench, "monitor", "closed-loop step time with and without the certified runtime monitor; "
                "vehicle-side certifier frames/s", cmd_bench_monitor)
    c.add_argument("--model", help="PatchVote run folder (default: an untrained PatchVote; speed is the same)")
    c.add_argument("--roads", type=positive_int, default=10, help="cars driven at once (default 10)")
    c.add_argument("--steps", type=positive_int, default=30, help="steps per timed drive (default 30)")
    add_json(c)
