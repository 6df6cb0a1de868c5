"""What every ``pdn`` command shares: the parser class, output, argument types and model loading.

Public on purpose: each command module (``drivenet_patch/app/cli/<group>.py``) imports these names. Nothing
outside :mod:`drivenet_patch.app.cli` imports this module (import-linter enforces it).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from drivenet_patch.safety.errors import PDNError, one_line

__all__ = [
    "Parser",
    "add_allow_outside",
    "add_command",
    "add_device_and_json",
    "add_group",
    "add_json",
    "emit",
    "flag_message",
    "load_run",
    "os_error_line",
    "progress",
    "run_home",
]


class Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


#: Library parameters whose flag has another name: parameter -> the ``dest`` of the flag that sets it (tried
#: after the parameter's own name, so ``patch`` is ``--patch`` in ``pdn certify`` and ``--monitor-patch`` in
#: ``pdn drive``). A parameter with a unit (``lateral_m``, ``delta_deg``) is also the flag without it.
PARAM_FLAGS = {"allow_outside": "allow_outside_paths", "kind": "place", "logdir": "tensorboard", "n_runs": "attack",
               "patch": "monitor_patch"}
_UNIT = re.compile(r"_(?:m|deg|s)$")
#: ``dest`` names that are not flags (positional arguments and the parser's own).
_NOT_FLAGS = frozenset({"command", "subcommand", "fn", "path", "paths"})
#: Where a library message names parameters: first (``steps must ...``, ``sticker: ...``, ``distance = ...``,
#: ``roads x poses must ...``), or as a keyword to pass (``allow_pickle=True``).
_LEADING = re.compile(r"^[a-z][a-z0-9_]*(?: x [a-z][a-z0-9_]*)*(?=(?:\[\d+\])?(?::| =| must\b| needs\b))")
_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=True\b")


def flag_message(message: str, args: argparse.Namespace) -> str:
    """A library error as the user of this command reads it: the parameters it names become the flags that set them.

    Library code names its own parameters (``steps must be >= 1``, ``pass allow_outside=True``); a user of
    ``pdn`` typed flags. A parameter is renamed only where this command has the flag (``--steps``,
    ``--allow-outside-paths``); any other word stays as it is.
    """
    def flag(name: str) -> str | None:
        dests = (name, PARAM_FLAGS.get(name), _UNIT.sub("", name))
        dest = next((d for d in dests if d and d not in _NOT_FLAGS and hasattr(args, d)), None)
        return None if dest is None else "--" + dest.replace("_", "-")

    def lead(m: re.Match[str]) -> str:
        return " x ".join(flag(name) or name for name in m.group(0).split(" x "))

    text = _LEADING.sub(lead, message, count=1)
    return one_line(_KEYWORD.sub(lambda m: flag(m.group(1)) or m.group(0), text))


def emit(result: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """Print ``result`` as one JSON object (``--json``) or as ``text`` (default: ``key: value`` lines)."""
    if as_json:
        from drivenet_patch.safety.inputs import dumps_strict

        text_json, replaced = dumps_strict(result, sort_keys=True, default=str)
        if replaced:  # strict JSON has no NaN/Infinity: say which values became null, and why
            print(f"pdn: note: not finite, written as null: {', '.join(replaced)[:200]}", file=sys.stderr)
        print(text_json)
    else:
        print(text if text is not None else "\n".join(f"{k}: {v}" for k, v in result.items()))


def progress(args: argparse.Namespace) -> bool:
    """Show progress bars: not under ``--json``, and only when stderr is a terminal."""
    return not getattr(args, "json", False) and sys.stderr.isatty()


def add_json(c: argparse.ArgumentParser) -> None:
    c.add_argument("--json", action="store_true", help="print one JSON object")


def add_allow_outside(c: argparse.ArgumentParser) -> None:
    c.add_argument("--allow-outside-paths", action="store_true",
                   help="let dataset logs name images outside the dataset folder (refused by default)")


def add_device_and_json(c: argparse.ArgumentParser) -> None:
    c.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_json(c)


def load_run(path: str | Path, device: str, flag: str = "--model") -> Any:
    """The trained model of a run folder (or ``.safetensors`` file, or ``zoo:NAME``) in eval mode; a missing
    path is named with ``flag``."""
    from drivenet_patch.models.checkpoint import load_model
    from drivenet_patch.models.zoo import is_zoo_ref

    if is_zoo_ref(path):
        return load_model(str(path), device=device).eval()
    p = Path(path)
    if not p.exists():
        raise PDNError(f"{flag}: {p} does not exist")
    return load_model(p, device=device).eval()


def run_home(model: str | Path) -> Path:
    """Where a command writes its default outputs for ``--model``: the run folder itself, or for
    ``zoo:NAME`` (whose files in the package stay as shipped) ``runs/zoo-NAME`` in the working folder."""
    from drivenet_patch.models.zoo import is_zoo_ref, zoo_name

    return Path("runs") / f"zoo-{zoo_name(model)}" if is_zoo_ref(model) else Path(model)


def os_error_line(exc: OSError) -> str:
    """``OSError`` -> ``"<path>: <reason>"`` on one line (``"<a> -> <b>: <reason>"`` for a rename)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason.replace("\n", " ")
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {reason}".replace("\n", " ")


def add_group(sub: argparse._SubParsersAction, name: str, help_: str) -> argparse._SubParsersAction:
    """A command group (``pdn NAME SUBCOMMAND``) on the sub-commands ``sub``; returns its sub-commands."""
    g = sub.add_parser(name, help=help_, description=help_)
    s = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=Parser)
    s.required = True
    return s


def add_command(parent: argparse._SubParsersAction, name: str, help_: str,
                fn: Callable[[argparse.Namespace], int], **kwargs: Any) -> argparse.ArgumentParser:
    """A command ``name`` on ``parent`` that runs ``fn(args)``; ``kwargs`` go to ``add_parser``."""
    kwargs.setdefault("description", help_)
    c = parent.add_parser(name, help=help_, **kwargs)
    c.set_defaults(fn=fn)
    return c


class _FormatHelp(str):
    """``--format``'s help, completed with the registered format names only when help is printed
    (argparse expands a help string with ``%``): building the parser then needs no import of the
    loaders, which pull in OpenCV, pandas and torch."""

    def __mod__(self, params: Any) -> str:
        from drivenet_patch.data.registry import format_names

        return f"{self} (auto, or one of: {', '.join(format_names())}; default auto)" % params


def add_format(c: argparse.ArgumentParser, what: str = "dataset format") -> None:
    """``--format`` (default ``auto``), its help listing the formats the data registry's loaders declare."""
    c.add_argument("--format", default="auto", help=_FormatHelp(what))
