"""Model files: safetensors + config.json round trips, pickle refusal, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.storage.state import load_state, pack_state, read_state_meta, save_state, unpack_state


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 66, 200, generator=gen(9))


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["pilotnet_tiny", "pilotnet", "resnet18"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path, images: torch.Tensor, name: str) -> None:
    model = create_model(name, generator=gen(1), dropout=0.25)
    if name == "resnet18":  # make the batch-norm running statistics non-trivial
        with torch.no_grad():
            model.train()(images)
    model.eval()
    save_model(tmp_path / "run", model, extra={"epoch": 3})
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg == {"format_version": 1, "model": model.config, "epoch": 3}
    loaded = load_model(tmp_path / "run")
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    # The weights file alone works too: config.json beside it, else the config in its header.
    assert torch.equal(load_model(tmp_path / "run" / "model.safetensors")(images), loaded(images))
    (tmp_path / "run" / "config.json").unlink()
    assert torch.equal(load_model(tmp_path / "run" / "model.safetensors")(images), loaded(images))
    assert no_temp_files(tmp_path / "run")


def test_best_and_last_share_one_config(tmp_path: Path, images: torch.Tensor) -> None:
    first = create_model("pilotnet_tiny", generator=gen(1))
    second = create_model("pilotnet_tiny", generator=gen(2))
    assert save_model(tmp_path, first, name="best") == tmp_path / "best.safetensors"
    save_model(tmp_path, second, name="last")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "best.safetensors")(images), first.eval()(images))
        assert torch.equal(load_model(tmp_path / "last.safetensors")(images), second.eval()(images))
    with pytest.raises(ValueError, match="extra may not set"):
        save_model(tmp_path, first, extra={"model": 1})


def test_resnet_init_path_is_provenance_only(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    init = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18(weights=None).state_dict().items()}, str(init))
    model = create_model("resnet18", init=str(init))
    save_model(tmp_path / "run", model)
    init.unlink()  # the checkpoint must not need the original init file
    loaded = load_model(tmp_path / "run")
    assert loaded.config["init"] == str(init)


def test_loading_a_pickle_is_refused_unless_allowed(tmp_path: Path, images: torch.Tensor) -> None:
    model = create_model("pilotnet_tiny", generator=gen(4)).eval()
    save_model(tmp_path, model)  # config.json
    pt = tmp_path / "weights.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(PDNError, match=r"refusing to load pickle file .*weights\.pt.*convert it to safetensors"):
        load_model(pt)
    with torch.no_grad():
        assert torch.equal(load_model(pt, allow_pickle=True)(images), model(images))
    # weights_only=True: a pickle holding arbitrary objects is rejected even when allowed.
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": Path("x")}, evil)
    with pytest.raises(PDNError, match=r"evil\.pth"):
        load_model(evil, allow_pickle=True)
    not_state = tmp_path / "list.ckpt"
    torch.save([torch.zeros(1)], not_state)
    with pytest.raises(PDNError, match="expected a state dict"):
        load_model(not_state, allow_pickle=True)


def test_bad_config_json_names_the_file(tmp_path: Path) -> None:
    model = create_model("pilotnet_tiny")
    save_model(tmp_path, model)
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cases = [
        ({**cfg, "model": {**cfg["model"], "name": "lenet"}}, "unknown model 'lenet'; valid models"),
        ({**cfg, "model": {**cfg["model"], "depth": 5}}, "unknown config key.*depth.*valid keys"),
        ({**cfg, "model": {**cfg["model"], "dropout": 3}}, "dropout must lie in"),
        ({**cfg, "model": {"input_size": [66, 200]}}, "with a 'name'"),
        ({**cfg, "format_version": 2}, "unsupported format_version 2"),
        ({"format_version": 1}, "expected an object with a 'model' object"),
    ]
    for bad, message in cases:
        cfg_path.write_text(json.dumps(bad))
        with pytest.raises(PDNError, match=message) as info:
            load_model(tmp_path)
        assert str(cfg_path) in str(info.value) and "\n" not in str(info.value)
    cfg_path.write_text("{not json")
    with pytest.raises(PDNError, match=r"config\.json: not valid JSON"):
        load_model(tmp_path)


def test_missing_files_and_mismatched_weights(tmp_path: Path) -> None:
    with pytest.raises(PDNError, match=r"nowhere: no such model file"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PDNError, match=r"empty/model\.safetensors: missing"):
        load_model(tmp_path / "empty")
    save_model(tmp_path / "tiny", create_model("pilotnet_tiny"))
    # config.json describes another input size than the weights were made for.
    cfg = tmp_path / "tiny" / "config.json"
    cfg.write_text(json.dumps({"format_version": 1, "model": create_model("pilotnet_tiny", input_size=(80, 160)).config}))
    with pytest.raises(PDNError, match=r"model\.safetensors: shape mismatch for 'head\.2\.weight': file has \(16, 144\)"):
        load_model(tmp_path / "tiny")
    cfg.write_text(json.dumps({"format_version": 1, "model": create_model("pilotnet").config}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "tiny" / "model.safetensors"))
    with pytest.raises(PDNError, match=r"weights do not fit model 'pilotnet'.*missing"):
        load_model(tmp_path / "tiny")
    (tmp_path / "tiny" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(PDNError, match="not a readable safetensors file"):
        load_model(tmp_path / "tiny")
    (tmp_path / "w.onnx").write_bytes(b"")
    with pytest.raises(PDNError, match="unknown model file type"):
        load_model(tmp_path / "w.onnx")
    lone = tmp_path / "lone"
    save_file({"x": torch.zeros(1)}, str(tmp_path / "lone.safetensors"))
    with pytest.raises(PDNError, match=r"config\.json: missing"):
        load_model(lone.with_suffix(".safetensors"))


def test_save_state_round_trips_an_optimizer(tmp_path: Path) -> None:
    model = create_model("pilotnet_tiny", input_size=(64, 64), generator=gen(2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(4, 3, 64, 64, generator=gen(3)), torch.randn(4, generator=gen(4))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    tensors, skeleton = pack_state(opt.state_dict())
    save_state(tmp_path / "opt.safetensors", tensors, {"optimizer": skeleton, "epoch": 7})
    meta = read_state_meta(tmp_path / "opt.safetensors")
    assert meta["epoch"] == 7
    restored = unpack_state(load_state(tmp_path / "opt.safetensors"), meta["optimizer"])
    # Two copies continue identically from the saved state.
    twin = create_model("pilotnet_tiny", input_size=(64, 64))
    twin.load_state_dict(model.state_dict())
    opt2 = torch.optim.Adam(twin.parameters(), lr=1e-3)
    opt2.load_state_dict(restored)
    for m, o in ((model, opt), (twin, opt2)):
        o.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert no_temp_files(tmp_path)
    assert unpack_state(*pack_state({1: (2, [None, "a"]), "k": 1.5})) == {1: (2, [None, "a"]), "k": 1.5}
    with pytest.raises(PDNError, match="missing"):
        load_state(tmp_path / "absent.safetensors")
