"""``pdn certify``: certified steering intervals of a PatchVote model over a dataset, with sweeps and
adaptive attacks. The main CLI registers it with one line: ``add_certify_command(sub)``.

The model runs once per frame (streamed in batches over a memory-mapped dataset); its region votes
are kept (N floats per frame) and every certificate (each patch size, aggregator and tolerance of a
sweep) is computed from them by the pure functions of :mod:`defenses.certify`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from drivenet_patch.errors import PDNError

SWEEP_PATCHES = ("0.5%", "1%", "2%", "4%", "8%")
SWEEP_DELTAS_DEG = (0.5, 1.0, 2.0, 4.0)
#: Bounds of ``--attack`` / ``--attack-steps`` (absurd values would allocate or loop without end).
MAX_ATTACK_RUNS = 100_000
MAX_ATTACK_STEPS = 10_000


def add_certify_command(sub: argparse._SubParsersAction) -> None:
    from drivenet_patch.cli import _device_and_json, _positive_int

    help_ = "certified steering intervals of a PatchVote model under any patch of a given size"
    c = sub.add_parser("certify", help=help_, description=help_ + ". Writes certify.json and certify_frames.csv "
                       "(and sweep.csv, attacks.csv) into --out.")
    c.add_argument("--model", required=True, help="PatchVote run folder (pdn train --model patchvote)")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--data", help="dataset folder or log file")
    src.add_argument("--world", action="store_true", help="render held-out world frames (default when no --data)")
    c.add_argument("--format", default="auto", help="dataset format for --data (default auto)")
    c.add_argument("--frames", type=_positive_int, help="frames: --world renders this many (default 1000); "
                   "--data uses the first this many (default all)")
    c.add_argument("--patch", default="2%", help="patch HxW pixels at the model input, or a share of its area "
                   "(default 2%%)")
    c.add_argument("--camera-patch", action="store_true",
                   help="--patch is in camera pixels (a share: of the camera image); it is mapped through the "
                        "dataset's crop and resize to the largest patch it can become at the model input")
    c.add_argument("--aggregate", help="median | trimmed | vote | reject (default: the model's)")
    c.add_argument("--delta", default="10%", help="tolerance in degrees, or a share of the labels' range "
                   "(max - min) such as 10%% (default)")
    c.add_argument("--sweep", action="store_true", help="also tabulate patch sizes x tolerances (sweep.csv)")
    c.add_argument("--attack", type=int, default=0, help="adaptive attack runs (PGD patches at random positions, "
                   "aimed at the aggregate and at the votes); reports violations")
    c.add_argument("--sticker", type=Path, help="attack folder (pdn attack): composite its sticker into held-out "
                   "world approach scenes and check each output against the certificate of the sticker's footprint")
    c.add_argument("--attack-steps", type=_positive_int, default=20, help="PGD steps per attack run (default 20)")
    c.add_argument("--batch", type=_positive_int, default=256, help="frames per forward pass (default 256)")
    c.add_argument("--seed", type=int, default=0, help="seed of --world frames and of the attacks")
    c.add_argument("--out", type=Path, help="output folder (default RUN/certify)")
    _device_and_json(c)
    c.set_defaults(fn=cmd_certify)


def parse_delta(text: str, labels: Any) -> float:
    """``"2"`` -> 2.0 degrees; ``"10%"`` -> 10 % of ``max(labels) - min(labels)``."""
    import numpy as np

    s = str(text).strip()
    try:
        if s.endswith("%"):
            share = float(s[:-1]) / 100.0
            if not (math.isfinite(share) and 0 < share <= 1):
                raise ValueError
            value = share * float(np.ptp(labels)) if len(labels) else float("nan")
        else:
            value = float(s)
    except ValueError:
        raise PDNError(f"--delta must be degrees > 0 or a share like 10%, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise PDNError(f"--delta must come to a number of degrees > 0, got {text!r} ({value})")
    return value


def collect_votes(model: Any, dataset: Any, batch: int, device: str, limit: int | None = None,
                  progress: bool = False) -> tuple[Any, Any]:
    """Region votes (n, N) and labels (n,) over a dataset, streamed in batches (memory: the votes only)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from drivenet_patch.tensors import to_tensor

    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise PDNError("the dataset has no frames")
    votes = torch.empty(n, model.n_regions)
    model.eval()
    with torch.no_grad():
        for s in tqdm(range(0, n, batch), desc="votes", disable=not progress, leave=False):
            idx = np.arange(s, min(s + batch, n))
            votes[idx] = model.votes(to_tensor(dataset.frames(idx), device)).float().cpu()
            if s // batch % 16 == 15:
                dataset.release()  # memory-mapped frames read so far: resident memory stays bounded
    return votes, dataset.labels["steering_deg"].to_numpy(np.float64)[:n]


