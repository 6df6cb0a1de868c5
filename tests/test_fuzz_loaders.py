"""Property-based tests of every dataset loader against random and malformed input.

The property: a loader either opens the dataset and then yields model-size uint8 frames (or a
one-line PDNError naming the image and its log row), or it refuses with one line that names the
file at fault. No other exception type, no multi-line message, never a file outside the folder.
``check_dataset`` keeps the same contract. Hypothesis profiles: see ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

from drivenet_patch.data import check_dataset, open_dataset
from drivenet_patch.safety.errors import PDNError


# ------------------------------------------------------------------------------------- images
def _encode(ext: str, h: int = 160, w: int = 320, seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


_JPG = _encode(".jpg")
_PNG = _encode(".png")
#: name -> bytes of image files the strategies put on disk (valid, broken, odd)
IMAGE_KINDS: dict[str, bytes] = {
    "jpg": _JPG,
    "png": _PNG,
    "png_named_jpg": _PNG,  # wrong extension, valid content: decodes by content
    "jpg_truncated_half": _JPG[: len(_JPG) // 2],
    "jpg_truncated_header": _JPG[:20],
    "png_truncated": _PNG[: len(_PNG) // 3],
    "zero_bytes": b"",
    "text": b"this is not an image\n",
    "tiny_1x1": _encode(".png", 1, 1),
    "gray_png": cv2.imencode(".png", np.full((160, 320), 90, np.uint8))[1].tobytes(),
    "wide_odd": _encode(".jpg", 9, 700),
}
image_kind = st.sampled_from(sorted(IMAGE_KINDS))


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (function-scoped pytest fixtures do not reset between examples)."""
    with tempfile.TemporaryDirectory(prefix="pdn-fuzz-") as d:
        yield Path(d)


def put_image(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(IMAGE_KINDS[kind])
    return path


# ------------------------------------------------------------------------------------- text
NASTY_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40
)
number_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", " ", "nan", "-inf", "1e400", "0x10", "1_0", "--1", "1,5", "١٢", "True", "None", "\x00"]),
    NASTY_TEXT,
)
small_float_text = st.floats(-1.0, 1.0).map(lambda v: f"{v:.4f}")


def path_field(root: Path, outside: Path) -> st.SearchStrategy[str]:
    """A path as a log might write it: fine, missing, escaping, absolute, Windows, empty or junk."""
    return st.one_of(
        st.sampled_from([
            "IMG/ok_0.jpg", "IMG/ok_1.jpg", "IMG/missing.jpg", "../../etc/passwd", "/etc/passwd",
            str(outside), "IMG/link_out.jpg", "C:\\Users\\x\\IMG\\ok_0.jpg", "/home/x/IMG/ok_1.jpg",
            "", "IMG/", "IMG", ".", "..", "IMG/../../x.jpg", "IMG/ok_0.jpg\x00.png", "~/ok_0.jpg",
            "IMG\\ok_0.jpg", "\\\\server\\share\\ok_0.jpg", "IMG/odd.jpg",
        ]),
        NASTY_TEXT,
    )


def layout_images(root: Path, kinds: list[str], outside: Path) -> None:
    """IMG/ok_k.jpg of the given kinds, IMG/odd.jpg, and IMG/link_out.jpg -> a file outside the folder."""
    for k, kind in enumerate(kinds):
        put_image(root / "IMG" / f"ok_{k}.jpg", kind)
    put_image(root / "IMG" / "odd.jpg", "png_named_jpg")
    put_image(outside, "jpg")
    try:
        os.symlink(outside, root / "IMG" / "link_out.jpg")
    except OSError:  # no symlinks here (some Windows setups)
        pass


# ------------------------------------------------------------------------------------- the property
ROW_RE = re.compile(r"\brow (\d+)\b")


def assert_one_line(exc: PDNError, *names: str | Path, rows: int | None = None) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    if names:
        assert any(str(n) in msg for n in names), f"{msg!r} names none of {names}"
    if rows is not None:
        for m in ROW_RE.finditer(msg):
            assert 1 <= int(m.group(1)) <= rows, msg
    return msg


def open_or_refuse(fn: Callable[[], object], *names: str | Path, rows: int | None = None) -> object | None:
    """Run a loader: the dataset, or None after checking the refusal is one clean line."""
    try:
        ds = fn()
    except PDNError as exc:
        assert_one_line(exc, *names, rows=rows)
        event("refused: " + re.sub(r"/tmp/\S*|\d+|'.*?'", "", str(exc))[:70])
        return None
    event("opened")
    return ds


