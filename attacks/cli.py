"""``pdn attack`` (optimise a printable sticker) and ``pdn attack eval`` (judge it against controls).

The main CLI registers both with one line: ``add_attack_commands(sub)``. ``pdn attack eval`` is
routed by :func:`route_argv` (``attack`` takes options of its own, so ``eval`` cannot be an
argparse sub-command of it).

World mode (default): the sticker sits at a fixed place on procedural roads. Optimisation uses
approach poses on ``--roads`` roads; the numbers in ``attack.json`` come from other roads
(held out), and ``pdn attack eval`` draws yet other roads from its own ``--seed``. Road seeds:
``1_000_000 + 1000 * seed + i`` (optimisation), ``2_000_000 + ...`` (the attack's held-out
check), ``3_000_000 + ...`` and ``4_000_000 + ...`` (``attack eval``: offline and closed loop);
training data draws its road seeds from ``0 .. 2**31`` at random, so a collision is unlikely
but not impossible (documented, not prevented).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from drivenet_patch.errors import PDNError

ATTACK_SEED_BASE = 1_000_000
HELDOUT_SEED_BASE = 2_000_000
EVAL_SEED_BASE = 3_000_000
LOOP_SEED_BASE = 4_000_000
STICKER_S_M = 40.0  # where the sticker sits on an approach road


def route_argv(argv: list[str]) -> list[str]:
    """``pdn attack eval ...`` -> ``pdn attack-eval ...`` (the parser's name for it)."""
    if len(argv) >= 2 and argv[0] == "attack" and argv[1] == "eval":
        return ["attack-eval", *argv[2:]]
    return argv


def parse_size(text: str) -> tuple[float, float]:
    """``"3.5x2.0"`` -> (3.5, 2.0) metres (width across the road, length along it / billboard height)."""
    parts = str(text).lower().split("x")
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        raise PDNError(f"--size must be WIDTHxLENGTH in metres, e.g. 3.5x2.0, got {text!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise PDNError(f"--size must be two numbers > 0 (metres), got {text!r}")
    if w > 20 or h > 20:
        raise PDNError(f"--size: at most 20 m per side, got {text!r}")
    return w, h


def parse_range(text: str, name: str = "--distance") -> tuple[float, float]:
    """``"5-20"`` -> (5.0, 20.0); a single number -> (x, x)."""
    parts = str(text).split("-")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise PDNError(f"{name} must be NEAR-FAR in metres, e.g. 5-20, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals) or not 0 < vals[0] <= vals[1]:
        raise PDNError(f"{name} must be NEAR-FAR with 0 < NEAR <= FAR, got {text!r}")
    if vals[1] > 60:
        raise PDNError(f"{name}: at most 60 m, got {text!r}")
    return vals[0], vals[1]


def add_attack_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``attack`` and ``attack-eval`` (shown as ``attack eval``) to the ``pdn`` sub-commands."""
    from drivenet_patch.cli import _device_and_json, _positive_int

    help_ = "optimise a printable adversarial sticker against a steering model (then: pdn attack eval)"
    c = sub.add_parser("attack", help=help_, description=help_ + ". Writes sticker.png, sticker_print.pdf (unless --no-print), "
                       "sticker_palette.png, attack.json, history.csv and examples.png into --out.")
    c.add_argument("--model", required=True, help="run folder of the attacked model")
    c.add_argument("--out", required=True, type=Path, help="attack folder to write")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--world", action="store_true", help="sticker in the built-in world (default)")
    src.add_argument("--data", help="real frames: a flat road sticker ahead of the car in every frame")
    c.add_argument("--format", default="auto", help="dataset format for --data (default auto)")
    c.add_argument("--frames", type=_positive_int, default=256, help="--data: frames used (default 256)")
    c.add_argument("--target", default="left", help="left | right | away (default left)")
    c.add_argument("--angle", type=float, default=15.0, help="push in degrees (default 15)")
    c.add_argument("--loss", default="hinge", help="hinge | mse (default hinge)")
    c.add_argument("--size", default="3.5x2.0", help="sticker WIDTHxLENGTH in metres (default 3.5x2.0)")
    c.add_argument("--place", default="road", help="road | billboard (default road)")
    c.add_argument("--lateral", type=float, default=0.0,
                   help="sticker centre's offset from the ego-lane centre in metres, + = left (default 0; "
                        "a billboard's default side is 4.75 m right of it)")
    c.add_argument("--distance", default="5-20", help="camera distances to the sticker, NEAR-FAR metres (default 5-20)")
    c.add_argument("--steps", type=_positive_int, default=300, help="optimisation steps, at most 500 (default 300)")
    c.add_argument("--batch", type=_positive_int, default=32, help="EOT samples per step (default 32)")
    c.add_argument("--lr", type=float, default=0.1, help="Adam learning rate on the texture logits (default 0.1)")
    c.add_argument("--texels", default="32x56", help="texture resolution HxW (default 32x56)")
    c.add_argument("--nps-weight", type=float, default=0.25, help="non-printability weight (default 0.25)")
    c.add_argument("--tv-weight", type=float, default=0.25, help="total-variation weight (default 0.25)")
    c.add_argument("--palette", help="printer palette CSV (r,g,b in 0-255 or 0-1; default: packaged)")
    c.add_argument("--dirt", action="store_true", help="darken-only grey dirt instead of a printed sticker")
    c.add_argument("--saliency-weight", type=float, default=0.0,
                   help="patchdrive only: weight of an extra objective that pulls the model's saliency (its "
                        "selected high-resolution patches) onto the sticker (default 0: off)")
    c.add_argument("--roads", type=_positive_int, default=8, help="world roads used for optimisation (default 8)")
    c.add_argument("--poses", type=_positive_int, default=32, help="approach poses per road (default 32)")
    c.add_argument("--paper", default="A4", help="print paper: A4 | Letter | A3 (default A4)")
    c.add_argument("--no-print", action="store_true",
                   help="skip sticker_print.pdf, the tiled 1:1 print file (about 15 s for 2.0x3.5 m on A4)")
    c.add_argument("--seed", type=int, default=0, help="seed (same seed -> same sticker)")
    _device_and_json(c)
    c.set_defaults(fn=cmd_attack)

    help_ = "evaluate a sticker on held-out roads and closed loop, beside noise and grey controls"
    e = sub.add_parser("attack-eval", help=help_ + " (pdn attack eval)", description=help_,
                       prog="pdn attack eval")
    e.add_argument("--model", required=True, help="run folder of the model under attack")
    e.add_argument("--sticker", required=True, type=Path, help="attack folder (from pdn attack)")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--world", action="store_true", help="held-out world roads (default)")
    src.add_argument("--data", help="real frames (offline numbers only)")
    e.add_argument("--format", default="auto", help="dataset format for --data (default auto)")
    e.add_argument("--frames", type=_positive_int, default=256, help="--data: frames used (default 256)")
    e.add_argument("--threshold", type=float, default=3.0, help="success: deviation in the target direction >= this (deg)")
    e.add_argument("--roads", type=_positive_int, default=8, help="held-out roads for offline scenes (default 8)")
    e.add_argument("--poses", type=_positive_int, default=32, help="approach poses per held-out road (default 32)")
    e.add_argument("--loop-roads", type=int, default=10, help="closed-loop roads (0: skip closed loop; default 10)")
    e.add_argument("--km", type=float, default=0.5, help="closed-loop km per road (default 0.5: 5 stickers each)")
    e.add_argument("--seed", type=int, default=1, help="seed of the held-out roads, poses and controls (default 1)")
    e.add_argument("--out", type=Path, help="write eval.json, frames.csv, approaches.csv here (default: the sticker folder)")
    _device_and_json(e)
    e.set_defaults(fn=cmd_attack_eval)


# ---------------------------------------------------------------------------- helpers
def _load_model(path: str, device: str) -> Any:
    from drivenet_patch.drive_cli import load_model

    p = Path(path)
    if not p.exists():
        raise PDNError(f"--model: {p} does not exist")
    return load_model(p, device)


def _roads(base: int, seed: int, count: int, length_m: float) -> list[Any]:
    from drivenet_patch.world.road import Road

    return [Road.generate(base + 1000 * int(seed) + i, length_m) for i in range(count)]


def _camera(model: Any) -> Any:
    from drivenet_patch.world.camera import Camera

    return Camera().with_size(*model.input_size)


def _world_placement(kind: str, size: tuple[float, float], lateral_m: float = 0.0) -> Any:
    """The sticker at ``STICKER_S_M`` on an approach road; ``lateral_m`` from the ego-lane centre
    (road) or from the billboard's default spot beside the road."""
    from drivenet_patch.world.road import EGO_LANE_D
    from drivenet_patch.world.sticker import StickerPlacement

    if not math.isfinite(lateral_m) or abs(lateral_m) > 10.0:
        raise PDNError(f"--lateral must be a number of metres within +-10, got {lateral_m}")
    if kind == "road":
        return StickerPlacement(s=STICKER_S_M, d=EGO_LANE_D + lateral_m, width_m=size[0], length_m=size[1])
    if kind == "billboard":
        default = StickerPlacement.billboard(s=STICKER_S_M)
        return StickerPlacement.billboard(s=STICKER_S_M, d=default.d + lateral_m, width_m=size[0], height_m=size[1])
    raise PDNError(f"--place must be road or billboard, got {kind!r}")


#: Bounds of a world scene set: each scene holds its frame and sticker maps (~0.5 MB at 66x200).
MAX_SCENE_ROADS = 1000
MAX_POSES = 1024
MAX_SCENES = 16384


def check_scene_counts(roads: int, poses: int) -> None:
    """Refuse ``--roads`` / ``--poses`` that would build an absurd number of approach scenes."""
    if not 1 <= roads <= MAX_SCENE_ROADS:
        raise PDNError(f"--roads must lie in [1, {MAX_SCENE_ROADS}], got {roads}")
    if not 1 <= poses <= MAX_POSES:
        raise PDNError(f"--poses must lie in [1, {MAX_POSES}], got {poses}")
    if roads * poses > MAX_SCENES:
        raise PDNError(f"--roads x --poses must be at most {MAX_SCENES} scenes, got {roads} x {poses}")


def approach_scenes(model: Any, placement: Any, distance: tuple[float, float], roads: int, poses: int, seed: int,
                    base: int, device: str, rng_key: int | None = None) -> Any:
    """World approach scenes for ``model``'s camera: the sticker at ``STICKER_S_M`` on ``roads`` roads of
    seed base ``base`` (see :func:`_roads`), ``poses`` poses each at camera distances ``distance``;
    poses and lighting from ``numpy.random.default_rng([seed, rng_key])`` (``rng_key`` defaults to ``base``)."""
    from dataclasses import replace

    import numpy as np

    from attacks.placement import ApproachConfig, world_scenes
    from drivenet_patch.world.render import Renderer

    check_scene_counts(roads, poses)
    return world_scenes(Renderer(_camera(model), device=device), _roads(base, seed, roads, STICKER_S_M + 40.0),
                        replace(placement, s=STICKER_S_M), ApproachConfig(poses_per_road=poses, distance_m=distance),
                        np.random.default_rng([int(seed), base if rng_key is None else rng_key]))


def world_scene_sets(model: Any, placement: Any, distance: tuple[float, float], roads: int, poses: int,
                     seed: int, bases: tuple[int, int], device: str) -> tuple[Any, Any]:
    """Approach scenes on two disjoint sets of roads (``bases``: seed bases of each set; the second has half as many)."""
    first = approach_scenes(model, placement, distance, roads, poses, seed, bases[0], device)
    second = approach_scenes(model, placement, distance, max(1, roads // 2), poses, seed, bases[1], device)
    return first, second


def frame_scene_set(model: Any, data: str, fmt: str, frames: int, distance: tuple[float, float],
                    size: tuple[float, float], device: str, offset: int = 0, lateral_m: float = 0.0) -> Any:
    """Scenes on real frames: a flat road sticker at 4 distances across ``distance``, one per frame group."""
    import numpy as np
    import pandas as pd
    import torch

    from attacks.placement import StickerScenes, frame_scenes
    from drivenet_patch.data import open_dataset
    from drivenet_patch.tensors import to_tensor

    ds = open_dataset(data, format=fmt, size=model.input_size)
    n = len(ds)
    if n < 2:
        raise PDNError(f"--data: {data} has {n} frames; need at least 2")
    idx = np.arange(offset, n, 2)[:frames]  # even / odd frames: optimisation / held out
    if len(idx) == 0:
        raise PDNError(f"--data: {data} has no frames left for this split")
    x = to_tensor(ds.frames(idx), device)
    groups = np.array_split(np.arange(len(idx)), min(4, len(idx)))
    dists = np.linspace(distance[0], distance[1], len(groups))
    parts = []
    for g, d in zip(groups, dists, strict=True):
        sc = frame_scenes(x[g], ds.image_to_ground(), float(d), lateral_m, size[0], size[1])
        sc.info["distance_m"] = float(d)
        sc.info["frame"] = idx[g]
        parts.append(sc)
    info = pd.concat([p.info for p in parts], ignore_index=True)

    def cat(name: str) -> torch.Tensor | None:
        ts = [getattr(p, name) for p in parts]
        if ts[0] is None:
            return None
        return torch.cat([t.expand(len(p), *t.shape[1:]) for t, p in zip(ts, parts, strict=True)])

    meta = {**parts[0].meta, "distance_m": list(map(float, dists)), "data": str(data), "frames": len(idx)}
    return StickerScenes(cat("background"), cat("uv"), cat("mask"), cat("gain"), None, info, None, meta)


def draw_examples(path: Path, clean: Any, adv: Any, clean_deg: Any, adv_deg: Any, titles: list[str]) -> None:
    """A 2-row figure: frames without (top) and with (bottom) the sticker, predicted steering drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from drivenet_patch.io import atomic_path

    n = len(clean)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 3.3), squeeze=False)
    for row, (imgs, degs, label) in enumerate(((clean, clean_deg, "clean"), (adv, adv_deg, "sticker"))):
        for j in range(n):
            ax = axes[row, j]
            img = imgs[j].permute(1, 2, 0).cpu().numpy()
            h, w = img.shape[:2]
            ax.imshow(np.clip(img, 0, 1))
            # a steering needle from the bottom centre, angle exaggerated 3x for visibility
            a = math.radians(3.0 * float(degs[j]))
            ax.plot([w / 2, w / 2 - 0.45 * h * math.sin(a)], [h - 1, h - 1 - 0.45 * h * math.cos(a)],
                    color="lime" if row == 0 else "red", lw=2)
            ax.set_title(f"{label}: {float(degs[j]):+.1f} deg" + (f"\n{titles[j]}" if row == 0 else ""), fontsize=8)
            ax.axis("off")
    fig.suptitle("predicted steering (+ = left; needle angle x3)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- pdn attack
def cmd_attack(args: argparse.Namespace) -> int:
    import torch

    from attacks.evaluate import offline_eval
    from attacks.export import export_print_pdf, paper_size, save_palette_png
    from attacks.printability import load_palette, quantize
    from attacks.sticker import EOTConfig, StickerConfig, optimize_sticker, saliency_capture, save_result
    from drivenet_patch.cli import _emit, _progress
    from drivenet_patch.io import write_csv
    from drivenet_patch.models.patchdrive import has_patches
    from drivenet_patch.models.registry import parse_input_size

    size = parse_size(args.size)
    distance = parse_range(args.distance)
    texels = parse_input_size(args.texels, "--texels")
    if args.place not in ("road", "billboard"):
        raise PDNError(f"--place must be road or billboard, got {args.place!r}")
    if args.data and args.place != "road":
        raise PDNError("--data supports --place road only (a flat sticker on the ground ahead)")
    if args.out.exists() and not args.out.is_dir():
        raise PDNError(f"--out: {args.out} exists and is not a folder")
    paper_size(args.paper)  # a bad --paper fails before the optimisation, not after it
    palette = load_palette(args.palette)
    cfg = StickerConfig(steps=args.steps, lr=args.lr, batch=args.batch, texture_hw=texels, target=args.target,
                        angle_deg=args.angle, loss=args.loss, nps_weight=args.nps_weight, tv_weight=args.tv_weight,
                        dirt=args.dirt, palette=args.palette, eot=EOTConfig(), seed=max(int(args.seed), 0),
                        saliency_weight=args.saliency_weight)
    model = _load_model(args.model, args.device)
    if args.data:
        train = frame_scene_set(model, args.data, args.format, args.frames, distance, size, args.device, 0,
                                args.lateral)
        held = frame_scene_set(model, args.data, args.format, args.frames, distance, size, args.device, 1,
                               args.lateral)
    else:
        placement = _world_placement(args.place, size, args.lateral)
        train, held = world_scene_sets(model, placement, distance, args.roads, args.poses, args.seed,
                                       (ATTACK_SEED_BASE, HELDOUT_SEED_BASE), args.device)
    result = optimize_sticker(model, train, cfg, torch.Generator(device=args.device).manual_seed(cfg.seed),
                              progress=_progress(args), palette=palette)
    texture = result.texture
    _, summary = offline_eval(model, held, texture, args.target, dirt=args.dirt)
    metrics: dict[str, Any] = {"heldout": summary, "train_frames": len(train), "heldout_frames": len(held)}
    if not args.dirt:
        q = quantize(texture, palette.to(texture.device))
        _, qsum = offline_eval(model, held, q, args.target)
        metrics["heldout_palette"] = qsum
        metrics["palette_keeps"] = (qsum["mean_dev_deg"] / summary["mean_dev_deg"]
                                    if summary["mean_dev_deg"] > 0 else None)
    if has_patches(model):  # patchdrive: how often the sticker sits in one of the selected patches
        metrics["heldout_saliency"] = saliency_capture(model, held, texture, args.dirt)
    extra = {"metrics": metrics, "model": str(args.model), "source": "data" if args.data else "world",
             "size_m": list(size), "distance_m": list(distance), "lateral_m": float(args.lateral),
             "seed": int(args.seed),
             "road_seed_bases": None if args.data else [ATTACK_SEED_BASE, HELDOUT_SEED_BASE]}
    out = save_result(args.out, result, train, extra)
    write_csv(out / "history.csv", result.history, float_format="%.6g")
    export_tex = texture if not args.dirt else texture.expand(3, -1, -1)
    width_m, length_m = size
    if not args.no_print:
        export_print_pdf(export_tex.cpu(), width_m, length_m, out / "sticker_print.pdf", paper=args.paper,
                         palette=None if args.dirt else palette)
    save_palette_png(export_tex.cpu(), palette, out / "sticker_palette.png", scale=8)
    _examples(out / "examples.png", model, held, texture, args.dirt)
    report = {"out": str(out), **{k: metrics["heldout"][k] for k in ("mean_dev_deg", "success_rate", "n_frames")},
              "mean_dev_5_15m_deg": metrics["heldout"].get("mean_dev_5_15m_deg"),
              "palette_keeps": metrics.get("palette_keeps"), "steps": cfg.steps,
              "final_train_deviation_deg": float(result.history["deviation_deg"].iloc[-1])}
    if "heldout_saliency" in metrics:
        report["in_topk_rate"] = metrics["heldout_saliency"]["in_topk_rate"]
    text = (f"sticker written to {out}: held-out mean |dev| {report['mean_dev_deg']:.2f} deg, "
            f"success {100 * report['success_rate']:.0f}% over {report['n_frames']} frames"
            + (f", palette keeps {100 * report['palette_keeps']:.0f}%" if report["palette_keeps"] is not None else "")
            + f"; next: pdn attack eval --model {args.model} --sticker {out}")
    _emit(report, args.json, text)
    return 0


def _examples(path: Path, model: Any, scenes: Any, texture: Any, dirt: bool, n: int = 5) -> None:
    import numpy as np
    import torch

    from attacks.base import attack_mode

    info = scenes.info
    if "distance_m" in info:
        order = np.argsort(info["distance_m"].to_numpy())
        pick = order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)]
        titles = [f"{info['distance_m'].iloc[i]:.1f} m before" for i in pick]
    else:
        pick = np.linspace(0, len(scenes) - 1, min(n, len(scenes))).round().astype(int)
        titles = [f"frame {i}" for i in pick]
    idx = torch.as_tensor(pick, device=scenes.device)
    with torch.no_grad(), attack_mode(model):
        clean = scenes.background[idx]
        adv = scenes.apply(texture.to(scenes.device), idx, dirt)
        cd, ad = model(clean), model(adv)
    draw_examples(path, clean, adv, cd, ad, titles)


# ---------------------------------------------------------------------------- pdn attack eval
def _read_attack(folder: Path) -> tuple[Any, Any, dict]:

    from drivenet_patch.drive import load_sticker

    if not folder.is_dir():
        raise PDNError(f"--sticker: {folder} is not an attack folder (from pdn attack)")
    texture, placement = load_sticker(folder)
    from drivenet_patch.inputs import read_json

    meta = read_json(folder / "attack.json", "attack settings")
    if not isinstance(meta, dict) or not isinstance(meta.get("attack"), dict):
        raise PDNError(f"--sticker: {folder / 'attack.json'} has no 'attack' settings (not written by pdn attack?)")
    return texture, placement, meta


def cmd_attack_eval(args: argparse.Namespace) -> int:
    import torch

    from attacks.base import model_device
    from attacks.evaluate import CONTROLS, closed_loop_eval, control_textures, offline_eval
    from attacks.sticker import saliency_capture
    from drivenet_patch.cli import _emit, _progress
    from drivenet_patch.drive import LANE_DEPARTURE_M, MAX_ROADS, ClosedLoopConfig, make_roads
    from drivenet_patch.io import write_csv, write_json
    from drivenet_patch.models.patchdrive import has_patches
    from drivenet_patch.world.road import EGO_LANE_D, LANE_WIDTH_M

    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise PDNError(f"--threshold must be > 0 degrees, got {args.threshold}")
    if not 0 <= args.loop_roads <= MAX_ROADS:
        raise PDNError(f"--loop-roads must lie in [0, {MAX_ROADS}], got {args.loop_roads}")
    if args.loop_roads:
        ClosedLoopConfig().steps_for(float(args.km))  # a bad --km fails before the offline evaluation
    if not args.data:
        check_scene_counts(args.roads, args.poses)
    texture, placement, meta = _read_attack(args.sticker)
    settings = meta["attack"]
    target = settings.get("target", "left")
    dirt = meta.get("mode") == "dirt"
    if dirt:
        texture = texture[:1]  # the grey multiplier was saved as an RGB image
    distance = tuple(meta.get("distance_m") or (5.0, 20.0))
    model = _load_model(args.model, args.device)
    controls = control_textures(tuple(texture.shape[1:]), torch.Generator().manual_seed(int(args.seed)), dirt,
                                tuple(settings.get("dirt_range", (0.3, 1.0))))
    textures = {"sticker": texture, **controls}
    if args.data:
        size = (placement.width_m, placement.length_m)
        scenes = frame_scene_set(model, args.data, args.format, args.frames, distance, size, args.device, 1,
                                 float(meta.get("lateral_m", 0.0)))
    else:
        scenes = approach_scenes(model, placement, distance, args.roads, args.poses, args.seed, EVAL_SEED_BASE,
                                 args.device)
    results: dict[str, dict[str, Any]] = {}
    frames_tables, approach_tables, track_tables = [], [], []
    clean = None
    for name, tex in textures.items():
        frames, summary = offline_eval(model, scenes, tex, target, args.threshold, dirt, clean=clean)
        clean = torch.tensor(frames["clean_deg"].to_numpy(), device=model_device(model))
        frames.insert(0, "texture", name)
        frames_tables.append(frames)
        results[name] = summary
        if has_patches(model):  # patchdrive: share of frames whose sticker is inside a selected patch
            results[name].update(saliency_capture(model, scenes, tex, dirt))
    n_approaches = 0
    if args.loop_roads and not args.data:
        if dirt:
            raise PDNError("closed-loop evaluation of dirt-mode stickers is not supported (the renderer pastes "
                           "textures); pass --loop-roads 0 for the offline numbers")
        cfg = ClosedLoopConfig()
        steps = cfg.steps_for(float(args.km))
        roads = make_roads(args.loop_roads, steps, cfg, LOOP_SEED_BASE + 1000 * int(args.seed))
        for name, tex in [*textures.items(), ("none", None)]:  # "none": the same roads without any sticker
            approaches, summary, tracks = closed_loop_eval(model, tex, placement, roads, steps, _camera(model), cfg,
                                                           seed=int(args.seed), progress=_progress(args), tracks=True)
            approaches.insert(0, "texture", name)
            tracks.insert(0, "texture", name)
            approach_tables.append(approaches)
            track_tables.append(tracks)
            results.setdefault(name, {}).update(summary)
            n_approaches = summary["n_approaches"]
    else:
        for r in results.values():
            r["departure_rate"] = None
    out_dir = args.out or args.sticker
    result = {**{k: results["sticker"].get(k) for k in ("mean_dev_deg", "mean_signed_dev_deg", "success_rate",
                                                          "departure_rate", "mean_dev_5_15m_deg", "autonomy_pct")},
              **({k: results["sticker"][k] for k in ("in_topk_rate", "in_top1_rate", "clean_in_topk_rate")}
                 if "in_topk_rate" in results["sticker"] else {}),
              **{f"control_{c}": results[c] for c in CONTROLS},
              "n_frames": results["sticker"]["n_frames"], "n_approaches": n_approaches,
              **({"no_sticker": results["none"]} if "none" in results else {}),
              "placement": {"width_m": placement.width_m, "length_m": placement.length_m, "kind": placement.kind,
                            "lateral_m": placement.d - EGO_LANE_D},
              "lane_departure_m": LANE_DEPARTURE_M, "lane_width_m": LANE_WIDTH_M,
              "target": target, "threshold_deg": float(args.threshold), "seed": int(args.seed),
              "model": str(args.model), "sticker": str(args.sticker), "source": "data" if args.data else "world"}
    import pandas as pd

    write_csv(Path(out_dir) / "eval_frames.csv", pd.concat(frames_tables, ignore_index=True), float_format="%.6g")
    if approach_tables:
        write_csv(Path(out_dir) / "eval_approaches.csv", pd.concat(approach_tables, ignore_index=True),
                  float_format="%.6g")
        write_csv(Path(out_dir) / "eval_tracks.csv", pd.concat(track_tables, ignore_index=True), float_format="%.5g")
    write_json(Path(out_dir) / "eval.json", result)

    def line(name: str, r: dict) -> str:
        dep = "n/a" if r.get("departure_rate") is None else f"{100 * r['departure_rate']:.0f}%"
        return (f"{name:8s} mean |dev| {r['mean_dev_deg']:6.2f} deg  success {100 * r['success_rate']:5.1f}%  "
                f"departures {dep}")

    text = "\n".join([f"{result['n_frames']} held-out frames, {n_approaches} closed-loop approaches "
                      f"(target {target}, threshold {args.threshold} deg)"]
                     + [line(n, results[n]) for n in ("sticker", *CONTROLS)])
    _emit(result, args.json, text)
    return 0
