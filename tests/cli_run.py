"""``pdn`` run in-process for the fuzz tests: exit code, both streams and the time it took."""

from __future__ import annotations

import contextlib
import io
import time

from drivenet_patch.app.cli import main


def run_cli(argv: list[str]) -> tuple[int, str, str, float]:
    """``pdn argv`` in-process: (exit code, stdout, stderr, seconds)."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return int(code), out.getvalue(), err.getvalue(), time.perf_counter() - t0
