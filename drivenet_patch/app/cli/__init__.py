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

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from drivenet_patch import __version__
from drivenet_patch.app.cli.common import Parser, flag_message, os_error_line
from drivenet_patch.safety.errors import PDNError, one_line
from drivenet_patch.safety.threads import configure_threads

__all__ = ["COMMAND_MODULES", "build_parser", "main", "run"]

#: The command modules, in the order ``pdn --help`` lists their commands.
COMMAND_MODULES = ("data", "train", "selection", "drive", "saliency", "export", "attack", "attack_sweep", "certify",
                   "report", "demo", "zoo", "bench")


def build_parser() -> Parser:
    """The ``pdn`` parser with every command of ``COMMAND_MODULES`` registered."""
    p = Parser(prog="pdn", description="PatchDriveNet: steering models, adversarial stickers, certified defenses.")
    p.add_argument("--version", action="version", version=f"pdn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"drivenet_patch.app.cli.{name}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``pdn`` command; returns its exit code (2 with one line on stderr for bad input)."""
    configure_threads()  # before the command modules import torch: threads from the CPUs available, brief spins
    from drivenet_patch.app.cli.attack import route_argv

    parser = build_parser()
    try:
        args = parser.parse_args(route_argv(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as exc:  # a flag refused as it was read (its one line is printed): the code, as for any refusal
        if exc.code in (0, None):  # --help, --version
            raise
        return exc.code if isinstance(exc.code, int) else 2
    # Warnings (torch, numpy) are held back until the command ends: a refusal stays one line.
    with warnings.catch_warnings(record=True) as held:
        rc = _run_command(args)
    if rc == 0:
        for w in held:
            print(warnings.formatwarning(w.message, w.category, w.filename, w.lineno).rstrip(), file=sys.stderr)
    return rc


#: Options that name files or folders a command reads, and those naming what it writes.
_INPUT_OPTIONS = ("model", "data", "val", "sticker", "palette", "init", "path", "paths")
_OUTPUT_OPTIONS = ("out", "video")


def _check_paths(args: argparse.Namespace) -> None:
    """Every command's path arguments, checked once before it runs: no FIFO or device as an input
    (it would block forever), no output written over an input or over a model or dataset file.
    A command whose ``--out`` is a file (not a folder) marks its function with ``out_is_file = True``."""
    from drivenet_patch.safety.inputs import check_input_path, check_output

    inputs: list[str] = []
    for name in _INPUT_OPTIONS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, Path)) and str(item):
                check_input_path(item, f"--{name}" if name not in ("path", "paths") else "PATH")
                inputs.append(str(item))
    sticker = getattr(args, "sticker", None)
    for name in _OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, (str, Path)) and str(value):
            is_file = name == "video" or getattr(args.fn, "out_is_file", False)
            check_output(value, inputs, f"--{name}", is_file=is_file, own_names=("predictions.csv",),
                         may_equal=[sticker] if sticker else [])
    _check_folders(args)


def _check_folders(args: argparse.Namespace) -> None:
    """No folder is taken over: a command's output folder (``--out`` of a command whose function names its
    ``out_kind``, and ``--tensorboard``) must be new, empty or of the command's own kind, and no output file
    goes into a dataset folder (:mod:`drivenet_patch.storage.folders`)."""
    from drivenet_patch.storage.folders import check_output_folder, dataset_sign

    kinds = {"out": getattr(args.fn, "out_kind", None), "tensorboard": "tensorboard"}
    folders: dict[str, str] = {}
    for name in (*_OUTPUT_OPTIONS, "tensorboard"):
        value = getattr(args, name, None)
        if not isinstance(value, (str, Path)) or not str(value):
            continue
        if kinds.get(name) is not None:
            check_output_folder(value, kinds[name], name)
            real = os.path.realpath(value)
            if real in folders:  # one folder cannot be two commands' folders
                raise PDNError(f"--{name}: {value} is also --{folders[real]}; give each its own folder")
            folders[real] = name
        elif name == "video" or getattr(args.fn, "out_is_file", False):
            parent = Path(value).absolute().parent
            if parent.is_dir() and (sign := dataset_sign(parent)) is not None:
                raise PDNError(f"--{name}: {value} would be written into the dataset folder {parent} (it holds "
                               f"{sign}); choose a file outside it")


def _run_command(args: argparse.Namespace) -> int:
    try:
        if isinstance(getattr(args, "device", None), str):  # every command's --device, checked once here
            from drivenet_patch.safety.inputs import check_device

            args.device = check_device(args.device, "--device")
        _check_paths(args)
        return int(args.fn(args) or 0)
    except PDNError as exc:  # the library names its parameters; the user typed flags
        print(f"pdn: error: {flag_message(str(exc), args)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (not a folder, no permission, disk full): one line, no traceback
        print(f"pdn: error: {one_line(os_error_line(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdn: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``pdn`` program: :func:`main`, then exit with its status.

    After a multi-process (``torchrun``) command the process ends with ``os._exit`` once its
    output is flushed, skipping interpreter shutdown, which can abort while gloo's worker
    threads are alive (see :func:`drivenet_patch.training.distributed.group_threads_left`); every file has
    been written and closed by then.
    """
    rc = main()
    from drivenet_patch.training.distributed import group_threads_left

    if group_threads_left():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)
