"""The tutorial notebook runs top to bottom, its numbers have the properties it teaches, and it is
committed without outputs.

The notebook runs in a kernel on this very interpreter: a temporary kernelspec whose ``argv`` is
``sys.executable`` (found through ``JUPYTER_PATH``), so a ``python3`` kernel of some other installation can
never be picked up. Its files go to a temporary folder (``PDN_TUTORIAL_OUT``). It takes two to four minutes on
2 cores.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.ipynb"
KERNEL = "pdn-tutorial-test"


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the tutorial has no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has outputs: clear them before committing"
        assert cell.execution_count is None, f"code cell {i} has an execution count: clear it before committing"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec for ``sys.executable`` and a private Jupyter/IPython environment; returns the output folder."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "PatchDriveNet tutorial test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    out = tmp_path / "out"
    monkeypatch.setenv("PDN_TUTORIAL_OUT", str(out))
    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    return out


def test_tutorial_runs_top_to_bottom(kernel_env: Path, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell's traceback, on the first error
    seconds = time.perf_counter() - start
    record_property("notebook_seconds", round(seconds, 1))
    print(f"tutorial notebook ran in {seconds:.0f} s")

    images = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
    assert images >= 4, f"expected the training curve, sticker, deviation and certified-accuracy figures; got {images}"

    s = json.loads((kernel_env / "summary.json").read_text())
    pilotnet = s["pilotnet"]
    assert pilotnet["rmse_deg"] < 0.8 * pilotnet["zero_rmse_deg"], pilotnet

    sticker, noise, grey = (s["sticker"][k] for k in ("sticker", "noise", "grey"))
    assert sticker["mean_dev_deg"] > max(noise["mean_dev_deg"], grey["mean_dev_deg"]), s["sticker"]
    assert sticker["mean_signed_dev_deg"] > 0, "the sticker should push the steering left, as targeted"
    for rates in (sticker, noise, grey):
        assert 0.0 <= rates["departure_rate"] <= 1.0
    assert sticker["departure_rate"] >= max(noise["departure_rate"], grey["departure_rate"]), s["sticker"]

    cert = s["certify"]
    assert 0.0 < cert["certified_acc"] <= 1.0, cert
    # A frame certified within delta is also clean-correct: its output lies inside its interval.
    assert cert["certified_acc"] <= cert["clean_acc"], cert
    example = cert["example"]
    assert example["lo_deg"] <= example["output_deg"] <= example["hi_deg"], example

    assert s["adaptive"]["runs"] > 0
    assert s["adaptive"]["violations"] == 0, s["adaptive"]
    assert s["sticker_vs_patchvote"]["violations"] == 0, s["sticker_vs_patchvote"]
