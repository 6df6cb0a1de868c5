"""Training and evaluation of steering models (``pdn train``, ``pdn eval``).

A run folder holds ``config.json`` (model + training configuration), ``model.safetensors``
(the best checkpoint by validation RMSE), ``last.safetensors`` + ``train_state.safetensors`` /
``train_state.json`` (optimizer and progress, for ``--resume``) and ``metrics.csv`` (one row per
epoch). Nothing is pickled.

Determinism: model initialisation, sampling, augmentation and dropout are all seeded from the run
seed and the epoch number, inside ``torch.random.fork_rng`` so the caller's global RNG is left
alone; a run resumed at an epoch boundary therefore ends with the same metrics as an
uninterrupted run.
"""

from __future__ import annotations

import json
import math
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
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from drivenet_patch.augment import Augmenter
from drivenet_patch.checkpoint import load_model, save_model
from drivenet_patch.data import DriveDataset, open_dataset
from drivenet_patch.errors import PDNError
from drivenet_patch.io import atomic_path, write_csv, write_json
from drivenet_patch.models import create_model
from drivenet_patch.tensors import to_tensor

LOSSES = ("mse", "huber")
PHOTOMETRIC = ("albumentations", "torch")


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
        if self.epochs < 1:
            raise PDNError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch < 1:
            raise PDNError(f"--batch must be >= 1, got {self.batch}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise PDNError(f"--lr must be a positive number, got {self.lr}")
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


def batches(data: Subset | Concat, cfg: TrainConfig, epoch: int, augmenter: Augmenter | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frames uint8 (B,H,W,3), labels (B,)) for one epoch, reproducibly from (seed, epoch)."""
    rng = np.random.default_rng([cfg.seed, epoch, 0xBA7C])
    n = cfg.samples_per_epoch or len(data)
    steering = data.steering
    if cfg.balance:
        order = rng.choice(len(data), size=n, replace=True, p=balanced_weights(steering))
    else:
        order = rng.permutation(len(data))[:n] if n <= len(data) else rng.choice(len(data), size=n)
    for start in range(0, n - cfg.batch + 1, cfg.batch):  # drop the ragged last batch
        idx = order[start : start + cfg.batch]
        frames, labels = data.frames(idx), steering[idx]
        if augmenter is not None:
            frames, labels = augmenter(frames, labels, rng)
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
                   device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`batches` as model-ready tensors (x (B,3,H,W) float, y (B,)), with batched photometric
    jitter when ``cfg.photometric == "torch"``; meant to run inside :func:`prefetch`."""
    batch_photo = None
    if cfg.augment and cfg.photometric == "torch":
        from drivenet_patch.augment_batch import BatchPhotometric

        batch_photo = BatchPhotometric()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    for frames, labels in batches(data, cfg, epoch, augmenter):
        x = to_tensor(frames, device)
        if batch_photo is not None:
            x = batch_photo(x, gen)
        if cfg.channels_last:
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
            out[idx] = model(x).double().cpu().numpy()
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
             batch: int = 256, progress: bool = False, **data_options: Any) -> dict[str, Any]:
    """``pdn eval``: metrics of a trained run on a dataset, plus a per-frame predictions CSV."""
    model = load_model(run, device=device)
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


