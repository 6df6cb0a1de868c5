"""Evaluation of steering models: predictions over a dataset, regression metrics, ``pdn eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from drivenet_patch.data import DriveDataset, open_dataset
from drivenet_patch.models.checkpoint import load_model
from drivenet_patch.storage.atomic import write_csv
from drivenet_patch.training.config import check_device
from drivenet_patch.training.data import Concat, Subset, release
from drivenet_patch.training.distributed import Dist

__all__ = ["Rows", "evaluate", "predict", "predict_all", "regression_metrics"]


def predict(model: torch.nn.Module, data: Subset | Concat | DriveDataset, batch: int = 256,
            device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Model predictions (N,) in degrees over a dataset, streamed in batches (the model's mode is restored)."""
    from drivenet_patch.models.inference import stream_outputs

    out = stream_outputs(model, data, batch=batch, device=device, progress=progress, release=release)
    return out.double().numpy() if len(out) else np.empty(0, np.float64)


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

    ``allow_pickle`` accepts a ``.pt``-style state dict (see :func:`~drivenet_patch.models.checkpoint.load_model`).
    ``data_options`` go to :func:`~drivenet_patch.data.open_dataset` (e.g. ``format``,
    ``allow_outside=True`` for logs whose images lie outside the dataset folder).
    """
    check_device(device)
    model = load_model(run, device=device, allow_pickle=allow_pickle,
                       allow_outside=bool(data_options.get("allow_outside", False)))
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


class Rows:
    """Frames ``idx`` of a dataset as a dataset of their own (for :func:`predict` on a shard)."""

    def __init__(self, data: Subset | Concat, idx: np.ndarray) -> None:
        self.data, self.idx = data, idx

    def __len__(self) -> int:
        return len(self.idx)

    def frames(self, i: np.ndarray) -> np.ndarray:
        return self.data.frames(self.idx[np.asarray(i)])


def predict_all(model: torch.nn.Module, data: Subset | Concat, d: Dist, device: torch.device) -> np.ndarray:
    """:func:`predict` over ``data``, each rank taking every ``world``-th frame, gathered on all ranks."""
    if d.world == 1:
        return predict(model, data, device=str(device))
    import torch.distributed as dist

    idx = np.arange(d.rank, len(data), d.world)
    out = torch.zeros(len(data), dtype=torch.float64, device=device)
    out[torch.from_numpy(idx).to(device)] = torch.from_numpy(predict(model, Rows(data, idx), device=str(device))).to(device)
    dist.all_reduce(out)  # every frame is predicted by exactly one rank, the others add zeros
    return out.cpu().numpy()
