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
    "MAX_ATTACK_WORK",
    "MAX_BATCH",
    "MAX_CELLS",
    "MAX_ELEMENTS",
    "MAX_FRAMES",
    "MAX_LIST_ITEMS",
    "MAX_PHYSICAL_ATTACK_WORK",
    "MAX_ROADS",
    "MAX_ROAD_KM",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_TEXT_CHARS",
    "MAX_TRAIN_SAMPLES",
    "as_bool",
    "as_text",
    "bounded_float",
    "bounded_int",
    "check_elements",
    "check_fields",
    "flag",
    "flag_type",
    "number",
    "obj",
    "pair",
    "parse_hw",
    "rate",
    "sizes",
    "text",
    "whole",
]

#: Documented maxima of counts. Each is far above any sensible run on a workstation and far below what
#: would take days or terabytes; the refusal names the limit.
MAX_STEPS = 100_000          # optimiser steps of one attack
MAX_ATTACK_RUNS = 100_000    # adaptive attack runs of one certification
MAX_ROADS = 10_000           # roads or approaches of one evaluation
MAX_FRAMES = 10_000_000      # frames rendered or read
MAX_BATCH = 65_536           # images per batch
MAX_SEED = 2**32 - 1         # a seed of any command (as training's): seed arithmetic stays exact everywhere
#: Elements (e.g. batch x channels x height x width) one tensor may hold: 2**31 float32 = 8 GiB.
MAX_ELEMENTS = 2**31
#: Work budgets: the products of counts that set what one command costs, checked before it starts. Each
#: allows hundreds of times the full demo's setting; the refusal names the limit.
MAX_ATTACK_WORK = 1_000_000          # pdn certify --attack x --attack-steps (pixel PGD run-steps; ~3 h, demo: 5,120)
MAX_PHYSICAL_ATTACK_WORK = 100_000   # pdn certify --physical --attack x --attack-steps (rendered run-steps; ~2.5 h)
MAX_ROAD_KM = 1_000.0                # roads x km of one closed-loop drive (~1 h of PilotNet on 2 cores; demo: 10)
MAX_CELLS = 100_000                  # covering cells of one physical certificate, its --sweep included (~80 s; demo: 40,299)
MAX_TRAIN_SAMPLES = 1_000_000_000    # pdn train --epochs x --samples-per-epoch


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
    try:
        v = float(_number(name, value, integral=False))
    except OverflowError:  # an int past float's range (10**400)
        v = math.inf
    if not math.isfinite(v):
        raise PDNError(f"{name} = {_show(value)} must be a finite number")
    if v < low or v > high or (low_open and v == low):
        left = "(" if low_open else "["
        raise PDNError(f"{name} = {_show(value)} is outside {left}{low:g}, {high:g}]" + (f": {hint}" if hint else ""))
    return v


