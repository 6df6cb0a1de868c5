"""``pdn demo``: the main job end to end, as resumable stages.

World data -> PilotNet -> held-out eval and closed-loop drive -> saliency -> a printable road
sticker -> its evaluation offline and closed loop against two controls -> stickers of smaller
sizes -> (full demo) the sticker-size sweep and its break area -> PatchVote -> certificate sweep
with adaptive attacks -> the certificate in metres -> an adaptive sticker against the defended
model -> the HTML report.

Every stage is an ordinary ``pdn`` command run in this process (so the demo exercises exactly
what a user types; the commands are listed in ``demo.json``). A stage that finishes writes
``stages/NAME.json`` (its command, seconds, result); a re-run skips finished stages, so a
killed demo resumes at the stage it was killed in (training stages also resume inside the
stage, from their last finished epoch). The JSON each command prints is kept in
``logs/NAME.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import folder_file, read_json
from drivenet_patch.storage.atomic import write_json, write_text
from drivenet_patch.storage.folders import check_output_folder, prepare_output_folder

__all__ = ["CommandRunner", "DemoSettings", "Stage", "plan", "run_command", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo flavour (``full`` or ``quick``)."""

    train_frames: int
    heldout_frames: int
    cameras: str
    train_args: tuple[str, ...]
    patchvote_args: tuple[str, ...]
    drive_roads: int
    drive_km: float
    saliency_n: int
    attack_steps: int
    attack_roads: int
    attack_poses: int
    loop_roads: int
    loop_km: float
    size_sweep: tuple[str, ...]
    size_steps: int
    certify_attack_runs: int
    pv_attack_steps: int
    pv_drive: bool  # drive PatchVote closed loop too (the same roads as PilotNet)
    #: ``pdn attack sweep`` against PilotNet: sticker areas in m² (empty: no ``attack_sweep`` stage),
    #: optimisation steps per area, roads x poses, held-out offline roads, closed-loop roads x km per area.
    sweep_areas: tuple[float, ...] = ()
    sweep_steps: int = 100
    sweep_roads: int = 4
    sweep_poses: int = 16
    sweep_eval_roads: int = 2
    sweep_loop_roads: int = 2
    sweep_km: float = 0.3
    #: ``pdn attack sweep`` against the defended model, its stickers optimised white-box against it (adaptive),
    #: with the same settings (empty: no ``attack_sweep_patchvote`` stage).
    pv_sweep_areas: tuple[float, ...] = ()
    #: ``pdn certify --physical`` of PatchVote: held-out world frames and the covering's grid (m).
    physical_frames: int = 1000
    physical_spacing: float = 0.25
    #: A fully trained defended model of the package's zoo (``zoo:NAME``; empty: none), certified in metres on
    #: the same held-out frames as the demo's own PatchVote, so the report shows both certificates.
    zoo_defended: str = "zoo:patchvote_road"
    #: Why this flavour's numbers are what they are: shown under the report's summary (``pdn report --note``).
    notes: tuple[str, ...] = ()


#: The demo's defended model is made for its attack, a road sticker: `patchvote_road` (defenses.context) votes
#: from 7 pieces of the zone a 2.0 x 3.5 m sticker 5-30 m ahead can reach, each vote also reading all the
#: context no such sticker reaches (the road beyond it, the sky, the far road edge); a sticker touches at most
#: 3 of the 7 votes. It trades away the 2% pixel patch (a patch on the context touches every vote); `pdn train
#: --model patchvote` keeps the bands for that threat.
DEFENDED_MODEL = "patchvote_road"

FULL = DemoSettings(
    train_frames=30000, heldout_frames=3000, cameras="center,left,right",
    train_args=("--samples-per-epoch", "20000"),
    patchvote_args=("--epochs", "10", "--lr", "0.002", "--samples-per-epoch", "12000"),
    drive_roads=10, drive_km=1.0, saliency_n=16,
    attack_steps=300, attack_roads=16, attack_poses=24, loop_roads=10, loop_km=0.5,
    size_sweep=(), size_steps=300, certify_attack_runs=256, pv_attack_steps=200,
    pv_drive=True,
    sweep_areas=(7.0, 14.0, 20.0, 28.0), pv_sweep_areas=(7.0, 28.0))

