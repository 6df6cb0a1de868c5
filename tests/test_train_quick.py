"""End to end: the --quick recipe on world data beats half the always-zero baseline on held-out roads.

Slow (about two to three minutes on 2 cores): ``make test-slow`` runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_recipe_beats_half_the_zero_baseline(tmp_path: Path) -> None:
    def pdn(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "drivenet_patch.app.cli", *args, "--json"], capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    pdn("data", "synth", "--out", str(tmp_path / "train"), "--frames", "9000", "--seed", "31",
        "--cameras", "center,left,right")
    pdn("data", "synth", "--out", str(tmp_path / "test"), "--frames", "1500", "--seed", "32")
    pdn("train", "--data", str(tmp_path / "train"), "--model", "pilotnet", "--quick", "--out", str(tmp_path / "run"))
    m = pdn("eval", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "test"))
    assert m["rmse_deg"] < 0.5 * m["zero_rmse_deg"], m