def exercise(ds: object, outside: Path | None, *names: str | Path, rows: int | None = None) -> None:
    """Every frame decodes to the model size or fails cleanly; no label is NaN; nothing outside is read."""
    steer = ds.labels["steering_deg"].to_numpy(np.float64)
    assert len(ds) > 0 and np.isfinite(steer).all()
    if "image" in ds.labels and outside is not None:
        real_outside = os.path.realpath(outside)
        for p in ds.labels["image"]:
            assert os.path.realpath(p) != real_outside, p
    for i in range(len(ds)):
        try:
            frame = ds.frame(i)
        except PDNError as exc:
            assert_one_line(exc, *names, rows=rows)
            if hasattr(ds, "where"):
                assert ds.where(i) in str(exc), str(exc)
            continue
        assert frame.dtype == np.uint8 and frame.shape == (*ds.size, 3)


def check_or_refuse(path: Path, *names: str | Path, **options: object) -> None:
    try:
        report = check_dataset(path, **options)
    except PDNError as exc:
        assert_one_line(exc, *names)
        return
    json.dumps(report)
    assert report["decoded"] == report["frames"] > 0
    for p in report["problems"]:
        assert "\n" not in p


# ------------------------------------------------------------------------------------- udacity-sim
def _fields(valid: tuple[str, ...], alternatives: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid row, or the same row with one field replaced by an alternative (often broken) value."""
    return st.one_of(
        st.just(valid),
        st.tuples(st.integers(0, len(valid) - 1), alternatives).map(
            lambda t: (*valid[: t[0]], t[1], *valid[t[0] + 1 :])),
    )


@st.composite
def sim_log(draw: st.DrawFn, root: Path, outside: Path) -> str:
    paths = path_field(root, outside)
    valid = st.tuples(st.sampled_from(["IMG/ok_0.jpg", "IMG/ok_1.jpg", "C:\\rec\\IMG\\ok_1.jpg", "IMG/odd.jpg"]),
                      small_float_text).map(lambda t: (t[0], "IMG/ok_1.jpg", "IMG/ok_0.jpg", t[1], "0.5", "0", "30.2"))
    row = st.one_of(
        valid.map(", ".join),
        valid.flatmap(lambda v: _fields(v, st.one_of(paths, number_text))).map(", ".join),
        valid.flatmap(lambda v: _fields(v, st.one_of(paths, number_text))).map(", ".join),
        st.lists(st.one_of(paths, number_text), max_size=9).map(",".join),
        NASTY_TEXT,
        st.sampled_from(["", "center,left,right,steering,throttle,brake,speed", "center,left", '"a,b', "\ufeff"]),
    )
    lines = draw(st.lists(row, max_size=6))
    sep = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return sep.join(lines) + draw(st.sampled_from(["", sep]))


@given(data=st.data(), kinds=st.lists(image_kind, min_size=2, max_size=2), cams=st.sets(
    st.sampled_from(["center", "left", "right"]), min_size=1))
def test_udacity_sim_random_logs(data: st.DataObject, kinds: list[str], cams: set[str]) -> None:
    with scratch() as tmp:
        root, outside = tmp / "sim", tmp / "outside" / "secret.jpg"
        layout_images(root, kinds, outside)
        text = data.draw(sim_log(root, outside))
        log = root / "driving_log.csv"
        log.write_text(text, encoding="utf-8", errors="surrogatepass")
        rows = max(1, len(text.splitlines()) + 1)
        ds = open_or_refuse(lambda: open_dataset(root, cameras=tuple(sorted(cams))), log, root, rows=rows)
        if ds is not None:
            exercise(ds, outside, root, rows=rows)
        check_or_refuse(root, log, root)


@given(blob=st.binary(max_size=300))
def test_udacity_sim_binary_garbage(blob: bytes) -> None:
    with scratch() as tmp:
        root = tmp / "sim"
        layout_images(root, ["jpg", "jpg"], tmp / "outside.jpg")
        (root / "driving_log.csv").write_bytes(blob)
        ds = open_or_refuse(lambda: open_dataset(root), root / "driving_log.csv")
        if ds is not None:
            exercise(ds, tmp / "outside.jpg", root)


# ------------------------------------------------------------------------------------- udacity-ch2
CH2_HEAD = "index,timestamp,width,height,frame_id,filename,angle,torque,speed,lat,long,alt"


@st.composite
def ch2_log(draw: st.DrawFn, outside: Path) -> str:
    head = draw(st.sampled_from(["good"] * 6 + ["upper", "text", "names"]))
    if head == "good":
        head = CH2_HEAD
    elif head == "upper":
        head = CH2_HEAD.upper()
    elif head == "text":
        head = draw(NASTY_TEXT)
    else:
        head = ",".join(draw(st.lists(st.sampled_from(["frame_id", "filename", "angle", "x", "angle"]), max_size=5)))
    fname = st.one_of(st.sampled_from(["center/ok_0.jpg", "center/ok_1.jpg", "center/missing.jpg",
                                       "../../../etc/passwd", str(outside), "center/link_out.jpg", "",
                                       "center\\ok_0.jpg", "center"]), NASTY_TEXT)
    frame_id = st.sampled_from(["center_camera", "left_camera", " center_camera ", "", "CENTER_CAMERA"])
    valid = st.tuples(st.sampled_from(["center_camera", "left_camera"]), st.sampled_from(["center/ok_0.jpg", "center/ok_1.jpg"]),
                      small_float_text).map(lambda t: ("3", "1479425441182877835", "640", "480", *t, "0.1", "10.5", "0",
                                                       "0", "0"))
    row = st.one_of(
        valid.map(",".join),
        valid.flatmap(lambda v: _fields(v, st.one_of(fname, frame_id, number_text))).map(",".join),
        valid.flatmap(lambda v: _fields(v, st.one_of(fname, frame_id, number_text))).map(",".join),
        st.tuples(frame_id, fname, number_text).map(",".join),
        st.lists(st.one_of(fname, number_text), max_size=13).map(",".join),
        NASTY_TEXT,
    )
    return "\n".join([head, *draw(st.lists(row, max_size=6))]) + "\n"


@given(data=st.data(), kinds=st.lists(image_kind, min_size=2, max_size=2))
def test_udacity_ch2_random_logs(data: st.DataObject, kinds: list[str]) -> None:
    with scratch() as tmp:
        root, outside = tmp / "ch2", tmp / "outside" / "secret.jpg"
        for k, kind in enumerate(kinds):
            put_image(root / "center" / f"ok_{k}.jpg", kind)
        put_image(outside, "jpg")
        os.symlink(outside, root / "center" / "link_out.jpg")
        text = data.draw(ch2_log(outside))
        log = root / "interpolated.csv"
        log.write_text(text, encoding="utf-8", errors="surrogatepass")
        rows = len(text.splitlines()) + 1
        ds = open_or_refuse(lambda: open_dataset(root), log, root, rows=rows)
        if ds is not None:
            exercise(ds, outside, root, rows=rows)
        check_or_refuse(root, log, root)


# ------------------------------------------------------------------------------------- sullychen
@st.composite
def sully_lines(draw: st.DrawFn, outside: Path) -> str:
    name = st.one_of(st.sampled_from(["0.jpg", "1.jpg", "2.jpg", "missing.jpg", "../secret.jpg", str(outside),
                                      "link_out.jpg", "data", "", "0.jpg\x00"]), NASTY_TEXT)
    stamp = st.one_of(st.just(""), st.just(",2018-07-01 17:09:44:912"), NASTY_TEXT.map(lambda s: "," + s))
    valid = st.tuples(st.sampled_from(["0.jpg", "1.jpg", "2.jpg"]), small_float_text, stamp)
    line = st.one_of(
        valid.map(lambda t: f"{t[0]} {t[1]}{t[2]}"),
        valid.map(lambda t: f"{t[0]} {t[1]}{t[2]}"),
        st.tuples(name, st.one_of(small_float_text, number_text), stamp).map(lambda t: f"{t[0]} {t[1]}{t[2]}"),
        NASTY_TEXT,
        st.sampled_from(["", "   ", "0.jpg", "0.jpg\t3.5", "0.jpg  -2.5 , x"]),
    )
    return "\n".join(draw(st.lists(line, max_size=6)))


@given(data=st.data(), kinds=st.lists(image_kind, min_size=3, max_size=3), in_data=st.booleans())
def test_sullychen_random_lines(data: st.DataObject, kinds: list[str], in_data: bool) -> None:
    with scratch() as tmp:
        root, outside = tmp / "sully", tmp / "secret.jpg"
        img_dir = root / "data" if in_data else root
        for k, kind in enumerate(kinds):
            put_image(img_dir / f"{k}.jpg", kind)
        put_image(outside, "jpg")
        os.symlink(outside, root / "link_out.jpg")
        text = data.draw(sully_lines(outside))
        log = root / "data.txt"
        log.write_text(text, encoding="utf-8", errors="surrogatepass")
        rows = len(text.splitlines()) + 1
        ds = open_or_refuse(lambda: open_dataset(root, format="sullychen"), log, root, rows=rows)
        if ds is not None:
            exercise(ds, outside, root, rows=rows)
        check_or_refuse(root, log, root, format="sullychen")


# ------------------------------------------------------------------------------------- comma.ai HDF5
h5py = pytest.importorskip("h5py")

DTYPES = st.sampled_from(["uint8", "int16", "float32", "float64", "bool", "S4", "complex64"])
SMALL_SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@st.composite
def camera_x(draw: st.DrawFn) -> np.ndarray | None:
    kind = draw(st.sampled_from(["good"] * 10 + ["shape", "shape", "missing", "group"]))
    if kind == "missing":
        return None
    if kind == "group":
        return "group"
    if kind == "good":
        n, h, w = draw(st.integers(0, 4)), draw(st.sampled_from([0, 1, 2, 46, 50] + [160] * 6)), draw(
            st.sampled_from([0, 1, 3] + [320] * 6))
        return np.full((n, 3, h, w), 77, np.uint8)
    shape = draw(st.one_of(SMALL_SHAPES, st.tuples(st.integers(0, 3), st.just(3), st.integers(0, 60),
                                                   st.integers(0, 60))))
    return np.zeros(shape, dtype=draw(DTYPES))


@st.composite
def log_array(draw: st.DrawFn, n: int) -> np.ndarray | str | None:
    kind = draw(st.sampled_from(["good", "good", "good", "good", "good", "good", "odd", "missing", "group", "scalar"]))
    if kind == "missing":
        return None
    if kind == "group":
        return "group"
    if kind == "scalar":
        return np.float64(draw(st.floats()))
    if kind == "good":
        element = st.one_of(st.floats(-3, 6), st.integers(-5, 10).map(float), st.floats(-3, 6),
                            st.integers(-5, 10).map(float), st.floats())
        vals = draw(st.lists(element, min_size=n, max_size=n))
        return np.asarray(vals, np.float64)
    return np.zeros(draw(SMALL_SHAPES), dtype=draw(DTYPES))


def _write_h5(path: Path, arrays: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, arr in arrays.items():
            if arr is None:
                continue
            if isinstance(arr, str):
                f.create_group(key)
            else:
                f.create_dataset(key, data=arr)


@given(data=st.data(), corrupt=st.sampled_from(["none"] * 8 + ["truncate_camera", "truncate_log", "zero_log",
                                                               "log_missing", "camera_text"]))
def test_commaai_wrong_shapes_and_dtypes(data: st.DataObject, corrupt: str) -> None:
    with scratch() as tmp:
        root, name = tmp / "comma", "2016-01-30--11-24-51.h5"
        cam, log = root / "camera" / name, root / "log" / name
        _write_h5(cam, {"X": data.draw(camera_x())})
        n = data.draw(st.integers(0, 8))
        _write_h5(log, {"steering_angle": data.draw(log_array(n)), "cam1_ptr": data.draw(log_array(n))})
        if corrupt == "truncate_camera":
            cam.write_bytes(cam.read_bytes()[: max(1, cam.stat().st_size // 2)])
        elif corrupt == "truncate_log":
            log.write_bytes(log.read_bytes()[:100])
        elif corrupt == "zero_log":
            log.write_bytes(b"")
        elif corrupt == "log_missing":
            log.unlink()
        elif corrupt == "camera_text":
            cam.write_text("X = not hdf5")
        ds = open_or_refuse(lambda: open_dataset(root), cam, log, root)
        if ds is not None:
            exercise(ds, None, cam)
            ds.close()
        check_or_refuse(root, cam, log, root)


# ------------------------------------------------------------------------------------- synth
@st.composite
def synth_folder(draw: st.DrawFn, root: Path) -> None:
    root.mkdir(parents=True)
    n = draw(st.integers(0, 4))
    kind = draw(st.sampled_from(["good"] * 6 + ["dtype", "shape", "garbage", "truncated", "object", "zero"]))
    images: np.ndarray | None = np.full((n, 66, 200, 3), 100, np.uint8)
    if kind == "dtype":
        images = images.astype(draw(st.sampled_from(["float32", "int16", "bool"])))
    elif kind == "shape":
        images = np.zeros(draw(SMALL_SHAPES), np.uint8)
    if kind in ("garbage", "zero"):
        (root / "images.npy").write_bytes(b"" if kind == "zero" else draw(st.binary(max_size=200)))
    elif kind == "object":
        np.save(root / "images.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        np.save(root / "images.npy", images)
        if kind == "truncated":
            p = root / "images.npy"
            p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size - 1000)])
    label_rows = draw(st.one_of(st.just(n), st.just(n), st.integers(0, 5)))
    labels = draw(st.one_of(
        st.lists(st.one_of(small_float_text, small_float_text, small_float_text, number_text), min_size=label_rows,
                 max_size=label_rows).map(lambda vs: "steering_deg,episode\n" + "".join(f"{v.replace(',', ';')},0\n" for v in vs)),
        st.lists(small_float_text, min_size=label_rows, max_size=label_rows)
        .map(lambda vs: "steering_deg,episode\n" + "".join(f"{v},0\n" for v in vs)),
        NASTY_TEXT, st.just(""), st.just("episode\n0\n"),
    ))
    (root / "labels.csv").write_text(labels, encoding="utf-8", errors="surrogatepass")
    cam = {"height": 66, "width": 200, "hfov_deg": 60.0, "mount_height_m": 1.4, "pitch_deg": 7.0,
           "lateral_m": 0.0, "forward_m": 1.6}
    meta = draw(st.one_of(
        st.sampled_from([{"camera": cam}] * 6 + [{"camera": cam, "drive": {"lookahead_m": 8.0}},
                                                  {"camera": cam, "drive": {"lookahead_m": "8"}}]),
        st.dictionaries(st.sampled_from(sorted(cam)), st.one_of(st.floats(), st.integers(-5, 5000), st.text(max_size=3),
                                                                 st.none())).map(lambda d: {"camera": {**cam, **d}}),
        st.just({"camera": [1, 2]}), st.just([]), st.just({}), st.just({"camera": {"height": 66}}),
    ))
    (root / "meta.json").write_text(json.dumps(meta) if draw(st.sampled_from([1] * 6 + [0])) or not meta else "{broken")


@given(data=st.data())
def test_synth_malformed_folders(data: st.DataObject) -> None:
    with scratch() as tmp:
        root = tmp / "synth"
        data.draw(synth_folder(root))
        ds = open_or_refuse(lambda: open_dataset(root), root)
        if ds is not None:
            exercise(ds, None, root)
        check_or_refuse(root, root)


# ------------------------------------------------------------------------------------- options and registry
@given(
    fmt=st.one_of(st.sampled_from(["auto", "synth", "udacity-sim", "udacity_sim", "UDACITY-CH2", "sullychen", "commaai",
                                   "kitti", ""]), NASTY_TEXT),
    size=st.one_of(st.tuples(st.integers(-10, 300), st.integers(-10, 300)), st.tuples(st.integers(-10, 10**6),
                   st.integers(-10, 10)), st.none()),
    ratio=st.one_of(st.floats(), st.none()),
)
def test_open_dataset_formats_sizes_and_options(fmt: str, size: tuple[int, int] | None, ratio: float | None) -> None:
    with scratch() as tmp:
        root = tmp / "sully"
        put_image(root / "0.jpg", "jpg")
        (root / "data.txt").write_text("0.jpg 3.0\n")
        assume(size is None or size[0] * size[1] <= 300 * 300 or min(size) < 8)
        options = {} if ratio is None else {"steering_ratio": ratio}
        ds = open_or_refuse(lambda: open_dataset(root, format=fmt, size=size, **options), root, "size", "format",
                            "steering_ratio", fmt or "''")
        if ds is not None:
            exercise(ds, None, root)
            if size is not None:
                assert ds.size == tuple(size)


@pytest.mark.parametrize("where", ["relative", "absolute", "symlink", "dir_symlink"])
def test_path_escape_refused_unless_allowed(tmp_path: Path, where: str) -> None:
    """Images outside the dataset folder are refused with a clear message; allow_outside=True reads them."""
    root, secret = tmp_path / "sim", put_image(tmp_path / "private" / "secret.jpg", "jpg")
    put_image(root / "IMG" / "ok.jpg", "jpg")
    if where == "relative":
        field = "../private/secret.jpg"
    elif where == "absolute":
        field = str(secret)
    elif where == "symlink":
        os.symlink(secret, root / "IMG" / "innocent.jpg")
        field = "IMG/innocent.jpg"
    else:
        os.symlink(secret.parent, root / "IMG" / "mounted")
        field = "IMG/mounted/secret.jpg"
    (root / "driving_log.csv").write_text(f"{field}, IMG/ok.jpg, IMG/ok.jpg, 0.1, 0, 0, 0\n")
    with pytest.raises(PDNError) as info:
        open_dataset(root)
    msg = assert_one_line(info.value, "driving_log.csv: row 1")
    assert "leaves the dataset folder" in msg and "allow_outside=True" in msg  # pdn says --allow-outside-paths
    ds = open_dataset(root, allow_outside=True)
    assert ds.frame(0).shape == (66, 200, 3)
    assert math.isclose(ds.steering(0), -2.5)
