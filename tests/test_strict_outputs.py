"""Non-finite numbers never pass silently: weights that overflow the model's dtype, NaN export outputs, and
every JSON the toolkit writes is strict JSON (no NaN or Infinity)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from drivenet_patch.deploy.export import compare
from drivenet_patch.models import create_model
from drivenet_patch.models.checkpoint import load_model, save_model
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.storage.atomic import write_json


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} written into JSON")

    return json.loads(text, parse_constant=refuse)


def test_float64_weights_that_become_inf_in_float32_are_refused(tmp_path: Path) -> None:
    model = create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0))
    run = save_model(tmp_path / "run", model)
    state = {k: v.double() for k, v in model.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = 1e300  # finite in float64, inf in float32
    weights = Path(run) / "model.safetensors" if Path(run).is_dir() else Path(run)
    save_file(state, str(weights))
    before = weights.read_bytes()
    with pytest.raises(PDNError, match="NaN or infinite weights once cast") as info:
        load_model(weights.parent)
    assert key in str(info.value) and "\n" not in str(info.value)
    assert weights.read_bytes() == before
    state[key].view(-1)[0] = 1e30  # finite in float32 too: loads
    save_file(state, str(weights))
    assert torch.isfinite(load_model(weights.parent).state_dict()[key]).all()


class _NaNSession:
    """An ONNX Runtime stand-in whose graph returns NaN steering."""

    class _Out:
        name = "steering"

    def get_outputs(self) -> list:
        return [self._Out()]

    def run(self, _names, feeds) -> list:
        return [np.full(next(iter(feeds.values())).shape[0], np.nan, np.float32)]


def test_the_export_check_fails_on_non_finite_outputs() -> None:
    model = create_model("pilotnet_tiny", generator=torch.Generator().manual_seed(0)).eval()
    frames = torch.rand(2, 3, *model.input_size)
    with pytest.raises(PDNError, match="ONNX Runtime's output 'steering' holds 2 NaN"):
        compare(model, _NaNSession(), frames)


_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.none(),
                     st.booleans(), st.text(max_size=4))
_values = st.recursive(_numbers, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=3), inner, max_size=4)),
                       max_leaves=20)


@given(_values)
def test_write_json_writes_strict_json_and_names_what_became_null(tmp_path_factory, value) -> None:
    path = tmp_path_factory.mktemp("j") / "out.json"
    replaced = write_json(path, {"v": value, "arr": np.array([1.0, np.nan]), "f32": np.float32("inf")})
    back = _strict(path.read_text())
    assert back["arr"] == [1.0, None] and back["f32"] is None
    assert {"arr[1]", "f32"} <= set(replaced)
    if isinstance(value, float) and not math.isfinite(value):
        assert back["v"] is None and "v" in replaced


def test_check_finite_judges_the_dtype_the_model_will_hold() -> None:
    from drivenet_patch.storage.state import check_finite

    ref = {"w": torch.zeros(3), "n": torch.zeros(2, dtype=torch.int64)}
    check_finite("f", {"w": torch.tensor([1e30, 0.0, -1.0], dtype=torch.float64), "n": torch.tensor([1, 2])}, ref)
    for bad in (torch.tensor([1e300, 0.0, 0.0], dtype=torch.float64), torch.tensor([0.0, math.nan, 0.0]),
                torch.tensor([0.0, 0.0, -math.inf])):
        with pytest.raises(PDNError, match="'w' holds NaN or infinite weights"):
            check_finite("f", {"w": bad}, ref)


def test_a_resnet_backbone_init_with_overflowing_weights_is_refused(tmp_path: Path) -> None:
    model = create_model("resnet18")
    state = {k: v.double() if v.is_floating_point() else v for k, v in model.backbone.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = -1e300
    save_file(state, str(tmp_path / "init.safetensors"))
    with pytest.raises(PDNError, match=r"once cast from torch\.float64"):
        model.load_backbone(tmp_path / "init.safetensors")
