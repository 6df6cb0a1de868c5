"""The certificate as a runtime safety monitor for closed-loop driving (``pdn drive --monitor``).

At every frame the PatchVote model's region votes give a certified steering interval against the
model's default threat (a pixel patch of 2% of the input; a physical sticker threat would be
another set of touch sets, see :mod:`drivenet_patch.deploy.onboard`): no sticker within the threat can
push the steering out of ``[lo, hi]``. A frame is **verified** when the interval is finite and at
most ``delta`` degrees wide: its steering is then proven to be within ``delta`` of what any
attacked frame would give. Otherwise a fallback may act:

- ``none``: only log;
- ``slow``: drive at ``slow_factor`` times the speed while the frame is unverified;
- ``hold``: keep the last verified steering for at most ``hold_s`` seconds, then follow the model.

A frame with a NaN or infinite pixel or vote is never verified; the log's ``unverified_reason`` column
says why each unverified frame is (``non-finite pixel``, ``non-finite vote``, ``not certified``,
``wider than delta``; empty when verified).

The interval is computed by the vehicle-side certifier (:mod:`drivenet_patch.deploy.onboard`, numpy),
as a car would, from the votes of the one forward pass that also gives the steering: the monitor
is the policy (:meth:`CertifiedMonitor.policy`) and the drive loop's :class:`StepMonitor`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from defenses.patchvote import PatchVote
from drivenet_patch.deploy.onboard import Certifier, certificate_metadata, input_faults, verified
from drivenet_patch.driving.drive import MonitorStep
from drivenet_patch.safety.errors import PDNError

FALLBACKS = ("none", "slow", "hold")
RECORD_COLUMNS = ("cert_lo", "cert_hi", "verified", "fallback", "unverified_reason")


class CertifiedMonitor:
    """Certified interval per frame, verification against ``delta_deg`` and a fallback.

    Args:
        model: a PatchVote model (eval mode).
        delta_deg: a frame is verified when its interval is at most this wide.
        patch: the pixel-patch threat (``"2%"``, ``"16x16"``), the model's default.
        fallback: ``none``, ``slow`` or ``hold``.
        slow_factor: speed multiplier of ``slow`` while unverified, in (0, 1].
        hold_s: longest time ``hold`` keeps a verified steering.
    """

    def __init__(self, model: PatchVote, delta_deg: float, patch: str = "2%", fallback: str = "none",
                 slow_factor: float = 0.5, hold_s: float = 1.0) -> None:
        if not isinstance(model, PatchVote):
            raise PDNError(f"model must be a PatchVote model (it certifies from region votes), got {type(model).__name__}")
        if not (math.isfinite(delta_deg) and delta_deg > 0):
            raise PDNError(f"delta_deg must be a number of degrees > 0, got {delta_deg}")
        if fallback not in FALLBACKS:
            raise PDNError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
        if not (math.isfinite(slow_factor) and 0 < slow_factor <= 1):
            raise PDNError(f"slow_factor must lie in (0, 1], got {slow_factor}")
        if not (math.isfinite(hold_s) and hold_s >= 0):
            raise PDNError(f"hold_s must be >= 0 seconds, got {hold_s}")
        self.model, self.delta, self.fallback = model, float(delta_deg), fallback
        self.slow_factor, self.hold_s = float(slow_factor), float(hold_s)
        threats = model.threat_touch_sets((patch,))
        self.threat = next(iter(threats))
        self.certifier = Certifier.from_metadata(certificate_metadata(
            model.n_regions, model.valid.tolist(), model.aggregate_name, model.trim, model.bin_deg, model.tau_deg,
            threats, self.threat))
        self._frames: torch.Tensor | None = None
        self._votes: np.ndarray | None = None
        self._held: np.ndarray | None = None  # (R,) last verified steering
        self._held_t: np.ndarray | None = None  # (R,) when it was verified

    def policy(self, frames: torch.Tensor) -> torch.Tensor:
        """Steering (R,) from one forward pass; keeps the votes for :meth:`step`."""
        with torch.no_grad():
            v = self.model.votes(frames)
        self._frames, self._votes = frames, v.detach().cpu().numpy()  # type: ignore[union-attr]
        return self.model.aggregate_votes(v)  # type: ignore[arg-type]

    def votes_of(self, frames: torch.Tensor) -> np.ndarray:
        if frames is not self._frames or self._votes is None:
            self.policy(frames)
        return self._votes  # type: ignore[return-value]

    def step(self, frames: torch.Tensor, command_deg: np.ndarray, t: float) -> MonitorStep:
        """Certify the step's frames and apply the fallback (see the module docstring)."""
        votes = self.votes_of(frames)
        pixels = frames.detach().flatten(1).isfinite().all(1).cpu().numpy()  # (R,) no NaN/inf pixel
        faults = np.where(pixels, input_faults(votes), "non-finite pixel")
        cert = self.certifier(votes)
        ok = verified(cert, self.delta) & (faults == "")
        reason = np.where(ok, "", np.where(faults != "", faults,
                                           np.where(cert.certified, "wider than delta", "not certified")))
        r = ok.shape[0]
        if self._held is None or self._held.shape[0] != r:
            self._held, self._held_t = np.full(r, np.nan), np.full(r, -np.inf)
        self._held = np.where(ok, command_deg, self._held)
        self._held_t = np.where(ok, t, self._held_t)
        command, scale = command_deg.copy(), np.ones(r)
        active = np.zeros(r, dtype=bool)
        if self.fallback == "slow":
            active = ~ok
            scale = np.where(active, self.slow_factor, 1.0)
        elif self.fallback == "hold":
            active = ~ok & (t - self._held_t <= self.hold_s + 1e-9) & np.isfinite(self._held)
            command = np.where(active, self._held, command)
        return MonitorStep(command, scale, {"cert_lo": cert.lo.astype(np.float64), "cert_hi": cert.hi.astype(np.float64),
                                            "verified": ok, "fallback": active,
                                            "unverified_reason": reason.astype("<U24")})


