"""Every numeric flag of every ``pdn`` command, fed hostile values: refused before any work.

The surface is found by walking the parser, so a flag added later is fuzzed too, and a numeric flag
that bypasses the validation layer (``type=int``, ``type=float``) fails
:func:`test_every_numeric_flag_goes_through_the_validation_layer`. For each refused input: exit 2, one
line on stderr naming the flag, no traceback, nothing changed on disk, and bounded time (a generous cap
that catches runaway loops, not a speed test). Flags that are each fine but together ask for years of
work or terabytes, and flags of a mode not chosen, are checked by :data:`REFUSED` (classes of cases,
each run in-process through :func:`drivenet_patch.app.cli.main`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli_run import run_cli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivenet_patch.app.cli import build_parser
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model

#: A refused command must end well within this (seconds): far above any parse-time refusal.
TIME_CAP_S = 60.0
#: argparse ``type=`` names of the validation layer's parsers (safety.values via app.cli.flags).
LAYER_TYPES = {"bounded_int", "bounded_float", "delta_value", "parse_batch"}
#: Types that would let a value past the layer.
BARE_TYPES = {int, float}

HOSTILE = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e300", "-1e300", "1e999", "-1", "1e9", "1e30",
                     "9" * 40, "9" * 5000, "x", "", " ", "1.5e", "0x10", "1/2", "none", "[1]", "-0.0", "1e-320",
                     "99999999999999999999", "4294967296", "-9223372036854775809", "1e5", "100001", "65537"]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))
        elif action.option_strings:
            yield path, action


def _command(path: tuple[str, ...]) -> list[str]:
    """The argv words of a command (``attack-eval`` is typed ``attack eval``)."""
    head = {"attack-eval": ["attack", "eval"], "attack-sweep": ["attack", "sweep"]}.get(path[0], [path[0]])
    return [*head, *path[1:]]


def numeric_flags() -> list[tuple[tuple[str, ...], str, argparse.Action]]:
    return [(path, action.option_strings[-1], action) for path, action in _walk(build_parser(), ())
            if getattr(action.type, "__name__", None) in LAYER_TYPES]


NUMERIC = numeric_flags()




def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots``: size and modification time."""
    seen: dict[str, tuple[int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames):
                p = os.path.join(dirpath, name)
                st_ = os.lstat(p)
                seen[p] = (st_.st_size, st_.st_mtime_ns)
    return seen


def assert_refused(argv: list[str], needle: str, *roots: Path) -> str:
    """``pdn argv`` exits 2 with one line containing ``needle``, in bounded time, touching nothing under ``roots``."""
    before = snapshot(*roots)
    code, _out, err, seconds = run_cli(argv)
    lines = err.strip().splitlines()
    assert code == 2, (argv, code, err[-500:])
    assert len(lines) == 1 and lines[0].startswith("pdn") and "error:" in lines[0], (argv, err[-500:])
    assert "Traceback" not in err and len(lines[0]) <= 400, (argv, err)
    assert needle in lines[0], (argv, lines[0])
    assert seconds < TIME_CAP_S, (argv, seconds)
    assert snapshot(*roots) == before, argv
    return lines[0]


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained run folders: pilotnet_tiny and patchvote_tiny (enough for every check before the work)."""
    root = tmp_path_factory.mktemp("flag-runs")
    for name in ("pilotnet_tiny", "patchvote_tiny"):
        save_model(root / name, create_model(name, generator=torch.Generator().manual_seed(0)))
    return root


def base_argv(path: tuple[str, ...], runs: Path, tmp: Path) -> list[str]:
    """A command's required arguments, pointing into ``tmp`` (outputs) and ``runs`` (models)."""
    pilot, pv = str(runs / "pilotnet_tiny"), str(runs / "patchvote_tiny")
    required = {
        ("data", "synth"): ["--out", str(tmp / "ds"), "--frames", "2"],
        ("world", "preview"): ["--out", str(tmp / "p.png")],
        ("train",): ["--data", str(tmp / "nodata"), "--out", str(tmp / "run")],
        ("selection",): ["--model", pilot, "--data", str(tmp / "nodata")],
        ("drive",): ["--model", pilot],
        ("saliency",): ["--model", pilot, "--data", str(tmp / "nodata"), "--out", str(tmp / "sal")],
        ("export",): ["--model", pilot, "--out", str(tmp / "m.onnx")],
        ("attack",): ["--model", pilot, "--out", str(tmp / "atk")],
        ("attack-eval",): ["--model", pilot, "--sticker", str(tmp / "atk")],
        ("attack-sweep",): ["--model", pilot, "--out", str(tmp / "sweep")],
        ("certify",): ["--model", pv, "--out", str(tmp / "cert")],
    }
    return [*_command(path), *required.get(path, [])]


# ------------------------------------------------------------------------------------- the surface
def test_every_numeric_flag_goes_through_the_validation_layer() -> None:
    """No flag parses a number with a bare ``int``/``float`` (or another unbounded type); the fuzzed surface
    covers every command that takes numbers."""
    bare = [f"pdn {' '.join(_command(p))} {a.option_strings[-1]}" for p, a in _walk(build_parser(), ())
            if a.type in BARE_TYPES or getattr(a.type, "__name__", "") == "positive_int"]
    assert not bare, bare
    commands = {p for p, _, _ in NUMERIC}
    for expected in [("data", "synth"), ("world", "preview"), ("train",), ("selection",), ("drive",), ("saliency",),
                     ("export",), ("attack",), ("attack-eval",), ("attack-sweep",), ("certify",), ("demo",),
                     ("bench",), ("bench", "world"), ("bench", "train"), ("bench", "models"), ("bench", "attack"),
                     ("bench", "monitor")]:
        assert expected in commands, expected
    assert len(NUMERIC) >= 65


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow], deadline=None)
@given(which=st.sampled_from(range(len(NUMERIC))), value=HOSTILE)
def test_hostile_values_of_every_numeric_flag_are_refused_at_once(runs: Path, tmp_path_factory, which: int,
                                                                  value: str) -> None:
    path, flag, action = NUMERIC[which]
    try:
        action.type(value)
    except argparse.ArgumentTypeError:
        pass
    else:
        assume(False)  # a value in range would start the command: the refusals are under test here
    tmp = tmp_path_factory.mktemp("flag")
    argv = [w for w in base_argv(path, runs, tmp)]
    if flag in argv:  # a required flag under test: its value is the hostile one
        i = argv.index(flag)
        del argv[i:i + 2]
    line = assert_refused([*argv, f"{flag}={value}"], flag, tmp, runs)
    assert "outside" in line or "must be" in line or "give" in line, line


# ------------------------------------------------------------------------------------- flags together
def _cases(runs: Path, tmp: Path) -> list[tuple[list[str], str]]:
    """``(argv, what the line must name)``: each flag fine alone, refused together or in this mode."""
    pilot, pv, atk = str(runs / "pilotnet_tiny"), str(runs / "patchvote_tiny"), str(tmp / "atk")
    cert = ["certify", "--model", pv, "--out", str(tmp / "cert")]
    return [
        # runs x steps: years of work
        ([*cert, "--attack", "100000", "--attack-steps", "10000"], "over the limit of 1,000,000"),
        ([*cert, "--physical", "1x1", "--attack", "2000", "--attack-steps", "1000"], "over the limit of 100,000"),
        # a threat region past the cell budget; with --sweep, the sweep's coverings count
        ([*cert, "--physical", "2x3.5", "--distance", "5-60", "--lateral=-30:30", "--spacing", "0.02"],
         "over the limit of 100,000"),
        ([*cert, "--physical", "2x3.5", "--sweep", "--spacing", "0.1"], "--sweep"),
        # a threat the camera never sees is refused, not certified vacuously
        ([*cert, "--physical", "2x3.5", "--lateral", "25:30", "--distance", "5-6"], "view"),
        # flags of the other mode
        ([*cert, "--physical", ""], "--physical"),
        ([*cert, "--physical", "1x1", "--patch", "5%"], "--patch"),
        ([*cert, "--physical", "1x1", "--camera-patch"], "--camera-patch"),
        ([*cert, "--physical", "1x1", "--sticker", atk], "--sticker"),
        ([*cert, "--yaw", "10"], "--yaw"),
        ([*cert, "--spacing", "0.5"], "--spacing"),
        ([*cert, "--physical", "1x1", "--bottom", "2"], "--bottom"),
        ([*cert, "--attack-steps", "5"], "--attack-steps"),
        # a batch of the model's input that asks for terabytes
        ([*cert, "--batch", "60000"], "--batch"),
        (["train", "--data", str(tmp / "nodata"), "--out", str(tmp / "run"), "--batch", "60000"], "--batch"),
        (["export", "--model", pilot, "--out", str(tmp / "m.onnx"), "--batch", "60000"], "--batch"),
        (["selection", "--model", pilot, "--data", str(tmp / "nodata"), "--batch", "60000"], "--batch"),
        (["train", "--data", str(tmp / "nodata"), "--out", str(tmp / "run"), "--epochs", "100000",
          "--samples-per-epoch", "100000"], "over the limit of 1,000,000,000"),
        # drive: roads x km, the monitor's and the sticker's flags
        (["drive", "--model", pilot, "--roads", "1000", "--km", "20"], "road-km"),
        (["drive", "--model", pilot, "--delta", "2"], "--delta"),
        (["drive", "--model", pilot, "--monitor-patch", "5%"], "--monitor-patch"),
        (["drive", "--model", pv, "--monitor", "--monitor-patch", "999x999"], "--monitor-patch"),
        (["drive", "--model", pv, "--monitor", "--slow-factor", "0.5"], "--slow-factor"),
        (["drive", "--model", pv, "--monitor", "--fallback", "slow", "--hold-s", "2"], "--hold-s"),
        (["drive", "--model", pilot, "--sticker-every", "50"], "--sticker-every"),
        # attacks
        (["attack", "--model", pilot, "--out", atk, "--frames", "10"], "--frames"),
        (["attack", "--model", pilot, "--out", atk, "--data", str(tmp / "nodata"), "--roads", "3"], "--roads"),
        (["attack", "--model", pilot, "--out", atk, "--no-print", "--paper", "A3"], "--paper"),
        (["attack", "--model", pilot, "--out", atk, "--roads", "1000", "--poses", "1000"], "approach scenes"),
        (["attack", "--model", pilot, "--out", atk, "--saliency-weight", "1"], "--saliency-weight"),
        (["attack", "eval", "--model", pilot, "--sticker", atk, "--data", str(tmp / "nodata"), "--km", "1"], "--km"),
        (["attack", "eval", "--model", pilot, "--sticker", atk, "--loop-roads", "0", "--km", "1"], "--km"),
        (["attack", "eval", "--model", pilot, "--sticker", atk, "--loop-roads", "1000", "--km", "20"], "road-km"),
        (["attack", "sweep", "--model", pilot, "--out", str(tmp / "sw"), "--areas",
          ",".join(str(a) for a in range(1, 41))], "--areas"),
        # bench: the group's flags before a sub-command; work of the monitor's drives
        (["bench", "--frames", "10", "world"], "--frames"),
        (["bench", "--attack-steps", "5", "attack"], "--attack-steps"),
        (["bench", "monitor", "--roads", "1000", "--steps", "100000"], "road-steps"),
        # --model-arg: the bounded JSON reader
        (["train", "--data", str(tmp / "nodata"), "--out", str(tmp / "run"), "--model", "patchvote_tiny",
          "--model-arg", "strips=[10, NaN, 30]"], "finite"),
        (["train", "--data", str(tmp / "nodata"), "--out", str(tmp / "run"), "--model", "patchvote_tiny",
          "--model-arg", "strips=" + "[" * 50_000 + "]" * 50_000], "nested"),
    ]


