"""``pdn report``: an HTML report from training, drive, attack, certify and benchmark outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivenet_patch.app.cli.common import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``pdn`` sub-command parsers ``sub``."""
    help_ = "self-contained HTML report (index.html + PNG/PDF figures) from toolkit output folders"
    c = sub.add_parser("report", help=help_, description=help_)
    c.add_argument("paths", nargs="+", metavar="PATH",
                   help="dataset, training run, drive, attack, attack sweep or certify folder, or benchmark .json file")
    c.add_argument("--out", required=True, type=Path, help="output folder for index.html and the figures")
    c.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a sentence about how the inputs were made, shown under the summary (repeatable)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(fn=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Run ``pdn report``; returns the exit code (0)."""
    from drivenet_patch.app.report import build_report

    result = build_report(args.paths, args.out, notes=args.note)
    emit(result, args.json, f"wrote {result['index']} ({len(result['figures'])} figures; "
                             f"sections: {', '.join(result['sections'])})")
    return 0


cmd_report.out_kind = "report"  # type: ignore[attr-defined]  # --out's folder kind
