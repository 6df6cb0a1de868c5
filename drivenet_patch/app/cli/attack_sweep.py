"""``pdn attack sweep``: one sticker per area, each judged as ``pdn attack eval`` judges it; the break area.

For every area of ``--areas`` the sweep runs ``pdn attack`` (the sticker of that area, shaped by
``--aspect``, see :func:`attacks.sweep.sticker_size`) and ``pdn attack eval`` (held-out offline
scenes and closed loop, beside the noise and grey controls of the same size and a drive without a
sticker) into ``OUT/area_<A>/``, then writes ``sweep.csv`` (one row per size), ``sweep.json`` (with
``break_area_m2``, the smallest area with >= 90 % departures, or null) and ``sweep.png``.

Resumable per size, like ``pdn demo``: a size whose ``size.json`` holds the same settings is not run
again; one with other settings is refused (pick another ``--out``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from drivenet_patch.app.cli.common import add_device_and_json, emit
from drivenet_patch.app.cli.flags import (
    KM,
    LATERAL_M,
    MAX_AREAS,
    MAX_DRIVE_ROADS,
    MAX_POSES,
    MAX_SCENE_ROADS,
    MAX_SCENES,
    MAX_STICKER_STEPS,
    SEED,
    check_work,
    count,
)
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_ROAD_KM

SIZE_JSON = "size.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``attack-sweep`` (shown as ``attack sweep``) to the ``pdn`` sub-commands."""
    help_ = "the break size: one sticker per area, each evaluated as pdn attack eval does, and break_area_m2"
    c = sub.add_parser("attack-sweep", help=help_ + " (pdn attack sweep)", description=help_ + ". Writes "
                       "OUT/area_<A>/ per size, sweep.csv, sweep.json and sweep.png.", prog="pdn attack sweep")
    c.add_argument("--model", required=True, help="run folder of the attacked model")
    c.add_argument("--out", required=True, type=Path, help="sweep folder (resumable per size)")
    c.add_argument("--areas", default="2,4,7,14,28,56,112", help="sticker areas in m² (default 2,4,7,14,28,56,112)")
    c.add_argument("--aspect", default="along",
                   help="along (2.0x3.5 m shape, then longer along the road; default) | across (3.5x2.0 m shape) | "
                        "line (a painted line 0.25 m wide along the lane, up to 40 m long, then wider)")
    c.add_argument("--lateral", type=LATERAL_M, default=None,
                   help="each sticker's centre offset from the ego-lane centre in metres, + = left (pdn attack "
                        "--lateral; default 0)")
    # The default, measured on the full demo's PilotNet: at 28 m², 50 approaches, the
    # closed-loop-aware sticker left the lane in 98% of them, the open-loop one in 84% (docs/stickers.md).
    c.add_argument("--closed-loop", action=argparse.BooleanOptionalAction, default=True,
                   help="closed-loop-aware optimisation (pdn attack --closed-loop; default on: the sweep measures "
                        "departures, where it wins); --no-closed-loop optimises over expert approaches")
    c.add_argument("--resim-every", type=count(MAX_STICKER_STEPS, "a number of steps"), default=None,
                   help="--closed-loop: re-simulate every this many steps")
    c.add_argument("--target", default="left", help="left | right (default left)")
    c.add_argument("--steps", type=count(MAX_STICKER_STEPS, "a number of optimisation steps"), default=300,
                   help=f"optimisation steps per size (default 300; at most {MAX_STICKER_STEPS})")
    c.add_argument("--roads", type=count(MAX_SCENE_ROADS, "a number of roads"), default=8,
                   help="optimisation roads (default 8)")
    c.add_argument("--poses", type=count(MAX_POSES, "a number of poses"), default=32,
                   help="approach poses per road (default 32)")
    c.add_argument("--distance", default="5-15", help="camera distances of the offline scenes (default 5-15)")
    c.add_argument("--eval-roads", type=count(MAX_SCENE_ROADS, "a number of roads"), default=8,
                   help="held-out roads of the offline eval (default 8)")
    c.add_argument("--loop-roads", type=count(MAX_DRIVE_ROADS, "a number of roads"), default=10,
                   help="closed-loop roads (default 10)")
    c.add_argument("--km", type=KM, default=0.5, help="closed-loop km per road (default 0.5: 5 approaches each)")
    c.add_argument("--stickers", type=count(16, "a number of stickers"), default=1,
                   help="spend each area on this many equal stickers in a row along the lane (pdn attack --stickers; "
                        "default 1)")
    c.add_argument("--segment", default=None,
                   help="the road segment the stickers sit on (pdn attack --segment; default any)")
    c.add_argument("--search", type=count(64, "a number of placements", low=0), default=0,
                   help="placements tried per area (pdn attack --search; default 0: no search)")
    c.add_argument("--search-steps", type=count(MAX_STICKER_STEPS, "a number of steps"), default=None,
                   help="--search: steps per placement tried (default --steps / 4)")
    c.add_argument("--seed", type=SEED, default=0, help="seed of the attacks and evaluations (default 0)")
    add_device_and_json(c)
    c.set_defaults(fn=cmd_attack_sweep)


