"""Exported models read real-format logs (Udacity simulator, SullyChen fixtures) as PyTorch does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")  # a guard only: `make test` installs the deploy extra

from drivenet_patch.data import open_dataset
from drivenet_patch.deploy.export import compare, export_onnx, session
from drivenet_patch.models import create_model


@pytest.mark.parametrize("name", ["pilotnet_tiny", "patchvote_tiny"])
def test_onnx_runtime_equals_pytorch_on_real_format_fixtures(tmp_path: Path, make_sim, make_sully, name) -> None:
    frames = []
    for root in (make_sim([0.1, -0.2, 0.3]), make_sully([1.5, -30.0, 12.0])):
        ds = open_dataset(root)
        frames.append(ds.frames(np.arange(len(ds))))  # (n, 66, 200, 3) uint8
    x = torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).float() / 255.0
    x = (x + 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)  # texture
    model = create_model(name, generator=torch.Generator().manual_seed(0)).eval()
    export_onnx(model, tmp_path / "m.onnx")
    diff = compare(model, session(tmp_path / "m.onnx"), x)
    assert max(diff.values()) <= 1e-4, diff
