"""The GPU paths of training, checked on the CPU: which batches are pinned, the autocast context, and the
CPU path's values (the GPU itself is exercised by ``make bench-gpu`` and the ``gpu``-marked tests)."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import to_tensor
from drivenet_patch.training.config import TrainConfig, autocast_for
from drivenet_patch.training.data import device_frames, pin_for


def test_only_cuda_batches_are_pinned() -> None:
    assert pin_for("cuda") and pin_for(torch.device("cuda", 1))
    assert not pin_for("cpu") and not pin_for("meta")


def test_cpu_frames_are_to_tensor_bit_for_bit() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    x = device_frames(frames, torch.device("cpu"))
    assert torch.equal(x, to_tensor(frames)) and x.dtype == torch.float32 and x.shape == (5, 3, 6, 7)


def test_frames_must_be_uint8_rgb_batches() -> None:
    with pytest.raises(PDNError, match="uint8"):
        device_frames(np.zeros((2, 4, 4, 3), np.float32), torch.device("cpu"))


def test_autocast_only_on_cuda() -> None:
    assert isinstance(autocast_for("cpu", True), contextlib.nullcontext)
    assert isinstance(autocast_for("cuda", False), contextlib.nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": the context is built, not entered
        ctx = autocast_for("cuda", True)
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


def test_amp_is_a_checked_config_key() -> None:
    assert TrainConfig().amp is True and TrainConfig(amp=False).to_dict()["amp"] is False
    with pytest.raises(PDNError, match="amp must be true or false"):
        TrainConfig(amp=1)


def test_bench_gpu_script_stops_cleanly_without_a_gpu(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: make bench-gpu would measure it")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "BIN": str(Path(sys.executable).parent), "OUT": str(tmp_path / "out")}
    done = subprocess.run([str(root / ".ci" / "bench-gpu")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "no CUDA device" in done.stderr and not (tmp_path / "out").exists()
    assert "bench-gpu:" in (root / "Makefile").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_frames_on_the_gpu_equal_the_cpu_ones() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (16, 66, 200, 3), dtype=np.uint8)
    x = device_frames(frames, torch.device("cuda"))
    torch.cuda.synchronize()
    assert x.is_cuda and torch.equal(x.cpu(), to_tensor(frames))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_step_on_the_gpu_is_finite_and_close_to_float32() -> None:
    from drivenet_patch.models import create_model

    model = create_model("pilotnet", generator=torch.Generator().manual_seed(0)).cuda()
    x = torch.rand(8, 3, 66, 200, generator=torch.Generator().manual_seed(1)).cuda()
    with autocast_for("cuda", True):
        low = model(x)
    full = model(x)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.05)