# ----------------------------------------------------------------------------- training
def _state_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat tensors + JSON (safetensors holds tensors only; never pickle)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, float]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_opt_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for pid, sc in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Cosine decay from lr to 5% of it over the run (per epoch)."""
    frac = epoch / max(cfg.epochs - 1, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def load_training_data(paths: Sequence[str | Path], val: str | Path | None, cfg: TrainConfig,
                       size: tuple[int, int] | None) -> tuple[Subset | Concat, Subset | None]:
    """Open the training sets (and a validation set, or hold out episodes of the training sets)."""
    if not paths:
        raise PDNError("--data: give at least one dataset")
    train_parts, val_parts = [], []
    for p in paths:
        ds = open_dataset(p, size=size)
        if val is None:
            tr, va = split_by_episode(ds, cfg.val_fraction, cfg.seed)
            train_parts.append(Subset(ds, tr))
            if len(va):
                val_parts.append(Subset(ds, va))
        else:
            train_parts.append(Subset(ds, np.arange(len(ds))))
    if val is not None:
        vds = open_dataset(val, size=size)
        val_parts = [Subset(vds, np.arange(len(vds)))]
    train = train_parts[0] if len(train_parts) == 1 else Concat(train_parts)
    valid = None if not val_parts else (val_parts[0] if len(val_parts) == 1 else Concat(val_parts))
    if len(train) < cfg.batch:
        raise PDNError(f"--data: {len(train)} training frames is fewer than one batch of {cfg.batch}")
    return train, valid


def train(
    data: Sequence[str | Path],
    out: str | Path,
    cfg: TrainConfig,
    val: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    until_epoch: int | None = None,
) -> dict[str, Any]:
    """``pdn train``: train a steering model into the run folder ``out``.

    ``until_epoch`` stops after that many epochs in total, leaving a run that ``resume=True``
    continues exactly as if it had never stopped (for time-boxed training slots).

    Returns:
        A summary: best and final validation metrics, epochs run, throughput and paths.
    """
    out = Path(out)
    state_meta_path = out / "train_state.json"
    start_epoch = 0
    if resume and state_meta_path.is_file():
        saved = json.loads((out / "config.json").read_text())["train"]
        cfg_saved = TrainConfig(**saved)
        if replace(cfg_saved, device=cfg.device) != replace(cfg, device=cfg.device):
            raise PDNError(f"--resume: {out} was trained with a different configuration; use a new --out")
        start_epoch = int(json.loads(state_meta_path.read_text())["epoch"]) + 1
    elif out.exists() and any(out.iterdir()) and not resume:
        if (out / "config.json").exists():
            raise PDNError(f"--out: {out} already holds a run; pass --resume to continue it or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    model = create_model(cfg.model, generator=torch.Generator().manual_seed(cfg.seed), **cfg.model_cfg)
    size = tuple(model.input_size)
    train_set, val_set = load_training_data(data, val, cfg, size)
    model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    if start_epoch:
        weights = load_file(str(out / "last.safetensors"), device=str(device))
        model.load_state_dict(weights)
        _load_opt_state(opt, load_file(str(out / "train_state.safetensors")),
                        json.loads(state_meta_path.read_text())["optimizer"])
        if (out / "metrics.csv").is_file():
            history = pd.read_csv(out / "metrics.csv").to_dict("records")[:start_epoch]
    run_config = {"train": cfg.to_dict(), "data": [str(p) for p in data], "val": None if val is None else str(val)}
    if not start_epoch:  # the model file's config.json also carries the run's configuration
        write_json(out / "config.json", {"model": model.config, "format_version": 1, **run_config})
    step_model = torch.compile(model) if cfg.compile else model
    # A model with its own objective defines training_loss(x, y, loss_name) -> scalar loss.
    model_loss = getattr(model, "training_loss", None)
    if model_loss is not None and cfg.compile:
        model_loss = torch.compile(model_loss)
    augmenter = None
    if cfg.augment:
        augmenter = Augmenter(train_set.camera, train_set.crop, shift_m=cfg.shift_m, rot_deg=cfg.rot_deg,
                              speed=10.0, horizon_s=correction_horizon_s(train_set, cfg),
                              photometric=cfg.photometric == "albumentations")
    best = min((h["val_rmse_deg"] for h in history if np.isfinite(h.get("val_rmse_deg", np.nan))), default=np.inf)
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
            torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout and any other in-model randomness
            for x, y in prefetch(tensor_batches(train_set, cfg, epoch, augmenter, device)):
                if model_loss is not None:  # e.g. PatchVote: every region vote and the aggregate
                    loss = model_loss(x, y, cfg.loss)
                else:
                    pred = step_model(x)
                    loss = F.mse_loss(pred, y) if cfg.loss == "mse" else F.huber_loss(pred, y, delta=1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.detach().item())
                seen += len(y)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        bar.close()
        train_s = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": float(np.mean(losses)),
                               "train_img_s": seen / train_s, "seconds": train_s}
        if val_set is not None and len(val_set):
            m = regression_metrics(predict(model, val_set, device=cfg.device), val_set.steering)
            row.update({f"val_{k}": v for k, v in m.items() if k != "n"})
        else:
            row["val_rmse_deg"] = float("nan")
        history.append(row)
        write_csv(out / "metrics.csv", pd.DataFrame(history), float_format="%.6g")
        score = row["val_rmse_deg"] if np.isfinite(row["val_rmse_deg"]) else row["train_loss"]
        if score < best or not np.isfinite(best):
            best = score
            save_model(out, model, extra=run_config)
        # Resume point: weights, optimizer, epoch. Written last, each file atomically.
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(out / "last.safetensors") as tmp:
            save_file(sd, str(tmp))
        tensors, opt_meta = _state_tensors(model, opt)
        with atomic_path(out / "train_state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(state_meta_path, {"epoch": epoch, "optimizer": opt_meta})
    final = history[-1]
    return {
        "run": str(out),
        "epochs": len(history),
        "best_val_rmse_deg": float(min(h["val_rmse_deg"] for h in history)) if val_set is not None else None,
        "final": {k: v for k, v in final.items()},
        "train_frames": len(train_set),
        "val_frames": 0 if val_set is None else len(val_set),
    }
