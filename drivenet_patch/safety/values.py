"""Typed, bounded parsing of every value that comes from outside: flags, JSON fields, metadata, tables.

One layer for values, as :mod:`drivenet_patch.safety.inputs` is the one layer for files. Each parser
checks type, finiteness and range (and, for sizes, the product of sizes) *before* any work starts, and
refuses with one :class:`~drivenet_patch.safety.errors.PDNError` line that names the value, the limit and
what to do. No torch here: the vehicle-side certifier uses the same rules.

    >>> bounded_int("steps", "300", low=1, high=MAX_STEPS)
    300
    >>> bounded_float("delta", 1.16, low=0.0, high=90.0)
    1.16
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from drivenet_patch.safety.errors import PDNError

__all__ = [
    "MAX_ATTACK_RUNS",
    "MAX_BATCH",
    "MAX_ELEMENTS",
    "MAX_FRAMES",
    "MAX_KM",
    "MAX_ROADS",
    "MAX_SEED",
    "MAX_STEPS",
    "as_bool",
    "bounded_float",
    "bounded_int",
    "check_elements",
    "flag_type",
    "float_range",
]

#: Documented maxima of counts. Each is far above any sensible run on a workstation and far below what
#: would take days or terabytes; the refusal names the limit.
MAX_STEPS = 100_000          # optimiser steps of one attack
MAX_ATTACK_RUNS = 100_000    # adaptive attack runs of one certification
MAX_ROADS = 10_000           # roads or approaches of one evaluation
MAX_KM = 1_000.0             # km driven per road
MAX_FRAMES = 10_000_000      # frames rendered or read
MAX_BATCH = 65_536           # images per batch
MAX_SEED = 2**63 - 1         # the largest seed a torch/numpy generator takes
#: Elements (e.g. batch x channels x height x width) one tensor may hold: 2**31 float32 = 8 GiB.
MAX_ELEMENTS = 2**31


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(name: str, value: Any, integral: bool) -> float | int:
    """``value`` as a Python number: an int/float (never bool), or a string that parses as one."""
    if isinstance(value, bool):
        raise PDNError(f"{name} = {_show(value)} must be a number, not true/false")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integral else float(text)
        except ValueError:
            if integral:
                try:
                    f = float(text)
                except ValueError:
                    f = math.nan
                if math.isfinite(f) and f == int(f):
                    value = int(f)
                else:
                    raise PDNError(f"{name} = {_show(text)} must be a whole number") from None
            else:
                raise PDNError(f"{name} = {_show(text)} must be a number") from None
    if not isinstance(value, numbers.Real):
        raise PDNError(f"{name} = {_show(value)} must be a number, not {type(value).__name__}")
    return value


def bounded_int(name: str, value: Any, *, low: int, high: int, hint: str = "") -> int:
    """``value`` as an int in ``[low, high]`` (a whole float such as ``1e3`` is accepted).

    Args:
        name: how the value is named in the error (a parameter, a flag or a JSON field).
        value: int, whole float or string.
        low, high: inclusive bounds; ``high`` is the documented maximum the error names.
        hint: what to do instead, appended to the error.
    """
    v = _number(name, value, integral=True)
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            raise PDNError(f"{name} = {_show(value)} must be a whole number")
        v = int(v)
    v = int(v)
    if not low <= v <= high:
        raise PDNError(f"{name} = {_show(value)} is outside {low}..{high}" + (f": {hint}" if hint else ""))
    return v


def bounded_float(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                  low_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``); NaN and inf refused."""
    v = float(_number(name, value, integral=False))
    if not math.isfinite(v):
        raise PDNError(f"{name} = {_show(value)} must be a finite number")
    if v < low or v > high or (low_open and v == low):
        left = "(" if low_open else "["
        raise PDNError(f"{name} = {_show(value)} is outside {left}{low:g}, {high:g}]" + (f": {hint}" if hint else ""))
    return v


def float_range(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    """A ``[a, b]`` pair (list/tuple of two numbers, or ``"a:b"`` / ``"a-b"`` text) with ``low <= a <= b <= high``."""
    if isinstance(value, str):
        text = value.strip()
        sep = ":" if ":" in text else ("-" if "-" in text.lstrip("-") else None)
        if sep is None:
            raise PDNError(f"{name} = {_show(value)} must be a range 'A:B'")
        head, _, tail = text.lstrip("-").partition(sep)
        parts = [("-" if text.startswith("-") else "") + head, tail]
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        parts = list(value)
    else:
        raise PDNError(f"{name} = {_show(value)} must be a range of two numbers [A, B]")
    a = bounded_float(f"{name}[0]", parts[0], low=low, high=high)
    b = bounded_float(f"{name}[1]", parts[1], low=low, high=high)
    if a > b:
        raise PDNError(f"{name} = {_show(value)} starts after it ends: give A <= B")
    return a, b


def check_elements(name: str, sizes: Sequence[int], limit: int = MAX_ELEMENTS, hint: str = "") -> int:
    """The product of ``sizes`` (e.g. batch, 3, H, W), refused past ``limit`` before anything is allocated."""
    total = 1
    for s in sizes:
        total *= int(s)
    if total > limit:
        shown = " x ".join(str(int(s)) for s in sizes)
        raise PDNError(f"{name} = {shown} = {total:,} elements is over the limit of {limit:,}"
                       + (f": {hint}" if hint else ""))
    return total


def as_bool(name: str, value: Any) -> bool:
    """A true JSON boolean only: the strings ``"false"``/``"true"`` and numbers are refused, never guessed."""
    if isinstance(value, bool):
        return value
    raise PDNError(f"{name} = {_show(value)} must be true or false")


def flag_type(parse: Callable[..., Any], **bounds: Any) -> Callable[[str], Any]:
    """An argparse ``type=`` that runs one of these parsers; argparse adds the flag's name to the error."""
    import argparse

    def convert(text: str) -> Any:
        try:
            return parse("value", text, **bounds)
        except PDNError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value = ")) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert
