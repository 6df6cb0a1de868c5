"""Adaptive attacks on a PatchVote model, to check its certificates empirically.

A certificate says: whatever a ``ph x pw`` patch anywhere on the input holds, the aggregate stays in
``[lo, hi]``. :func:`patch_pgd` tries hard to break that: for each run (a frame, a patch position,
an objective) it optimises the patch pixels by signed-gradient ascent (PGD with an unconstrained
value range inside the patch, Madry et al. 2018), aimed either at the aggregate (push it up or down)
or at the region votes the patch touches (push all of them up or down: the attack that moves a
median the most when it succeeds). :func:`count_violations` compares the attacked outputs with the
clean certificates. A violation would mean a bug in the certificate: the test suite and
``pdn certify --attack N`` report the count, which must be 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from defenses.certify import Certificate, certify_votes
from defenses.regions import patch_positions, region_masks, touch_matrix
from drivenet_patch.safety.errors import PDNError

OBJECTIVES = ("aggregate_up", "aggregate_down", "votes_up", "votes_down")


@dataclass(frozen=True)
class AttackRuns:
    """What :func:`patch_pgd` ran: one entry per run (all (R,) tensors on the CPU)."""

    frame: torch.Tensor  # index into the batch of frames
    y0: torch.Tensor  # patch top-left corner, model-input pixels
    x0: torch.Tensor
    objective: torch.Tensor  # index into OBJECTIVES
    output: torch.Tensor  # the aggregate after the attack, degrees
    clean: torch.Tensor  # the aggregate before it


def draw_runs(n_runs: int, n_frames: int, input_size: tuple[int, int], patch: tuple[int, int],
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (frame, y0, x0, objective) for ``n_runs`` runs: frames and positions uniform, objectives in turn."""
    if n_runs < 1:
        raise PDNError(f"n_runs must be >= 1, got {n_runs}")
    pos = patch_positions(input_size, patch)  # (P, 2)
    frame = torch.randint(0, n_frames, (n_runs,), generator=generator)
    pick = torch.randint(0, len(pos), (n_runs,), generator=generator)
    objective = torch.arange(n_runs) % len(OBJECTIVES)
    return frame, pos[pick, 0], pos[pick, 1], objective


def patch_pgd(model: torch.nn.Module, x: torch.Tensor, patch: tuple[int, int], frame: torch.Tensor,
              y0: torch.Tensor, x0: torch.Tensor, objective: torch.Tensor, steps: int = 20,
              step_size: float = 0.1, generator: torch.Generator | None = None, chunk: int = 64) -> AttackRuns:
    """Optimise one patch per run against a PatchVote model (see the module docstring).

    Args:
        model: a PatchVote (``votes(x)`` and ``forward(x)``), put in eval mode here.
        x: (F, 3, H, W) clean frames in [0, 1].
        patch: ``(ph, pw)`` pixels.
        frame, y0, x0, objective: (R,) per run (:func:`draw_runs`).
        steps: signed-gradient steps; step_size: per step, in pixel value units.
        generator: draws the patches' random starts.
        chunk: runs per batch.

    Returns:
        :class:`AttackRuns`.
    """
    if steps < 1 or not (math.isfinite(step_size) and step_size > 0):
        raise PDNError(f"attack steps must be >= 1 and step size > 0, got {steps}, {step_size}")
    ph, pw = patch
    H, W = x.shape[-2:]
    dev = x.device
    was = model.training
    model.eval()
    layout = model.layout
    touch = touch_matrix(layout, (ph, pw)).to(dev)  # (P, N) rows in patch_positions order
    pos = patch_positions((H, W), (ph, pw)).to(dev)
    n_x = W - pw + 1
    outs, cleans = [], []
    try:
        for s in range(0, len(frame), chunk):
            f = frame[s : s + chunk].to(dev)
            yy, xx, obj = y0[s : s + chunk].to(dev), x0[s : s + chunk].to(dev), objective[s : s + chunk].to(dev)
            B = len(f)
            base = x[f]
            rows = torch.arange(H, device=dev).view(1, H, 1)
            cols = torch.arange(W, device=dev).view(1, 1, W)
            mask = ((rows >= yy.view(B, 1, 1)) & (rows < (yy + ph).view(B, 1, 1))
                    & (cols >= xx.view(B, 1, 1)) & (cols < (xx + pw).view(B, 1, 1))).unsqueeze(1).to(x.dtype)
            touched = touch[yy * n_x + xx] & model.valid.view(1, -1)  # (B, N), voting regions only
            assert torch.equal(pos[yy * n_x + xx], torch.stack([yy, xx], 1))
            sign = torch.where((obj == 0) | (obj == 2), 1.0, -1.0).to(x.dtype)  # up: +1
            on_votes = obj >= 2
            p = torch.rand(base.shape, generator=generator).to(dev) if generator is not None else torch.rand_like(base)
            with torch.no_grad():
                cleans.append(model(base).cpu())
            for _ in range(steps):
                p.requires_grad_(True)
                adv = base * (1 - mask) + p * mask
                v = model.votes(adv)
                agg = model.aggregate_votes(v)
                vote_term = torch.where(touched, v, torch.zeros_like(v)).sum(dim=1)
                gain = torch.where(on_votes, vote_term, agg) * sign
                (grad,) = torch.autograd.grad(gain.sum(), p)
                with torch.no_grad():
                    p = (p + step_size * grad.sign()).clamp_(0.0, 1.0)
            with torch.no_grad():
                outs.append(model(base * (1 - mask) + p * mask).cpu())
    finally:
        model.train(was)
    return AttackRuns(frame.cpu(), y0.cpu(), x0.cpu(), objective.cpu(), torch.cat(outs), torch.cat(cleans))


