"""The README's Python examples run as written (library imports only), on tiny models and few steps."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import save_model

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_examples_run(tmp_path: Path) -> None:
    blocks = _blocks()
    assert len(blocks) >= 2
    g = torch.Generator().manual_seed(0)
    save_model(tmp_path / "pilotnet", create_model("pilotnet_tiny", generator=g))
    pv = create_model("patchvote_tiny", generator=g)
    save_model(tmp_path / "patchvote", pv)
    for code in blocks:
        namespace: dict = {"__name__": "readme_example"}
        if '"patchvote.onnx"' in code:  # the vehicle-side example: an exported PatchVote and a batch of frames
            from drivenet_patch.deploy.export import export_onnx

            export_onnx(pv.eval(), tmp_path / "patchvote.onnx")
            code = code.replace('"patchvote.onnx"', f'"{(tmp_path / "patchvote.onnx").as_posix()}"')
            namespace["frames"] = torch.rand(2, 3, 66, 200, generator=g).numpy()
        for name in ("cli", "argparse"):  # the examples stay on the library
            assert not re.search(rf"^(from|import) \S*\b{name}\b", code, flags=re.M), code
        small = (code.replace('"runs/demo/', f'"{tmp_path.as_posix()}/')
                 .replace("steps=200", "steps=2").replace("roads=8, poses=16", "roads=1, poses=4")
                 .replace("roads=4, poses=16", "roads=1, poses=4"))
        assert '"runs/demo/' not in small
        exec(compile(small, str(README), "exec"), namespace)
