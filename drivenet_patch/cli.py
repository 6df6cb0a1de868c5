"""The ``pdn`` command line.

Every command that measures something takes ``--json`` and then prints exactly one JSON
object on stdout. Bad input prints ``pdn: error: <one line>`` on stderr and exits with 2.
Progress bars go to stderr, and only when it is a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from drivenet_patch import __version__
from drivenet_patch.errors import PDNError, one_line


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _emit(result: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        from drivenet_patch.inputs import dumps_strict

        text_json, replaced = dumps_strict(result, sort_keys=True, default=str)
        if replaced:  # strict JSON has no NaN/Infinity: say which values became null, and why
            print(f"pdn: note: not finite, written as null: {', '.join(replaced)[:200]}", file=sys.stderr)
        print(text_json)
    else:
        print(text if text is not None else "\n".join(f"{k}: {v}" for k, v in result.items()))


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "json", False) and sys.stderr.isatty()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------------------- data
def cmd_data_synth(args: argparse.Namespace) -> int:
    from drivenet_patch.data.synthesize import parse_cameras, synthesize
    from drivenet_patch.world.camera import parse_size

    meta = synthesize(
        args.out, args.frames, seed=args.seed, size=parse_size(args.size), cameras=parse_cameras(args.cameras),
        episode_steps=args.episode_steps, compile=args.compile, device=args.device, progress=_progress(args),
    )
    result = {"out": str(args.out), "frames": meta["frames"], "episodes": meta["episodes"], "size": meta["size"],
              "cameras": list(meta["cameras"])}
    _emit(result, args.json, f"wrote {meta['frames']} frames ({meta['episodes']} episodes) to {args.out}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from drivenet_patch.data.check import check_dataset, format_report

    report = check_dataset(args.path, format=args.format, allow_outside=args.allow_outside_paths)
    _emit(report, args.json, format_report(report))
    return 0


# ---------------------------------------------------------------------------- world
def cmd_world_preview(args: argparse.Namespace) -> int:
    import cv2

    from drivenet_patch.io import atomic_path
    from drivenet_patch.world.camera import parse_size
    from drivenet_patch.world.preview import preview_grid

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise PDNError(f"--out: expected a .png or .jpg file name, got {args.out!r}")
    grid = preview_grid(seed=args.seed, size=parse_size(args.size))
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise PDNError(f"--out: could not write {out}")
    _emit({"out": str(out), "height": int(grid.shape[0]), "width": int(grid.shape[1])}, args.json,
          f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------- models
def cmd_train(args: argparse.Namespace) -> int:
    from drivenet_patch.train import QUICK, TrainConfig, train

    chosen = {k: getattr(args, k) for k in ("epochs", "batch", "lr", "samples_per_epoch") if getattr(args, k) is not None}
    settings = {**(QUICK if args.quick else {}), **chosen}
    model_cfg: dict[str, Any] = {}
    if args.init:
        model_cfg["init"] = args.init
    if args.input_size:
        from drivenet_patch.world.camera import parse_size

        model_cfg["input_size"] = tuple(parse_size(args.input_size, "--input-size"))
    cfg = TrainConfig(model=args.model, model_cfg=model_cfg, seed=args.seed, loss=args.loss, photometric=args.photometric,
                      balance=not args.no_balance, augment=not args.no_augment, compile=args.compile,
                      channels_last=not args.no_channels_last, device=args.device, **settings)
    summary = train(args.data, args.out, cfg, val=args.val, resume=args.resume, progress=_progress(args),
                    allow_outside=args.allow_outside_paths)
    if summary["rank"] != 0:  # under torchrun only rank 0 reports
        return 0
    best = summary["best_val_rmse_deg"]
    text = (f"trained {cfg.model} for {summary['epochs']} epochs into {args.out}"
            + (f"; best validation RMSE {best:.3f} deg" if best is not None else ""))
    _emit(summary, args.json, text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from drivenet_patch.train import evaluate

    out_csv = Path(args.out) if args.out else Path(args.model) / "predictions.csv"
    if not Path(args.model).is_dir():
        out_csv = Path(args.out or "predictions.csv")
    metrics = evaluate(args.model, args.data, out_csv=out_csv, device=args.device, progress=_progress(args),
                       allow_outside=args.allow_outside_paths, allow_pickle=args.allow_pickle,
                       **({} if args.format == "auto" else {"format": args.format}))
    metrics["predictions_csv"] = str(out_csv)
    text = (f"n={metrics['n']}  RMSE {metrics['rmse_deg']:.3f} deg  MAE {metrics['mae_deg']:.3f} deg  "
            f"(always-zero RMSE {metrics['zero_rmse_deg']:.3f}, always-mean {metrics['mean_rmse_deg']:.3f}; "
            f"RMSE / zero = {metrics['rmse_over_zero']:.3f})  predictions: {out_csv}")
    _emit(metrics, args.json, text)
    return 0


# ---------------------------------------------------------------------------- bench
def cmd_bench_world(args: argparse.Namespace) -> int:
    from drivenet_patch.bench import bench_world, format_table

    result = bench_world(frames=args.frames, compile=args.compile, device=args.device)
    _emit(result, args.json, format_table(result))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from drivenet_patch.bench import bench_train, format_table

    result = bench_train(batches=args.batches, device=args.device, compile=args.compile)
    _emit(result, args.json, format_table(result))
    return 0


def cmd_bench_models(args: argparse.Namespace) -> int:
    from drivenet_patch.bench import bench_models, format_table

    if args.batch > 1024:
        raise PDNError(f"--batch must be at most 1024, got {args.batch}")
    result = bench_models(batch=args.batch, device=args.device)
    _emit(result, args.json, format_table(result))
    return 0


def cmd_bench_attack(args: argparse.Namespace) -> int:
    import torch

    from attacks.bench import bench_attack
    from drivenet_patch.bench import format_table
    from drivenet_patch.models import create_model

    if args.model:
        from attacks.cli import _load_model

        model, name = _load_model(args.model, args.device), str(args.model)
    else:  # timings hold for any weights; the deviations mean little for an untrained model
        model = create_model("pilotnet", generator=torch.Generator().manual_seed(0)).to(args.device).eval()
        name = "untrained pilotnet (seed 0)"
    result = {"model": name, **bench_attack(model, steps=args.steps, batch=args.batch, device=args.device)}
    _emit(result, args.json, format_table(result))
    return 0


def cmd_bench_defense(args: argparse.Namespace) -> int:
    from defenses.bench import bench_defense
    from drivenet_patch.bench import format_table

    model, name = None, "untrained patchvote (seed 0)"
    if args.model:
        from attacks.cli import _load_model

        model, name = _load_model(args.model, args.device), str(args.model)
        if not hasattr(model, "votes"):
            raise PDNError(f"--model: {args.model} is not a PatchVote model")
    result = {"model": name, **bench_defense(model, device=args.device, art=not args.no_art)}
    _emit(result, args.json, format_table(result))
    return 0


# ---------------------------------------------------------------------------- parser
def cmd_bench_all(args: argparse.Namespace) -> int:
    """``pdn bench`` with no sub-command: every benchmark in one process, then one table of ratios."""
    import torch

    from attacks.bench import bench_attack
    from defenses.bench import bench_defense
    from drivenet_patch.bench import bench_models, bench_train, bench_world, machine, ratio_table
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
    _emit(parts, args.json, f"{'ratio (measured side by side)':<58} {'value':>10}\n" + "-" * 90 + "\n" + text)
    return 0


def _json(c: argparse.ArgumentParser) -> None:
    c.add_argument("--json", action="store_true", help="print one JSON object")


def _allow_outside(c: argparse.ArgumentParser) -> None:
    c.add_argument("--allow-outside-paths", action="store_true",
                   help="let dataset logs name images outside the dataset folder (refused by default)")


def _device_and_json(c: argparse.ArgumentParser) -> None:
    c.add_argument("--device", default="cpu", help="torch device (default cpu)")
    _json(c)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pdn", description="PatchDriveNet: steering models, adversarial stickers, certified defenses.")
    p.add_argument("--version", action="version", version=f"pdn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def group(name: str, help_: str) -> argparse._SubParsersAction:
        g = sub.add_parser(name, help=help_, description=help_)
        s = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
        s.required = True
        return s

    def command(parent: argparse._SubParsersAction, name: str, help_: str,
                fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        c = parent.add_parser(name, help=help_, description=help_)
        c.set_defaults(fn=fn)
        return c

    data = group("data", "make and inspect datasets")
    c = command(data, "synth", "render a dataset from the built-in driving world", cmd_data_synth)
    c.add_argument("--out", required=True, type=Path, help="output folder (images.npy, labels.csv, meta.json)")
    c.add_argument("--frames", required=True, type=_positive_int, help="number of frames to write")
    c.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same dataset)")
    c.add_argument("--size", default="66x200", help="frame size HxW (default 66x200; 160x320 also common)")
    c.add_argument("--cameras", default="center", help="comma-separated: center,left,right (default center)")
    c.add_argument("--episode-steps", type=_positive_int, default=300, help="simulation steps per episode (0.1 s)")
    c.add_argument("--compile", action="store_true", help="torch.compile the renderer (faster for large N)")
    _device_and_json(c)

    c = command(data, "check", "parse a dataset, decode its frames and report statistics and problems",
                cmd_data_check)
    c.add_argument("path", help="dataset folder or log file")
    c.add_argument("--format", default="auto",
                   help="auto|synth|udacity-sim|udacity-ch2|sullychen|commaai (default auto)")
    _allow_outside(c)
    _json(c)

    world = group("world", "the built-in driving world")
    c = command(world, "preview", "render a labelled grid of standard world views", cmd_world_preview)
    c.add_argument("--out", required=True, help="output image (.png)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random road and style")
    c.add_argument("--size", default="132x400", help="tile size HxW (default 132x400: the model view at 2x)")
    _json(c)

    c = command(sub, "train", "train a steering model", cmd_train)
    c.add_argument("--data", required=True, action="append", help="training dataset (repeat for several)")
    c.add_argument("--val", help="validation dataset (default: hold out 10%% of the training episodes)")
    c.add_argument("--model", default="pilotnet", help="model name: pilotnet, pilotnet_tiny, resnet18, ...")
    c.add_argument("--init", help="local .safetensors weights to start a resnet18 backbone from")
    c.add_argument("--input-size", metavar="HxW",
                   help="model input size (default: the model's own, e.g. 66x200 for pilotnet, 160x320 for "
                        "patchdrive); the data is cropped and resized to it")
    c.add_argument("--out", required=True, help="run folder")
    c.add_argument("--epochs", type=_positive_int, help="epochs (default 10; --quick: 4)")
    c.add_argument("--batch", type=_positive_int, help="batch size (default 64)")
    c.add_argument("--lr", type=float, help="peak learning rate (default 1e-3; --quick: 2e-3)")
    c.add_argument("--samples-per-epoch", type=_positive_int, help="frames drawn per epoch (default: dataset size)")
    c.add_argument("--seed", type=int, default=0, help="run seed (same seed -> same metrics)")
    c.add_argument("--loss", default="mse", choices=["mse", "huber"], help="training loss")
    c.add_argument("--no-balance", action="store_true", help="sample frames uniformly (no curve balancing)")
    c.add_argument("--no-augment", action="store_true", help="no augmentation")
    c.add_argument("--photometric", default="torch", choices=["albumentations", "torch"],
                   help="photometric jitter per image (albumentations) or batched on the tensor (torch, cheaper)")
    c.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    c.add_argument("--compile", action="store_true", help="torch.compile the model")
    c.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    c.add_argument("--quick", action="store_true", help="a short recipe (about 2 minutes on 2 cores)")
    _allow_outside(c)
    _device_and_json(c)

    c = command(sub, "eval", "evaluate a trained run on a dataset", cmd_eval)
    c.add_argument("--model", required=True, help="run folder (or model .safetensors with config.json beside it)")
    c.add_argument("--data", required=True, help="dataset folder or log file")
    c.add_argument("--format", default="auto", help="dataset format (default auto)")
    c.add_argument("--out", help="per-frame predictions CSV (default RUN/predictions.csv)")
    c.add_argument("--allow-pickle", action="store_true",
                   help="accept a .pt/.pth state dict (read with torch.load(weights_only=True); trusted files only)")
    _allow_outside(c)
    _device_and_json(c)

    from drivenet_patch.drive_cli import add_drive_command
    from drivenet_patch.models.cli import add_saliency_command

    add_drive_command(sub)
    add_saliency_command(sub)
    from attacks.cli import add_attack_commands
    from defenses.cli import add_certify_command
    from drivenet_patch.report_cli import add_report_command

    add_attack_commands(sub)
    add_certify_command(sub)
    add_report_command(sub)
    from drivenet_patch.demo import add_demo_command

    add_demo_command(sub)

    help_ = "benchmarks (ratios measured side by side in one process); no sub-command: all of them"
    g = sub.add_parser("bench", help=help_, description=help_ + ", then one table of ratios")
    g.set_defaults(fn=cmd_bench_all)
    g.add_argument("--frames", type=_positive_int, default=2048, help="world: frames per measurement")
    g.add_argument("--attack-steps", type=_positive_int, default=40, help="attack: optimiser steps of each attack")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure torch.compile'd renderer and train step (default on)")
    g.add_argument("--no-art", action="store_true", help="skip the (slow) ART derandomized smoothing measurement")
    _device_and_json(g)
    bench = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
    c = command(bench, "world", "frames per second of batched world rendering", cmd_bench_world)
    c.add_argument("--frames", type=_positive_int, default=2048, help="frames per measurement")
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the torch.compile'd renderer (default on)")
    _device_and_json(c)
    c = command(bench, "train", "PilotNet train step, end-to-end training and inference images/s", cmd_bench_train)
    c.add_argument("--batches", type=_positive_int, default=30, help="batches per end-to-end measurement")
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the torch.compile'd train step (default on)")
    _device_and_json(c)
    c = command(bench, "models", "PatchDrive vs PilotNet inference: multiply-adds and images/s", cmd_bench_models)
    c.add_argument("--batch", type=_positive_int, default=64, help="images per forward pass (default 64)")
    _device_and_json(c)
    c = command(bench, "attack", "sticker attack step vs ART AdversarialPatchPyTorch: s/step and deviation",
                cmd_bench_attack)
    c.add_argument("--model", help="trained run folder (default: an untrained PilotNet; timings only)")
    c.add_argument("--steps", type=_positive_int, default=40, help="optimiser steps of each attack (default 40)")
    c.add_argument("--batch", type=_positive_int, default=16, help="frames per step (default 16)")
    _device_and_json(c)
    c = command(bench, "defense", "PatchVote vs PilotNet vs ART derandomized smoothing images/s; certify frames/s",
                cmd_bench_defense)
    c.add_argument("--model", help="PatchVote run folder (default: an untrained PatchVote; speed is the same)")
    c.add_argument("--no-art", action="store_true", help="skip the (slow) ART derandomized smoothing measurement")
    _device_and_json(c)
    return p


def _os_error_line(exc: OSError) -> str:
    """``OSError`` -> ``"<path>: <reason>"`` on one line (``"<a> -> <b>: <reason>"`` for a rename)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason.replace("\n", " ")
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {reason}".replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    from attacks.cli import route_argv

    parser = build_parser()
    args = parser.parse_args(route_argv(list(sys.argv[1:] if argv is None else argv)))
    # Warnings (torch, numpy) are held back until the command ends: a refusal stays one line.
    with warnings.catch_warnings(record=True) as held:
        rc = _run_command(args)
    if rc == 0:
        for w in held:
            print(warnings.formatwarning(w.message, w.category, w.filename, w.lineno).rstrip(), file=sys.stderr)
    return rc


