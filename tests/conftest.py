"""Hypothesis profiles for the property-based tests.

``default`` (about 20 examples per test) keeps the everyday run fast; ``slow`` runs at least 200.
The profile is chosen by ``PDN_HYPOTHESIS_PROFILE`` when set, else by the marker expression:
``pytest -m slow`` selects ``slow`` and also runs the hypothesis tests (they carry no marker of
their own, so a plain ``pytest`` runs them at the default size).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from drivenet_patch.safety.threads import configure_threads

# Each test worker chooses its threads as every pdn command does, before any test imports torch.
configure_threads()

# pytest puts tests/ on sys.path to import this file; its attacks/ and defenses/ test folders would
# then shadow the packages of the same names (as empty namespace packages, since the editable
# install's finder comes after the path finder). Import the real packages first.
_HERE = os.path.abspath(os.path.dirname(__file__))
_SAVED = list(sys.path)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
try:
    for _name in ("attacks", "defenses"):
        if getattr(sys.modules.get(_name), "__file__", None) is None:
            sys.modules.pop(_name, None)
            importlib.import_module(_name)
finally:
    sys.path[:] = _SAVED

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               derandomize=False, print_blob=True)
settings.register_profile("default", max_examples=20, **_COMMON)
settings.register_profile("slow", max_examples=200, **_COMMON)
settings.register_profile("ci", max_examples=20, **{**_COMMON, "derandomize": True})


def _selects_slow(config: pytest.Config) -> bool:
    """True when the ``-m`` expression selects tests marked ``slow`` (``-m slow``, ``-m "slow or gpu"``)."""
    expr = config.getoption("markexpr", "") or ""
    if not expr:
        return False
    from _pytest.mark.expression import Expression

    try:
        return bool(Expression.compile(expr).evaluate(lambda name, **_: name == "slow"))
    except Exception:  # an expression pytest itself will reject; leave the choice to it
        return False


def pytest_configure(config: pytest.Config) -> None:
    profile = os.environ.get("PDN_HYPOTHESIS_PROFILE") or ("slow" if _selects_slow(config) else "default")
    settings.load_profile(profile)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under ``-m slow`` the property tests run too, with the slow profile's example count.
    if _selects_slow(config):
        for item in items:
            if getattr(getattr(item, "function", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.slow)


# ----------------------------------------------------------------------------- a tiny learnable dataset
def write_tiny_synth(root: Path, n: int = 400, seed: int = 0, size: tuple[int, int] = (66, 200)) -> Path:
    """A synth-format dataset without the renderer: a bright road band whose horizontal position
    sets the steering label (band right of centre = steer right = negative), 20 frames per episode.

    Written in well under a second, and learnable by ``pilotnet_tiny`` in a few epochs; for the
    training tests that care about files, resumption and processes rather than about the world.
    """
    import json

    import numpy as np
    import pandas as pd

    from drivenet_patch.world.camera import Camera

    rng = np.random.default_rng(seed)
    h, w = size
    centre = rng.uniform(0.2, 0.8, n) * w  # (n,) band centre column
    cols = np.arange(w)[None, :]
    band = np.abs(cols - centre[:, None]) < w * 0.08  # (n, w)
    images = np.empty((n, h, w, 3), np.uint8)
    images[:] = rng.integers(40, 70, (n, 1, 1, 3), dtype=np.uint8)  # per-frame background tint
    images[band[:, None, :].repeat(h, axis=1)] = 200
    images[:, : h // 4] = (120, 160, 220)  # sky
    steering = -(centre - w / 2) / (w / 2) * 6.0 + rng.normal(0.0, 0.1, n)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", images)
    pd.DataFrame({"steering_deg": np.round(steering, 5), "episode": np.arange(n) // 20,
                  "t": (np.arange(n) % 20) * 0.2, "camera": "center"}).to_csv(root / "labels.csv", index=False)
    meta = {"format": "synth", "version": 1, "frames": n, "size": [h, w],
            "camera": Camera().with_size(h, w).to_dict(), "drive": {"lookahead_m": 8.0}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def make_tiny_synth() -> Callable[..., Path]:
    """:func:`write_tiny_synth` itself, for tests that need their own variant."""
    return write_tiny_synth


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 frames of :func:`write_tiny_synth` (seed 0), shared by the tests of a session (read only)."""
    return write_tiny_synth(tmp_path_factory.mktemp("tiny") / "train", n=400, seed=0)


@pytest.fixture(scope="session")
def straight_approach() -> Callable[[int, int], object]:
    """``straight_approach(height, width)``: StickerScenes of a road sticker (default placement, 40 m
    along a straight 120 m road) seen from 12 seeded approach poses 5-10 m before it, rendered at
    ``height`` x ``width``; the shared scene of the attack tests."""

    def make(height: int, width: int) -> object:
        import numpy as np

        from attacks.scenes import ApproachConfig, world_scenes
        from drivenet_patch.world import Camera, Renderer, Road, StickerPlacement

        cfg = ApproachConfig(poses_per_road=12, distance_m=(5.0, 10.0))
        return world_scenes(Renderer(Camera(height=height, width=width)), Road.straight(120.0),
                            StickerPlacement(s=40.0), cfg, np.random.default_rng(0))

    return make