def parse_hw(name: str, value: Any, *, low: int = 1, high: int = 4096, square: bool = False,
             hint: str = "") -> tuple[int, int]:
    """``(H, W)`` in pixels from ``"HxW"`` text (``"66x200"``), a pair of integers, or, with ``square``,
    one integer (``16`` or ``"16"``) for ``H = W``; each side in ``[low, high]``. ``hint`` (what to give
    instead) ends either refusal.

    Sides are integers: ``"66.5x200"``, ``"1e2x200"``, ``1.5`` and true/false are refused (a whole float
    such as ``66.0`` in a pair is taken as 66).

        >>> parse_hw("size", "66x200", low=8)
        (66, 200)
    """
    want = "an integer or an integer pair HxW such as 16x16" if square else "an integer pair HxW such as 66x200"
    if isinstance(value, str):
        text = value.strip().lower()
        parts: list[Any] = text.split("x") if "x" in text or not square else [text, text]
    elif square and isinstance(value, numbers.Real) and not isinstance(value, bool):
        parts = [value, value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    elif hasattr(value, "tolist"):  # a numpy array or a tensor
        parts = value.tolist()
        parts = parts if isinstance(parts, list) else []
    else:
        parts = []
    sides = []
    for p in parts if len(parts) == 2 else ():
        if isinstance(p, bool) or (isinstance(p, numbers.Real) and not float(p).is_integer()):
            break
        try:
            sides.append(int(p))  # "66" or 66.0; never "66.0"
        except (TypeError, ValueError, OverflowError):
            break
    tail = f": {hint}" if hint else ""
    if len(sides) != 2:
        raise PDNError(f"{name}: expected {want}, got {_show(value)}{tail}")
    if not (low <= sides[0] <= high and low <= sides[1] <= high):
        raise PDNError(f"{name}: sides must lie in [{low}, {high}] pixels, got {_show(value)}{tail}")
    return sides[0], sides[1]


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
    """An argparse ``type=`` that runs one of these parsers; argparse adds the flag's name to the error.

    A ``hint`` among ``bounds`` (what to give instead) ends every refusal, a malformed value's too.
    """
    import argparse

    hint = bounds.get("hint", "")

    def convert(text: str) -> Any:
        try:
            return parse("value", text, **bounds)
        except PDNError as exc:
            message = str(exc).removeprefix("value = ")
            if hint and not message.endswith(hint):
                message += f": {hint}"
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


# ---------------------------------------------------------------------------- fields of files and metadata
#: Longest text field read from a file or metadata (names, paths, kinds).
MAX_TEXT_CHARS = 4096
#: Most items of one list field read from a file (region masks, rows of a table).
MAX_LIST_ITEMS = 100_000

#: A field check: ``check(name, value) -> parsed value`` raising a one-line PDNError that names ``name``.
FieldCheck = Callable[[str, Any], Any]


def as_text(name: str, value: Any, *, choices: Sequence[str] | None = None, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A JSON string (never a number, list or object), at most ``max_chars`` long, one of ``choices`` if given."""
    if not isinstance(value, str):
        raise PDNError(f"{name} = {_show(value)} must be a text string, not {_type(value)}")
    if len(value) > max_chars:
        raise PDNError(f"{name} is {len(value):,} characters long, over the limit of {max_chars:,}")
    if choices is not None and value not in choices:
        raise PDNError(f"{name} = {_show(value)} must be one of {', '.join(choices)}")
    return value


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__)


def number(low: float = -math.inf, high: float = math.inf, *, null: bool = False, low_open: bool = False
           ) -> FieldCheck:
    """A field check: a finite JSON number (not a string, list, object or true/false) in ``[low, high]``."""
    def check(name: str, value: Any) -> float | None:
        if value is None and null:
            return None
        if isinstance(value, str) or not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise PDNError(f"{name} = {_show(value)} must be a number, not {_type(value)}")
        return bounded_float(name, value, low=low, high=high, low_open=low_open)
    return check


def whole(low: int = 0, high: int = MAX_FRAMES, *, null: bool = False) -> FieldCheck:
    """A field check: a whole JSON number (``3`` or ``3.0``, not ``"3"``) in ``[low, high]``."""
    def check(name: str, value: Any) -> int | None:
        if value is None and null:
            return None
        if isinstance(value, str) or not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise PDNError(f"{name} = {_show(value)} must be a whole number, not {_type(value)}")
        return bounded_int(name, value, low=low, high=high)
    return check


def rate(*, null: bool = True) -> FieldCheck:
    """A field check: a share in ``[0, 1]`` (null allowed by default: "not measured")."""
    return number(0.0, 1.0, null=null)


def text(choices: Sequence[str] | None = None, *, null: bool = False) -> FieldCheck:
    """A field check: a JSON string (one of ``choices`` if given)."""
    def check(name: str, value: Any) -> str | None:
        if value is None and null:
            return None
        return as_text(name, value, choices=choices)
    return check


def flag(*, null: bool = False) -> FieldCheck:
    """A field check: ``true`` or ``false`` (the strings ``"false"``/``"true"`` are refused)."""
    def check(name: str, value: Any) -> bool | None:
        if value is None and null:
            return None
        return as_bool(name, value)
    return check


def pair(low: float = -math.inf, high: float = math.inf, *, null: bool = False, low_open: bool = False
         ) -> FieldCheck:
    """A field check: a JSON list of two numbers ``[a, b]`` with ``low <= a <= b <= high`` (``low < a`` with
    ``low_open``; a single number, a string or an object is refused)."""
    def check(name: str, value: Any) -> tuple[float, float] | None:
        if value is None and null:
            return None
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise PDNError(f"{name} = {_show(value)} must be a list of two numbers [A, B], not {_type(value)}")
        a, b = (number(low, high, low_open=low_open)(f"{name}[{i}]", v) for i, v in enumerate(value))
        if a > b:
            raise PDNError(f"{name} = {_show(value)} starts after it ends: give [A, B] with A <= B")
        return a, b
    return check


def sizes(low: int = 1, high: int = 4096, length: int = 2) -> FieldCheck:
    """A field check: a JSON list of ``length`` whole numbers, each in ``[low, high]`` (e.g. ``[32, 56]`` texels)."""
    def check(name: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise PDNError(f"{name} = {_show(value)} must be a list of {length} whole numbers, not {_type(value)}")
        return tuple(whole(low, high)(f"{name}[{i}]", v) for i, v in enumerate(value))
    return check


def obj(*, null: bool = False) -> FieldCheck:
    """A field check: a JSON object (its own fields are checked by their own dotted keys)."""
    def check(name: str, value: Any) -> dict | None:
        if value is None and null:
            return None
        if not isinstance(value, dict):
            raise PDNError(f"{name} = {_show(value)} must be an object {{...}}, not {_type(value)}")
        return value
    return check


def check_fields(where: str, data: Any, spec: dict[str, FieldCheck], *, required: Sequence[str] = (),
                 hint: str = "") -> dict[str, Any]:
    """Check the fields of a parsed JSON object from a file or metadata before anything uses them.

    Args:
        where: the file (or metadata key), named first in every error.
        data: the parsed JSON (must be an object).
        spec: dotted key (``"control_noise.mean_dev_deg"``) -> field check (:func:`number`, :func:`whole`,
            :func:`rate`, :func:`text`, :func:`flag`, :func:`pair`, :func:`sizes`, :func:`obj`, or any
            ``check(name, value)``). A key whose parent is missing or null is skipped; a parent that is
            present but not an object is refused.
        required: dotted keys that must be present.
        hint: what to do, appended to an error (e.g. "rewrite it with pdn attack").

    Returns:
        ``{dotted key: parsed value}`` of the fields present.

    Raises:
        PDNError: one line, ``<where>: <field> = <value> <what is wrong>[: <hint>]``.
    """
    def fail(message: str) -> PDNError:
        return PDNError(f"{where}: {message}" + (f"; {hint}" if hint else ""))

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object, got {_type(data)}")
    out: dict[str, Any] = {}
    for key, check in spec.items():
        node: Any = data
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if node is None or part not in node:
                node = _ABSENT
                break
            node = node[part]
            if depth < len(parts) - 1 and node is not None and not isinstance(node, dict):
                raise fail(f"{'.'.join(parts[:depth + 1])} = {_show(node)} must be an object {{...}}, not {_type(node)}")
        if node is _ABSENT:
            if key in required:
                raise fail(f"{key} is missing")
            continue
        try:
            out[key] = check(key, node)
        except PDNError as exc:
            raise fail(str(exc)) from None
    return out


_ABSENT = object()
