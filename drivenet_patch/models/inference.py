"""One loop that streams a dataset through a model: batches in, outputs out, memory bounded.

Used by ``pdn eval`` (:func:`drivenet_patch.training.evaluation.predict`: steering per frame) and by ``pdn certify``
(:func:`defenses.evaluate.collect_votes`: region votes per frame). The model runs in eval mode without
gradients and gets its own mode back afterwards, whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from drivenet_patch.models.base import use_mode
from drivenet_patch.safety.tensors import to_tensor

__all__ = ["stream_outputs"]

#: Release a memory-mapped dataset's pages every this many batches (bounded resident memory).
RELEASE_EVERY = 16


def stream_outputs(model: torch.nn.Module, data: Any, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   batch: int = 256, device: str = "cpu", limit: int | None = None, progress: bool = False,
                   desc: str = "predict", release: Callable[[Any], None] | None = None) -> torch.Tensor:
    """``fn`` (default: ``model``) over the first ``limit`` frames of ``data``, in batches.

    Args:
        model: put in eval mode for the loop, its previous mode restored afterwards.
        data: a dataset with ``frames(idx) -> (B, H, W, 3) uint8`` and ``__len__``.
        fn: frames (B, 3, H, W) float in [0, 1] -> outputs (B, ...); default ``model``.
        batch: frames per forward pass.
        device: where the frames go.
        limit: frames used (default all).
        progress: show a progress bar.
        desc: its label.
        release: lets go of the dataset's cached frame memory every ``RELEASE_EVERY`` batches (default:
            ``data.release()`` when the dataset has one).

    Returns:
        Outputs (n, ...) on the CPU, in the dtype ``fn`` returns.
    """
    n = len(data) if limit is None else min(int(limit), len(data))
    fn = model if fn is None else fn
    if release is None:
        release = lambda d: d.release() if hasattr(d, "release") else None  # noqa: E731
    out: torch.Tensor | None = None  # allocated once, from the first batch's shape and dtype: no small
    # allocation per batch lands between the freed frame buffers (that kept the heap from shrinking)
    with use_mode(model, False), torch.no_grad():
        for i, start in enumerate(tqdm(range(0, n, batch), desc=desc, disable=not progress, leave=False)):
            stop = min(start + batch, n)
            y = fn(to_tensor(data.frames(np.arange(start, stop)), device))
            if out is None:
                out = torch.empty((n, *y.shape[1:]), dtype=y.dtype)
            out[start:stop] = y.cpu()
            if i % RELEASE_EVERY == RELEASE_EVERY - 1:
                release(data)
    return torch.empty(0) if out is None else out