def summarize(cert: Any, labels: Any, delta: float, k: int, n_regions: int) -> tuple[dict[str, Any], Any]:
    """Metrics and a per-frame table of one certificate against the labels at tolerance ``delta``."""
    import numpy as np
    import pandas as pd

    out, lo, hi = (t.double().numpy() for t in (cert.output, cert.lo, cert.hi))
    certified = cert.certified.numpy().astype(bool)
    y = np.asarray(labels, np.float64)
    clean_ok = np.abs(out - y) <= delta
    cert_ok = certified & (lo >= y - delta) & (hi <= y + delta)
    half = np.where(certified, (hi - lo) / 2.0, np.inf)
    metrics = {
        "certified_acc": float(cert_ok.mean()),
        "clean_acc": float(clean_ok.mean()),
        "mae_deg": float(np.abs(out - y).mean()),
        "median_halfwidth_deg": float(np.median(half)),
        "certified_share": float(certified.mean()),
        "delta_deg": float(delta),
        "k_max": int(k),
        "n_regions": int(n_regions),
        "n": len(y),
    }
    frames = pd.DataFrame({"label_deg": y, "output_deg": out, "lo_deg": lo, "hi_deg": hi, "certified": certified,
                           "clean_ok": clean_ok, "certified_ok": cert_ok})
    return metrics, frames


def _world_dataset(model: Any, frames: int, seed: int, tmp: Path) -> Any:
    from drivenet_patch.data import SynthDataset
    from drivenet_patch.data.synthesize import synthesize

    # Seeds offset from the training data's usual small seeds: held-out roads.
    synthesize(tmp, frames, seed=10_000 + int(seed), size=tuple(model.input_size), progress=False)
    return SynthDataset(tmp)


