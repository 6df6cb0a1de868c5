"""Training of steering models (``pdn train``): the run folder, the epoch loop and the resume point.

A run folder holds ``config.json`` (model + training configuration), ``model.safetensors``
(the best checkpoint by validation RMSE), ``last.safetensors`` (the latest weights),
``train_state.safetensors`` (weights, optimizer, epoch and metrics history in one file: the
resume point) and ``metrics.csv`` (one row per epoch). Nothing is pickled.

Crash safety: every file is written to a temporary name and renamed into place, and the resume
point is one file, renamed after the epoch's weights and before its metrics.csv row, so a run
killed at any moment (even ``kill -9`` during a write) resumes from its last complete epoch;
weights of a later, unfinished epoch are simply rewritten, and an epoch listed in metrics.csv is
never trained again.

Determinism: model initialisation, sampling, augmentation and dropout are all seeded from the run
seed and the epoch number (no RNG state needs saving), inside ``torch.random.fork_rng`` so the
caller's global RNG is left alone; a resumed run therefore ends with the same metrics and
weights as an uninterrupted run.

Several processes: under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`train` joins the process group
(gloo on CPU, nccl on CUDA) and wraps the model in ``DistributedDataParallel``. Every rank draws
the same frames per epoch from the run seed and takes a disjoint share of each batch, so
``--batch`` stays the global batch; validation is split the same way; only rank 0 writes files.

The parts live beside this module: :mod:`drivenet_patch.training.config` (the configuration),
:mod:`drivenet_patch.training.data` (batches), :mod:`drivenet_patch.training.distributed` (the process group),
:mod:`drivenet_patch.training.evaluation` (predictions and metrics).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import folder_file, read_json_object
from drivenet_patch.storage.atomic import write_csv, write_json
from drivenet_patch.storage.folders import check_output_folder, prepare_output_folder
from drivenet_patch.storage.state import (
    check_finite,
    load_state,
    pack_state,
    read_state_meta,
    save_state,
    unpack_state,
)
from drivenet_patch.training.augment import Augmenter
from drivenet_patch.training.config import QUICK, TrainConfig, autocast_for, check_device
from drivenet_patch.training.data import (
    Concat,
    Subset,
    correction_horizon_s,
    load_training_data,
    prefetch,
    tensor_batches,
)
from drivenet_patch.training.distributed import (
    Dist,
    all_same,
    group_threads_left,
    init_distributed,
    leave_group,
)
from drivenet_patch.training.evaluation import predict_all, regression_metrics

__all__ = ["QUICK", "STATE_FORMAT", "STATE_NAME", "TrainConfig", "group_threads_left", "train"]

STATE_NAME = "train_state.safetensors"
STATE_FORMAT = 2


class _Objective(torch.nn.Module):
    """The training loss as a module, so DistributedDataParallel sees the parameters it uses.

    A model with its own objective defines ``training_loss(x, y, loss_name) -> scalar``
    (e.g. PatchVote: every region vote and the aggregate); otherwise MSE or Huber (delta 1 deg).
    """

    def __init__(self, model: torch.nn.Module, loss: str) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        own = getattr(self.model, "training_loss", None)
        if own is not None:
            return own(x, y, self.loss)
        pred = self.model(x)
        return F.mse_loss(pred, y) if self.loss == "mse" else F.huber_loss(pred, y, delta=1.0)


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Cosine decay from lr to 5% of it over the run (per epoch)."""
    frac = epoch / max(cfg.epochs - 1, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _has_trained_epoch(out: Path) -> bool:
    """True when the run folder holds weights or a resume point: a folder where a run failed or was
    killed before its first epoch ended (only ``config.json``) may be started afresh."""
    return (out / STATE_NAME).exists() or any(out.glob("*.safetensors"))


def _saved_config(out: Path) -> TrainConfig:
    """The training configuration recorded in ``out/config.json``; a PDNError if it is unreadable."""
    path = folder_file(out, "config.json", "run configuration") or out / "config.json"  # never a file elsewhere
    try:
        saved = read_json_object(path, "run configuration")["train"]
        return TrainConfig(**saved)
    except PDNError as exc:
        raise PDNError(f"{path}: invalid training configuration ({exc})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PDNError(f"{path}: not a readable run configuration ({type(exc).__name__}: {exc})") from None


def _save_train_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int,
                      history: list[dict[str, Any]], best: float) -> None:
    """The resume point: weights, optimizer, epoch, metrics history and best score in one atomic file."""
    opt_tensors, skeleton = pack_state(opt.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"opt.{k}": v for k, v in opt_tensors.items()})
    columns = list(dict.fromkeys(k for row in history for k in row))  # JSON objects lose their key order
    meta = {"format": STATE_FORMAT, "epoch": epoch, "history": [[row.get(c) for c in columns] for row in history],
            "columns": columns, "best": best, "optimizer": skeleton}
    save_state(path, tensors, meta)


