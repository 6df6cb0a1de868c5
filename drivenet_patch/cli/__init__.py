"""The ``pdn`` command line: the only place argparse lives.

One module per command group (``data``, ``train``, ``drive``, ``saliency``, ``attack``, ``certify``,
``report``, ``demo``, ``bench``), each with a ``register(sub)`` that adds its commands and ``cmd_*``
functions that parse flags and call the library. A new command is one new module here (plus its test)
and one name in ``COMMAND_MODULES``. Nothing outside this package imports it (import-linter enforces it).

Every command that measures something takes ``--json`` and then prints exactly one JSON object on
stdout. Bad input prints ``pdn: error: <one line>`` on stderr and exits with 2. Progress bars go to
stderr, and only when it is a terminal.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from drivenet_patch import __version__
from drivenet_patch.cli.common import Parser, os_error_line
from drivenet_patch.errors import PDNError

__all__ = ["COMMAND_MODULES", "build_parser", "main", "run"]

#: The command modules, in the order ``pdn --help`` lists their commands.
COMMAND_MODULES = ("data", "train", "selection", "drive", "saliency", "export", "attack", "attack_sweep", "certify",
                   "report", "demo", "bench")


def build_parser() -> Parser:
    """The ``pdn`` parser with every command of ``COMMAND_MODULES`` registered."""
    p = Parser(prog="pdn", description="PatchDriveNet: steering models, adversarial stickers, certified defenses.")
    p.add_argument("--version", action="version", version=f"pdn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"drivenet_patch.cli.{name}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``pdn`` command; returns its exit code (2 with one line on stderr for bad input)."""
    from drivenet_patch.cli.attack import route_argv

    parser = build_parser()
    args = parser.parse_args(route_argv(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args.fn(args) or 0)
    except PDNError as exc:
        print(f"pdn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (not a folder, no permission, disk full): one line, no traceback
        print(f"pdn: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdn: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``pdn`` program: :func:`main`, then exit with its status.

    After a multi-process (``torchrun``) command the process ends with ``os._exit`` once its
    output is flushed, skipping interpreter shutdown, which can abort while gloo's worker
    threads are alive (see :func:`drivenet_patch.distributed.group_threads_left`); every file has
    been written and closed by then.
    """
    rc = main()
    from drivenet_patch.distributed import group_threads_left

    if group_threads_left():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)
