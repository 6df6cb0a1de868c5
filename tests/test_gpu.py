"""GPU checks (``-m gpu``; skipped without CUDA): the same numbers on the GPU as on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from defenses.certify import certify_votes
from defenses.regions import touch_matrix
from drivenet_patch.app.cli import main
from drivenet_patch.models import create_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _frames(n: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, 66, 200, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["pilotnet", "patchvote"])
def test_models_agree_on_cpu_and_gpu(name: str) -> None:
    model = create_model(name, generator=torch.Generator().manual_seed(0)).eval()
    x = _frames()
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to("cuda")(x.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_certificates_agree_on_cpu_and_gpu() -> None:
    model = create_model("patchvote", generator=torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        votes = model.votes(_frames())
    touch = touch_matrix(model.layout, (17, 17))
    cpu = certify_votes(votes, touch, model.valid, "median")
    gpu = certify_votes(votes.cuda(), touch.cuda(), model.valid.cuda(), "median")
    torch.testing.assert_close(gpu.lo.cpu(), cpu.lo)
    torch.testing.assert_close(gpu.hi.cpu(), cpu.hi)


def test_cli_train_attack_certify_on_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["data", "synth", "--out", str(data), "--frames", "256", "--seed", "1", "--device", "cuda"]) == 0
    for model in ("pilotnet", "patchvote"):
        assert main(["train", "--data", str(data), "--model", model, "--epochs", "1", "--out",
                     str(tmp_path / model), "--device", "cuda", "--json"]) == 0
    assert main(["attack", "--model", str(tmp_path / "pilotnet"), "--out", str(tmp_path / "atk"), "--steps", "5",
                 "--roads", "2", "--poses", "4", "--device", "cuda", "--json"]) == 0
    assert main(["certify", "--model", str(tmp_path / "patchvote"), "--data", str(data), "--attack", "4",
                 "--attack-steps", "2", "--out", str(tmp_path / "cert"), "--device", "cuda", "--json"]) == 0
    cert = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cert["violations"] == 0