def cmd_certify(args: argparse.Namespace) -> int:
    import tempfile

    import pandas as pd
    import torch

    from attacks.cli import _load_model
    from defenses.aggregate import METHODS
    from defenses.certify import certify_votes
    from defenses.regions import k_max, parse_patch, touch_matrix
    from drivenet_patch.cli import _emit, _progress
    from drivenet_patch.data import open_dataset
    from drivenet_patch.io import write_csv, write_json
    from drivenet_patch.tensors import to_tensor

    run = Path(args.model)
    if args.aggregate is not None and args.aggregate not in METHODS:
        raise PDNError(f"--aggregate must be one of {', '.join(METHODS)}, got {args.aggregate!r}")
    if not 0 <= args.attack <= MAX_ATTACK_RUNS:
        raise PDNError(f"--attack must lie in [0, {MAX_ATTACK_RUNS}] runs, got {args.attack}")
    if args.attack_steps > MAX_ATTACK_STEPS:
        raise PDNError(f"--attack-steps must be at most {MAX_ATTACK_STEPS}, got {args.attack_steps}")
    model = _load_model(args.model, args.device)
    if not hasattr(model, "votes") or not hasattr(model, "layout"):
        raise PDNError(f"--model: {run} holds a {model.name} model; pdn certify needs a PatchVote model "
                       "(pdn train --model patchvote)")
    method = args.aggregate or model.aggregate_name
    out_dir = args.out or run / "certify"
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            dataset = open_dataset(args.data, format=args.format, size=model.input_size)
            limit = args.frames
        else:
            dataset = _world_dataset(model, args.frames or 1000, args.seed, Path(tmp) / "world")
            limit = None
        if args.camera_patch:
            from defenses.regions import camera_patch_to_model

            cam = (dataset.camera.height, dataset.camera.width)
            camera_patch = parse_patch(args.patch, cam)
            patch = camera_patch_to_model(camera_patch, dataset.crop, cam)
        else:
            camera_patch, patch = None, parse_patch(args.patch, model.input_size)
        votes, labels = collect_votes(model, dataset, args.batch, args.device, limit, _progress(args))
        delta = parse_delta(args.delta, labels)
        valid = model.valid.cpu()

        def certify(p: tuple[int, int], m: str) -> tuple[Any, int]:
            touch = touch_matrix(model.layout, p)
            cert = certify_votes(votes, touch, valid, m, trim=model.trim, bin_deg=model.bin_deg,
                                 tau_deg=model.tau_deg)
            return cert, k_max(touch, valid)

        cert, k = certify(patch, method)
        metrics, frames = summarize(cert, labels, delta, k, model.n_regions)
        result: dict[str, Any] = {**metrics, "patch": list(patch), "patch_spec": args.patch, "aggregate": method,
                                  "camera_patch": None if camera_patch is None else list(camera_patch),
                                  "model": str(run), "source": "data" if args.data else "world",
                                  "label_range_deg": [float(labels.min()), float(labels.max())]}
        write_csv(out_dir / "certify_frames.csv", frames, float_format="%.6g")
        if args.sweep:
            rows = []
            own = f"{patch[0]}x{patch[1]}" if camera_patch is not None else args.patch  # sweep is in model pixels
            specs = list(dict.fromkeys([*SWEEP_PATCHES, own]))
            deltas = sorted({*SWEEP_DELTAS_DEG, round(delta, 6)})
            for spec in specs:
                p = parse_patch(spec, model.input_size)
                for m in METHODS:
                    c, kk = certify(p, m)
                    for d in deltas:
                        met, _ = summarize(c, labels, d, kk, model.n_regions)
                        rows.append({"patch": spec, "ph": p[0], "pw": p[1], "aggregate": m, **met})
            sweep = pd.DataFrame(rows)
            write_csv(out_dir / "sweep.csv", sweep, float_format="%.6g")
            result["sweep_rows"] = len(sweep)
        pick = _example_index(labels, frames)
        with torch.no_grad():
            frame = to_tensor(dataset.frames([pick]), args.device)
        result["examples"] = {"clean": write_vote_example(
            out_dir, "example_clean", model, frame, method,
            {"frame": pick, "label_deg": float(labels[pick]), "lo_deg": float(frames["lo_deg"].iloc[pick]),
             "hi_deg": float(frames["hi_deg"].iloc[pick])})}
        if args.attack:
            result.update(_adaptive(model, dataset, labels, patch, method, args, out_dir, limit))
        if args.sticker:
            sticker_result, example = _sticker_check(model, method, args, out_dir)
            result.update(sticker_result)
            result["examples"]["sticker"] = example
    write_json(out_dir / "certify.json", result)
    result["out"] = str(out_dir)
    text = (f"{result['n']} frames, patch {patch[0]}x{patch[1]} px (touches <= {k} of {model.n_regions} regions), "
            f"{method}: certified accuracy {100 * result['certified_acc']:.1f}% at delta {delta:.2f} deg "
            f"(clean {100 * result['clean_acc']:.1f}%, MAE {result['mae_deg']:.3f} deg, median half-width "
            f"{result['median_halfwidth_deg']:.2f} deg)"
            + (f"; {result['attack_runs']} adaptive attacks, {result['violations']} violations" if args.attack else "")
            + (f"; sticker on {result['sticker_frames']} frames: {result['sticker_violations']} violations, "
               f"mean shift {result['sticker_mean_shift_deg']:.2f} deg" if args.sticker else "")
            + f"; written to {out_dir}")
    _emit(result, args.json, text)
    return 0


def _adaptive(model: Any, dataset: Any, labels: Any, patch: tuple[int, int], method: str,
              args: argparse.Namespace, out_dir: Path, limit: int | None) -> dict[str, Any]:
    """``--attack N``: PGD patches against the defended model; violations of the clean certificates."""
    import numpy as np
    import pandas as pd
    import torch

    from defenses.adaptive import OBJECTIVES, count_violations, draw_runs, patch_pgd
    from drivenet_patch.io import write_csv
    from drivenet_patch.tensors import to_tensor

    g = torch.Generator().manual_seed(int(args.seed))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    pool = np.sort(torch.randperm(n, generator=g)[: min(n, 256)].numpy())  # attacked frames
    x = to_tensor(dataset.frames(pool), args.device)
    frame, y0, x0, obj = draw_runs(args.attack, len(pool), tuple(model.input_size), patch, g)
    runs = patch_pgd(model, x, patch, frame, y0, x0, obj, steps=args.attack_steps, generator=g)
    violations, cert = count_violations(model, x, runs, patch, method)
    table = pd.DataFrame({"frame": pool[runs.frame.numpy()], "y0": runs.y0.numpy(), "x0": runs.x0.numpy(),
                          "objective": [OBJECTIVES[i] for i in runs.objective.tolist()],
                          "clean_deg": runs.clean.numpy(), "attacked_deg": runs.output.numpy(),
                          "lo_deg": cert.lo.numpy(), "hi_deg": cert.hi.numpy(),
                          "label_deg": labels[pool[runs.frame.numpy()]]})
    table["violation"] = cert.certified.numpy() & ((table["attacked_deg"] < table["lo_deg"] - 1e-4)
                                                  | (table["attacked_deg"] > table["hi_deg"] + 1e-4))
    write_csv(out_dir / "attacks.csv", table, float_format="%.6g")
    moved = (table["attacked_deg"] - table["clean_deg"]).abs()
    return {"attack_runs": len(table), "violations": int(violations), "attack_steps": int(args.attack_steps),
            "attack_mean_shift_deg": float(moved.mean()), "attack_max_shift_deg": float(moved.max())}


