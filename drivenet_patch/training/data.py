"""Training data: views of datasets (:class:`Subset`, :class:`Concat`), the episode split, curve balancing,
reproducible augmented batches and the prefetch thread.

Every random draw comes from ``(seed, epoch)``: the same seed gives the same batches, and a resumed run
draws what an uninterrupted one would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np
import pandas as pd
import torch

from drivenet_patch.data import DriveDataset, open_dataset
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import to_tensor
from drivenet_patch.training.augment import Augmenter
from drivenet_patch.training.config import TrainConfig

__all__ = ["Concat", "Subset", "balanced_weights", "batches", "correction_horizon_s", "device_frames",
           "load_training_data", "pin_for", "prefetch", "release", "split_by_episode", "tensor_batches"]


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
    jitter when ``cfg.photometric == "torch"`` (on the CPU fused with the float conversion,
    :meth:`~drivenet_patch.training.augment_batch.BatchPhotometric.apply_uint8`); meant to run inside
    :func:`prefetch`."""
    batch_photo = None
    if cfg.augment and cfg.photometric == "torch":
        from drivenet_patch.training.augment_batch import BatchPhotometric

        batch_photo = BatchPhotometric()
        gen = torch.Generator().manual_seed((cfg.seed * 100_003 + epoch) * world + rank)
    device = torch.device(device)
    fused = batch_photo is not None and device.type == "cpu"
    for frames, labels in batches(data, cfg, epoch, augmenter, rank, world):
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if fused:  # float conversion and jitter in one cache-hot pass per frame (the same draws)
            x = batch_photo.apply_uint8(frames, batch_photo.draw(gen, len(frames))).contiguous(memory_format=layout)
        else:
            x = device_frames(frames, device)
            if batch_photo is not None:
                x = batch_photo(x, gen, layout)
        if cfg.channels_last:  # a no-op after the photometric jitter
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, torch.from_numpy(labels).to(device)


def device_frames(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) frames -> float (B, 3, H, W) in [0, 1] on ``device``, converted to float there.

    To a GPU the uint8 batch travels from pinned (page-locked) memory without blocking the thread that
    prepares it: a quarter of the bytes of float frames, and the conversion runs on the device. On the
    CPU it is :func:`~drivenet_patch.safety.tensors.to_tensor`, the same values bit for bit either way.
    """
    if not pin_for(device):
        return to_tensor(frames, device)
    arr = np.ascontiguousarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise PDNError(f"frames: expected uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    t = torch.from_numpy(arr).pin_memory().to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def pin_for(device: str | torch.device) -> bool:
    """Whether batches for ``device`` go through pinned memory (a CUDA device)."""
    return torch.device(device).type == "cuda"


def prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run an iterator in a background thread (OpenCV and numpy release the GIL while they work)."""
    q: Queue[Any] = Queue(maxsize=depth)
    done = object()
    error: list[BaseException] = []

    def work() -> None:
        # One intra-op thread here (the setting is per thread): the pipeline's few torch ops must not wake
        # a second OpenMP team beside the training step's.
        torch.set_num_threads(1)
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


def release(data: Any) -> None:
    """:meth:`DriveDataset.release` of a dataset or of the datasets under a :class:`Subset` / :class:`Concat`."""
    if isinstance(data, DriveDataset):
        data.release()
        return
    for part in getattr(data, "parts", None) or [getattr(data, "base", None), getattr(data, "data", None)]:
        if part is not None:
            release(part)


def load_training_data(paths: Sequence[str | Path], val: str | Path | None, cfg: TrainConfig,
                       size: tuple[int, int] | None,
                       allow_outside: bool = False) -> tuple[Subset | Concat, Subset | None]:
    """Open the training sets (and a validation set, or hold out episodes of the training sets)."""
    if not paths:
        raise PDNError("data: give at least one dataset")
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
        raise PDNError(f"data: {len(train)} training frames is fewer than one batch of {cfg.batch}")
    return train, valid
