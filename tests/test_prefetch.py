"""The prefetch thread changes when a batch is made, never which: the same batches in the same order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drivenet_patch.data import open_dataset
from drivenet_patch.data.synthesize import synthesize
from drivenet_patch.training.augment import Augmenter
from drivenet_patch.training.config import TrainConfig
from drivenet_patch.training.data import Subset, prefetch, tensor_batches


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Subset:
    root = tmp_path_factory.mktemp("world")
    synthesize(root, 48, seed=5, size=(33, 100), cameras=("center", "left"), episode_steps=24, progress=False)
    ds = open_dataset(root)
    return Subset(ds, np.arange(len(ds)))


def test_prefetched_batches_equal_the_plain_ones_bit_for_bit(world: Subset) -> None:
    cfg = TrainConfig(batch=8, samples_per_epoch=40, seed=3)
    aug = Augmenter(world.camera, world.crop, shift_m=cfg.shift_m, rot_deg=cfg.rot_deg, photometric=False)
    plain = list(tensor_batches(world, cfg, 2, aug))
    fetched = list(prefetch(tensor_batches(world, cfg, 2, aug), depth=2))
    assert len(plain) == len(fetched) == 5
    for (xa, ya), (xb, yb) in zip(plain, fetched, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xb.is_contiguous(memory_format=torch.channels_last)
    other = list(tensor_batches(world, cfg, 3, aug))  # another epoch draws other frames
    assert not torch.equal(other[0][0], plain[0][0])


def test_an_error_in_the_thread_reaches_the_loop() -> None:
    def broken():
        yield 1
        raise ValueError("bad frame")

    got = []
    with pytest.raises(ValueError, match="bad frame"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]


def test_the_cpu_pipeline_fuses_jitter_into_the_float_conversion_with_the_same_frames(world: Subset) -> None:
    """On the CPU the batches come from ``apply_uint8``; they equal the unfused path (uint8 -> float, then
    the batched jitter with the same draws) to float rounding, in either memory layout."""
    from drivenet_patch.training.augment_batch import BatchPhotometric
    from drivenet_patch.training.data import batches, device_frames

    for channels_last in (True, False):
        cfg = TrainConfig(batch=8, samples_per_epoch=24, seed=4, channels_last=channels_last)
        aug = Augmenter(world.camera, world.crop, shift_m=cfg.shift_m, rot_deg=cfg.rot_deg, photometric=False)
        got = list(tensor_batches(world, cfg, 1, aug))
        photo, gen = BatchPhotometric(), torch.Generator().manual_seed((cfg.seed * 100_003 + 1) * 1 + 0)
        for (x, y), (frames, labels) in zip(got, batches(world, cfg, 1, aug), strict=True):
            ref = photo(device_frames(frames, torch.device("cpu")), gen)
            assert (x - ref).abs().max() < 2e-6 and torch.equal(y, torch.from_numpy(labels))
            layout = torch.channels_last if channels_last else torch.contiguous_format
            assert x.is_contiguous(memory_format=layout)
