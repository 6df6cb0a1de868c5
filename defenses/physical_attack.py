"""Adaptive physical attacks on the physical certificate: its soundness checked by optimisation.

:mod:`defenses.physical` claims: whatever a W x L m sticker anywhere in the threat region shows, only
the votes of one of the threat's touch sets change, so the aggregate stays in the interval
:func:`defenses.certify.certify_votes` computes from the clean votes and those sets.
:func:`physical_attack` tries to break that claim with real stickers in the world:

1. **Draw** (:func:`draw_physical_runs`): per run a held-out world road (seeded
   ``PHYSICAL_ATTACK_SEED_BASE + 1000 * seed + i``, :mod:`drivenet_patch.world.seeds`), a pose on it (ego
   lane, up to ``LANE_OFFSET_M`` off its centre and ``HEADING_ERR_DEG`` off its heading), lighting,
   and a placement uniform *inside* the threat: distance ahead of the camera, offset left of its
   axis, yaw (and a billboard's bottom height), in the camera-relative metres of
   :mod:`defenses.physical`. The placement is converted to the world's road coordinates for that
   pose (:func:`world_placement`) and converted back from the world's resolved rectangle: the table
   records where the renderer really put the sticker (within micrometres of the draw).
2. **Render** (:func:`render_runs`): the clean frame, and the frame's sticker maps (uv, mask, gain,
   offset) from :meth:`drivenet_patch.world.render.Renderer.render` with ``with_maps=True``; the
   sticker is composited through :func:`drivenet_patch.world.composite.apply_sticker`, so any
   texture is rendered exactly as the world would and gradients reach it.
3. **Optimise**: a texture in [0, 1] per run, from a random start, by signed-gradient steps (PGD,
   as :func:`defenses.adaptive.patch_pgd`), toward one of :data:`defenses.adaptive.OBJECTIVES` in
   turn: the aggregate up or down, or the sum of the votes the sticker's pixels touch up or down.
   Runs are batched (``batch`` placements and frames per model call).
4. **Check** every texture the optimiser evaluated against three claims, from the clean frame's
   votes: the aggregate stays inside the threat's certificate (its maximal touch sets: the
   certificate ``pdn certify --physical`` reports; ``violation``), inside the certificate of the
   grid cell that contains the placement (``cell_violation``: that cell's touch set alone, often
   finite where the threat's is not), and the votes that changed form a subset of one maximal touch
   set (``changed_votes_in_set``). The pixels the sticker can change (its mask, and a billboard's
   posts) must lie inside the cell's footprint mask (``outside_footprint_px``, the geometry the
   certificate rests on).

A violation of any of these would be a bug in the certificate or its geometry; the expected count
is 0, and ``max_push_deg`` shows the attack really moves the output.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from defenses.adaptive import OBJECTIVES, footprint_touch
from defenses.certify import certify_votes
from defenses.physical import ImageGeometry, PhysicalThreat, cell_boxes, footprint_mask, physical_touch
from defenses.regions import maximal_touch_sets
from drivenet_patch.models.base import use_mode
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.composite import apply_sticker
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import EGO_LANE_D, VIEW_MARGIN_M, Road
from drivenet_patch.world.seeds import PHYSICAL_ATTACK_SEED_BASE
from drivenet_patch.world.sticker import StickerPlacement

__all__ = ["TOL_DEG", "PhysicalRuns", "PhysicalScenes", "attack_roads", "draw_physical_runs", "physical_attack",
           "render_runs", "world_placement"]

#: Float tolerance of every check, degrees (batched and single forward passes round differently).
TOL_DEG = 1e-4
#: Drivable length of each attack road, metres (plus the world's view margin).
ROAD_LENGTH_M = 400.0
#: Poses: up to this far off the ego lane's centre (metres) and off the road's heading (degrees).
LANE_OFFSET_M = 0.5
HEADING_ERR_DEG = 3.0
#: A world placement must land within this of the drawn camera-relative one (metres), else it is redrawn.
PLACE_TOL_M = 1e-3
MAX_REDRAWS = 50
#: Aggregate objectives also pull the sticker's own votes (mean) with this weight (see the optimiser).
AGGREGATE_NUDGE = 0.1
MAX_ROADS = 64


def attack_roads(n: int, seed: int, length_m: float = ROAD_LENGTH_M) -> list[Road]:
    """The held-out roads of the attack: ``PHYSICAL_ATTACK_SEED_BASE + 1000 * seed + i``, ``i < n <= 64``."""
    if not 1 <= n <= MAX_ROADS:
        raise PDNError(f"physical attack: 1 to {MAX_ROADS} roads, got {n}")
    return [Road.generate(PHYSICAL_ATTACK_SEED_BASE + 1000 * int(seed) + i, length_m) for i in range(n)]


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def world_placement(road: Road, pose: np.ndarray, camera: Camera, threat: PhysicalThreat, distance_m: float,
                    lateral_m: float, yaw_deg: float, bottom_m: float) -> tuple[StickerPlacement, np.ndarray] | None:
    """The world placement of a sticker at camera-relative ``(distance_m, lateral_m, yaw_deg)`` seen from ``pose``.

    The camera-relative frame is the vehicle frame shifted to the camera mount (as
    :meth:`defenses.physical.ImageGeometry.project`): the centre is at vehicle ``(forward_m + distance,
    lateral_m + lateral)``, and the sticker's heading is the car's plus ``yaw`` (a road sticker's long
    side, a billboard's face normal).

    Returns:
        ``(placement, realised)`` with ``realised = (distance_m, lateral_m, yaw_deg)`` of the rectangle the
        world resolves the placement to; ``None`` when the point lies off the road's lookup grid or the
        round trip misses by more than ``PLACE_TOL_M`` (at the centre, or at the sticker's ends by its yaw).
    """
    px, py, yaw = (float(v) for v in pose)
    c, s = math.cos(yaw), math.sin(yaw)
    vx, vy = camera.forward_m + distance_m, camera.lateral_m + lateral_m
    x, y = px + c * vx - s * vy, py + s * vx + c * vy
    sr, dr = road.to_road(np.array([x]), np.array([y]), iters=4)
    if not (np.isfinite(dr[0]) and 0.0 <= sr[0] <= road.length):
        return None
    heading = yaw + math.radians(yaw_deg)
    rel_yaw = math.degrees(_wrap(heading - float(road.centre(sr[0])[2])))
    if threat.place == "road":
        place = StickerPlacement(s=float(sr[0]), d=float(dr[0]), width_m=threat.width_m, length_m=threat.length_m,
                                 yaw_deg=rel_yaw)
    else:
        place = StickerPlacement.billboard(float(sr[0]), float(dr[0]), threat.width_m, threat.length_m, bottom_m,
                                           rel_yaw)
    r = place.resolve(road)
    dx, dy = r.x - px, r.y - py
    realised = np.array([c * dx + s * dy - camera.forward_m, -s * dx + c * dy - camera.lateral_m,
                         math.degrees(_wrap(r.heading - yaw))])
    if (math.hypot(realised[0] - distance_m, realised[1] - lateral_m) > PLACE_TOL_M
            or abs(realised[2] - yaw_deg) > math.degrees(PLACE_TOL_M / max(threat.width_m, threat.length_m))):
        return None
    return place, realised


@dataclass(frozen=True)
class PhysicalRuns:
    """What :func:`draw_physical_runs` drew: one entry per run (numpy arrays of length R).

    Attributes:
        road: index into the roads.
        pose: (R, 3) rear-axle poses (x, y, yaw).
        distance_m, lateral_m, yaw_deg: the realised camera-relative placement (see :func:`world_placement`).
        bottom_m: a billboard's lower edge above the ground (NaN for road stickers).
        objective: index into :data:`defenses.adaptive.OBJECTIVES` (in turn).
        placements: the world placements.
        lighting: per-run :class:`~drivenet_patch.world.render.Lighting`.
    """

    road: np.ndarray
    pose: np.ndarray
    distance_m: np.ndarray
    lateral_m: np.ndarray
    yaw_deg: np.ndarray
    bottom_m: np.ndarray
    objective: np.ndarray
    placements: tuple[StickerPlacement, ...]
    lighting: Lighting

    def __len__(self) -> int:
        return len(self.road)


def draw_physical_runs(threat: PhysicalThreat, n_runs: int, roads: list[Road], camera: Camera,
                       rng: np.random.Generator) -> PhysicalRuns:
    """Random runs inside ``threat``: road, pose and placement uniform (module docstring, step 1).

    A draw the world cannot place (off the road's lookup grid) is redrawn with a new pose, at most
    ``MAX_REDRAWS`` times per run.
    """
    if n_runs < 1:
        raise PDNError(f"n_runs must be >= 1, got {n_runs}")
    (d0, d1), (y0, y1), (b0, b1) = threat.distance_m, threat.lateral_m, threat.bottom_m
    cols: dict[str, list[Any]] = {k: [] for k in ("road", "pose", "real", "bottom", "place")}
    for _ in range(n_runs):
        for _attempt in range(MAX_REDRAWS):
            k = int(rng.integers(len(roads)))
            road = roads[k]
            s_car = float(rng.uniform(10.0, road.length - VIEW_MARGIN_M))
            pose = road.pose_at(s_car, EGO_LANE_D + float(rng.uniform(-LANE_OFFSET_M, LANE_OFFSET_M)),
                                math.radians(float(rng.uniform(-HEADING_ERR_DEG, HEADING_ERR_DEG))))
            d, y = float(rng.uniform(d0, d1)), float(rng.uniform(y0, y1))
            psi = float(rng.uniform(-threat.yaw_deg, threat.yaw_deg))
            bottom = float(rng.uniform(b0, b1)) if threat.place == "billboard" else math.nan
            got = world_placement(road, pose, camera, threat, d, y, psi, 0.0 if math.isnan(bottom) else bottom)
            if got is not None:
                break
        else:
            raise PDNError(f"physical attack: could not place a sticker in the world {MAX_REDRAWS} times in a row "
                           f"(distance {d0:g}-{d1:g} m, lateral {y0:g}:{y1:g} m)")
        cols["road"].append(k)
        cols["pose"].append(pose)
        cols["real"].append(got[1])
        cols["bottom"].append(bottom)
        cols["place"].append(got[0])
    real = np.array(cols["real"])
    return PhysicalRuns(np.array(cols["road"]), np.array(cols["pose"]), real[:, 0], real[:, 1], real[:, 2],
                        np.array(cols["bottom"]), np.arange(n_runs) % len(OBJECTIVES), tuple(cols["place"]),
                        Lighting.sample(rng, n_runs))


@dataclass(frozen=True)
class PhysicalScenes:
    """Rendered runs: clean frames and the sticker maps :func:`apply_sticker` takes.

    Shapes: clean, background, gain, offset (B, 3, H, W); uv (B, H, W, 2); mask (B, H, W) bool.
    ``background`` is the frame the sticker is pasted into: the clean frame, plus a billboard's posts.
    """

    clean: torch.Tensor
    background: torch.Tensor
    uv: torch.Tensor
    mask: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor

    def apply(self, texture: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) frames with ``texture`` ((3, h, w) or (B, 3, h, w)) composited in."""
        return apply_sticker(self.background, texture, self.uv, self.mask, self.gain, self.offset)

    def changeable(self) -> torch.Tensor:
        """(B, H, W) bool: every pixel some texture could make differ from the clean frame."""
        return self.mask | (self.background != self.clean).any(dim=1)


def render_runs(renderer: Renderer, roads: list[Road], runs: PhysicalRuns, idx: np.ndarray) -> PhysicalScenes:
    """Render runs ``idx``: clean frames (one batch per road) and each run's sticker maps."""
    idx = np.asarray(idx)
    light = runs.lighting.index(torch.as_tensor(idx))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("background", "uv", "mask", "gain", "offset")}
    for j, i in enumerate(idx):
        out = renderer.render(roads[runs.road[i]], runs.pose[i:i + 1], light.index(slice(j, j + 1)),
                              sticker=runs.placements[i], with_maps=True)
        for k in parts:
            parts[k].append(getattr(out, k))
    clean = torch.empty_like(torch.cat(parts["background"]))
    for k in np.unique(runs.road[idx]):
        sel = np.flatnonzero(runs.road[idx] == k)
        out = renderer.render(roads[k], runs.pose[idx[sel]], light.index(torch.as_tensor(sel)), with_maps=True)
        clean[torch.as_tensor(sel, device=clean.device)] = out.background
    return PhysicalScenes(clean, *(torch.cat(parts[k]) for k in ("background", "uv", "mask", "gain", "offset")))


def _nearest_cells(threat: PhysicalThreat, spacing_m: float, distance: np.ndarray, lateral: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the covering (P, 6) and, per run, the cell whose grid point is nearest the centre (it contains
    the sticker: covering argument, step 2)."""
    boxes, _ = cell_boxes(threat, spacing_m)
    ds = np.unique(np.round((boxes[:, 0] + boxes[:, 1]) / 2, 9))
    ys = np.unique(np.round((boxes[:, 2] + boxes[:, 3]) / 2, 9))
    i = np.abs(distance[:, None] - ds[None, :]).argmin(1)
    j = np.abs(lateral[:, None] - ys[None, :]).argmin(1)
    return boxes, i * len(ys) + j


def _certify_rows(votes: torch.Tensor, rows: torch.Tensor, model: Any, method: str) -> tuple[torch.Tensor, ...]:
    """Per run its own touch set ``rows`` (R, N): (lo, hi, certified), runs with equal sets in one call."""
    lo, hi = torch.empty(len(votes), dtype=torch.float64), torch.empty(len(votes), dtype=torch.float64)
    ok = torch.zeros(len(votes), dtype=torch.bool)
    for row in torch.unique(rows, dim=0):
        sel = (rows == row).all(dim=1)
        c = certify_votes(votes[sel], row[None], model.valid.cpu(), method, trim=model.trim, bin_deg=model.bin_deg,
                          tau_deg=model.tau_deg)
        lo[sel], hi[sel], ok[sel] = c.lo.double(), c.hi.double(), c.certified
    return lo, hi, ok


def physical_attack(model: Any, threat: PhysicalThreat, n_runs: int, steps: int = 20, seed: int = 0,
                    method: str | None = None, spacing_m: float = 0.25, step_size: float = 0.1,
                    texture_px: tuple[int, int] = (32, 32), batch: int = 64, n_roads: int = 32,
                    device: str = "cpu", progress: bool = False) -> tuple[Any, dict[str, Any]]:
    """``n_runs`` adaptive stickers against a PatchVote model's physical certificate (module docstring).

    Args:
        model: a PatchVote (``votes``, ``aggregate_votes``, ``layout``, ``valid``); its mode is restored.
        threat: the physical threat (road or billboard).
        n_runs: attack runs; steps: signed-gradient steps per run; step_size: per step, in texture units.
        seed: roads, poses, placements, lighting and texture starts (same seed, same table).
        method: aggregate (default: the model's).
        spacing_m: grid spacing of the covering (as ``pdn certify --spacing``).
        texture_px: ``(rows, cols)`` of the optimised texture.
        batch: runs per model call.
        n_roads: held-out roads the runs are spread over (at most ``n_runs``).
        device: where frames, textures and the model run.
        progress: show a progress bar.

    Returns:
        A table (pandas, one row per run: ``run, road_seed, distance_m, lateral_m, yaw_deg, [bottom_m,]
        objective, sticker_px, clean, start, attacked, attacked_min, attacked_max, lo, hi, certified, violation,
        cell_lo, cell_hi, cell_violation, changed_votes, changed_votes_in_set, changed_votes_in_cell,
        outside_footprint_px``) and a summary: ``runs``, ``violations``, ``vote_violations``,
        ``cell_violations``, ``cell_vote_violations``, ``certified_runs``, ``cell_certified_runs``,
        ``outside_footprint_px``, ``max_push_deg``, ``mean_push_deg``, ``seconds``, ``runs_per_s``...
    """
    import pandas as pd
    from tqdm import tqdm

    if steps < 1 or not (math.isfinite(step_size) and step_size > 0):
        raise PDNError(f"attack steps must be >= 1 and step size > 0, got {steps}, {step_size}")
    if batch < 1 or min(texture_px) < 1:
        raise PDNError(f"physical attack: batch and texture size must be >= 1, got {batch}, {texture_px}")
    t0 = time.perf_counter()
    method = method or model.aggregate_name
    geom = ImageGeometry.world(tuple(model.input_size))
    touch = physical_touch(threat, geom, model.layout, spacing_m)  # also refuses ground the model never sees
    sets = maximal_touch_sets(touch.touch)  # (Q, N): the certificate pdn certify --physical reports
    valid = model.valid.cpu()
    roads = attack_roads(max(1, min(n_roads, n_runs, MAX_ROADS)), seed)
    rng = np.random.default_rng([int(seed), 0x5717])
    runs = draw_physical_runs(threat, n_runs, roads, geom.camera, rng)
    boxes, cells = _nearest_cells(threat, spacing_m, runs.distance_m, runs.lateral_m)
    renderer = Renderer(geom.camera, device=device)
    g = torch.Generator().manual_seed(int(seed))
    n = len(runs)
    v_clean = torch.empty(n, model.n_regions)
    res = {k: torch.empty(n, dtype=torch.float64) for k in ("clean", "start", "attacked", "lo_seen", "hi_seen")}
    changed = torch.zeros(n, model.n_regions, dtype=torch.bool)
    outside = np.zeros(n, np.int64)
    sticker_px = np.zeros(n, np.int64)
    with use_mode(model, False):
        for s in tqdm(range(0, n, batch), desc="physical attacks", disable=not progress, leave=False):
            idx = np.arange(s, min(s + batch, n))
            sc = render_runs(renderer, roads, runs, idx)
            can = sc.changeable().cpu().numpy()
            for j, i in enumerate(idx):
                outside[i] = int((can[j] & ~footprint_mask(boxes[cells[i]], geom)).sum())
            sticker_px[idx] = sc.mask.flatten(1).sum(1).cpu().numpy()
            with torch.no_grad():
                vc = model.votes(sc.clean).float()  # (B, N)
            v_clean[idx] = vc.cpu()
            res["clean"][idx] = model.aggregate_votes(vc, method).double().cpu()
            touched = footprint_touch(model.layout, sc.mask) & model.valid.view(1, -1)  # (B, N)
            obj = torch.as_tensor(runs.objective[idx], device=vc.device)
            sign = torch.where((obj == 0) | (obj == 2), 1.0, -1.0)
            on_votes = obj >= 2
            tex = torch.rand((len(idx), 3, *texture_px), generator=g).to(sc.clean.device)
            best = torch.full((len(idx),), -math.inf, device=vc.device)
            lo_seen = torch.full((len(idx),), math.inf, device=vc.device)
            hi_seen = torch.full((len(idx),), -math.inf, device=vc.device)
            best_out = torch.empty(len(idx), device=vc.device)
            moved = torch.zeros_like(touched)
            for step in range(steps + 1):
                last = step == steps
                with torch.set_grad_enabled(not last):
                    tex.requires_grad_(not last)
                    v = model.votes(sc.apply(tex))
                    agg = model.aggregate_votes(v, method)
                    mine = torch.where(touched, v, torch.zeros_like(v)).sum(1)  # (B,) the sticker's votes
                    gain = torch.where(on_votes, mine, agg) * sign  # what the run maximises
                    # The median's gradient reaches only the middle vote(s), rarely one the sticker touches:
                    # a small pull on the sticker's votes moves them until one of them is the middle.
                    nudge = mine / touched.sum(1).clamp(min=1) * sign * AGGREGATE_NUDGE
                with torch.no_grad():
                    a = agg.detach()
                    better = gain.detach() > best
                    best = torch.where(better, gain.detach(), best)
                    best_out = torch.where(better, a, best_out)
                    lo_seen, hi_seen = torch.minimum(lo_seen, a), torch.maximum(hi_seen, a)
                    moved |= (v.detach() - vc).abs() > TOL_DEG
                    if step == 0:
                        res["start"][idx] = a.double().cpu()
                if last:
                    break
                (grad,) = torch.autograd.grad((gain + torch.where(on_votes, 0.0, nudge)).sum(), tex)
                with torch.no_grad():
                    tex = (tex + step_size * grad.sign()).clamp_(0.0, 1.0)
            res["attacked"][idx] = best_out.double().cpu()
            res["lo_seen"][idx], res["hi_seen"][idx] = lo_seen.double().cpu(), hi_seen.double().cpu()
            changed[idx] = moved.cpu()
    cert = certify_votes(v_clean, sets, valid, method, trim=model.trim, bin_deg=model.bin_deg, tau_deg=model.tau_deg)
    lo, hi, ok = cert.lo.double(), cert.hi.double(), cert.certified
    rows = touch.touch[torch.as_tensor(cells)]  # (R, N): each run's own cell
    cell_lo, cell_hi, cell_ok = _certify_rows(v_clean, rows, model, method)

    def leaves(a: torch.Tensor, b: torch.Tensor, certified: torch.Tensor) -> torch.Tensor:
        return certified & ((res["lo_seen"] < a - TOL_DEG) | (res["hi_seen"] > b + TOL_DEG))

    in_set = (~(changed[:, None, :] & ~sets[None, :, :]).any(-1)).any(1)
    in_cell = ~(changed & ~rows).any(1)
    seconds = time.perf_counter() - t0
    table = pd.DataFrame({
        "run": np.arange(n), "road_seed": [roads[k].seed for k in runs.road], "distance_m": runs.distance_m,
        "lateral_m": runs.lateral_m, "yaw_deg": runs.yaw_deg,
        **({"bottom_m": runs.bottom_m} if threat.place == "billboard" else {}),
        "objective": [OBJECTIVES[i] for i in runs.objective], "sticker_px": sticker_px,
        "clean": res["clean"].numpy(), "start": res["start"].numpy(), "attacked": res["attacked"].numpy(),
        "attacked_min": res["lo_seen"].numpy(), "attacked_max": res["hi_seen"].numpy(),
        "lo": lo.numpy(), "hi": hi.numpy(), "certified": ok.numpy(), "violation": leaves(lo, hi, ok).numpy(),
        "cell_lo": cell_lo.numpy(), "cell_hi": cell_hi.numpy(),
        "cell_violation": leaves(cell_lo, cell_hi, cell_ok).numpy(),
        "changed_votes": [";".join(str(r) for r in np.flatnonzero(c)) for c in changed.numpy()],
        "changed_votes_in_set": in_set.numpy(), "changed_votes_in_cell": in_cell.numpy(),
        "outside_footprint_px": outside,
    })
    push = (table["attacked"] - table["clean"]).abs()
    summary = {
        "runs": n, "violations": int(table["violation"].sum()), "vote_violations": int((~in_set).sum()),
        "cell_violations": int(table["cell_violation"].sum()), "cell_vote_violations": int((~in_cell).sum()),
        "certified_runs": int(ok.sum()), "cell_certified_runs": int(cell_ok.sum()),
        "outside_footprint_px": int(outside.sum()), "max_push_deg": float(push.max()),
        "mean_push_deg": float(push.mean()), "steps": int(steps), "n_sets": int(sets.shape[0]),
        "roads": len(roads), "road_seed_base": PHYSICAL_ATTACK_SEED_BASE + 1000 * int(seed),
        "seconds": seconds, "runs_per_s": n / seconds,
    }
    return table, summary