QUICK = DemoSettings(
    train_frames=9000, heldout_frames=800, cameras="center,left,right",
    train_args=("--quick",), patchvote_args=("--quick",),
    drive_roads=2, drive_km=0.3, saliency_n=6,
    attack_steps=100, attack_roads=8, attack_poses=16, loop_roads=2, loop_km=0.3,
    size_sweep=("1.0x1.75",), size_steps=60, certify_attack_runs=32, pv_attack_steps=60,
    pv_drive=False,  # the full demo drives it; --quick keeps its headroom under the 4-minute budget
    physical_frames=400, physical_spacing=0.5,  # 24 s on a loaded 2-core machine, about half the full settings' time
    # Why --quick's numbers are weaker than the full demo's: said in the report, under its summary.
    notes=("This is `pdn demo --quick` (about 3 minutes on 2 cores): PilotNet and PatchVote train with "
           "`pdn train --quick` (4 x 6,144 samples drawn from 9,000 frames; the full demo: 10 epochs over "
           "30,000 frames and 10 x 12,000 samples), so both are less accurate than the full demo's models. "
           "The quick defended model (patchvote_road) is the weaker of the two: each of its 7 votes must steer "
           "from one piece of the road a sticker can reach plus the context it cannot, and after 4 short epochs "
           "the votes disagree by more than the tolerance on most frames, so its certificates cover fewer frames "
           "(the full demo's, 10 x 12,000 samples from 30,000 frames, is the one to judge the defense by).",
           "The closed-loop numbers come from 2 roads x 0.3 km (6 sticker approaches; the full demo: 10 x 0.5 km, "
           "50 approaches), so one approach moves a rate by 17 points.",
           "PatchVote is not driven closed loop in --quick (the demo keeps its headroom under 4 minutes), so its "
           "autonomy is not measured here; the full demo drives it on the same roads as PilotNet.",
           "The sticker-size sweep (pdn attack sweep: one sticker per area from 2 to 112 m², each driven closed "
           "loop with its controls) runs in the full demo only (about 2 minutes on 2 cores there, more than "
           "the quick demo's headroom under 4 minutes). The certificate in metres here uses 400 world frames "
           "and a 0.5 m covering grid (the full demo: 1,000 frames, 0.25 m); a coarser grid is as sound but can "
           "certify less.",
           "The certificate of zoo:patchvote_road comes from the package's fully trained defended model (the full "
           "demo's recipe, pdn zoo show patchvote_road), certified on the same held-out frames and grid: it shows "
           "what the defense certifies once trained; every other figure comes from the models this run trained."))

#: The sticker every attack stage optimises: 2.0 m wide, 3.5 m along the road, judged 5-15 m before it.
STICKER_SIZE = "2.0x3.5"
STICKER_DISTANCE = "5-15"


@dataclass(frozen=True)
class Stage:
    """One step of the demo: a name, a one-line description and the ``pdn`` commands it runs."""

    name: str
    title: str
    commands: tuple[tuple[str, ...], ...]


#: Commands that take ``--device`` (the demo passes it on when it is not the CPU).
_DEVICE_COMMANDS = {("data", "synth"), ("train",), ("eval",), ("drive",), ("saliency",), ("attack",),
                    ("attack", "eval"), ("attack", "sweep"), ("certify",)}


def _with_device(argv: tuple[str, ...], device: str) -> tuple[str, ...]:
    head = argv[:2] if argv[:2] in _DEVICE_COMMANDS else argv[:1]
    return (*argv, "--device", device) if device != "cpu" and head in _DEVICE_COMMANDS else argv


def plan(out: Path, quick: bool, seed: int = 0, device: str = "cpu",
         settings: DemoSettings | None = None) -> list[Stage]:
    """The demo's stages for output folder ``out`` (paths inside ``out``), run on ``device``; ``settings``
    replaces the flavour's sizes (the tests run a tiny demo through every stage)."""
    stages = _plan(out, quick, seed, settings)
    return [Stage(st.name, st.title, tuple(_with_device(c, device) for c in st.commands)) for st in stages]


