"""PatchVote: exact region locality, shapes, registry and checkpoints, cost, learning, certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from defenses import PatchVote, certify_votes, touch_matrix
from defenses.aggregate import aggregate_votes
from drivenet_patch.models import count_macs, create_model, model_defaults
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.safety.errors import PDNError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("patchvote_tiny", {}),  # 9 overlapping bands
        ("patchvote_tiny", {"layout": "grid", "region": [33, 50], "stride": [33, 25]}),  # overlapping 2x7 grid
        ("patchvote_tiny", {"input_size": [40, 80], "layout": "grid", "region": 33, "stride": [7, 15], "abstain": [1]}),
        ("patchvote", {}),
        ("patchvote_tiny", {"layout": "strips"}),  # distance strips resampled to 33 rows
        ("patchvote_tiny", {"layout": "strips", "region": 100, "stride": 50, "strips": [10, 12, 30, 66]}),
    ],
)
def test_each_vote_depends_only_on_its_own_region_exactly(name: str, cfg: dict) -> None:
    model = create_model(name, generator=gen(1), **cfg).eval()
    h, w = model.input_size
    g = gen(2)
    x = torch.rand(2, 3, h, w, generator=g)
    base = model.votes(x)
    boxes = model.layout.boxes()
    regions = range(model.n_regions) if name.endswith("tiny") else (0, 4)
    for r in regions:
        if not model.valid[r]:
            continue
        y0, x0, y1, x1 = boxes[r]
        other = torch.rand(2, 3, h, w, generator=g)  # every pixel outside region r changes
        other[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1]
        assert torch.equal(model.votes(other)[:, r], base[:, r])
        inside = x.clone()  # and the vote does react to its own pixels
        inside[:, :, y0:y1, x0:x1] = torch.rand(2, 3, y1 - y0, x1 - x0, generator=g)
        assert not torch.equal(model.votes(inside)[:, r], base[:, r])


def test_shapes_abstention_and_the_aggregate() -> None:
    model = create_model("patchvote_tiny", generator=gen(0), abstain=[0, 8]).eval()
    x = torch.rand(5, 3, 66, 200, generator=gen(1))
    votes, valid = model.votes(x, with_mask=True)
    assert votes.shape == (5, 9) and valid.shape == (5, 9) and valid.dtype == torch.bool
    assert not valid[:, [0, 8]].any() and valid[:, 1:8].all()
    assert (votes[:, [0, 8]] == 0).all()
    out = model(x)
    assert out.shape == (5,) and out.dtype == torch.float32
    torch.testing.assert_close(out, votes[:, 1:8].median(1).values)  # 7 votes: the plain median
    for method in ("trimmed", "vote", "reject"):
        m = create_model("patchvote_tiny", generator=gen(0), abstain=[0, 8], aggregate=method).eval()
        torch.testing.assert_close(m(x), aggregate_votes(votes, valid, method, trim=3, bin_deg=2.0, tau_deg=3.0))
    with pytest.raises(PDNError, match=r"expected images of shape \(B, 3, 66, 200\)"):
        model(torch.rand(1, 3, 66, 199))


def test_registry_config_and_bad_settings() -> None:
    assert model_defaults("patchvote")["layout"] == "bands"
    model = create_model("patchvote", generator=gen(0))
    assert isinstance(model, PatchVote) and model.n_regions == 9 and model.layout.size == (66, 40)
    assert model.config["name"] == "patchvote" and model.config["abstain"] == []
    assert not any(k.startswith(("norm.", "rows", "cols", "valid", "active")) for k in model.state_dict())
    bad = [
        ({"layout": "rings"}, "valid layouts"),
        ({"region": 20}, "too small for the crop network"),
        ({"region": 400}, "region size 400"),
        ({"abstain": [9]}, "abstain must list region indices"),
        ({"abstain": list(range(9))}, "all 9 regions abstain"),
        ({"abstain": "0"}, "abstain must be a list"),
        ({"aggregate": "mode"}, "valid aggregates"),
        ({"aggregate": "trimmed", "trim": 5}, "leaves no vote"),
        ({"bin_deg": 0}, "bin_deg > 0"),
        ({"dropout": 1.0}, "dropout"),
    ]
    for cfg, msg in bad:
        with pytest.raises(PDNError, match=msg):
            create_model("patchvote_tiny", **cfg)


def test_save_load_round_trip_preserves_outputs(tmp_path: Path) -> None:
    cfg = {"layout": "grid", "region": [33, 40], "stride": [33, 40], "abstain": [0, 1], "aggregate": "vote", "bin_deg": 1.5}
    model = create_model("patchvote_tiny", generator=gen(3), **cfg).eval()
    save_model(tmp_path / "run", model)
    loaded = load_model(tmp_path / "run")
    assert isinstance(loaded, PatchVote) and loaded.config == model.config
    x = torch.rand(3, 3, 66, 200, generator=gen(4))
    with torch.no_grad():
        assert torch.equal(loaded.votes(x), model.votes(x))
        assert torch.equal(loaded(x), model(x))


def test_cost_stays_within_twice_pilotnet() -> None:
    pilot = count_macs(create_model("pilotnet", generator=gen(0)))
    for cfg in ({}, {"layout": "grid"}):
        model = create_model("patchvote", generator=gen(0), **cfg)
        assert count_macs(model) <= 2 * pilot


def test_certify_from_the_model_matches_the_pure_function() -> None:
    model = create_model("patchvote_tiny", generator=gen(0), abstain=[1, 4, 7]).eval()
    x = torch.rand(4, 3, 66, 200, generator=gen(1))
    c = model.certify(x, "2%")
    with torch.no_grad():
        v = model.votes(x)
    ref = certify_votes(v, touch_matrix(model.layout, (17, 17)), model.valid)
    for a, b in zip(c, ref, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(c.output, model(x).detach())
    assert (c.k == 2).all()  # 3 neighbouring bands at most, one of them abstains
    assert model.training is False
    model.train()
    model.certify(x, "16x16", method="trimmed")
    assert model.training  # restored


def synthetic_batch(g: torch.Generator, b: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose brightness sets the label: every region sees the signal."""
    level = torch.rand(b, generator=g) * 0.6 + 0.2
    x = (level[:, None, None, None] + 0.1 * torch.rand(b, 3, 66, 200, generator=g)).clamp(0, 1)
    return x, 20.0 * (level - 0.5)


