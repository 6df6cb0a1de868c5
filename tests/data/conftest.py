"""Fixture writers for tiny datasets of every supported format, with real image and HDF5 files."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def write_image(
    path: Path, h: int = 160, w: int = 320, top: tuple = RED, bottom: tuple = BLUE, split: float = 0.5
) -> Path:
    """Write an RGB image whose upper ``split`` share is ``top`` and the rest ``bottom`` (jpg or png)."""
    rgb = np.empty((h, w, 3), np.uint8)
    cut = int(h * split)
    rgb[:cut] = top
    rgb[cut:] = bottom
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def image_writer() -> Callable[..., Path]:
    return write_image


@pytest.fixture
def make_sim(tmp_path: Path) -> Callable[..., Path]:
    """Udacity simulator folder: ``make_sim(steering, header=False, style="relative"|"windows"|"posix")``."""

    def make(
        steering: Sequence[float | str] = (0.1, -0.2, 0.0),
        header: bool = False,
        style: str = "relative",
        name: str = "sim",
    ) -> Path:
        root = tmp_path / name
        lines = ["center,left,right,steering,throttle,brake,speed"] if header else []
        for i, s in enumerate(steering):
            paths = []
            for cam in ("center", "left", "right"):
                fname = f"{cam}_2016_12_01_13_30_48_{i:03d}.jpg"
                write_image(root / "IMG" / fname)
                if style == "windows":
                    paths.append(f"C:\\Users\\x\\Desktop\\rec\\IMG\\{fname}")
                elif style == "posix":
                    paths.append(f"/home/someone/rec/IMG/{fname}")
                else:
                    paths.append(f"IMG/{fname}")
            lines.append(", ".join([*paths, str(s), "0.5", "0", "30.19"]))
        (root / "driving_log.csv").write_text("\n".join(lines) + "\n")
        return root

    return make


@pytest.fixture
def make_ch2(tmp_path: Path) -> Callable[..., Path]:
    """Challenge 2 folder: ``make_ch2([(frame_id, angle), ...])``."""

    def make(rows: Sequence[tuple[str, float | str]], header: str | None = None) -> Path:
        root = tmp_path / "ch2"
        head = header or "index,timestamp,width,height,frame_id,filename,angle,torque,speed,lat,long,alt"
        lines = [head]
        for k, (frame_id, angle) in enumerate(rows):
            stamp = 1479425441182877835 + k * 50_000_000
            sub = frame_id.split("_")[0]
            fname = f"{sub}/{stamp}.jpg"
            write_image(root / fname, h=480, w=640)
            lines.append(f"{k},{stamp},640,480,{frame_id},{fname},{angle},0.1,10.5,37.4,-122.1,-30.0")
        (root / "interpolated.csv").write_text("\n".join(lines) + "\n")
        return root

    return make


@pytest.fixture
def make_sully(tmp_path: Path) -> Callable[..., Path]:
    """SullyChen folder: ``make_sully(angles, stamps=False, subdir="")`` (subdir "data" = 2018 layout)."""

    def make(angles: Sequence[float | str], stamps: bool = False, subdir: str = "") -> Path:
        root = tmp_path / "sully"
        lines = []
        for i, a in enumerate(angles):
            write_image((root / subdir / f"{i}.jpg") if subdir else root / f"{i}.jpg", h=256, w=455)
            lines.append(f"{i}.jpg {a},2018-07-01 17:09:44:{i:03d}" if stamps else f"{i}.jpg {a}")
        root.mkdir(parents=True, exist_ok=True)
        (root / "data.txt").write_text("\n".join(lines) + "\n")
        return root

    return make


@pytest.fixture
def make_comma(tmp_path: Path) -> Callable[..., Path]:
    """comma.ai folder: ``make_comma(n_frames, steering_raw, cam1_ptr)``; frame j is filled with value 40 j."""
    h5py = pytest.importorskip("h5py")

    def make(
        n_frames: int, steering: Sequence[float], ptr: Sequence[float], name: str = "2016-01-30--11-24-51"
    ) -> Path:
        root = tmp_path / "comma"
        (root / "camera").mkdir(parents=True, exist_ok=True)
        (root / "log").mkdir(parents=True, exist_ok=True)
        x = np.zeros((n_frames, 3, 160, 320), np.uint8)
        for j in range(n_frames):
            x[j, 0] = 40 * j  # red channel encodes the frame index
            x[j, 2] = 200
        with h5py.File(root / "camera" / f"{name}.h5", "w") as f:
            f.create_dataset("X", data=x)
        with h5py.File(root / "log" / f"{name}.h5", "w") as f:
            f.create_dataset("steering_angle", data=np.asarray(steering, np.float64))
            f.create_dataset("cam1_ptr", data=np.asarray(ptr, np.float64))
            f.create_dataset("speed", data=np.full(len(ptr), 30.0))
        return root

    return make


@pytest.fixture
def make_synth(tmp_path: Path) -> Callable[..., Path]:
    """Synth folder with ``n`` frames of size ``size`` and steering 0, 1, 2, ..."""

    def make(n: int = 4, size: tuple[int, int] = (66, 200)) -> Path:
        root = tmp_path / "synth"
        root.mkdir(parents=True, exist_ok=True)
        images = np.full((n, *size, 3), 128, np.uint8)
        np.save(root / "images.npy", images)
        pd.DataFrame(
            {
                "steering_deg": np.arange(n, dtype=float),
                "episode": 0,
                "t": np.arange(n) * 0.1,
                "camera": "center",
            }
        ).to_csv(root / "labels.csv", index=False)
        cam = {
            "height": size[0],
            "width": size[1],
            "hfov_deg": 60.0,
            "mount_height_m": 1.4,
            "pitch_deg": 7.0,
            "lateral_m": 0.0,
            "forward_m": 1.6,
        }
        (root / "meta.json").write_text(json.dumps({"camera": cam, "version": 1}))
        return root

    return make