def _plan(out: Path, quick: bool, seed: int, settings: DemoSettings | None = None) -> list[Stage]:
    s = settings or (QUICK if quick else FULL)
    o = str(out)
    data, held, pilot, pv = f"{o}/data", f"{o}/heldout", f"{o}/pilotnet", f"{o}/patchvote"
    atk, atk_pv = f"{o}/attack", f"{o}/attack_patchvote"
    sweep, phys, phys_zoo = f"{o}/attack_sweep", f"{o}/certify_physical", f"{o}/certify_physical_zoo"
    sweep_pv = f"{o}/attack_sweep_patchvote"
    sticker = ("--size", STICKER_SIZE, "--distance", STICKER_DISTANCE, "--roads", str(s.attack_roads),
               "--poses", str(s.attack_poses), "--seed", str(seed))
    loop = ("--loop-roads", str(s.loop_roads), "--km", str(s.loop_km), "--seed", str(seed))
    sizes = []
    for size in s.size_sweep:
        folder = f"{o}/attack_{size}"
        sizes += [("attack", "--model", pilot, "--out", folder, "--size", size, "--distance", STICKER_DISTANCE,
                   "--roads", str(s.attack_roads), "--poses", str(s.attack_poses), "--steps", str(s.size_steps),
                   "--seed", str(seed), "--no-print", "--json"),
                  ("attack", "eval", "--model", pilot, "--sticker", folder, "--loop-roads", "0", "--seed", str(seed),
                   "--json")]
    pv_drive = (("drive", "--model", pv, "--roads", str(s.drive_roads), "--km", str(s.drive_km),
                 "--out", f"{o}/drive_patchvote", "--json"),) if s.pv_drive else ()
    def sweep_of(model: str, folder: str, areas: tuple[float, ...]) -> tuple[str, ...]:
        return ("attack", "sweep", "--model", model, "--out", folder, "--areas", ",".join(f"{a:g}" for a in areas),
                "--steps", str(s.sweep_steps), "--roads", str(s.sweep_roads), "--poses", str(s.sweep_poses),
                "--distance", STICKER_DISTANCE, "--eval-roads", str(s.sweep_eval_roads),
                "--loop-roads", str(s.sweep_loop_roads), "--km", str(s.sweep_km), "--seed", str(seed), "--json")

    areas, pv_areas = (", ".join(f"{a:g}" for a in x) for x in (s.sweep_areas, s.pv_sweep_areas))
    sweep_stage = [Stage("attack_sweep", f"the sticker size that breaks PilotNet: one sticker per area ({areas} m²)",
                         (sweep_of(pilot, sweep, s.sweep_areas),))] if s.sweep_areas else []
    sweep_pv_stage = [Stage("attack_sweep_patchvote", "the sticker size that breaks the defended model: one adaptive "
                                                      f"sticker per area ({pv_areas} m²)",
                            (sweep_of(pv, sweep_pv, s.pv_sweep_areas),))] if s.pv_sweep_areas else []
    sizes_stage = [Stage("attack_sizes", f"smaller stickers ({', '.join(s.size_sweep)} m), offline",
                         tuple(sizes))] if s.size_sweep else []
    report_inputs = (data, pilot, f"{o}/saliency", f"{o}/drive", atk, *(f"{o}/attack_{z}" for z in s.size_sweep),
                     *((sweep,) if s.sweep_areas else ()), pv, *((f"{o}/drive_patchvote",) if s.pv_drive else ()),
                     atk_pv, *((sweep_pv,) if s.pv_sweep_areas else ()), f"{o}/certify", phys,
                     *((phys_zoo,) if s.zoo_defended else ()))
    zoo_stage = [Stage("certify_zoo", f"certify the zoo's fully trained PatchVote ({s.zoo_defended}) in metres on the "
                                      "same held-out frames",
                       (("certify", "--model", s.zoo_defended, "--physical", STICKER_SIZE, "--frames",
                         str(s.physical_frames), "--spacing", f"{s.physical_spacing:g}", "--seed", str(seed),
                         "--out", phys_zoo, "--json"),))] if s.zoo_defended else []
    return [
        Stage("preview", "render a preview of the driving world",
              (("world", "preview", "--out", f"{o}/world_preview.png", "--seed", str(seed), "--json"),)),
        Stage("data", f"render {s.train_frames} training and {s.heldout_frames} held-out frames",
              (("data", "synth", "--out", data, "--frames", str(s.train_frames), "--seed", str(seed + 1),
                "--cameras", s.cameras, "--json"),
               ("data", "synth", "--out", held, "--frames", str(s.heldout_frames), "--seed", str(seed + 2), "--json"),
               ("data", "check", data, "--json"))),
        Stage("train", "train PilotNet" + (f" ({' '.join(s.train_args)})" if s.train_args else " (default recipe)"),
              (("train", "--data", data, "--model", "pilotnet", *s.train_args, "--seed", str(seed), "--out", pilot,
                "--resume", "--json"),)),
        Stage("eval", "evaluate PilotNet on held-out roads",
              (("eval", "--model", pilot, "--data", held, "--json"),)),
        Stage("drive", f"drive {s.drive_roads} held-out roads of {s.drive_km} km closed loop",
              (("drive", "--model", pilot, "--roads", str(s.drive_roads), "--km", str(s.drive_km),
                "--out", f"{o}/drive", "--video", f"{o}/drive/road0.mp4", "--json"),)),
        Stage("saliency", "VisualBackProp saliency overlays",
              (("saliency", "--model", pilot, "--data", held, "--out", f"{o}/saliency", "--n", str(s.saliency_n),
                "--json"),)),
        Stage("attack", f"optimise a {STICKER_SIZE} m road sticker against PilotNet ({s.attack_steps} steps)",
              (("attack", "--model", pilot, "--out", atk, *sticker, "--steps", str(s.attack_steps), "--json"),)),
        Stage("attack_eval", "evaluate the sticker and its controls offline and closed loop",
              (("attack", "eval", "--model", pilot, "--sticker", atk, *loop, "--json"),)),
        *sizes_stage,
        *sweep_stage,
        Stage("patchvote", "train the PatchVote defended model" + (" (--quick)" if quick else "")
              + ", evaluate it" + (" and drive it" if s.pv_drive else "") + " on held-out roads",
              (("train", "--data", data, "--model", DEFENDED_MODEL, *s.patchvote_args, "--seed", str(seed),
                "--out", pv, "--resume", "--json"),
               ("eval", "--model", pv, "--data", held, "--json"), *pv_drive)),
        Stage("certify", "certify PatchVote: sweep of patch sizes and tolerances, adaptive patch attacks",
              (("certify", "--model", pv, "--data", held, "--sweep", "--attack", str(s.certify_attack_runs),
                "--sticker", atk, "--out", f"{o}/certify", "--seed", str(seed), "--json"),)),
        Stage("certify_physical", f"certify PatchVote in metres: any {STICKER_SIZE} m road sticker 5-30 m ahead, "
                                  "and a sweep of sticker areas",
              (("certify", "--model", pv, "--physical", STICKER_SIZE, "--sweep", "--frames", str(s.physical_frames),
                "--spacing", f"{s.physical_spacing:g}", "--seed", str(seed), "--out", phys, "--json"),)),
        *zoo_stage,
        Stage("attack_patchvote", "an adaptive sticker against PatchVote, with controls",
              (("attack", "--model", pv, "--out", atk_pv, *sticker, "--steps", str(s.pv_attack_steps), "--no-print",
                "--json"),
               ("attack", "eval", "--model", pv, "--sticker", atk_pv, *loop, "--json"))),
        *sweep_pv_stage,
        Stage("report", "write the HTML report",
              (("report", *report_inputs, "--out", f"{o}/report", *(a for n in s.notes for a in ("--note", n)),
                "--json"),)),
    ]


