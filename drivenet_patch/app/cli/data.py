"""``pdn data synth|check`` and ``pdn world preview``: make, inspect and preview data."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivenet_patch.app.cli.common import (
    add_allow_outside,
    add_device_and_json,
    add_format,
    add_json,
    emit,
    progress,
)
from drivenet_patch.app.cli.common import add_command as command
from drivenet_patch.app.cli.common import add_group as group
from drivenet_patch.app.cli.flags import FRAMES, MAX_EPISODE_STEPS, SEED, count
from drivenet_patch.safety.errors import PDNError


def cmd_data_synth(args: argparse.Namespace) -> int:
    from drivenet_patch.data.synthesize import parse_cameras, synthesize
    from drivenet_patch.world.camera import parse_size

    steps = {} if args.episode_steps is None else {"episode_steps": args.episode_steps}
    meta = synthesize(
        args.out, args.frames, seed=args.seed, size=parse_size(args.size), cameras=parse_cameras(args.cameras),
        compile=args.compile, device=args.device, progress=progress(args), **steps,
    )
    result = {"out": str(args.out), "frames": meta["frames"], "episodes": meta["episodes"], "size": meta["size"],
              "cameras": list(meta["cameras"])}
    emit(result, args.json, f"wrote {meta['frames']} frames ({meta['episodes']} episodes) to {args.out}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from drivenet_patch.data.check import check_dataset, format_report

    report = check_dataset(args.path, format=args.format, allow_outside=args.allow_outside_paths)
    emit(report, args.json, format_report(report))
    return 0


# ---------------------------------------------------------------------------- world
def cmd_world_preview(args: argparse.Namespace) -> int:
    import cv2

    from drivenet_patch.storage.atomic import atomic_path
    from drivenet_patch.world.camera import parse_size
    from drivenet_patch.world.preview import preview_grid

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise PDNError(f"--out: expected a .png or .jpg file name, got {args.out!r}")
    grid = preview_grid(seed=args.seed, size=parse_size(args.size))
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise PDNError(f"--out: could not write {out}")
    emit({"out": str(out), "height": int(grid.shape[0]), "width": int(grid.shape[1])}, args.json,
          f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` and ``world`` command groups to the ``pdn`` sub-commands ``sub``."""
    data = group(sub, "data", "make and inspect datasets")
    c = command(data, "synth", "render a dataset from the built-in driving world", cmd_data_synth)
    c.add_argument("--out", required=True, type=Path, help="output folder (images.npy, labels.csv, meta.json)")
    c.add_argument("--frames", required=True, type=FRAMES, help="number of frames to write (at most 10,000,000, "
                   "and no more than the free disk space holds)")
    c.add_argument("--seed", type=SEED, default=0, help="random seed (same seed -> same dataset)")
    c.add_argument("--size", default="66x200", help="frame size HxW (default 66x200; 160x320 also common)")
    c.add_argument("--cameras", default="center", help="comma-separated: center,left,right (default center)")
    # The default lives in drivenet_patch.data.synthesize.EPISODE_STEPS (importing it here would load torch for
    # `pdn --help`); tests/test_cli.py checks that this help names the same number.
    c.add_argument("--episode-steps", type=count(MAX_EPISODE_STEPS, "a number of steps", low=2),
                   help="simulation steps per episode (0.1 s; default 60): one road and one lighting per episode, "
                        "so fewer steps give more of both")
    c.add_argument("--compile", action="store_true", help="torch.compile the renderer (faster for large N)")
    add_device_and_json(c)

    c = command(data, "check", "parse a dataset, decode its frames and report statistics and problems",
                cmd_data_check)
    c.add_argument("path", help="dataset folder or log file")
    add_format(c)
    add_allow_outside(c)
    add_json(c)

    world = group(sub, "world", "the built-in driving world")
    c = command(world, "preview", "render a labelled grid of standard world views", cmd_world_preview)
    c.add_argument("--out", required=True, help="output image (.png)")
    c.add_argument("--seed", type=SEED, default=0, help="seed of the random road and style")
    c.add_argument("--size", default="132x400", help="tile size HxW (default 132x400: the model view at 2x)")
    add_json(c)


cmd_world_preview.out_is_file = True  # type: ignore[attr-defined]  # --out is an image file
cmd_data_synth.out_kind = "dataset"  # type: ignore[attr-defined]  # --out's folder kind