def _run(argv: list[str]) -> dict[str, Any]:
    """Run one ``pdn`` command in this process with ``--json`` (as the demo runs its stages); its JSON object."""
    from drivenet_patch.app.cli import main
    from drivenet_patch.app.demo import run_command

    result = run_command(main, [*argv, "--json"])
    if result is None:
        raise PDNError(f"`pdn {' '.join(argv)}` printed no JSON")
    return result


def cmd_attack_sweep(args: argparse.Namespace) -> int:
    from attacks.sweep import (
        DRP_AREA_M2,
        LINE_TEXELS,
        SWEEP_COLUMNS,
        break_area,
        break_bracket,
        interpolated_break_area,
        parse_areas,
        plot_sweep,
        resumed_row,
        size_text,
        sticker_size,
        sweep_row,
    )
    from drivenet_patch.app.cli.attack import parse_metres, parse_range
    from drivenet_patch.driving.drive import ClosedLoopConfig
    from drivenet_patch.models.zoo import is_zoo_ref
    from drivenet_patch.safety.inputs import contained_file, read_json_object
    from drivenet_patch.storage.atomic import write_csv, write_json
    from drivenet_patch.storage.folders import prepare_output_folder

    areas = parse_areas(args.areas)
    if len(areas) > MAX_AREAS:
        raise PDNError(f"--areas: {len(areas)} areas, over the limit of {MAX_AREAS} (each is one attack and one "
                       "closed-loop evaluation): give fewer")
    for roads, flag in ((args.roads, "--roads"), (args.eval_roads, "--eval-roads")):
        check_work("approach scenes", [(flag, roads), ("--poses", args.poses)], MAX_SCENES, "give fewer roads or poses")
    check_work("road-km per area", [("--loop-roads", args.loop_roads), ("--km", args.km), ("drives", 4)], MAX_ROAD_KM,
               "give fewer --loop-roads or a smaller --km")
    sizes = {a: sticker_size(a, args.aspect) for a in areas}
    for a, (w, length) in sizes.items():
        parse_metres(size_text(w, length), f"--areas: {a:g} m² with --aspect {args.aspect}")
    if args.target not in ("left", "right"):
        raise PDNError(f"--target must be left or right, got {args.target!r}")
    if args.resim_every is not None:
        if not args.closed_loop:
            raise PDNError("--resim-every needs --closed-loop")
        if not 1 <= args.resim_every <= args.steps:
            raise PDNError(f"--resim-every must be an integer in [1, --steps = {args.steps}], got {args.resim_every}")
    parse_range(args.distance)
    ClosedLoopConfig().steps_for(float(args.km))
    common = {"model": str(args.model), "aspect": args.aspect, "closed_loop": bool(args.closed_loop),
              "resim_every": args.resim_every, "target": args.target, "steps": args.steps, "roads": args.roads,
              "poses": args.poses, "distance": args.distance, "eval_roads": args.eval_roads,
              "loop_roads": args.loop_roads, "km": float(args.km), "seed": int(args.seed)}
    if args.lateral is not None:
        common["lateral"] = float(args.lateral)
    placed = args.stickers > 1 or args.segment is not None or args.search > 0
    if placed:
        if not args.closed_loop:
            raise PDNError("--stickers, --segment and --search need the closed-loop-aware optimiser (drop --no-closed-loop)")
        if args.search_steps is not None and not args.search:
            raise PDNError("--search-steps needs --search")
        common.update(stickers=args.stickers, segment=args.segment, search=args.search, search_steps=args.search_steps)
    # Every size already done is checked before anything is written or run: a broken resume state is
    # refused with nothing changed on disk and no attack spent.
    resumed = {a: resumed_row(args.out / f"area_{a:g}" / SIZE_JSON, {**common, "area_m2": a, "size": size_text(*sizes[a])},
                              a, sizes[a], args.out) for a in areas}
    if not is_zoo_ref(args.model) and not Path(args.model).is_dir():
        raise PDNError(f"--model: {args.model} is not a run folder")
    prepare_output_folder(args.out, "attack sweep")  # new, empty or a sweep (resumed); refused otherwise
    rows, skipped = [], []
    for a in areas:
        folder = args.out / f"area_{a:g}"
        size = sizes[a]
        settings = {**common, "area_m2": a, "size": size_text(*size)}
        done = folder / SIZE_JSON
        if done.is_file():
            old = read_json_object(contained_file(done, args.out, what="sweep size result", hint=None),
                                   "sweep size result")
            if old.get("settings") != settings:
                raise PDNError(f"{done} was made with other settings; use another --out or remove {folder}")
            rows.append(resumed[a])
            skipped.append(a)
            continue
        t0 = time.perf_counter()
        dev = ["--device", args.device]
        attack = ["attack", "--model", str(args.model), "--out", str(folder), "--size", settings["size"],
                  "--distance", args.distance, "--target", args.target, "--roads", str(args.roads),
                  "--poses", str(args.poses), "--steps", str(args.steps), "--seed", str(args.seed), "--no-print", *dev]
        if args.closed_loop:
            attack.append("--closed-loop")
            if args.resim_every is not None:
                attack += ["--resim-every", str(args.resim_every)]
        if args.lateral is not None:
            attack += ["--lateral", str(float(args.lateral))]
        if args.aspect == "line":
            attack += ["--texels", LINE_TEXELS]
        if placed:
            attack += ["--stickers", str(args.stickers)]
            if args.segment is not None:
                attack += ["--segment", args.segment]
            if args.search:
                attack += ["--search", str(args.search)]
            if args.search_steps is not None:
                attack += ["--search-steps", str(args.search_steps)]
        _run(attack)
        evaluation = _run(["attack", "eval", "--model", str(args.model), "--sticker", str(folder),
                           "--roads", str(args.eval_roads), "--poses", str(args.poses),
                           "--loop-roads", str(args.loop_roads), "--km", str(args.km), "--seed", str(args.seed), *dev])
        row = sweep_row(a, size, evaluation, time.perf_counter() - t0)
        write_json(done, {"settings": settings, "row": row})
        rows.append(row)
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    write_csv(args.out / "sweep.csv", table, float_format="%.6g")
    brk = break_area(table)
    below, _ = break_bracket(table)
    plot_sweep({Path(args.model).name or "model": table}, args.out / "sweep.png")
    result = {"out": str(args.out), "break_area_m2": brk, "break_bracket_m2": [below, brk],
              "break_factor": None if below is None or brk is None else brk / below,
              "break_area_interp_m2": interpolated_break_area(table), "drp_area_m2": DRP_AREA_M2,
              "areas": list(areas), "skipped": skipped, "rows": table.to_dict(orient="records"), **common}
    write_json(args.out / "sweep.json", result)

    def pct(v: Any) -> str:
        return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:4.0f}%"

    lines = [f"{'area m2':>8s} {'size m':>13s} {'sticker':>7s} {'noise':>6s} {'grey':>6s} {'none':>6s}"]
    for r in rows:
        lines.append(f"{r['area_m2']:8g} {r['width_m']:5.2f}x{r['length_m']:<6.2f} {pct(r['departure_rate']):>7s} "
                     f"{pct(r['noise_departure_rate']):>6s} {pct(r['grey_departure_rate']):>6s} "
                     f"{pct(r['no_sticker_departure_rate']):>6s}")
    lines.append(f"break_area_m2: {brk if brk is not None else 'none (no size reached 90% departures)'} "
                 f"(DRP paints about {DRP_AREA_M2:g} m²); written to {args.out}")
    emit(result, args.json, "\n".join(lines))
    return 0


cmd_attack_sweep.out_kind = "attack sweep"  # type: ignore[attr-defined]  # --out's folder kind