def _load_train_state(path: Path, device: torch.device) -> tuple[int, list[dict[str, Any]], float, dict, dict]:
    """(last finished epoch, history, best score, model state dict, optimizer state dict)."""
    meta = read_state_meta(path)
    tensors = load_state(path, device=device)
    try:
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, this version reads {STATE_FORMAT}")
        epoch, best, columns = int(meta["epoch"]), float(meta["best"]), list(meta["columns"])
        history = [{c: v for c, v in zip(columns, row, strict=True) if v is not None} for row in meta["history"]]
        model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        opt_sd = unpack_state({k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["optimizer"])
        if len(history) != epoch + 1 or not model_sd:
            raise ValueError("history and epoch disagree")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise PDNError(f"{path}: not a resumable training state ({first}); start a new run") from None
    return epoch, history, best, model_sd, opt_sd


def train(
    data: Sequence[str | Path],
    out: str | Path,
    cfg: TrainConfig,
    val: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    until_epoch: int | None = None,
    allow_outside: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``pdn train``: train a steering model into the run folder ``out``.

    ``on_epoch`` is called by the main process with each finished epoch's metrics row (the
    ``metrics.csv`` columns), after the row is written (e.g. a TensorBoard logger).

    ``until_epoch`` stops after that many epochs in total, leaving a run that ``resume=True``
    continues exactly as if it had never stopped (for time-boxed training slots).
    ``allow_outside`` lets dataset logs name images outside their folders.

    Under ``torchrun`` every process calls this with the same arguments (see the module docs),
    and should end with ``os._exit`` once its output is written (see :func:`group_threads_left`).

    Returns:
        A summary: best and final validation metrics, epochs run, throughput and paths, and
        ``rank`` / ``world_size`` of this process.
    """
    out = Path(out)
    device = check_device(cfg.device)
    d = init_distributed(device)
    try:
        if d.world > 1 and device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
        result = _train(data, out, cfg, val, resume, progress, until_epoch, allow_outside, device, d, on_epoch)
    except BaseException:
        if d.owns_group:
            leave_group(wait=False)  # the other ranks may be stuck in a collective: do not wait for them
        raise
    if d.owns_group:
        leave_group(wait=True)
    return result


@dataclass
class _Run:
    """What one training run holds from opening its folder to its last epoch."""

    out: Path
    cfg: TrainConfig
    d: Dist
    device: torch.device
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    step: torch.nn.Module
    train_set: Subset | Concat
    val_set: Subset | Concat | None
    augmenter: Augmenter | None
    run_config: dict[str, Any]
    start_epoch: int
    history: list[dict[str, Any]]
    best: float

    @property
    def state_path(self) -> Path:
        return self.out / STATE_NAME


def _open_run(data: Sequence[str | Path], out: Path, cfg: TrainConfig, val: str | Path | None, resume: bool,
              allow_outside: bool, device: torch.device, d: Dist) -> _Run:
    """Check the run folder, read its resume point, build the model, data and optimiser, write config.json."""
    if cfg.batch % d.world:
        raise PDNError(f"batch {cfg.batch} must be a multiple of the number of processes ({d.world})")
    check_output_folder(out, "run")  # a new or empty folder, or a run (never a folder it would take over)
    state_path = out / STATE_NAME
    saved_state = None
    if resume and (out / "config.json").is_file():
        # compared as stored (JSON): a tuple such as model_cfg's input_size comes back as a list
        same = json.loads(json.dumps(replace(_saved_config(out), device=cfg.device).to_dict())) == json.loads(
            json.dumps(replace(cfg, device=cfg.device).to_dict()))
        if not same:
            raise PDNError(f"resume: {out} was trained with a different configuration; use a new run folder")
        if folder_file(out, STATE_NAME, "resume point") is not None:
            saved_state = _load_train_state(state_path, device)
    elif not resume and (out / "config.json").exists() and _has_trained_epoch(out):
        raise PDNError(f"out: {out} already holds a run; resume it or choose a new folder")
    start_epoch = 0 if saved_state is None else saved_state[0] + 1
    if not all_same(start_epoch, d, device):  # also keeps rank 0 from writing before every rank has checked
        raise PDNError(f"resume: the processes see different states of {out}; put the run folder on a shared "
                       "filesystem")
    model = create_model(cfg.model, generator=torch.Generator().manual_seed(cfg.seed), **cfg.model_cfg)
    size = tuple(model.input_size)
    train_set, val_set = load_training_data(data, val, cfg, size, allow_outside=allow_outside)
    model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    best = np.inf
    if saved_state is not None:
        _, history, best, model_sd, opt_sd = saved_state
        check_finite(state_path, model_sd, model.state_dict())  # a resumed run starts from finite weights
        try:
            model.load_state_dict(model_sd)
            opt.load_state_dict(opt_sd)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise PDNError(f"{state_path}: does not fit model {cfg.model!r} ({first})") from None
    run_config = {"train": cfg.to_dict(), "data": [str(p) for p in data], "val": None if val is None else str(val)}
    if d.main:
        prepare_output_folder(out, "run")  # also removes temporary files left by a run killed during a write
        if saved_state is None:  # the model file's config.json also carries the run's configuration
            write_json(out / "config.json", {"model": model.config, "format_version": 1, **run_config})
        else:  # killed between the resume point and metrics.csv: the last row may be missing
            write_csv(out / "metrics.csv", pd.DataFrame(history), float_format="%.6g")
    objective: torch.nn.Module = _Objective(model, cfg.loss)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    step = torch.compile(objective) if cfg.compile else objective
    augmenter = None
    if cfg.augment:
        augmenter = Augmenter(train_set.camera, train_set.crop, shift_m=cfg.shift_m, rot_deg=cfg.rot_deg,
                              speed=10.0, horizon_s=correction_horizon_s(train_set, cfg),
                              photometric=cfg.photometric == "albumentations")
    return _Run(out, cfg, d, device, model, opt, step, train_set, val_set, augmenter, run_config, start_epoch,
                history, best)


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One pass over ``samples_per_epoch`` drawn frames; the epoch's row (loss, lr, throughput)."""
    cfg, d, model, opt = run.cfg, run.d, run.model, run.opt
    lr = _lr_at(cfg, epoch)
    for g in opt.param_groups:
        g["lr"] = lr
    model.train()
    t0 = time.perf_counter()
    losses, seen = [], 0
    n_batches = (cfg.samples_per_epoch or len(run.train_set)) // cfg.batch
    bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((cfg.seed * 1000 + epoch) * d.world + d.rank)  # dropout and other in-model randomness
        for x, y in prefetch(tensor_batches(run.train_set, cfg, epoch, run.augmenter, run.device, d.rank, d.world)):
            with autocast_for(run.device, cfg.amp):
                loss = run.step(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DistributedDataParallel averages the gradients of all ranks here
            opt.step()
            losses.append(loss.detach().item())
            seen += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    train_s = time.perf_counter() - t0
    train_loss = float(np.mean(losses))
    if d.world > 1:  # the mean over all ranks' batches, as one process would report it
        import torch.distributed as dist

        t = torch.tensor([train_loss], dtype=torch.float64, device=run.device)
        dist.all_reduce(t)
        train_loss = float(t) / d.world
    return {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_img_s": seen * d.world / train_s,
            "seconds": train_s}


def _validate(run: _Run, row: dict[str, Any]) -> None:
    """Add the validation metrics (``val_rmse_deg`` NaN without a validation set) to ``row``."""
    if run.val_set is not None and len(run.val_set):
        m = regression_metrics(predict_all(run.model, run.val_set, run.d, run.device), run.val_set.steering)
        row.update({f"val_{k}": v for k, v in m.items() if k != "n"})
    else:
        row["val_rmse_deg"] = float("nan")


def _commit(run: _Run, epoch: int, improved: bool) -> None:
    """Write the epoch's files, each atomically: weights first, then the resume point, then metrics.csv.

    A kill before the resume point redoes this epoch (rewriting the same weights), and a row in
    metrics.csv always means that epoch is never trained again.
    """
    if improved:
        save_model(run.out, run.model, extra=run.run_config)
    save_model(run.out, run.model, extra=run.run_config, name="last")
    _save_train_state(run.state_path, run.model, run.opt, epoch, run.history, run.best)
    write_csv(run.out / "metrics.csv", pd.DataFrame(run.history), float_format="%.6g")


def _train(data: Sequence[str | Path], out: Path, cfg: TrainConfig, val: str | Path | None, resume: bool,
           progress: bool, until_epoch: int | None, allow_outside: bool, device: torch.device,
           d: Dist, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    run = _open_run(data, out, cfg, val, resume, allow_outside, device, d)
    for epoch in range(run.start_epoch, min(cfg.epochs, until_epoch or cfg.epochs)):
        row = _train_epoch(run, epoch, progress and d.main)
        _validate(run, row)
        run.history.append(row)
        score = row["val_rmse_deg"] if np.isfinite(row["val_rmse_deg"]) else row["train_loss"]
        improved = score < run.best or not np.isfinite(run.best)
        if improved:
            run.best = score
        if d.main:
            _commit(run, epoch, improved)
            if on_epoch is not None:
                on_epoch(dict(row))
    final = run.history[-1]
    return {
        "run": str(out),
        "epochs": len(run.history),
        "start_epoch": run.start_epoch,  # > 0: resumed, the epochs before it were not trained again
        "best_val_rmse_deg": float(min(h["val_rmse_deg"] for h in run.history)) if run.val_set is not None else None,
        "final": {k: v for k, v in final.items()},
        "train_frames": len(run.train_set),
        "val_frames": 0 if run.val_set is None else len(run.val_set),
        "rank": d.rank,
        "world_size": d.world,
    }
