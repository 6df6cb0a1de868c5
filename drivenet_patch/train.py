"""Training and evaluation of steering models (``pdn train``, ``pdn eval``).

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
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from drivenet_patch.augment import Augmenter
from drivenet_patch.checkpoint import (
    load_model,
    load_state,
    pack_state,
    read_state_meta,
    save_model,
    save_state,
    unpack_state,
)
from drivenet_patch.data import DriveDataset, open_dataset
from drivenet_patch.errors import PDNError
from drivenet_patch.inputs import read_json_object
from drivenet_patch.io import remove_stale_temps, write_csv, write_json
from drivenet_patch.models import create_model
from drivenet_patch.tensors import to_tensor

LOSSES = ("mse", "huber")
PHOTOMETRIC = ("albumentations", "torch")
#: Upper bounds that catch typos and absurd values before they exhaust memory or time.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_SAMPLES_PER_EPOCH = 100_000_000
STATE_NAME = "train_state.safetensors"
STATE_FORMAT = 2


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Validated on construction; stored in ``config.json``.

    Attributes:
        model: registry name (``pilotnet``, ``pilotnet_tiny``, ``resnet18``, ...).
        model_cfg: keyword arguments for :func:`~drivenet_patch.models.create_model`.
        epochs: passes over ``samples_per_epoch`` drawn frames.
        batch: batch size.
        lr: peak Adam learning rate (cosine decay to 5% over the run).
        weight_decay: AdamW decoupled weight decay.
        seed: run seed.
        loss: ``mse`` or ``huber`` (delta 1 degree).
        balance: sample frames inversely to the frequency of their |steering| bin, so curves
            are not drowned by straight driving.
        augment: photometric jitter, flips and viewpoint shifts with steering correction.
        samples_per_epoch: frames drawn per epoch (default: the training set size).
        shift_m, rot_deg: largest viewpoint shift (metres) and rotation (degrees) of augmentation.
        horizon_s: seconds in which the corrected label of a shifted view rejoins the path.
            None: the data's own expert (world data: its pure-pursuit lookahead / speed, so
            augmented labels follow the same controller as recorded ones) or PilotNet's 2 s.
        photometric: ``torch`` (default: batched on the tensor in the prefetch thread,
            :class:`~drivenet_patch.augment_batch.BatchPhotometric`) or ``albumentations`` (per
            image; measured 0.80-0.82 of the bare step end to end against 0.83-0.88 for torch).
        val_fraction: share of episodes held out when no separate validation set is given.
        channels_last: NHWC memory format for the model (faster convolutions on CPU).
        compile: ``torch.compile`` the training step's model.
        device: torch device.
    """

    model: str = "pilotnet"
    model_cfg: dict = field(default_factory=dict)
    epochs: int = 10
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    loss: str = "mse"
    balance: bool = True
    augment: bool = True
    samples_per_epoch: int | None = None
    val_fraction: float = 0.1
    shift_m: float = 0.6
    rot_deg: float = 3.0
    horizon_s: float | None = None
    photometric: str = "torch"
    channels_last: bool = True
    compile: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_int(self.epochs, "--epochs", 1, MAX_EPOCHS)
        _check_int(self.batch, "--batch", 1, MAX_BATCH)
        _check_int(self.seed, "--seed", 0, MAX_SEED)
        if self.samples_per_epoch is not None:
            _check_int(self.samples_per_epoch, "--samples-per-epoch", 1, MAX_SAMPLES_PER_EPOCH)
        if not isinstance(self.model, str) or not isinstance(self.model_cfg, dict) or not isinstance(self.device, str):
            raise PDNError("model and device must be strings and model_cfg an object")
        for name in ("lr", "weight_decay", "val_fraction", "shift_m", "rot_deg", "horizon_s"):
            value = getattr(self, name)
            if value is None and name == "horizon_s":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PDNError(f"{name} must be a finite number, got {value!r}")
        if not self.lr > 0:
            raise PDNError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or self.shift_m < 0 or self.rot_deg < 0:
            raise PDNError("weight_decay, shift_m and rot_deg must be >= 0")
        if self.horizon_s is not None and not self.horizon_s > 0:
            raise PDNError(f"horizon_s must be > 0, got {self.horizon_s}")
        for name in ("balance", "augment", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise PDNError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.loss not in LOSSES:
            raise PDNError(f"--loss must be one of {LOSSES}, got {self.loss!r}")
        if not 0.0 <= self.val_fraction < 0.9:
            raise PDNError(f"val_fraction must lie in [0, 0.9), got {self.val_fraction}")
        if self.photometric not in PHOTOMETRIC:
            raise PDNError(f"--photometric must be one of {PHOTOMETRIC}, got {self.photometric!r}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < self.batch:
            raise PDNError(f"samples_per_epoch ({self.samples_per_epoch}) must be >= batch ({self.batch})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = dict(epochs=4, samples_per_epoch=6144, batch=64, lr=2e-3)


def _check_int(value: Any, name: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise PDNError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise PDNError(f"{name} must lie in [{lo}, {hi}], got {value}")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists here; a one-line PDNError otherwise."""
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PDNError(f"--device {str(device)!r}: not usable here ({first})") from None
    return dev


# ----------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Dist:
    """Where this process stands in a (possibly one-process) training job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise PDNError(f"environment variable {name}={text!r} is not an integer") from None


def init_distributed(device: torch.device) -> Dist:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` ...).

    One process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``): nothing to do. A group the caller already
    initialised is used as it is. Otherwise gloo (CPU) or nccl (CUDA) through ``env://``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), owns_group=False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    if not dist.is_available():
        raise PDNError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return Dist(rank, world, local, owns_group=True)


def _all_same(value: int, d: Dist, device: torch.device) -> bool:
    """True when every rank holds the same ``value`` (a collective call: all ranks must make it)."""
    if d.world == 1:
        return True
    import torch.distributed as dist

    t = torch.tensor([value, -value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == -int(t[1]) == value


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


# ----------------------------------------------------------------------------- data
class Subset:
    """A view of some frames of a dataset (keeps the dataset's camera and crop)."""

    def __init__(self, base: DriveDataset, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = base.labels.iloc[self.indices].reset_index(drop=True)
        self.camera, self.crop, self.size = base.camera, base.crop, base.size

    def __len__(self) -> int:
        return len(self.indices)

    def frames(self, idx: np.ndarray) -> np.ndarray:
        return self.base.frames(self.indices[np.asarray(idx)])

    @property
    def steering(self) -> np.ndarray:
        return self.labels["steering_deg"].to_numpy(np.float64)


class Concat:
    """Several datasets of the same frame size as one (frames are fetched from each in turn)."""

    def __init__(self, parts: Sequence[Subset]) -> None:
        sizes = {tuple(p.size) for p in parts}
        if len(sizes) != 1:
            raise PDNError(f"training datasets have different frame sizes {sorted(sizes)}; use one size")
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.camera, self.crop, self.size = parts[0].camera, parts[0].crop, parts[0].size
        self.labels = pd.concat([p.labels for p in parts], ignore_index=True)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def steering(self) -> np.ndarray:
        return self.labels["steering_deg"].to_numpy(np.float64)

    def frames(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        out = np.empty((len(idx), *self.size, 3), np.uint8)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(part):
            sel = np.flatnonzero(part == k)
            out[sel] = self.parts[k].frames(idx[sel] - self.offsets[k])
        return out


def split_by_episode(ds: DriveDataset, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation indices, holding out whole episodes (or contiguous blocks for real logs)."""
    n = len(ds)
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    if "episode" in ds.labels.columns:
        groups = ds.labels["episode"].to_numpy()
    else:  # real logs: contiguous blocks of 200 frames approximate drives
        groups = np.arange(n) // 200
    uniq = np.unique(groups)
    rng = np.random.default_rng([seed, 0xA11])
    n_val = max(1, round(len(uniq) * fraction)) if len(uniq) > 1 else 0
    val_groups = rng.choice(uniq, size=n_val, replace=False) if n_val else np.array([])
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def balanced_weights(steering: np.ndarray, bin_deg: float = 1.0, max_ratio: float = 8.0) -> np.ndarray:
    """Sampling weights inversely proportional to the frequency of each |steering| bin (capped)."""
    bins = np.floor(np.abs(steering) / bin_deg).astype(np.int64)
    counts = np.bincount(bins)
    w = 1.0 / counts[bins]
    w = np.minimum(w, w.min() * max_ratio)
    return w / w.sum()


def batches(data: Subset | Concat, cfg: TrainConfig, epoch: int, augmenter: Augmenter | None,
            rank: int = 0, world: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frames uint8 (B,H,W,3), labels (B,)) for one epoch, reproducibly from (seed, epoch).

    With ``world`` processes every rank draws the same global order and takes the disjoint share
    ``batch[rank::world]`` of each global batch of ``cfg.batch`` frames (B = batch / world);
    augmentation then draws from a per-rank stream. One process is the case ``rank=0, world=1``.
    """
    rng = np.random.default_rng([cfg.seed, epoch, 0xBA7C])
    n = cfg.samples_per_epoch or len(data)
    steering = data.steering
    if cfg.balance:
        order = rng.choice(len(data), size=n, replace=True, p=balanced_weights(steering))
    else:
        order = rng.permutation(len(data))[:n] if n <= len(data) else rng.choice(len(data), size=n)
    aug_rng = rng if world == 1 else np.random.default_rng([cfg.seed, epoch, 0xBA7C, rank, world])
    for start in range(0, n - cfg.batch + 1, cfg.batch):  # drop the ragged last batch
        idx = order[start : start + cfg.batch][rank::world]
        frames, labels = data.frames(idx), steering[idx]
        if augmenter is not None:
            frames, labels = augmenter(frames, labels, aug_rng)
        yield frames, np.asarray(labels, dtype=np.float32)


def correction_horizon_s(data: Subset | Concat, cfg: TrainConfig, default: float = 2.0) -> float:
    """Horizon of the viewpoint-shift steering correction, at the augmenter's 10 m/s.

    World data records a pure-pursuit expert with a known lookahead; the correction must follow
    the same controller, or shifted views get labels from another driver (measured: with a 2 s
    horizon against the expert's 8 m lookahead, validation RMSE rose from 0.37 to 0.67 deg as
    training converged on the inconsistent labels).
    """
    if cfg.horizon_s is not None:
        return cfg.horizon_s
    parts = data.parts if isinstance(data, Concat) else [data]
    meta = getattr(parts[0].base, "meta", None)
    if meta and "drive" in meta:
        return float(meta["drive"]["lookahead_m"]) / 10.0
    return default


def tensor_batches(data: Subset | Concat, cfg: TrainConfig, epoch: int, augmenter: Augmenter | None,
                   device: str | torch.device = "cpu", rank: int = 0,
                   world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`batches` as model-ready tensors (x (B,3,H,W) float, y (B,)), with batched photometric
    jitter when ``cfg.photometric == "torch"``; meant to run inside :func:`prefetch`."""
    batch_photo = None
    if cfg.augment and cfg.photometric == "torch":
        from drivenet_patch.augment_batch import BatchPhotometric

        batch_photo = BatchPhotometric()
        gen = torch.Generator().manual_seed((cfg.seed * 100_003 + epoch) * world + rank)
    for frames, labels in batches(data, cfg, epoch, augmenter, rank, world):
        x = to_tensor(frames, device)
        if batch_photo is not None:
            x = batch_photo(x, gen, torch.channels_last if cfg.channels_last else torch.contiguous_format)
        if cfg.channels_last:  # a no-op after the photometric jitter
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, torch.from_numpy(labels).to(device)


def prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run an iterator in a background thread (OpenCV and numpy release the GIL while they work)."""
    q: Queue[Any] = Queue(maxsize=depth)
    done = object()
    error: list[BaseException] = []

    def work() -> None:
        try:
            for item in it:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            error.append(exc)
        finally:
            q.put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is done:
            break
        yield item
    t.join()
    if error:
        raise error[0]


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def release(data: Any) -> None:
    """:meth:`DriveDataset.release` of a dataset or of the datasets under a :class:`Subset` / :class:`Concat`."""
    if isinstance(data, DriveDataset):
        data.release()
        return
    for part in getattr(data, "parts", None) or [getattr(data, "base", None), getattr(data, "data", None)]:
        if part is not None:
            release(part)


def predict(model: torch.nn.Module, data: Subset | Concat | DriveDataset, batch: int = 256,
            device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Model predictions (N,) in degrees over a dataset, streamed in batches."""
    was_training = model.training
    model.eval()
    out = np.empty(len(data), np.float64)
    try:
        for start in tqdm(range(0, len(data), batch), desc="predict", disable=not progress, leave=False):
            idx = np.arange(start, min(start + batch, len(data)))
            x = to_tensor(data.frames(idx), device)
            with torch.no_grad():
                out[idx] = model(x).double().cpu().numpy()
            if start // batch % 16 == 15:
                release(data)  # bounded resident memory on memory-mapped datasets
    finally:
        model.train(was_training)
    return out


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """RMSE / MAE of predictions and of the always-zero and always-mean baselines (degrees).

    The mean baseline predicts the mean of ``truth`` itself (the best constant in hindsight,
    so it is a demanding baseline).
    """
    err = pred - truth
    return {
        "rmse_deg": float(np.sqrt(np.mean(err**2))),
        "mae_deg": float(np.mean(np.abs(err))),
        "zero_rmse_deg": float(np.sqrt(np.mean(truth**2))),
        "mean_rmse_deg": float(np.std(truth)),
        "n": len(truth),
    }


def evaluate(run: str | Path, data: str | Path, out_csv: str | Path | None = None, device: str = "cpu",
             batch: int = 256, progress: bool = False, allow_pickle: bool = False,
             **data_options: Any) -> dict[str, Any]:
    """``pdn eval``: metrics of a trained run on a dataset, plus a per-frame predictions CSV.

    ``allow_pickle`` accepts a ``.pt``-style state dict (see :func:`~drivenet_patch.checkpoint.load_model`).
    ``data_options`` go to :func:`~drivenet_patch.data.open_dataset` (e.g. ``format``,
    ``allow_outside=True`` for logs whose images lie outside the dataset folder).
    """
    check_device(device)
    model = load_model(run, device=device, allow_pickle=allow_pickle)
    ds = open_dataset(data, size=tuple(model.input_size), **data_options)
    pred = predict(model, ds, batch=batch, device=device, progress=progress)
    truth = ds.labels["steering_deg"].to_numpy(np.float64)
    metrics = regression_metrics(pred, truth)
    metrics["rmse_over_zero"] = metrics["rmse_deg"] / max(metrics["zero_rmse_deg"], 1e-12)
    if out_csv is not None:
        table = pd.DataFrame({"index": np.arange(len(ds)), "steering_deg": truth, "predicted_deg": pred,
                              "error_deg": pred - truth})
        for col in ("episode", "t", "camera", "source_file", "source_row"):
            if col in ds.labels.columns:
                table[col] = ds.labels[col].to_numpy()
        write_csv(out_csv, table, float_format="%.6g")
    return metrics


class _Rows:
    """Frames ``idx`` of a dataset as a dataset of their own (for :func:`predict` on a shard)."""

    def __init__(self, data: Subset | Concat, idx: np.ndarray) -> None:
        self.data, self.idx = data, idx

    def __len__(self) -> int:
        return len(self.idx)

    def frames(self, i: np.ndarray) -> np.ndarray:
        return self.data.frames(self.idx[np.asarray(i)])


def _predict_all(model: torch.nn.Module, data: Subset | Concat, d: Dist, device: torch.device) -> np.ndarray:
    """:func:`predict` over ``data``, each rank taking every ``world``-th frame, gathered on all ranks."""
    if d.world == 1:
        return predict(model, data, device=str(device))
    import torch.distributed as dist

    idx = np.arange(d.rank, len(data), d.world)
    out = torch.zeros(len(data), dtype=torch.float64, device=device)
    out[torch.from_numpy(idx).to(device)] = torch.from_numpy(predict(model, _Rows(data, idx), device=str(device))).to(device)
    dist.all_reduce(out)  # every frame is predicted by exactly one rank, the others add zeros
    return out.cpu().numpy()


# ----------------------------------------------------------------------------- training
def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Cosine decay from lr to 5% of it over the run (per epoch)."""
    frac = epoch / max(cfg.epochs - 1, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def load_training_data(paths: Sequence[str | Path], val: str | Path | None, cfg: TrainConfig,
                       size: tuple[int, int] | None,
                       allow_outside: bool = False) -> tuple[Subset | Concat, Subset | None]:
    """Open the training sets (and a validation set, or hold out episodes of the training sets)."""
    if not paths:
        raise PDNError("--data: give at least one dataset")
    train_parts, val_parts = [], []
    for p in paths:
        ds = open_dataset(p, size=size, allow_outside=allow_outside)
        if val is None:
            tr, va = split_by_episode(ds, cfg.val_fraction, cfg.seed)
            train_parts.append(Subset(ds, tr))
            if len(va):
                val_parts.append(Subset(ds, va))
        else:
            train_parts.append(Subset(ds, np.arange(len(ds))))
    if val is not None:
        vds = open_dataset(val, size=size, allow_outside=allow_outside)
        val_parts = [Subset(vds, np.arange(len(vds)))]
    train = train_parts[0] if len(train_parts) == 1 else Concat(train_parts)
    valid = None if not val_parts else (val_parts[0] if len(val_parts) == 1 else Concat(val_parts))
    if len(train) < cfg.batch:
        raise PDNError(f"--data: {len(train)} training frames is fewer than one batch of {cfg.batch}")
    return train, valid


def _has_trained_epoch(out: Path) -> bool:
    """True when the run folder holds weights or a resume point: a folder where a run failed or was
    killed before its first epoch ended (only ``config.json``) may be started afresh."""
    return (out / STATE_NAME).exists() or any(out.glob("*.safetensors"))


def _saved_config(out: Path) -> TrainConfig:
    """The training configuration recorded in ``out/config.json``; a PDNError if it is unreadable."""
    path = out / "config.json"
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
) -> dict[str, Any]:
    """``pdn train``: train a steering model into the run folder ``out``.

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
        result = _train(data, out, cfg, val, resume, progress, until_epoch, allow_outside, device, d)
    except BaseException:
        if d.owns_group:
            _leave_group(wait=False)  # the other ranks may be stuck in a collective: do not wait for them
        raise
    if d.owns_group:
        _leave_group(wait=True)
    return result


_GROUP_THREADS_LEFT = False


def group_threads_left() -> bool:
    """True once this process has torn down a process group it created (``torchrun``).

    Such a process should end with ``os._exit`` after flushing its output, as ``pdn`` does,
    instead of a normal interpreter shutdown: DistributedDataParallel's C++ reducer keeps the gloo
    group alive past ``destroy_process_group`` (torch 2.14), and a gloo worker thread that is
    still freeing a finished all-reduce (its tensors are Python objects) when Python finalises
    dies taking the GIL, aborting the process ("terminate called without an active exception",
    SIGABRT; torchrun then reports the whole job failed). Measured: 2 of 40 two-process
    ``pdn train`` runs on this 2-core machine before the fix, and a minimal script (DDP, 20
    all-reduces, exit) aborts in about a third of runs with or without a final barrier.
    """
    return _GROUP_THREADS_LEFT


def _leave_group(wait: bool) -> None:
    """Tear down the process group this process created; on success, first wait for every rank
    (rank 0 may still be writing the run's files)."""
    global _GROUP_THREADS_LEFT
    import torch.distributed as dist

    try:
        if wait:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        _GROUP_THREADS_LEFT = True


def _train(data: Sequence[str | Path], out: Path, cfg: TrainConfig, val: str | Path | None, resume: bool,
           progress: bool, until_epoch: int | None, allow_outside: bool, device: torch.device,
           d: Dist) -> dict[str, Any]:
    if cfg.batch % d.world:
        raise PDNError(f"--batch {cfg.batch} must be a multiple of the number of processes ({d.world})")
    if out.exists() and not out.is_dir():
        raise PDNError(f"--out: {out} is a file, not a run folder")
    state_path = out / STATE_NAME
    saved_state = None
    if resume and (out / "config.json").is_file():
        if replace(_saved_config(out), device=cfg.device) != replace(cfg, device=cfg.device):
            raise PDNError(f"--resume: {out} was trained with a different configuration; use a new --out")
        if state_path.is_file():
            saved_state = _load_train_state(state_path, device)
    elif not resume and (out / "config.json").exists() and _has_trained_epoch(out):
        raise PDNError(f"--out: {out} already holds a run; pass --resume to continue it or choose a new folder")
    start_epoch = 0 if saved_state is None else saved_state[0] + 1
    if not _all_same(start_epoch, d, device):  # also keeps rank 0 from writing before every rank has checked
        raise PDNError(f"--resume: the processes see different states of {out}; put --out on a shared filesystem")
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
        try:
            model.load_state_dict(model_sd)
            opt.load_state_dict(opt_sd)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise PDNError(f"{state_path}: does not fit model {cfg.model!r} ({first})") from None
    run_config = {"train": cfg.to_dict(), "data": [str(p) for p in data], "val": None if val is None else str(val)}
    if d.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PDNError(f"--out: cannot create {out} ({exc.strerror or exc})") from None
        remove_stale_temps(out)  # left by a run killed in the middle of a write
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
    progress = progress and d.main
    for epoch in range(start_epoch, min(cfg.epochs, until_epoch or cfg.epochs)):
        lr = _lr_at(cfg, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        t0 = time.perf_counter()
        losses, seen = [], 0
        n_batches = (cfg.samples_per_epoch or len(train_set)) // cfg.batch
        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((cfg.seed * 1000 + epoch) * d.world + d.rank)  # dropout and other in-model randomness
            for x, y in prefetch(tensor_batches(train_set, cfg, epoch, augmenter, device, d.rank, d.world)):
                loss = step(x, y)
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

            t = torch.tensor([train_loss], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            train_loss = float(t) / d.world
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                               "train_img_s": seen * d.world / train_s, "seconds": train_s}
        if val_set is not None and len(val_set):
            m = regression_metrics(_predict_all(model, val_set, d, device), val_set.steering)
            row.update({f"val_{k}": v for k, v in m.items() if k != "n"})
        else:
            row["val_rmse_deg"] = float("nan")
        history.append(row)
        score = row["val_rmse_deg"] if np.isfinite(row["val_rmse_deg"]) else row["train_loss"]
        improved = score < best or not np.isfinite(best)
        if improved:
            best = score
        if d.main:
            # Each file atomically. Weights first, then the resume point, then metrics.csv: a kill
            # before the resume point redoes this epoch (rewriting the same weights), and a row in
            # metrics.csv always means that epoch is never trained again.
            if improved:
                save_model(out, model, extra=run_config)
            save_model(out, model, extra=run_config, name="last")
            _save_train_state(state_path, model, opt, epoch, history, best)
            write_csv(out / "metrics.csv", pd.DataFrame(history), float_format="%.6g")
    final = history[-1]
    return {
        "run": str(out),
        "epochs": len(history),
        "start_epoch": start_epoch,  # > 0: resumed, the epochs before it were not trained again
        "best_val_rmse_deg": float(min(h["val_rmse_deg"] for h in history)) if val_set is not None else None,
        "final": {k: v for k, v in final.items()},
        "train_frames": len(train_set),
        "val_frames": 0 if val_set is None else len(val_set),
        "rank": d.rank,
        "world_size": d.world,
    }
