"""``pdn train`` and ``pdn eval``: train a steering model, evaluate a run on a dataset."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivenet_patch.app.cli.common import (
    add_allow_outside,
    add_device_and_json,
    add_format,
    emit,
    progress,
    run_home,
)
from drivenet_patch.app.cli.common import add_command as command
from drivenet_patch.app.cli.flags import (
    BATCH,
    MAX_EPOCHS,
    MAX_LR,
    MAX_SAMPLES_PER_EPOCH,
    SEED,
    check_batch,
    check_work,
    count,
    real,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_TRAIN_SAMPLES


def cmd_train(args: argparse.Namespace) -> int:
    from drivenet_patch.training.train import QUICK, TrainConfig, train

    chosen = {k: getattr(args, k) for k in ("epochs", "batch", "lr", "samples_per_epoch") if getattr(args, k) is not None}
    settings = {**(QUICK if args.quick else {}), **chosen}
    model_cfg: dict[str, Any] = {}
    if args.init:
        model_cfg["init"] = args.init
    if args.input_size:
        from drivenet_patch.world.camera import parse_size

        model_cfg["input_size"] = tuple(parse_size(args.input_size, "--input-size"))
    model_cfg.update(_model_args(args.model, args.model_arg, model_cfg))
    _check_sizes(args, model_cfg)
    cfg = TrainConfig(model=args.model, model_cfg=model_cfg, seed=args.seed, loss=args.loss, photometric=args.photometric,
                      balance=not args.no_balance, augment=not args.no_augment, compile=args.compile,
                      channels_last=not args.no_channels_last, device=args.device, amp=not args.no_amp,
                      **settings)
    tb = _tensorboard_log(args.tensorboard, args.data[0]) if args.tensorboard else None
    try:
        summary = train(args.data, args.out, cfg, val=args.val, resume=args.resume, progress=progress(args),
                        allow_outside=args.allow_outside_paths, on_epoch=tb)
    finally:
        if tb is not None:
            tb.close()
    if summary["rank"] != 0:  # under torchrun only rank 0 reports
        return 0
    best = summary["best_val_rmse_deg"]
    text = (f"trained {cfg.model} for {summary['epochs']} epochs into {args.out}"
            + (f"; best validation RMSE {best:.3f} deg" if best is not None else ""))
    emit(summary, args.json, text)
    return 0


def _check_sizes(args: argparse.Namespace, model_cfg: dict[str, Any]) -> None:
    """A batch of the model's input and epochs x samples per epoch, bounded before any data is read."""
    from drivenet_patch.models.registry import model_defaults, parse_input_size

    if args.batch is not None:
        size = model_cfg.get("input_size") or model_defaults(args.model).get("input_size")
        if size is not None:
            check_batch("--batch", args.batch, parse_input_size(size, "--model-arg input_size"))
    if args.epochs is not None and args.samples_per_epoch is not None:
        check_work("samples", [("--epochs", args.epochs), ("--samples-per-epoch", args.samples_per_epoch)],
                   MAX_TRAIN_SAMPLES, "give fewer epochs or samples per epoch")


def _model_args(model: str, items: Sequence[str], given: dict[str, Any]) -> dict[str, Any]:
    """``--model-arg KEY=VALUE`` items -> config keys, refusing one that another flag already sets."""
    from drivenet_patch.models import parse_model_args

    extra = parse_model_args(model, items or [], where="--model-arg")
    both = sorted(set(extra) & set(given))
    if both:
        raise PDNError(f"--model-arg: {', '.join(both)} is already set by its own flag (--{both[0].replace('_', '-')})")
    return extra


def _tensorboard_log(logdir: str, data: str) -> Any:
    """A TensorBoard logger with a few frames of ``data`` logged once (the tensorboard extra)."""
    import numpy as np

    from drivenet_patch.data import open_dataset
    from drivenet_patch.training.tensorboard_log import TensorBoardLog

    tb = TensorBoardLog(logdir)
    ds = open_dataset(data)
    tb.frames(ds.frames(np.linspace(0, len(ds) - 1, min(8, len(ds))).astype(int)))
    return tb


