"""``pdn demo``: the main job end to end as resumable stages (:mod:`drivenet_patch.app.demo` holds the plan)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drivenet_patch.app.cli.common import emit
from drivenet_patch.app.cli.flags import count
from drivenet_patch.safety.values import MAX_SEED


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``pdn demo``; returns the exit code (0)."""
    from drivenet_patch.app.cli import main
    from drivenet_patch.app.demo import run_demo

    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    result = run_demo(main, args.out, quick=args.quick, seed=args.seed, restart=args.restart, echo=echo,
                      device=args.device)
    emit(result, args.json, f"report: {result['report']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``pdn`` sub-command parsers ``sub``."""
    help_ = "the main job end to end (world data -> PilotNet -> sticker attack -> PatchVote -> report), resumable"
    c = sub.add_parser("demo", help=help_, description=help_ + ". Finished stages are skipped on a re-run.")
    c.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    c.add_argument("--quick", action="store_true", help="small settings: a few minutes on 2 cores (full: ~25 min)")
    # the stages use SEED, SEED + 1 and SEED + 2: each must be a seed of its command
    c.add_argument("--seed", type=count(MAX_SEED - 2, "a seed", low=0), default=0,
                   help="base seed of data, training and attacks (default 0)")
    c.add_argument("--restart", action="store_true",
                   help="run every stage again, even those already finished (deletes only the demo's stage "
                        "markers; a folder that is not a demo is refused all the same)")
    c.add_argument("--device", default="cpu", help="torch device of every stage (default cpu; e.g. cuda)")
    c.add_argument("--json", action="store_true", help="print one JSON object (stage lines go to stderr)")
    c.set_defaults(fn=cmd_demo)


cmd_demo.out_kind = "demo"  # type: ignore[attr-defined]  # --out's folder kind
