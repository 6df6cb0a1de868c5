"""One ``HxW`` parser (:func:`drivenet_patch.safety.values.parse_hw`) behind every pixel size: the world's
frame size, a model's input size and PatchVote's region and patch sizes agree on what a size is."""

from __future__ import annotations

import numpy as np
import pytest

from defenses.regions import make_layout, parse_patch
from drivenet_patch.models.registry import parse_input_size
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_MODEL_INPUT_SIDE
from drivenet_patch.safety.values import parse_hw
from drivenet_patch.world.camera import parse_size

#: (66, 200) written in each way a size may be given.
GOOD = ["66x200", " 66X200 ", "66 x 200", (66, 200), [66.0, 200], np.array([66, 200])]
#: Not a pair of integers: each is refused by every parser, with one line naming the value.
BAD = ["66.5x200", "66.0x200", "1e2x200", "66x", "x", "66x200x3", "abc", "", "6 6x200", (True, 3), (1.5, 2),
       (66,), None, float("nan"), {"h": 66}]


@pytest.mark.parametrize("value", GOOD, ids=repr)
def test_sizes_parse_alike_everywhere(value: object) -> None:
    want = (66, 200)
    assert parse_hw("size", value) == parse_input_size(value) == want
    if isinstance(value, str):
        assert parse_size(value) == want


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_non_sizes_are_refused_naming_the_parameter(value: object) -> None:
    for parse, name in ((lambda v: parse_hw("size", v), "size"), (parse_input_size, "input_size"), (parse_size, "size")):
        with pytest.raises(PDNError, match=f"^{name}: expected an integer pair HxW") as info:
            parse(value)
        assert "\n" not in str(info.value)


def test_each_caller_keeps_its_bounds() -> None:
    assert parse_size("8x4096") == (8, 4096)
    for text in ("7x200", "66x4097", "0x0", "-66x200"):
        with pytest.raises(PDNError, match=r"^size: sides must lie in \[8, 4096\] pixels"):
            parse_size(text)
    assert parse_input_size(f"1x{MAX_MODEL_INPUT_SIDE}") == (1, MAX_MODEL_INPUT_SIDE)
    for text in ("0x200", f"66x{MAX_MODEL_INPUT_SIDE + 1}"):
        with pytest.raises(PDNError, match=rf"^input_size: sides must lie in \[1, {MAX_MODEL_INPUT_SIDE}\]"):
            parse_input_size(text)


def test_square_sizes_take_one_integer() -> None:
    assert parse_hw("patch", "16", square=True) == parse_hw("patch", 16, square=True) == (16, 16)
    with pytest.raises(PDNError, match=r"^size: expected an integer pair"):
        parse_hw("size", "16")  # a square only where one integer is documented
    assert parse_patch("16") == parse_patch("16x16") == parse_patch(16) == (16, 16)
    assert make_layout((66, 200), "grid", 33, "33x40").stride == (33, 40)
    for bad in ("0x5", "16.5", "abc"):
        with pytest.raises(PDNError, match=r"^patch: .*: give HxW pixels or a share P% such as 2%$"):
            parse_patch(bad)
    with pytest.raises(PDNError, match=r"^region: expected an integer or an integer pair"):
        make_layout((66, 200), "grid", 33.5)
