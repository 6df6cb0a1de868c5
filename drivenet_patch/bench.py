"""Benchmarks behind ``pdn bench``: measured side by side in one process, best of several repeats.

This machine is noisy (a shared 2-core VM), so every figure is the best of ``repeats`` timed
runs after a warm-up; ratios are taken between runs made in the same process.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from drivenet_patch.world.camera import Camera
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import Road


def best_rate(fn: Callable[[], Any], items: int, repeats: int = 3) -> float:
    """Items per second of ``fn`` (best of ``repeats`` runs, after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def bench_world(frames: int = 2048, compile: bool = True, device: str = "cpu", repeats: int = 3) -> dict[str, Any]:
    """Frames per second of batched rendering (float frames, and uint8 frames as written to datasets).

    Keys ``fps_<H>x<W>`` hold the fastest mode measured; per-mode figures sit beside them.
    """
    road = Road.generate(0, 1000.0)
    rng = np.random.default_rng(0)
    s = rng.uniform(10.0, 900.0, frames)
    poses = np.stack([road.pose_at(float(v), -1.75 + float(o), float(h))
                      for v, o, h in zip(s, rng.uniform(-0.8, 0.8, frames), rng.uniform(-0.05, 0.05, frames))])
    light = Lighting.sample(rng, frames, device)
    result: dict[str, Any] = {"frames": frames, "device": device, "machine": machine()}
    modes = [False, True] if compile else [False]
    for size in ((66, 200), (160, 320)):
        key = f"{size[0]}x{size[1]}"
        best = 0.0
        for comp in modes:
            r = Renderer(Camera().with_size(*size), device=device, chunk=32, compile=comp)
            tag = "compiled" if comp else "eager"
            t0 = time.perf_counter()
            r.render(road, poses[:32], light.index(slice(0, 32)))
            if comp:
                result[f"compile_s_{key}"] = round(time.perf_counter() - t0, 1)
            fps = best_rate(lambda r=r: r.render(road, poses, light), frames, repeats)
            fps_u8 = best_rate(lambda r=r: r.render_uint8(road, poses, light), frames, repeats)
            result[f"fps_{key}_{tag}"] = round(fps, 1)
            result[f"fps_{key}_{tag}_uint8"] = round(fps_u8, 1)
            best = max(best, fps, fps_u8)
        result[f"fps_{key}"] = round(best, 1)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a benchmark result."""
    lines = [f"{'measure':<34} value", "-" * 48]
    for k, v in result.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        lines.append(f"{k:<34} {v}")
    return "\n".join(lines)