def _example_index(labels: Any, frames: Any) -> int:
    """A frame worth drawing: certified, on a curve (|label| nearest its 80th percentile)."""
    import numpy as np

    y = np.abs(np.asarray(labels, np.float64))
    ok = frames["certified"].to_numpy(bool)
    cand = np.flatnonzero(ok) if ok.any() else np.arange(len(y))
    target = np.quantile(y[cand], 0.8)
    return int(cand[np.argmin(np.abs(y[cand] - target))])


def write_vote_example(out_dir: Path, name: str, model: Any, frame: Any, method: str,
                       info: dict[str, Any]) -> dict[str, Any]:
    """Save one frame and its region votes for the report: ``NAME.png`` and ``NAME_votes.csv``.

    Args:
        out_dir: certify output folder.
        name: file stem.
        model: the PatchVote.
        frame: (1, 3, H, W) float frame in [0, 1] at the model's input size.
        method: aggregate that turns the votes into the output.
        info: extra facts to keep (frame index, label, certified interval...).

    Returns:
        ``info`` with ``image``, ``votes``, ``output_deg`` and ``aggregate`` added (for certify.json).
    """
    import cv2
    import numpy as np
    import pandas as pd
    import torch

    from drivenet_patch.io import write_bytes, write_csv

    with torch.no_grad():
        votes = model.votes(frame).float().cpu()
        output = float(model.aggregate_votes(votes.to(frame.device), method).cpu()[0])
    rgb = (frame[0].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise PDNError(f"could not encode {name}.png")
    write_bytes(out_dir / f"{name}.png", png.tobytes())
    boxes = np.asarray(model.layout.boxes())
    table = pd.DataFrame({"region": np.arange(len(boxes)), "y0": boxes[:, 0], "x0": boxes[:, 1], "y1": boxes[:, 2],
                          "x1": boxes[:, 3], "vote_deg": votes[0].numpy(),
                          "valid": model.valid.cpu().numpy().astype(bool)})
    write_csv(out_dir / f"{name}_votes.csv", table, float_format="%.6g")
    return {**info, "image": f"{name}.png", "votes": f"{name}_votes.csv", "output_deg": output, "aggregate": method}


def _sticker_check(model: Any, method: str, args: argparse.Namespace,
                   out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--sticker ATK``: the attack folder's sticker on held-out approach scenes, against its footprint's
    certificate. Also returns the vote example of the scene the sticker moves most."""
    import torch

    from attacks.cli import EVAL_SEED_BASE, _read_attack, approach_scenes
    from defenses.adaptive import sticker_violations

    texture, placement, meta = _read_attack(args.sticker)
    if meta.get("mode") == "dirt":
        raise PDNError("--sticker: dirt-mode stickers are not supported here yet")
    distance = tuple(meta.get("distance_m") or (5.0, 20.0))
    scenes = approach_scenes(model, placement, distance, 4, 32, args.seed, EVAL_SEED_BASE, args.device)
    with torch.no_grad():
        attacked = scenes.apply(texture.to(scenes.device))
    r = sticker_violations(model, scenes.background, attacked, scenes.mask.expand(len(scenes), -1, -1), method)
    with torch.no_grad():
        moved = (model.votes(attacked) - model.votes(scenes.background)).abs().amax(dim=1)
    i = int(moved.argmax())
    info = {"scene": i, "distance_m": float(scenes.info["distance_m"].iloc[i]) if "distance_m" in scenes.info else None}
    clean_info = write_vote_example(out_dir, "example_sticker_clean", model, scenes.background[i:i + 1], method, info)
    example = write_vote_example(out_dir, "example_sticker", model, attacked[i:i + 1], method,
                                 {**info, "clean": clean_info})
    return {f"sticker_{k}": v for k, v in r.items()} | {"sticker": str(args.sticker)}, example


__all__ = ["SWEEP_DELTAS_DEG", "SWEEP_PATCHES", "add_certify_command", "collect_votes", "parse_delta", "summarize",
           "write_vote_example"]
