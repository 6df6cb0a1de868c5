"""The one validation layer for values (``drivenet_patch.safety.values``), the CLI's flag types built on it
(``drivenet_patch.app.cli.flags``), ``--model-arg`` values and images named by a user (``safety.inputs``)."""

from __future__ import annotations

import argparse
import math
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivenet_patch.app.cli import flags
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import MAX_IMAGE_SIDE, check_image_header, image_size, read_image
from drivenet_patch.safety.values import (
    MAX_ATTACK_RUNS,
    MAX_ELEMENTS,
    MAX_SEED,
    bounded_float,
    bounded_int,
    check_elements,
    flag_type,
)

HOSTILE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e300", "-1e300", "1e999", "-1", "1e9", "1e30",
           "9" * 40, "9" * 5000, "x", "", " ", "1.5e", "0x10", "1/2", "none", "true", "[1]", "\x00"]


# ------------------------------------------------------------------------------------- parsers
@pytest.mark.parametrize("value", [3, "3", " 3 ", 3.0, "3.0", "3e0", "1_0"])
def test_bounded_int_accepts_whole_numbers(value: object) -> None:
    assert bounded_int("n", value, low=1, high=10) == (10 if value == "1_0" else 3)


@pytest.mark.parametrize("value", [True, None, [3], {"a": 3}, 3.5, "3.5", math.nan, math.inf, "nan", "inf", "x", "",
                                   10**400, 11, 0, -1, "1e999"])
def test_bounded_int_refuses_in_one_line_naming_the_value(value: object) -> None:
    with pytest.raises(PDNError) as info:
        bounded_int("--n", value, low=1, high=10, hint="give 1 to 10")
    text = str(info.value)
    assert text.startswith("--n = ") and "\n" not in text and len(text) <= 300
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 100:
        assert "1..10" in text and text.endswith("give 1 to 10")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "-inf", 10**400, "1e999", True, "x", [1.0]])
def test_bounded_float_refuses_non_finite_and_non_numbers(value: object) -> None:
    with pytest.raises(PDNError, match="--x = "):
        bounded_float("--x", value, low=0.0, high=1.0)


def test_bounded_float_bounds_and_open_low_end() -> None:
    assert bounded_float("x", "0.5", low=0.0, high=1.0) == 0.5
    assert bounded_float("x", 0, low=0.0, high=1.0) == 0.0
    with pytest.raises(PDNError, match=r"outside \(0, 1\]"):
        bounded_float("x", 0, low=0.0, high=1.0, low_open=True)
    with pytest.raises(PDNError, match=r"outside \[0, 1\]"):
        bounded_float("x", 1e300, low=0.0, high=1.0)


def test_check_elements_refuses_a_batch_of_terabytes_before_allocating() -> None:
    assert check_elements("--batch", [64, 3, 66, 200]) == 64 * 3 * 66 * 200
    with pytest.raises(PDNError, match=f"over the limit of {MAX_ELEMENTS:,}"):
        check_elements("--batch", [10**9, 3, 66, 200])


@given(text=st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30), st.integers().map(str),
                      st.floats(allow_nan=True, allow_infinity=True).map(repr)))
def test_flag_types_accept_in_range_or_refuse_with_the_limit_and_what_to_do(text: str) -> None:
    """A flag type returns a value within its bounds, or raises argparse's error naming the value as typed,
    the limit and what to give instead: never another exception."""
    cases = [(flags.count(500, "a number of steps"), 1, 500), (flags.SEED, 0, MAX_SEED),
             (flags.real(0.0, 90.0, "degrees", low_open=True), 0.0, 90.0), (flags.KM, 0.0, 20.0)]
    for convert, low, high in cases:
        try:
            value = convert(text)
        except argparse.ArgumentTypeError as exc:
            message = str(exc)
            assert "\n" not in message and len(message) <= 300
            assert message.rstrip().endswith("]") or f"{high:,}" in message or f"{high:g}" in message, message
            assert message.startswith("'") or message.startswith('"'), message  # the value as given
            continue
        assert low <= value <= high and math.isfinite(value)


def test_huge_seed_error_shows_the_number_given() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        flags.SEED("123456789012345678901234567890")
    assert "123456789012345678901234567890" in str(info.value)
    assert f"{MAX_SEED:,}" in str(info.value)


def test_flag_type_adds_the_hint_to_a_malformed_value() -> None:
    convert = flag_type(bounded_int, low=1, high=5, hint="give 1 to 5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be a whole number: give 1 to 5$"):
        convert("abc")


def test_check_work_names_each_flag_the_product_and_the_limit() -> None:
    assert flags.check_work("run-steps", [("--attack", 10), ("--attack-steps", 20)], 1000, "fewer") == 200
    with pytest.raises(PDNError) as info:
        flags.check_work("run-steps", [("--attack", 100000), ("--attack-steps", 10000)], 1_000_000, "give fewer")
    assert str(info.value) == ("--attack 100000 x --attack-steps 10000 = 1,000,000,000 run-steps, over the limit of "
                               "1,000,000: give fewer")


