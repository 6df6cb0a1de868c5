"""Streaming over memory-mapped datasets keeps resident memory bounded (Linux: /proc/self/statm)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from drivenet_patch.data import SynthDataset
from drivenet_patch.training.data import Concat, Subset
from drivenet_patch.training.evaluation import predict

pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux /proc")


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _dataset(root: Path, n: int) -> SynthDataset:
    root.mkdir()
    images = np.lib.format.open_memmap(root / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 66, 200, 3))
    images[:] = np.random.default_rng(0).integers(0, 255, (1, 66, 200, 3), dtype=np.uint8)
    images.flush()
    del images
    pd.DataFrame({"steering_deg": np.zeros(n), "episode": 0}).to_csv(root / "labels.csv", index=False)
    cam = {"height": 66, "width": 200, "hfov_deg": 60.0, "mount_height_m": 1.4, "pitch_deg": 7.0,
           "lateral_m": 0.0, "forward_m": 1.6}
    (root / "meta.json").write_text(json.dumps({"camera": cam, "format": "synth", "frames": n}))
    return SynthDataset(root)


def test_release_unmaps_frames_already_read(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "d", 3000)  # 119 MB of frames
    before = _rss_mb()
    total = sum(int(ds.frames(np.arange(s, s + 500))[:, 0, 0, 0].sum()) for s in range(0, 3000, 500))
    grown = _rss_mb() - before
    ds.release()
    after = _rss_mb() - before
    assert total > 0 and grown > 80, grown  # reading maps the file's pages into this process
    assert after < 0.2 * grown, (grown, after)  # ... and release() lets them go
    assert ds.frames([2999]).shape == (1, 66, 200, 3)  # still readable afterwards


def test_predict_streams_with_bounded_memory(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "d", 4000)  # 158 MB of frames
    model = torch.nn.Flatten()  # any model: what is measured is the reading
    model.forward = lambda x: x.mean(dim=(1, 2, 3))  # type: ignore[method-assign]
    before = _rss_mb()
    out = predict(model, Concat([Subset(ds, np.arange(2000)), Subset(ds, np.arange(2000, 4000))]), batch=20)
    assert out.shape == (4000,) and np.isfinite(out).all()
    assert _rss_mb() - before < 60  # released every 16 batches (320 frames, 13 MB), not all 158 MB