def count_violations(model: torch.nn.Module, x: torch.Tensor, runs: AttackRuns, patch: tuple[int, int],
                     method: str | None = None, tol: float = 1e-4) -> tuple[int, Certificate]:
    """Runs whose attacked output left the clean certificate of its frame (beyond ``tol`` degrees
    of float rounding between a batched and a single forward pass).

    Returns:
        ``(violations, certificate of the attacked frames)``.
    """
    with torch.no_grad():
        v = model.votes(x[runs.frame.to(x.device)])
    cert = certify_votes(v, touch_matrix(model.layout, patch).to(v.device), model.valid,
                         method or model.aggregate_name, trim=model.trim, bin_deg=model.bin_deg,
                         tau_deg=model.tau_deg)
    lo, hi = cert.lo.cpu(), cert.hi.cpu()
    ok = cert.certified.cpu()
    bad = ok & ((runs.output < lo - tol) | (runs.output > hi + tol))
    return int(bad.sum()), cert


def footprint_touch(layout: Any, mask: torch.Tensor) -> torch.Tensor:
    """Regions each frame's changed pixels touch: (B, N) bool from a (B, H, W) bool mask."""
    regions = region_masks(layout).to(mask.device).flatten(1).to(torch.float32)  # (N, HW): each vote's dependency set
    return (mask.flatten(1).to(torch.float32) @ regions.T) > 0


@torch.no_grad()
def sticker_violations(model: torch.nn.Module, clean: torch.Tensor, attacked: torch.Tensor, mask: torch.Tensor,
                       method: str | None = None, tol: float = 1e-4) -> dict[str, Any]:
    """Check a physical sticker against the certificate of its own footprint, frame by frame.

    The certificate for the exact set of regions the sticker's pixels touch (any values there) is
    computed from the clean frame's votes; the attacked frame's output must lie inside it.

    Args:
        model: a PatchVote.
        clean, attacked: (B, 3, H, W) the frames without and with the sticker.
        mask: (B, H, W) bool, the sticker's pixels (every pixel that differs must be inside).

    Returns:
        ``violations``, ``frames``, ``certified`` (frames with a finite interval), ``mean_shift_deg``,
        ``max_touched`` (regions), ``outside_mask_changed`` (pixels that changed outside the mask:
        must be 0, or the check is not about this sticker).
    """
    model.eval()
    outside = int(((clean != attacked).any(dim=1) & ~mask).sum())
    v = model.votes(clean)
    touched = footprint_touch(model.layout, mask)  # (B, N)
    out = model(attacked)
    lo = torch.empty(len(v))
    hi = torch.empty(len(v))
    ok = torch.zeros(len(v), dtype=torch.bool)
    for row in torch.unique(touched, dim=0):  # frames with the same touched set share one certificate call
        sel = (touched == row).all(dim=1)
        cert = certify_votes(v[sel], row[None], model.valid, method or model.aggregate_name, trim=model.trim,
                             bin_deg=model.bin_deg, tau_deg=model.tau_deg)
        lo[sel], hi[sel], ok[sel] = cert.lo.cpu().float(), cert.hi.cpu().float(), cert.certified.cpu()
    o = out.cpu()
    bad = ok & ((o < lo - tol) | (o > hi + tol))
    return {"violations": int(bad.sum()), "frames": len(v), "certified": int(ok.sum()),
            "mean_shift_deg": float((o - model.aggregate_votes(v).cpu()).abs().mean()),
            "max_touched": int(touched.sum(dim=1).max()), "outside_mask_changed": outside}


__all__ = ["OBJECTIVES", "AttackRuns", "count_violations", "draw_runs", "footprint_touch", "patch_pgd",
           "sticker_violations"]