#: Options that name files or folders a command reads, and those naming what it writes.
_INPUT_OPTIONS = ("model", "data", "val", "sticker", "palette", "init", "path", "paths")
_OUTPUT_OPTIONS = ("out", "video")


def _check_paths(args: argparse.Namespace) -> None:
    """Every command's path arguments, checked once before it runs: no FIFO or device as an input
    (it would block forever), no output written over an input or over a model or dataset file."""
    from drivenet_patch.inputs import check_input_path, check_output

    inputs: list[str] = []
    for name in _INPUT_OPTIONS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, Path)) and str(item):
                check_input_path(item, f"--{name}" if name not in ("path", "paths") else "PATH")
                inputs.append(str(item))
    sticker = getattr(args, "sticker", None)
    for name in _OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, (str, Path)) and str(value):
            is_file = name == "video" or args.fn in (cmd_eval, cmd_world_preview)
            check_output(value, inputs, f"--{name}", is_file=is_file, own_names=("predictions.csv",),
                         may_equal=[sticker] if sticker else [])


def _run_command(args: argparse.Namespace) -> int:
    try:
        if isinstance(getattr(args, "device", None), str):  # every command's --device, checked once here
            from drivenet_patch.inputs import check_device

            args.device = check_device(args.device)
        _check_paths(args)
        return int(args.fn(args) or 0)
    except PDNError as exc:
        print(f"pdn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (not a folder, no permission, disk full): one line, no traceback
        print(f"pdn: error: {one_line(_os_error_line(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdn: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``pdn`` program: :func:`main`, then exit with its status.

    After a multi-process (``torchrun``) command the process ends with ``os._exit`` once its
    output is flushed, skipping interpreter shutdown, which can abort while gloo's worker
    threads are alive (see :func:`drivenet_patch.train.group_threads_left`); every file has
    been written and closed by then.
    """
    rc = main()
    from drivenet_patch.train import group_threads_left

    if group_threads_left():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run()