def summarize(log: pd.DataFrame) -> dict[str, Any]:
    """Monitor metrics of a drive log: shares of unverified frames (all, and with a sticker in view), fallback steps."""
    ok = log["verified"].to_numpy(bool)
    out: dict[str, Any] = {"unverified_share": float(1 - ok.mean()) if ok.size else float("nan"),
                           "fallback_steps": int(log["fallback"].to_numpy(bool).sum()),
                           "mean_width_deg": float(np.nanmean(np.where(ok, log["cert_hi"] - log["cert_lo"], np.nan)))
                           if ok.any() else float("nan")}
    if "unverified_reason" in log:  # why frames were unverified: e.g. {"wider than delta": 12, "non-finite pixel": 1}
        reasons = log["unverified_reason"].fillna("").astype(str)
        out["unverified_reasons"] = {str(k): int(v) for k, v in reasons[reasons != ""].value_counts().items()}
    if "sticker_in_view" in log:
        view = log["sticker_in_view"].to_numpy(bool)
        out["unverified_share_sticker_in_view"] = float(1 - ok[view].mean()) if view.any() else float("nan")
        out["unverified_share_no_sticker_in_view"] = float(1 - ok[~view].mean()) if (~view).any() else float("nan")
    return out


def plot_traces(logs: dict[str, pd.DataFrame], path: str | Path, road: int = 0,
                s_range: tuple[float, float] | None = None) -> Path:
    """Steering with its certified band over arc length, unverified frames shaded; one panel per log.

    Args:
        logs: label -> a monitored drive log (e.g. ``{"no sticker": a, "sticker": b}``).
        path: PNG (a PDF is written beside it).
        road: which road's approach to show.
        s_range: arc-length window in metres; default: the first 70 m driven on the road (the
            first sticker copy sits at 60 m).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drivenet_patch.storage.atomic import atomic_path

    fig, axes = plt.subplots(len(logs), 1, figsize=(8, 2.6 * len(logs)), sharex=True, squeeze=False)
    for ax, (label, log) in zip(axes[:, 0], logs.items(), strict=True):
        on_road = log[log["road"] == road]
        lo_s, hi_s = s_range or (float(on_road["s"].min()), float(on_road["s"].min()) + 70.0)
        d = on_road[on_road["s"].between(lo_s, hi_s)]
        if d.empty:
            raise PDNError(f"monitor trace: road {road} has no steps in s = {lo_s:g}-{hi_s:g} m")
        s = d["s"].to_numpy()
        lo = np.clip(d["cert_lo"].to_numpy(), -30, 30)
        hi = np.clip(d["cert_hi"].to_numpy(), -30, 30)
        ax.fill_between(s, lo, hi, color="tab:blue", alpha=0.25, label="certified interval", step="mid")
        ax.plot(s, d["predicted_deg"], color="tab:blue", lw=1.2, label="model steering")
        ax.plot(s, d["command_deg"], color="k", lw=0.8, ls="--", label="executed")
        ax.plot(s, d["expert_deg"], color="tab:green", lw=0.8, label="expert")
        bad = ~d["verified"].to_numpy(bool)
        ds = np.median(np.diff(s)) if len(s) > 1 else 1.0
        for x in s[bad]:
            ax.axvspan(x - ds / 2, x + ds / 2, color="tab:red", alpha=0.15, lw=0)
        if "sticker_in_view" in d and d["sticker_in_view"].any():
            sv = s[d["sticker_in_view"].to_numpy(bool)]
            ax.axvline(sv.min(), color="tab:orange", lw=0.8)
            ax.axvline(sv.max(), color="tab:orange", lw=0.8)
        ax.set_ylim(max(-15, np.nanmin(lo) - 1), min(15, np.nanmax(hi) + 1))
        ax.set_ylabel("steering (deg)")
        ax.set_title(f"{label}: {100 * bad.mean():.0f}% of frames unverified (shaded)", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper left", ncol=4)
    axes[-1, 0].set_xlabel("arc length s (m); orange lines: sticker in view")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    with atomic_path(path.with_suffix(".pdf")) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


__all__ = ["FALLBACKS", "RECORD_COLUMNS", "CertifiedMonitor", "plot_traces", "summarize"]
