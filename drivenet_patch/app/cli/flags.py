"""The types of ``pdn``'s numeric flags and the checks that tie flags together, on the one validation layer.

Every numeric flag of every command is parsed by :mod:`drivenet_patch.safety.values` (type, finiteness,
range, the documented maxima) as its argparse ``type=``, so a malformed or absurd value is refused
before the command starts, with one line that names the flag, the value, the limit and what to give
instead (argparse puts ``argument --flag:`` in front). What a single flag cannot tell is checked by the
command right after parsing, before its first expensive step:

* products of counts: a batch times an image (:func:`check_batch`), runs times steps, roads times km
  (:func:`check_work`);
* flags that do not apply to the chosen mode are refused, never ignored (:func:`refuse_given`); such a
  flag has ``default=None`` and the command fills in its documented default with :func:`fill`.

The limits are the constants of :mod:`drivenet_patch.safety.values` and of the library modules that
enforce them again (``tests/test_values.py`` checks that the copies here agree), documented in
``docs/hostile_inputs.md``, "Values". Importing this module loads neither torch nor numpy (``pdn --help``
stays fast).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import (
    MAX_BATCH,
    MAX_ELEMENTS,
    MAX_FRAMES,
    MAX_SEED,
    bounded_float,
    bounded_int,
    check_elements,
    flag_type,
)

__all__ = [
    "ANGLE",
    "BATCH",
    "EOT_BATCH",
    "FRAMES",
    "KM",
    "LATERAL_M",
    "MAX_ATTACK_STEPS",
    "MAX_BENCH_FRAMES",
    "MAX_DRIVE_ROADS",
    "MAX_KM_PER_ROAD",
    "MAX_POSES",
    "MAX_SALIENCY_FRAMES",
    "MAX_SCENES",
    "MAX_SCENE_ROADS",
    "MAX_STICKER_STEPS",
    "SEED",
    "check_batch",
    "check_work",
    "count",
    "fill",
    "given",
    "real",
    "refuse_given",
    "weight",
]

#: Limits that library modules enforce again (copied: importing them would load torch for ``pdn --help``).
MAX_STICKER_STEPS = 500        # attacks.sticker.MAX_STEPS: optimisation steps of one sticker
MAX_ATTACK_STEPS = 10_000      # defenses.evaluate.MAX_ATTACK_STEPS: PGD steps of one adaptive attack run
MAX_DRIVE_ROADS = 1000         # drivenet_patch.driving.drive.MAX_ROADS: roads driven at once
MAX_KM_PER_ROAD = 20.0         # drivenet_patch.driving.drive.MAX_KM_PER_ROAD
MAX_SCENE_ROADS = 1000         # attacks.approach.MAX_SCENE_ROADS: roads of the approach scenes
MAX_POSES = 1024               # attacks.approach.MAX_POSES: approach poses per road
MAX_SCENES = 16384             # attacks.approach.MAX_SCENES: roads x poses of one scene set
MAX_EOT_BATCH = 4096           # attacks.sticker.StickerConfig: EOT samples per step
MAX_EPOCHS = 100_000           # drivenet_patch.training.config.MAX_EPOCHS
MAX_SAMPLES_PER_EPOCH = 100_000_000  # drivenet_patch.training.config.MAX_SAMPLES_PER_EPOCH
#: Limits of this module's own.
MAX_BENCH_FRAMES = 65_536      # frames of one benchmark measurement (default 2048)
MAX_BENCH_BATCHES = 10_000     # batches of one end-to-end training measurement (default 30)
MAX_BENCH_STEPS = 100_000      # closed-loop steps of one timed drive of pdn bench monitor (default 30)
MAX_SALIENCY_FRAMES = 4096     # overlays of pdn saliency (each a PNG)
MAX_THREADS = 1024             # torch CPU threads
MAX_CHECK_FRAMES = 4096        # pdn export --check-frames
MAX_EPISODE_STEPS = 1_000_000  # pdn data synth --episode-steps
MAX_AREAS = 32                 # sticker areas of one pdn attack sweep
MAX_WEIGHT = 1e6               # loss weights (a larger one only rescales the learning rate)
MAX_LR = 100.0                 # learning rates
MAX_DEG = 90.0                 # angles and tolerances in road-wheel degrees (a road wheel turns less)
MAX_LATERAL = 30.0             # lateral offsets in metres (defenses.physical.MAX_LATERAL_M)
OPSETS = (13, 21)              # ONNX opsets pdn export writes (drivenet_patch.deploy.export)


def count(high: int, what: str, low: int = 1) -> Callable[[str], int]:
    """argparse type: a whole number of ``what`` in ``[low, high]`` (``1e3`` reads as 1000)."""
    return flag_type(bounded_int, low=low, high=high, hint=f"give {what} from {low:,} to {high:,}")


def real(low: float, high: float, what: str, low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number of ``what`` in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    left = "(" if low_open else "["
    return flag_type(bounded_float, low=low, high=high, low_open=low_open,
                     hint=f"give {what} in {left}{low:g}, {high:g}]")


def weight(what: str = "a weight") -> Callable[[str], float]:
    """argparse type: a loss weight, finite and in ``[0, MAX_WEIGHT]``."""
    return real(0.0, MAX_WEIGHT, what)


#: The types most commands share.
SEED = count(MAX_SEED, "a seed", low=0)
FRAMES = count(MAX_FRAMES, "a number of frames")
BATCH = count(MAX_BATCH, "a batch size")
EOT_BATCH = count(MAX_EOT_BATCH, "a number of EOT samples")
KM = real(0.0, MAX_KM_PER_ROAD, "km per road", low_open=True)
ANGLE = real(0.0, MAX_DEG, "degrees", low_open=True)
LATERAL_M = real(-MAX_LATERAL, MAX_LATERAL, "metres")


def given(args: argparse.Namespace, flag: str) -> bool:
    """Whether ``flag`` (e.g. ``"--yaw"``) was given: its value is neither None (the default of a mode's
    flag) nor False (a switch left off)."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    return value is not None and value is not False