#: Runs one ``pdn`` command (its arguments, without ``pdn``) in this process and returns its exit code:
#: :func:`drivenet_patch.app.cli.main`, passed in by the command line (the library never imports the CLI).
CommandRunner = Callable[[list[str]], int]


def run_command(runner: CommandRunner, argv: Sequence[str], log: io.StringIO | None = None) -> dict[str, Any] | None:
    """Run one ``pdn`` command in this process; its stdout goes to ``log``. Returns its JSON, if any.

    Raises:
        PDNError: the command failed (named, with its last line of stderr).
    """
    log = io.StringIO() if log is None else log
    err = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(err):
        code = runner(list(argv))
    if code != 0:
        last = err.getvalue().strip().splitlines()
        raise PDNError(f"`pdn {' '.join(argv)}` failed: {last[-1] if last else f'exit code {code}'}")
    text = log.getvalue().strip().splitlines()
    try:
        return json.loads(text[-1]) if text else None
    except json.JSONDecodeError:
        return None


def run_demo(runner: CommandRunner, out: str | Path, quick: bool = False, seed: int = 0, restart: bool = False,
             echo: Callable[[str], None] = print, device: str = "cpu",
             settings: DemoSettings | None = None) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``.

    Args:
        runner: runs one ``pdn`` command in this process (``drivenet_patch.app.cli.main``).
        out: output folder; ``out/report/index.html`` is the end product.
        quick: the small settings (a few minutes on 2 cores) instead of the full ones.
        seed: base seed of the data, training and attacks.
        restart: forget the finished stages (their markers in ``out/stages`` are deleted, nothing else)
            and run every stage again; each command rewrites only its own files.
        echo: receives one line per stage.
        device: torch device of every command that takes one (``cuda`` on a GPU machine).
        settings: sizes that replace the flavour's (``quick`` still names the folder's flavour).

    Returns:
        ``{"out", "report", "quick", "stages": [{"name", "seconds", "skipped"}], "seconds"}``.

    Raises:
        PDNError: ``out`` is neither new, empty nor a demo folder (:mod:`drivenet_patch.storage.folders`),
        holds a demo of the other flavour or seed, or a stage failed (the
        stage is named; finished stages stay finished for the next run).
    """
    out = Path(out)
    stages = plan(out, quick, seed, device, settings)
    meta_path = out / "demo.json"
    meta = {"quick": bool(quick), "seed": int(seed),
            "stages": [{"name": st.name, "title": st.title, "commands": [" ".join(("pdn", *c)) for c in st.commands]}
                       for st in stages]}
    check_output_folder(out, "demo")  # a new or empty folder, or a demo (never a user's or a dataset folder)
    if meta_path.is_file() and not restart:
        try:
            old = read_json(folder_file(out, "demo.json", "demo settings") or meta_path, "demo settings")
        except PDNError:
            old = {}
        old = old if isinstance(old, dict) else {}
        if (old.get("quick"), old.get("seed")) != (meta["quick"], meta["seed"]):
            raise PDNError(f"{out} holds a demo made with quick={old.get('quick')} seed={old.get('seed')}; "
                           f"use another --out or pass --restart")
    # --restart forgets the finished stages: it deletes their markers, and nothing else
    prepare_output_folder(out, "demo", remove=[f"stages/{st.name}.json" for st in stages] if restart else ())
    write_json(meta_path, meta)
    done_dir = out / "stages"
    summary = []
    t_all = time.perf_counter()
    for i, st in enumerate(stages, 1):
        marker = done_dir / f"{st.name}.json"
        head = f"[{i:2d}/{len(stages)}] {st.name:16s} {st.title}"
        if marker.is_file():
            echo(f"{head} ... done before, skipped")
            summary.append({"name": st.name, "seconds": 0.0, "skipped": True})
            continue
        echo(f"{head} ...")
        t0 = time.perf_counter()
        results = []
        log = io.StringIO()
        try:
            for argv in st.commands:
                results.append(run_command(runner, argv, log))
        finally:
            write_text(out / "logs" / f"{st.name}.log", log.getvalue())
        dt = time.perf_counter() - t0
        write_json(marker, {"name": st.name, "seconds": round(dt, 2), "commands": meta["stages"][i - 1]["commands"],
                            "results": results})
        echo(f"{'':8s}{st.name} finished in {dt:.1f} s")
        summary.append({"name": st.name, "seconds": round(dt, 2), "skipped": False})
    report = out / "report" / "index.html"
    return {"out": str(out), "report": str(report), "quick": bool(quick), "stages": summary,
            "seconds": round(time.perf_counter() - t_all, 2)}
