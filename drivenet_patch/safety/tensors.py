"""Boundary checks and conversions for image tensors and uint8 frames (checked once, trusted inside)."""

from __future__ import annotations

import math

import numpy as np
import torch

from drivenet_patch.safety.errors import PDNError


def check_frames(x: torch.Tensor, name: str = "frames") -> torch.Tensor:
    """Check the library's image contract: float NCHW, 3 channels, values in [0, 1].

    Args:
        x: candidate image batch.
        name: what to call it in the error message.

    Returns:
        ``x`` unchanged.

    Raises:
        PDNError: on wrong type, rank, channel count, dtype or value range.
    """
    if not isinstance(x, torch.Tensor):
        raise PDNError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise PDNError(f"{name}: expected shape (N, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise PDNError(f"{name}: expected a float tensor in [0, 1], got {x.dtype}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise PDNError(f"{name}: values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def to_tensor(frames: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float32 (N, 3, H, W) in [0, 1] on ``device``."""
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise PDNError(f"frames: expected uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3), rounding to nearest."""
    x = frames.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# ---------------------------------------------------------------- numpy frames and numbers
def check_uint8_rgb(x: object, name: str, batched: bool, size: tuple[int, int] | None) -> np.ndarray:
    """Check a uint8 RGB array, (H, W, 3) or batched (n, H, W, 3), optionally of a given size."""
    ndim, dims = (4, "(n, H, W, 3)") if batched else (3, "(H, W, 3)")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != ndim or x.shape[-1] != 3:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise PDNError(f"{name}: expected a uint8 {dims} RGB array, got {desc}")
    hw = x.shape[-3:-1]
    if size is not None and hw != tuple(size):
        raise PDNError(f"{name}: expected size {size[0]}x{size[1]} to match the view geometry, got {hw[0]}x{hw[1]}")
    return x


def check_uint8_frame(frame: object, name: str = "frame", size: tuple[int, int] | None = None) -> np.ndarray:
    """Check one uint8 (H, W, 3) frame (optionally of a given size); return it contiguous."""
    return np.ascontiguousarray(check_uint8_rgb(frame, name, batched=False, size=size))


def check_finite(name: str, value: float, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number in ``[low, high]`` as a float; a :class:`PDNError` naming ``name`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PDNError(f"{name}: expected a number, got {value!r}") from None
    if not (math.isfinite(v) and low <= v <= high):
        raise PDNError(f"{name}: must be a finite number in [{low}, {high}], got {value!r}")
    return v