def test_flags_refused_together_or_out_of_their_mode(runs: Path, tmp_path: Path) -> None:
    for argv, needle in _cases(runs, tmp_path):
        assert_refused(argv, needle, tmp_path, runs)


def test_refusals_name_the_flag_value_and_limit(runs: Path, tmp_path: Path) -> None:
    """The red team's kind of case, in words: the value as typed, the limit, what to do."""
    line = assert_refused(["bench", "monitor", "--steps", "1e9"], "--steps", tmp_path, runs)
    assert "'1e9'" in line and "100,000" in line and "give" in line
    line = assert_refused(["certify", "--model", str(runs / "patchvote_tiny"), "--delta", "1e300"], "--delta",
                          tmp_path, runs)
    assert "'1e300'" in line and "90" in line
    line = assert_refused(["drive", "--model", str(runs / "pilotnet_tiny"), "--seed", "123456789012345678901234567890"],
                          "--seed", tmp_path, runs)
    assert "123456789012345678901234567890" in line
    line = assert_refused(["bench", "--attack-steps", "1e9"], "--attack-steps", tmp_path, runs)
    assert "500" in line


def test_mode_flags_still_work_where_they_apply(runs: Path, tmp_path: Path) -> None:
    """The defaults of the mode flags are filled in where they apply: a small monitored drive runs."""
    code, out, err, _ = run_cli(["drive", "--model", str(runs / "patchvote_tiny"), "--roads", "1", "--km", "0.02",
                                 "--monitor", "--fallback", "hold", "--hold-s", "0.5", "--json"])
    assert code == 0, err
    assert '"fallback": "hold"' in out and '"delta_deg": 2.0' in out


def test_the_demo_commands_pass_every_check_before_the_work() -> None:
    """The demo's own settings (full and quick) stay within every limit and use flags only where they apply."""
    from drivenet_patch.app.cli import attack as attack_cli
    from drivenet_patch.app.cli import certify as certify_cli
    from drivenet_patch.app.cli import drive as drive_cli
    from drivenet_patch.app.cli.attack import route_argv
    from drivenet_patch.app.demo import plan

    checks = {"certify": certify_cli.check_flags, "drive": drive_cli.check_flags,
              "attack": attack_cli.check_attack_flags, "attack-eval": attack_cli.check_eval_flags}
    parser = build_parser()
    seen = set()
    for quick in (False, True):
        for stage in plan(Path("out"), quick):
            for command in stage.commands:
                args = parser.parse_args(route_argv(list(command)))
                if args.command in checks:
                    checks[args.command](args)
                    seen.add(args.command)
    assert seen == set(checks)
