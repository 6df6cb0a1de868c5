"""Render datasets from the driving world (``pdn data synth``); read them with :class:`SynthDataset`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from drivenet_patch import __version__
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.storage.atomic import atomic_path, write_csv, write_json
from drivenet_patch.storage.folders import replace_output_folder
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.episodes import DriveConfig, drive_episode, expert_steer, lane_state, lateral_shift
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import Road

SIDE_CAMERA_M = 0.6  # lateral mount of PilotNet-style left/right cameras
CAMERAS = {"center": 0.0, "left": SIDE_CAMERA_M, "right": -SIDE_CAMERA_M}
SYNTH_VERSION = 1
#: The files of a synth dataset folder (``--out`` holding anything else is refused, not deleted).
DATASET_FILES = ("images.npy", "labels.csv", "meta.json")

#: Simulation steps (0.1 s each) per episode by default. Each episode draws one road and one lighting,
#: so shorter episodes give more of both per frame: 9,000 three-camera frames are 100 episodes at 60
#: steps and 20 at 300. A --quick PilotNet trained on the 20-episode set left its lane on a dim, hazy,
#: low-sun road (21 interventions in 0.3 km); the same recipe on the 100-episode set drove it and 11 more
#: held-out roads without one. Every episode also starts off-centre (DriveConfig.start_offset_m),
#: so shorter episodes hold a larger share of recoveries.
EPISODE_STEPS = 60


def parse_cameras(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"center,left,right"`` -> ('center', 'left', 'right'), with a one-line error on unknown names."""
    names = tuple(n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip())
    bad = [n for n in names if n not in CAMERAS]
    if bad or not names:
        raise PDNError(f"cameras: unknown camera {bad[0] if bad else text!r}; choose from {','.join(CAMERAS)}")
    return names


def synthesize(
    out: str | Path,
    frames: int,
    seed: int = 0,
    size: tuple[int, int] = (66, 200),
    cameras: tuple[str, ...] = ("center",),
    drive: DriveConfig | None = None,
    episode_steps: int = EPISODE_STEPS,
    frame_every: int = 2,
    compile: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Render a dataset from the driving world into ``out`` (images.npy, labels.csv, meta.json).

    Each episode drives a fresh random road with the noisy expert (see
    :func:`~drivenet_patch.world.episodes.drive_episode`), records every ``frame_every``-th
    step, and renders that pose from each camera; lighting is drawn per episode. Frames are
    streamed into a memory-mapped ``.npy`` that is renamed into place only when complete.

    Returns:
        The ``meta.json`` content.
    """
    if frames <= 0:
        raise PDNError(f"frames must be > 0, got {frames}")
    if episode_steps < frame_every or frame_every < 1:
        raise PDNError("episode_steps must be >= frame_every >= 1")
    if not 0 <= int(seed) < 2**63:
        raise PDNError(f"seed must lie in [0, 2**63), got {seed}")
    drive = drive or DriveConfig()
    cameras = parse_cameras(cameras)
    out = Path(out)
    existing = next((p for p in (out, *out.parents) if p.exists()), Path.cwd())
    need = frames * size[0] * size[1] * 3
    writable = out.parent if existing == out else existing  # the staging folder is made beside ``out``
    if writable.is_dir() and not os.access(writable, os.W_OK | os.X_OK):  # before the space check: the real fault
        raise PDNError(f"out: cannot write in {writable} (permission denied or read-only)")
    try:
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        raise PDNError(f"out: cannot use {out} ({exc.strerror or exc})") from None
    if need > free:
        raise PDNError(f"frames: {frames} frames of {size[0]}x{size[1]} need {need / 1e9:.3g} GB, "
                       f"{existing} has {free / 1e9:.3g} GB free")
    # The new dataset is built in a staging folder beside ``out`` and swapped in when complete:
    # a failure or a kill at any moment leaves the old dataset as it was.
    with replace_output_folder(out, "dataset") as staging:
        return _synthesize_into(staging, frames, seed, size, cameras, drive, episode_steps, frame_every,
                                compile, device, progress)


def _synthesize_into(out: Path, frames: int, seed: int, size: tuple[int, int], cameras: tuple[str, ...],
                     drive: DriveConfig, episode_steps: int, frame_every: int, compile: bool, device: str,
                     progress: bool) -> dict:
    """Render the dataset into the (empty, staging) folder ``out``; the body of :func:`synthesize`."""
    base_cam = Camera().with_size(*size)
    renderers = {name: Renderer(base_cam.shifted(CAMERAS[name]), device=device, compile=compile) for name in cameras}
    rng = np.random.default_rng([int(seed), 0x5EED])
    road_length = episode_steps * drive.speed_mps * drive.dt + 60.0
    H, W = size
    rows: list[pd.DataFrame] = []
    written = 0
    bar = tqdm(total=frames, desc="synth", unit="frame", disable=not progress, leave=False)
    with atomic_path(out / "images.npy") as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(frames, H, W, 3))
        episode = 0
        while written < frames:
            road_seed = int(rng.integers(2**31 - 1))
            road = Road.generate(road_seed, length_m=road_length)
            ep = drive_episode(road, rng, episode_steps, drive)
            keep = slice(0, episode_steps, frame_every)
            poses = np.stack([ep["x"][keep], ep["y"][keep], ep["yaw"][keep]], axis=1)
            state = lane_state(road, poses)
            light = Lighting.sample(rng, 1)
            for name in cameras:
                if written >= frames:
                    break
                n = min(len(poses), frames - written)
                lat = CAMERAS[name]
                label = ep["steering_deg"][keep] if lat == 0.0 else expert_steer(
                    road, lateral_shift(poses, lat), drive.lookahead_m)
                renderers[name].render_uint8(road, poses[:n], light.repeat(n), out=images[written : written + n])
                rows.append(pd.DataFrame({
                    "steering_deg": np.round(label[:n], 5),
                    "episode": episode,
                    "t": np.round(ep["t"][keep][:n], 3),
                    "camera": name,
                    "x": poses[:n, 0], "y": poses[:n, 1], "yaw": poses[:n, 2],
                    "s": state["s"][:n],
                    "offset_m": state["offset_m"][:n],
                    "heading_err_deg": state["heading_err_deg"][:n],
                    "curvature": road.kappa[np.clip(np.rint(state["s"][:n] / 0.1).astype(int), 0, len(road.kappa) - 1)],
                    "executed_deg": ep["executed_deg"][keep][:n],
                    "road_seed": road_seed,
                    **{f"light_{k}": v for k, v in light.to_dict(0).items()},
                }))
                written += n
                bar.update(n)
            episode += 1
        images.flush()
        del images
    bar.close()
    labels = pd.concat(rows, ignore_index=True)
    write_csv(out / "labels.csv", labels, float_format="%.9g")
    meta = {
        "format": "synth",
        "version": SYNTH_VERSION,
        "package_version": __version__,
        "frames": int(frames),
        "seed": int(seed),
        "size": [H, W],
        "cameras": {name: CAMERAS[name] for name in cameras},
        "camera": base_cam.to_dict(),
        "drive": drive.to_dict(),
        "episode_steps": episode_steps,
        "road_length_m": road_length,
        "frame_every": frame_every,
        "episodes": int(labels["episode"].nunique()),
        "steering_unit": "road-wheel degrees, positive = left",
    }
    write_json(out / "meta.json", meta)
    return meta
