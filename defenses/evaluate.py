"""PatchVote over a dataset: region votes streamed once, then certificates, sweeps and attack checks.

The model runs once per frame (streamed in batches over a memory-mapped dataset, see
:func:`drivenet_patch.models.inference.stream_outputs`); its region votes are kept (N floats per frame) and
every certificate (each patch size, aggregator and tolerance of a sweep) is computed from them by the
pure functions of :mod:`defenses.certify`. ``pdn certify`` (:mod:`drivenet_patch.app.cli.certify`) is a thin
layer over these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_ATTACK_RUNS

__all__ = [
    "MAX_ATTACK_RUNS",
    "MAX_ATTACK_STEPS",
    "SWEEP_DELTAS_DEG",
    "SWEEP_PATCHES",
    "adaptive_check",
    "certify_at",
    "collect_votes",
    "example_index",
    "physical_certificate",
    "physical_sweep",
    "sticker_check",
    "summarize",
    "sweep_table",
    "world_dataset",
    "write_vote_example",
]

SWEEP_PATCHES = ("0.5%", "1%", "2%", "4%", "8%")
SWEEP_DELTAS_DEG = (0.5, 1.0, 2.0, 4.0)
#: Bounds of the adaptive check (absurd values would allocate or loop without end); the runs' bound is the
#: validation layer's MAX_ATTACK_RUNS.
MAX_ATTACK_STEPS = 10_000


def collect_votes(model: Any, dataset: Any, batch: int, device: str, limit: int | None = None,
                  progress: bool = False) -> tuple[Any, Any]:
    """Region votes (n, N) float32 and labels (n,) float64 over a dataset, streamed in batches (memory: the
    votes only); the model's train/eval mode is restored afterwards."""
    import numpy as np

    from drivenet_patch.models.inference import stream_outputs

    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise PDNError("the dataset has no frames")
    votes = stream_outputs(model, dataset, lambda x: model.votes(x).float(), batch=batch, device=device, limit=n,
                           progress=progress, desc="votes")
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


def certify_at(model: Any, votes: Any, patch: tuple[int, int], method: str) -> tuple[Any, int]:
    """The certificate of ``votes`` (n, N) against any ``patch`` (ph, pw) pixels, with ``method``; and k_max."""
    from defenses.certify import certify_votes
    from defenses.regions import k_max, touch_matrix

    valid = model.valid.cpu()
    touch = touch_matrix(model.layout, patch)
    cert = certify_votes(votes, touch, valid, method, trim=model.trim, bin_deg=model.bin_deg, tau_deg=model.tau_deg)
    return cert, k_max(touch, valid)


def sweep_table(model: Any, votes: Any, labels: Any, specs: list[str], deltas: list[float]) -> Any:
    """Certified accuracy over patch sizes (``specs``, as ``parse_patch`` reads them) x every aggregator x
    tolerances ``deltas`` (degrees): one row each."""
    import pandas as pd

    from defenses.aggregate import METHODS
    from defenses.regions import parse_patch

    rows = []
    for spec in specs:
        p = parse_patch(spec, model.input_size)
        for m in METHODS:
            c, kk = certify_at(model, votes, p, m)
            for d in deltas:
                met, _ = summarize(c, labels, d, kk, model.n_regions)
                rows.append({"patch": spec, "ph": p[0], "pw": p[1], "aggregate": m, **met})
    return pd.DataFrame(rows)


def world_dataset(model: Any, frames: int, seed: int, tmp: Path) -> Any:
    """``frames`` held-out world frames at ``model``'s input size, synthesised into ``tmp`` (seed ``DRIVE_SEED + seed``)."""
    from drivenet_patch.data import SynthDataset
    from drivenet_patch.data.synthesize import synthesize
    from drivenet_patch.world.seeds import DRIVE_SEED

    synthesize(tmp, frames, seed=DRIVE_SEED + int(seed), size=tuple(model.input_size), progress=False)
    return SynthDataset(tmp)


def example_index(labels: Any, frames: Any) -> int:
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

    from drivenet_patch.storage.atomic import write_bytes, write_csv

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


def adaptive_check(model: Any, dataset: Any, labels: Any, patch: tuple[int, int], method: str, runs: int,
                   steps: int, seed: int, device: str, out_dir: Path, limit: int | None) -> dict[str, Any]:
    """Adaptive PGD patches against the defended model; violations of the clean certificates.

    ``runs`` attacks at random positions on up to 256 frames (seeded by ``seed``), each ``steps`` PGD
    steps, aimed at the aggregate and at the votes; the runs go to ``out_dir/attacks.csv``.
    """
    import numpy as np
    import pandas as pd
    import torch

    from defenses.adaptive import OBJECTIVES, count_violations, draw_runs, patch_pgd
    from drivenet_patch.safety.tensors import to_tensor
    from drivenet_patch.storage.atomic import write_csv

    g = torch.Generator().manual_seed(int(seed))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    pool = np.sort(torch.randperm(n, generator=g)[: min(n, 256)].numpy())  # attacked frames
    x = to_tensor(dataset.frames(pool), device)
    frame, y0, x0, obj = draw_runs(runs, len(pool), tuple(model.input_size), patch, g)
    result = patch_pgd(model, x, patch, frame, y0, x0, obj, steps=steps, generator=g)
    violations, cert = count_violations(model, x, result, patch, method)
    table = pd.DataFrame({"frame": pool[result.frame.numpy()], "y0": result.y0.numpy(), "x0": result.x0.numpy(),
                          "objective": [OBJECTIVES[i] for i in result.objective.tolist()],
                          "clean_deg": result.clean.numpy(), "attacked_deg": result.output.numpy(),
                          "lo_deg": cert.lo.numpy(), "hi_deg": cert.hi.numpy(),
                          "label_deg": labels[pool[result.frame.numpy()]]})
    table["violation"] = cert.certified.numpy() & ((table["attacked_deg"] < table["lo_deg"] - 1e-4)
                                                  | (table["attacked_deg"] > table["hi_deg"] + 1e-4))
    write_csv(out_dir / "attacks.csv", table, float_format="%.6g")
    moved = (table["attacked_deg"] - table["clean_deg"]).abs()
    return {"attack_runs": len(table), "violations": int(violations), "attack_steps": int(steps),
            "attack_mean_shift_deg": float(moved.mean()), "attack_max_shift_deg": float(moved.max())}