def test_refuse_given_and_fill() -> None:
    args = argparse.Namespace(yaw=None, place=None, sweep=False, bottom="2")
    flags.refuse_given(args, ["--yaw", "--place", "--sweep"], "here")
    with pytest.raises(PDNError, match=r"^--bottom '2' does not apply here: drop it$"):
        flags.refuse_given(args, ["--bottom"], "here")
    flags.fill(args, yaw=15.0, bottom="1.5")
    assert args.yaw == 15.0 and args.bottom == "2"


def test_copied_limits_agree_with_the_library() -> None:
    """flags.py copies limits that library modules enforce (importing them would load torch for --help)."""
    from attacks import approach, sticker
    from defenses import evaluate, physical
    from drivenet_patch.driving import drive
    from drivenet_patch.training import config

    assert flags.MAX_STICKER_STEPS == sticker.MAX_STEPS
    assert (flags.MAX_ATTACK_STEPS, MAX_ATTACK_RUNS) == (evaluate.MAX_ATTACK_STEPS, evaluate.MAX_ATTACK_RUNS)
    assert (flags.MAX_DRIVE_ROADS, flags.MAX_KM_PER_ROAD) == (drive.MAX_ROADS, drive.MAX_KM_PER_ROAD)
    assert (flags.MAX_SCENE_ROADS, flags.MAX_POSES, flags.MAX_SCENES) == (approach.MAX_SCENE_ROADS, approach.MAX_POSES,
                                                                          approach.MAX_SCENES)
    assert (flags.MAX_EPOCHS, flags.MAX_SAMPLES_PER_EPOCH) == (config.MAX_EPOCHS, config.MAX_SAMPLES_PER_EPOCH)
    assert MAX_SEED == config.MAX_SEED
    assert flags.MAX_LATERAL == physical.MAX_LATERAL_M


# ------------------------------------------------------------------------------------- --model-arg
@pytest.mark.parametrize(("item", "needle"), [
    ("strips=" + "[" * 100_000 + "]" * 100_000, "nested deeper"),
    ("strips=[10, NaN, 30]", "finite"),
    ("strips=[10, Infinity]", "finite"),
    ("dropout=NaN", "finite"),
    ("dropout=1e999", "finite"),
    ("strips=[1, 2", "not valid JSON"),
    ("abstain=3", "must be a list"),
    ("abstain=\"0\"", "must be a list"),
])
def test_model_arg_values_go_through_the_bounded_json_reader(item: str, needle: str) -> None:
    from drivenet_patch.models.registry import parse_model_args

    with pytest.raises(PDNError, match=needle) as info:
        parse_model_args("patchvote", [item])
    assert "\n" not in str(info.value) and len(str(info.value)) <= 300


def test_abstain_can_be_set_through_model_arg() -> None:
    from drivenet_patch.models import create_model
    from drivenet_patch.models.registry import parse_model_args

    cfg = parse_model_args("patchvote_tiny", ["abstain=[0, 8]", "layout=bands", "input_size=66x200"])
    assert cfg == {"abstain": [0, 8], "layout": "bands", "input_size": "66x200"}
    model = create_model("patchvote_tiny", **cfg)
    assert model.config["abstain"] == [0, 8]


# ------------------------------------------------------------------------------------- images
def _png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (1 + 3 * w) * 4, 9)  # a few rows: the file stays small
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".ppm", ".webp", ".ras"])
def test_image_size_reads_the_header_of_every_format(ext: str) -> None:
    ok, buf = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert ok
    assert image_size(buf.tobytes()) == (53, 37)


def test_a_small_png_declaring_a_gigapixel_image_is_refused_before_decoding(tmp_path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(16000, 16000))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(PDNError, match=f"declares 16000 x 16000 pixels; the limit is {MAX_IMAGE_SIDE} a side"):
        read_image(bomb)
    for data in (b"", b"\x89PNG", b"GIF89a", b"not an image at all", b"\xff\xd8\xff"):
        with pytest.raises(PDNError):
            check_image_header(data, "x.png")


@given(data=st.binary(max_size=64))
def test_image_size_never_raises_on_garbage(data: bytes) -> None:
    size = image_size(data)
    assert size is None or (isinstance(size[0], int) and isinstance(size[1], int))
    for prefix in (b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"II*\x00", b"MM\x00*", b"P6 ", b"RIFF\x00\x00\x00\x00WEBP"):
        image_size(prefix + data)


def test_sticker_and_dataset_images_use_the_header_check(tmp_path) -> None:
    from drivenet_patch.data._imagelog import read_rgb
    from drivenet_patch.world.sticker_file import load_sticker

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(9000, 10))
    with pytest.raises(PDNError, match="9000 x 10"):
        load_sticker(bomb)
    with pytest.raises(PDNError, match="9000 x 10"):
        read_rgb(str(bomb), "log row 1")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(PDNError, match="is a folder"):
        load_sticker(tmp_path / "folder.png")