def cmd_eval(args: argparse.Namespace) -> int:
    from drivenet_patch.models.zoo import is_zoo_ref
    from drivenet_patch.training.evaluation import evaluate

    out_csv = Path(args.out) if args.out else run_home(args.model) / "predictions.csv"
    if not is_zoo_ref(args.model) and not Path(args.model).is_dir():
        out_csv = Path(args.out or "predictions.csv")
    metrics = evaluate(args.model, args.data, out_csv=out_csv, device=args.device, progress=progress(args),
                       allow_outside=args.allow_outside_paths, allow_pickle=args.allow_pickle,
                       **({} if args.format == "auto" else {"format": args.format}))
    metrics["predictions_csv"] = str(out_csv)
    text = (f"n={metrics['n']}  RMSE {metrics['rmse_deg']:.3f} deg  MAE {metrics['mae_deg']:.3f} deg  "
            f"(always-zero RMSE {metrics['zero_rmse_deg']:.3f}, always-mean {metrics['mean_rmse_deg']:.3f}; "
            f"RMSE / zero = {metrics['rmse_over_zero']:.3f})  predictions: {out_csv}")
    emit(metrics, args.json, text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``eval`` to the ``pdn`` sub-commands ``sub``."""
    c = command(sub, "train", "train a steering model", cmd_train)
    c.add_argument("--data", required=True, action="append", help="training dataset (repeat for several)")
    c.add_argument("--val", help="validation dataset (default: hold out 10%% of the training episodes)")
    c.add_argument("--model", default="pilotnet", help="model name: pilotnet, pilotnet_tiny, resnet18, ...")
    c.add_argument("--init", help="local .safetensors weights to start a resnet18 backbone from")
    c.add_argument("--input-size", metavar="HxW",
                   help="model input size (default: the model's own, e.g. 66x200 for pilotnet, 160x320 for "
                        "patchdrive); the data is cropped and resized to it")
    c.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="a config key of the model (repeatable; stored in config.json), e.g. "
                        "selection_weight=0.01 for patchdrive; VALUE is read as JSON when it parses")
    c.add_argument("--out", required=True, help="run folder")
    c.add_argument("--epochs", type=count(MAX_EPOCHS, "a number of epochs"), help="epochs (default 10; --quick: 4)")
    c.add_argument("--batch", type=BATCH, help="batch size (default 64)")
    c.add_argument("--lr", type=real(0.0, MAX_LR, "a learning rate", low_open=True),
                   help="peak learning rate (default 1e-3; --quick: 2e-3)")
    c.add_argument("--samples-per-epoch", type=count(MAX_SAMPLES_PER_EPOCH, "a number of samples"),
                   help=f"frames drawn per epoch (default: dataset size; --epochs x this at most {MAX_TRAIN_SAMPLES:,})")
    c.add_argument("--seed", type=SEED, default=0, help="run seed (same seed -> same metrics)")
    c.add_argument("--loss", default="mse", choices=["mse", "huber"], help="training loss")
    c.add_argument("--no-balance", action="store_true", help="sample frames uniformly (no curve balancing)")
    c.add_argument("--no-augment", action="store_true", help="no augmentation")
    c.add_argument("--photometric", default="torch", choices=["albumentations", "torch"],
                   help="photometric jitter per image (albumentations) or batched on the tensor (torch, cheaper)")
    c.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    c.add_argument("--compile", action="store_true", help="torch.compile the model")
    c.add_argument("--no-amp", action="store_true",
                   help="on CUDA, train in float32 (default: the forward pass under bfloat16 autocast; no effect on CPU)")
    c.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    c.add_argument("--quick", action="store_true", help="a short recipe (about 2 minutes on 2 cores)")
    c.add_argument("--tensorboard", metavar="DIR",
                   help="also log loss, validation RMSE, lr, images/s per epoch and a few frames to TensorBoard "
                        "(needs the tensorboard extra)")
    add_allow_outside(c)
    add_device_and_json(c)

    c = command(sub, "eval", "evaluate a trained run on a dataset", cmd_eval)
    c.add_argument("--model", required=True, help="run folder (or model .safetensors with config.json beside it)")
    c.add_argument("--data", required=True, help="dataset folder or log file")
    add_format(c)
    c.add_argument("--out", help="per-frame predictions CSV (default RUN/predictions.csv)")
    c.add_argument("--allow-pickle", action="store_true",
                   help="accept a .pt/.pth state dict (read with torch.load(weights_only=True); trusted files only)")
    add_allow_outside(c)
    add_device_and_json(c)


cmd_eval.out_is_file = True  # type: ignore[attr-defined]  # --out is a CSV file, not a folder
cmd_train.out_kind = "run"  # type: ignore[attr-defined]  # --out's folder kind