def sticker_check(model: Any, method: str, texture: Any, scenes: Any,
                  out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A real sticker on approach ``scenes`` (``attacks``' StickerScenes: ``apply``, ``background``, ``mask``)
    against its footprint's certificate. Also returns the vote example of the scene the sticker moves most.

    Returns:
        ``({"sticker_<key>": ...}, example)`` with the keys of :func:`defenses.adaptive.sticker_violations`.
    """
    import torch

    from defenses.adaptive import sticker_violations

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
    return {f"sticker_{k}": v for k, v in r.items()}, example


#: Sticker areas (m^2) and the aspect (long side / short side) of ``pdn certify --physical ... --sweep``.
PHYSICAL_SWEEP_AREAS_M2 = (0.5, 1.0, 2.0, 4.0, 7.0, 10.0, 14.0, 20.0, 30.0)
PHYSICAL_SWEEP_ASPECT = 1.75
#: Width of the distance bins of ``certified_acc_by_distance`` (metres).
DISTANCE_BIN_M = 5.0


def physical_certificate(model: Any, votes: Any, labels: Any, touch: Any, method: str,
                         delta: float) -> tuple[dict[str, Any], Any]:
    """Certified accuracy of ``votes`` against a physical threat's touch sets (:class:`defenses.physical.PhysicalTouch`).

    Returns:
        :func:`summarize`'s metrics plus ``n_sets`` (maximal touch sets) and ``certified_acc_by_distance``
        (``"d0-d1"`` -> share certified against the stickers of that distance bin alone), and the per-frame table.
    """
    import numpy as np
    import torch

    from defenses.certify import certify_votes
    from defenses.regions import k_max, maximal_touch_sets

    valid = model.valid.cpu()

    def cert_of(rows: Any) -> tuple[Any, int]:
        sets = maximal_touch_sets(rows)
        c = certify_votes(votes, sets, valid, method, trim=model.trim, bin_deg=model.bin_deg, tau_deg=model.tau_deg)
        return c, k_max(rows, valid)

    cert, k = cert_of(touch.touch)
    metrics, frames = summarize(cert, labels, delta, k, model.n_regions)
    metrics["n_sets"] = int(maximal_touch_sets(touch.touch).shape[0])
    by_distance: dict[str, float] = {}
    lo = float(np.floor(touch.distance_m.min() / DISTANCE_BIN_M) * DISTANCE_BIN_M)
    while lo <= float(touch.distance_m.max()):
        hi = lo + DISTANCE_BIN_M
        sel = torch.from_numpy((touch.distance_m >= lo) & (touch.distance_m < hi))
        if bool(sel.any()):
            c, kk = cert_of(touch.touch[sel])
            by_distance[f"{lo:g}-{hi:g}"] = summarize(c, labels, delta, kk, model.n_regions)[0]["certified_acc"]
        lo = hi
    metrics["certified_acc_by_distance"] = by_distance
    return metrics, frames


def physical_sweep(model: Any, votes: Any, labels: Any, threat: Any, geom: Any, method: str,
                   deltas: list[float], spacing_m: float = 0.25) -> Any:
    """Certified accuracy over sticker areas (``PHYSICAL_SWEEP_AREAS_M2``, both aspects: long side along or
    across the road) x tolerances, keeping ``threat``'s place, distances, lateral range and yaw."""
    import math
    from dataclasses import replace

    import pandas as pd

    from defenses.physical import physical_touch

    rows = []
    for area in PHYSICAL_SWEEP_AREAS_M2:
        short = math.sqrt(area / PHYSICAL_SWEEP_ASPECT)
        for aspect, (w, length) in (("along", (short, short * PHYSICAL_SWEEP_ASPECT)),
                                    ("across", (short * PHYSICAL_SWEEP_ASPECT, short))):
            t = replace(threat, width_m=w, length_m=length)
            touch = physical_touch(t, geom, model.layout, spacing_m)
            for d in deltas:
                met, _ = physical_certificate(model, votes, labels, touch, method, d)
                rows.append({"area_m2": area, "aspect": aspect, "width_m": w, "length_m": length,
                             **{k: v for k, v in met.items() if k != "certified_acc_by_distance"}})
    return pd.DataFrame(rows)
