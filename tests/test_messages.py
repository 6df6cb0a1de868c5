"""Error messages name what the reader typed: library code its parameters, ``pdn`` its flags.

A Python user never typed ``--steps``; a ``pdn`` user never typed ``steps=``. Library modules (everything
outside ``drivenet_patch/app``) name their own parameters in errors, and the CLI renames them to the flags
that set them in one place (:func:`drivenet_patch.app.cli.common.flag_message`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

from drivenet_patch.app.cli import main
from drivenet_patch.app.cli.common import flag_message

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("drivenet_patch", "attacks", "defenses")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: Exceptions whose messages reach a user.
MESSAGE_ERRORS = {"PDNError", "ValueError"}


def _strings(node: ast.AST) -> list[ast.Constant]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def flags_in_messages(source: str) -> list[tuple[int, str]]:
    """``(line, flag)`` for each ``--flag`` in an error message of ``source``: the arguments of a raised
    PDNError/ValueError, a parameter's default (``option="--out"`` ends up in messages) and a ``hint``
    or ``message`` variable. Docstrings and comments may name flags (they describe the CLI)."""
    found: list[ast.Constant] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in MESSAGE_ERRORS:
                found += [s for arg in (*node.exc.args, *(k.value for k in node.exc.keywords)) for s in _strings(arg)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [s for d in (*node.args.defaults, *node.args.kw_defaults) if d is not None for s in _strings(d)]
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and re.search(r"hint|message", t.id)
                                                  for t in node.targets):
            found += _strings(node.value)
    return sorted((s.lineno, flag) for s in found for flag in FLAG.findall(s.value))


def library_modules() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "app" not in p.relative_to(ROOT / pkg).parts[:1]]


def test_library_errors_name_parameters_not_flags() -> None:
    modules = library_modules()
    assert len(modules) > 50 and not any("app" in p.parts for p in modules)
    bad = [f"{p.relative_to(ROOT)}:{line}: {flag}" for p in modules for line, flag in flags_in_messages(p.read_text())]
    assert not bad, "library errors name a CLI flag; name the parameter (the CLI maps it):\n" + "\n".join(bad)


def test_the_message_check_sees_each_kind_of_violation() -> None:
    source = '''
"""Module docstring may say pdn train --steps."""
def f(steps, option="--out"):
    """Docstrings may name --steps."""
    hint = "(pass --allow-pickle)"  # comments may name --steps
    if steps < 1:
        raise PDNError(f"--steps must be >= 1, got {steps}")
    raise errors.ValueError("bad", note="use --fast")
'''
    assert flags_in_messages(source) == [(3, "--out"), (5, "--allow-pickle"), (7, "--steps"), (8, "--fast")]
    assert flags_in_messages('raise PDNError(f"steps = {s} must be >= 1")\nx = "a -- b"') == []


# ---------------------------------------------------------------------------- the CLI's mapping
def ns(**dests: object) -> argparse.Namespace:
    return argparse.Namespace(command="x", fn=None, **dests)


@pytest.mark.parametrize(("message", "args", "shown"), [
    ("steps must be >= 1, got 0", ns(steps=0), "--steps must be >= 1, got 0"),
    ("sticker: /s has no attack.json", ns(sticker="/s"), "--sticker: /s has no attack.json"),
    ("distance = (40, 30) starts after it ends", ns(distance="40-30"), "--distance = (40, 30) starts after it ends"),
    ("distance[0] = -1 is outside [0, 200]", ns(distance="-1:5"), "--distance[0] = -1 is outside [0, 200]"),
    ("roads x poses must be at most 2000 scenes", ns(roads=1, poses=1), "--roads x --poses must be at most 2000 scenes"),
    ("slow_factor must lie in (0, 1]", ns(slow_factor=2.0), "--slow-factor must lie in (0, 1]"),
    ("delta_deg must be > 0", ns(delta=0.0), "--delta must be > 0"),  # a unit in the name, not in the flag
    ("sticker_every_m must be >= 10 m", ns(sticker_every=1.0), "--sticker-every must be >= 10 m"),
    ("hold_s must be >= 0", ns(hold_s=-1.0), "--hold-s must be >= 0"),  # ... unless the flag has it too
    ("n_runs must be >= 1", ns(attack=0), "--attack must be >= 1"),  # a parameter the CLI names differently
    ("patch: expected 'HxW'", ns(patch="x"), "--patch: expected 'HxW'"),
    ("patch: expected 'HxW'", ns(monitor_patch="x"), "--monitor-patch: expected 'HxW'"),
    ("TensorBoardLog needs the tensorboard extra", ns(tensorboard="d"), "TensorBoardLog needs the tensorboard extra"),
    ("r.h5: external link (pass allow_outside=True to permit it)", ns(allow_outside_paths=False),
     "r.h5: external link (pass --allow-outside-paths to permit it)"),
])
def test_flag_message_names_the_flag_that_sets_a_parameter(message: str, args: argparse.Namespace, shown: str) -> None:
    assert flag_message(message, args) == shown


@pytest.mark.parametrize("message", [
    "steps must be >= 1, got 0",                 # this command has no --steps
    "path: /d holds no frames",                   # a positional argument, not a flag
    "sticker spacing must be >= 10 m",            # a phrase, not a parameter
    "lateral_m must be within +-10",              # no --lateral here
    "attack.json: seed = -1 is outside 0..9",     # a field of a file, named after the file
    "frames.csv row 3: steering is not a number",
    "(pass allow_pickle=True if you trust it)",  # no --allow-pickle here
])
def test_flag_message_leaves_other_words(message: str) -> None:
    assert flag_message(message, ns(path="/d", seed=0, sticker_every=100.0, allow_outside_paths=False)) == message


def run_cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse refused a flag itself
            code = int(exc.code or 0)
    return code, err.getvalue()


def test_cli_names_its_flag_for_a_library_refusal(tmp_path: Path) -> None:
    # parse_cameras refuses in the library, naming its parameter; pdn names the flag
    code, err = run_cli("data", "synth", "--out", str(tmp_path / "ds"), "--frames", "4", "--cameras", "centre")
    assert code == 2 and err.startswith("pdn: error: --cameras: unknown camera 'centre'") and err.count("\n") == 1
    assert not (tmp_path / "ds").exists()
