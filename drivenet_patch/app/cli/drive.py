"""``pdn drive``: closed-loop driving of a trained model on held-out roads (PilotNet autonomy).

Kept apart from :mod:`drivenet_patch.driving.drive` so the library never sees an argparse namespace, and light
at import time: the heavy modules load only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivenet_patch.app.cli.common import emit, load_run, progress
from drivenet_patch.app.cli.flags import (
    ANGLE,
    KM,
    MAX_DRIVE_ROADS,
    MAX_THREADS,
    SEED,
    check_work,
    count,
    fill,
    real,
    refuse_given,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_ROAD_KM
from drivenet_patch.world.seeds import DRIVE_SEED

DESCRIPTION = """\
Drive a trained steering model in closed loop on procedural roads it has not seen: every 0.1 s
the camera frame is rendered from the car's true pose, the model's steering moves the car, and
a safety driver re-centres it whenever the car centre strays more than 1 m from the lane centre.
Reports PilotNet autonomy = (1 - interventions * 6 s / elapsed s) * 100, interventions,
lane-departure events (a wheel outside the lane) and lane-keeping errors.

--sticker takes a PNG (a 3.5 m x 2.0 m road sticker on the ego lane) or an attack folder with
sticker.png and attack.json ({"placement": {"kind": "road", "d": -1.75, "width_m": 3.5,
"length_m": 2.0, "yaw_deg": 0, "bottom_m": 1.5}}); copies sit every --sticker-every metres
from 60 m on. Road i is generated from seed SEED + i.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Register ``pdn drive`` on the top-level subparsers ``sub``."""
    c = sub.add_parser("drive", help="drive a trained model in closed loop and report its autonomy",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.set_defaults(fn=cmd_drive)
    c.add_argument("--model", required=True, help="run folder (or model .safetensors with config.json beside it)")
    c.add_argument("--roads", type=count(MAX_DRIVE_ROADS, "roads"), default=10,
                   help=f"number of roads driven at once (default 10; at most {MAX_DRIVE_ROADS})")
    c.add_argument("--km", type=KM, default=1.0, help="kilometres driven on each road (default 1.0; at most 20, and "
                   f"--roads x --km at most {MAX_ROAD_KM:g})")
    c.add_argument("--seed", type=SEED, default=DRIVE_SEED,
                   help=f"seed of the roads and lighting (default {DRIVE_SEED}: held out from training)")
    c.add_argument("--sticker", help="sticker PNG, or attack folder with sticker.png and attack.json")
    c.add_argument("--sticker-every", type=real(10.0, 100_000.0, "metres"), metavar="M",
                   help="--sticker: spacing of the sticker copies along each road in metres (default 100)")
    c.add_argument("--video", help="write road 0 with the steering drawn in as .mp4 (or .avi)")
    c.add_argument("--out", help="folder for drive_log.csv (one row per road and step) and drive.json")
    c.add_argument("--device", default="cpu", help="torch device (default cpu)")
    c.add_argument("--threads", type=count(MAX_THREADS, "threads"), default=1,
                   help="torch CPU threads (default 1: small per-step work; more only helps big models on idle cores)")
    c.add_argument("--monitor", action="store_true",
                   help="PatchVote only: certify every frame against the model's pixel-patch threat and log "
                        "cert_lo, cert_hi, verified (interval at most --delta wide) and fallback per step")
    c.add_argument("--delta", type=ANGLE, help="--monitor: verified interval width in degrees (default 2)")
    c.add_argument("--monitor-patch", help="--monitor: the threat's patch (default 2%%, as pdn certify)")
    c.add_argument("--fallback", choices=["none", "slow", "hold"],
                   help="--monitor: while unverified, slow down (slow) or keep the last verified steering (hold); "
                        "default none")
    c.add_argument("--slow-factor", type=real(0.0, 1.0, "a speed multiplier", low_open=True),
                   help="--fallback slow: speed multiplier (default 0.5)")
    c.add_argument("--hold-s", type=real(0.0, 3600.0, "seconds"),
                   help="--fallback hold: at most this many seconds (default 1)")
    c.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_drive(args: argparse.Namespace) -> int:
    import numpy as np

    from drivenet_patch.driving.drive import MAX_ROADS, ClosedLoopConfig, drive_closed_loop, make_roads
    from drivenet_patch.storage.atomic import write_csv, write_json
    from drivenet_patch.storage.folders import prepare_output_folder
    from drivenet_patch.world.camera import Camera
    from drivenet_patch.world.sticker_file import load_sticker

    check_flags(args)
    ClosedLoopConfig().steps_for(args.km)  # refuses --km outside (0, MAX_KM_PER_ROAD] before any work
    if not 1 <= args.roads <= MAX_ROADS:
        raise PDNError(f"--roads must lie in [1, {MAX_ROADS}], got {args.roads}")
    if args.video and Path(args.video).suffix.lower() not in (".mp4", ".avi"):
        raise PDNError(f"--video: expected a .mp4 or .avi file name, got {args.video!r}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise PDNError(f"--out: {args.out} exists and is not a folder")
    from drivenet_patch.models.zoo import is_zoo_ref

    model_path = Path(args.model)
    if not is_zoo_ref(args.model) and not model_path.exists():  # the model first, then the sticker, then loading the model
        raise PDNError(f"--model: {model_path} does not exist")
    sticker = load_sticker(args.sticker) if args.sticker else None
    model = load_run(args.model, args.device)
    cfg = ClosedLoopConfig(sticker_every_m=float(args.sticker_every))
    steps = cfg.steps_for(float(args.km))
    monitor = _monitor(model, args) if args.monitor else None
    camera = Camera().with_size(*model.input_size)
    roads = make_roads(args.roads, steps, cfg, args.seed)
    if args.out:  # before the drive: --video may lie inside it
        prepare_output_folder(args.out, "drive")
    metrics, log = drive_closed_loop(model if monitor is None else monitor.policy, roads, steps, camera, cfg,
                                     np.random.default_rng([args.seed, 0xD21FE]),
                                     sticker=sticker, device=args.device, progress=progress(args), video=args.video,
                                     threads=args.threads, monitor=monitor)
    result = {**metrics, "model": str(args.model), "seed": int(args.seed), "km_per_road": float(args.km),
              "sticker": args.sticker}
    if monitor is not None:
        from defenses.monitor import summarize

        result["monitor"] = {"threat": monitor.threat, "delta_deg": monitor.delta, "fallback": monitor.fallback,
                             **summarize(log)}
    if args.out:
        out = Path(args.out)
        write_csv(out / "drive_log.csv", log, float_format="%.9g")
        write_json(out / "drive.json", {**result, "road_seeds": [r.seed for r in roads], "config": cfg.to_dict(),
                                        "camera": camera.to_dict(), "sticker_placement": _placement(sticker)})
        result["out"] = str(out)
        if monitor is not None:
            from defenses.monitor import plot_traces

            result["monitor"]["trace"] = str(plot_traces({"road 0": log}, out / "monitor_trace.png"))
    text = (f"autonomy {metrics['autonomy_pct']:.1f}%  interventions {metrics['interventions']}  "
            f"lane departures {metrics['departure_events']}  mean |offset| {metrics['mean_abs_offset_m']:.2f} m  "
            f"max {metrics['max_abs_offset_m']:.2f} m  |steer - expert| {metrics['mean_abs_steer_error_deg']:.2f} deg  "
            f"over {metrics['distance_km']:.1f} km on {metrics['roads']} roads"
            + (f"  (sticker in view in {metrics['sticker_frames']} frames)" if sticker is not None else "")
            + (f"  video: {metrics['video']}" if "video" in metrics else "")
            + (f"  log: {result['out']}" if "out" in result else "")
            + (f"  unverified {100 * result['monitor']['unverified_share']:.1f}% of frames"
               if "monitor" in result else ""))
    emit(result, args.json, text)
    return 0


def check_flags(args: argparse.Namespace) -> None:
    """The flags of ``pdn drive`` checked together before any work: those of a mode not chosen (``--monitor``,
    a ``--fallback``, ``--sticker``) are refused, their defaults filled in, and roads x km bounded."""
    if not args.monitor:
        refuse_given(args, ["--delta", "--monitor-patch", "--fallback", "--slow-factor", "--hold-s"],
                     "without --monitor", "give --monitor or drop it")
    if args.fallback != "slow":
        refuse_given(args, ["--slow-factor"], "without --fallback slow", "give --fallback slow or drop it")
    if args.fallback != "hold":
        refuse_given(args, ["--hold-s"], "without --fallback hold", "give --fallback hold or drop it")
    if not args.sticker:
        refuse_given(args, ["--sticker-every"], "without --sticker", "give --sticker or drop it")
    fill(args, delta=2.0, monitor_patch="2%", fallback="none", slow_factor=0.5, hold_s=1.0, sticker_every=100.0)
    check_work("road-km", [("--roads", args.roads), ("--km", args.km)], MAX_ROAD_KM, "drive fewer roads or fewer km")


def _monitor(model: Any, args: argparse.Namespace) -> object:
    """The certified runtime monitor of :mod:`defenses.monitor` (the CLI wires the defense into the core loop)."""
    from defenses.monitor import CertifiedMonitor

    return CertifiedMonitor(model, args.delta, patch=args.monitor_patch, fallback=args.fallback,  # type: ignore[arg-type]
                            slow_factor=args.slow_factor, hold_s=args.hold_s)


def _placement(sticker: tuple | None) -> dict | None:
    from dataclasses import asdict

    return None if sticker is None else asdict(sticker[1])


cmd_drive.out_kind = "drive"  # type: ignore[attr-defined]  # --out's folder kind