@pytest.mark.parametrize("loss_name", ["mse", "huber"])
def test_training_loss_teaches_every_region(loss_name: str) -> None:
    torch.manual_seed(0)
    model = create_model("patchvote_tiny", generator=gen(0), abstain=[8])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = gen(5)
    x0, y0 = synthetic_batch(gen(99), 32)
    with torch.no_grad():
        before = model.training_loss(x0, y0, loss_name).item()
    loss = model.training_loss(x0, y0, loss_name)
    loss.backward()
    assert (model.head_weight.grad[:8].abs().sum(1) > 0).all()  # every voting region gets a gradient
    assert model.head_weight.grad[8].abs().sum() == 0  # the abstaining one none
    for _ in range(60):
        x, y = synthetic_batch(g)
        opt.zero_grad()
        model.training_loss(x, y, loss_name).backward()
        opt.step()
    with torch.no_grad():
        after = model.training_loss(x0, y0, loss_name).item()
        err = (model.votes(x0)[:, :8] - y0[:, None]).abs().mean().item()
    assert after < 0.2 * before
    assert err < 2.0  # degrees, labels span -6..6
    with pytest.raises(PDNError, match="loss must be one of"):
        model.training_loss(x0, y0, "l1")


def test_shared_first_layer_equals_the_per_crop_network() -> None:
    """Default bands start on even pixels: the first conv runs once per frame, with the same votes."""
    from drivenet_patch.models import create_model

    model = create_model("patchvote", generator=torch.Generator().manual_seed(0)).eval()
    assert model.shared_first
    x = torch.rand(3, 3, 66, 200, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        shared = model.votes(x)
        model.shared_first = False
        per_crop = model.votes(x)
    torch.testing.assert_close(shared, per_crop, rtol=1e-5, atol=1e-5)
    odd = create_model("patchvote", generator=torch.Generator().manual_seed(0), layout="grid")  # rows start at 33
    assert not odd.shared_first