def refuse_given(args: argparse.Namespace, flags: Iterable[str], why: str, fix: str = "drop it") -> None:
    """Refuse any of ``flags`` that was given: it does not apply ``why`` (e.g. ``"without --physical"``);
    the message ends with ``fix``, what to do."""
    for flag in flags:
        if given(args, flag):
            value = getattr(args, flag.lstrip("-").replace("-", "_"))
            shown = "" if value is True else f" {value:g}" if isinstance(value, float) else f" {str(value)[:40]!r}"
            raise PDNError(f"{flag}{shown} does not apply {why}: {fix}")


def fill(args: argparse.Namespace, **defaults: Any) -> None:
    """Set each mode flag that was not given to its documented default (after :func:`refuse_given`)."""
    for dest, value in defaults.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def check_work(what: str, sizes: Sequence[tuple[str, float]], limit: float, hint: str) -> float:
    """The product of ``sizes`` (``[("--attack", 100000), ("--attack-steps", 10000)]``), refused past ``limit``.

    The message names each flag with its value, the product, the limit and ``hint`` (what to do).
    """
    total = math.prod(float(v) for _, v in sizes)
    if not total <= limit:
        shown = " x ".join(f"{name} {v:g}" if name.startswith("-") else f"{v:g} {name}" for name, v in sizes)
        raise PDNError(f"{shown} = {_amount(total)} {what}, over the limit of {_amount(limit)}: {hint}")
    return total


def _amount(x: float) -> str:
    """``1000000.0`` -> ``1,000,000``; ``2.5`` -> ``2.5``."""
    return f"{x:,.0f}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:,.6g}"


def check_batch(flag: str, batch: int, image_hw: Sequence[int], limit: int = MAX_ELEMENTS) -> int:
    """``batch`` images of ``3 x H x W`` floats in one tensor, refused past ``limit`` elements before any allocation."""
    h, w = (int(v) for v in image_hw)
    return check_elements(f"{flag} x 3 x H x W", [batch, 3, h, w], limit,
                          hint=f"give a smaller {flag} (at most {max(1, limit // (3 * h * w)):,} at {h}x{w})")
