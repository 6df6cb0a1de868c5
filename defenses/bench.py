"""``pdn bench defense``: PatchVote inference vs PilotNet vs ART derandomized smoothing, and
certification from votes, measured side by side in one process."""

from __future__ import annotations

from typing import Any

import torch


def bench_defense(model: torch.nn.Module | None = None, batch: int = 64, repeats: int = 5,
                  cert_frames: int = 100_000, device: str = "cpu", art: bool = True) -> dict[str, Any]:
    """Images/s of PatchVote and PilotNet inference (interleaved, best of ``repeats``, batch ``batch``,
    each in its faster memory layout), certification frames/s from votes (2 % patch, the model's
    aggregator), and ART derandomized smoothing's images/s (column ablation, every column
    position evaluated, as its certificate needs).

    ``patchvote_road`` (the road-sticker preset, untrained: speed does not depend on the weights) is timed beside
    them.

    Returns:
        ``patchvote_img_s``, ``pilotnet_img_s``, ``patchvote_over_pilotnet``, ``road_img_s``,
        ``road_over_pilotnet``, ``certify_frames_s``,
        ``art_ds_img_s`` (None when ``art`` is False), ``patchvote_over_art_ds``.
    """
    from defenses.certify import certify_votes
    from defenses.regions import parse_patch, touch_matrix
    from drivenet_patch.bench.timing import best_rate, best_rates
    from drivenet_patch.models import create_model

    g = torch.Generator().manual_seed(0)
    pv = model if model is not None else create_model("patchvote", generator=g)
    pv = pv.to(device).eval()
    pilot = create_model("pilotnet", generator=g).to(device).eval()
    # the road-sticker preset (votes that read the threat's context) beside them, at the same input size
    road = create_model("patchvote_road", generator=g, input_size=tuple(pv.input_size)).to(device).eval()
    x = torch.rand(batch, 3, *pv.input_size, generator=g).to(device)
    def runner(m: torch.nn.Module, fmt: torch.memory_format) -> Any:
        xi = x.contiguous(memory_format=fmt)

        def run() -> None:
            m.to(memory_format=fmt)  # weights only: negligible next to 10 forward passes
            with torch.no_grad():
                for _ in range(10):
                    m(xi)

        return run

    layouts = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
    names = ("patchvote", "pilotnet", "road")
    fns = {f"{n}_{lay}": runner(m, fmt) for n, m in zip(names, (pv, pilot, road), strict=True)
           for lay, fmt in layouts.items()}
    # all six interleaved (see best_rates); each model is judged in its faster layout
    rates = best_rates(fns, dict.fromkeys(fns, 10 * batch), repeats=repeats)
    best = {n: max(layouts, key=lambda lay, n=n: rates[f"{n}_{lay}"]) for n in names}
    final = {n: rates[f"{n}_{best[n]}"] for n in best}
    result: dict[str, Any] = {
        "patchvote_img_s": round(final["patchvote"], 1),
        "pilotnet_img_s": round(final["pilotnet"], 1),
        "patchvote_over_pilotnet": round(final["patchvote"] / final["pilotnet"], 3),
        "road_img_s": round(final["road"], 1),
        "road_over_pilotnet": round(final["road"] / final["pilotnet"], 3),
        "layouts": best,
        "batch": batch,
    }
    # certification from votes
    votes = torch.randn(cert_frames, pv.n_regions, generator=g)
    touch = touch_matrix(pv.layout, parse_patch("2%", pv.input_size))
    valid = pv.valid.cpu()

    def certify() -> None:
        certify_votes(votes, touch, valid, pv.aggregate_name, trim=pv.trim, bin_deg=pv.bin_deg, tau_deg=pv.tau_deg)

    result["certify_frames_s"] = round(best_rate(certify, cert_frames, repeats=3), 1)
    result["certify_aggregate"] = pv.aggregate_name
    result["art_ds_img_s"] = None
    if art:
        try:
            from defenses.art_ds import art_ds_img_s
        except ImportError:  # the ART baseline module is optional here
            art_ds_img_s = None
        if art_ds_img_s is not None:
            ds = art_ds_img_s(input_size=tuple(pv.input_size))
            result["art_ds_img_s"] = round(ds, 2)
            result["patchvote_over_art_ds"] = round(final["patchvote"] / ds, 1)
    return result


def bench_monitor(model: torch.nn.Module | None = None, roads: int = 10, steps: int = 30, repeats: int = 3,
                  cert_frames: int = 100_000, seed: int = 10_000) -> dict[str, Any]:
    """The runtime monitor's cost: closed-loop step time with and without it, and the vehicle-side certifier.

    The two drives (the same ``roads`` held-out roads, ``steps`` steps, fallback ``none`` so both
    drive identically) are timed interleaved, best of ``repeats`` (see
    :func:`drivenet_patch.bench.timing.best_rates`). The certifier (:mod:`drivenet_patch.deploy.onboard`,
    numpy) is timed on ``cert_frames`` frames of votes at once and on one frame per call (a car's
    per-frame latency).

    Returns:
        ``step_ms``, ``monitored_step_ms``, ``monitor_overhead_pct``, ``onboard_frames_s``
        (batched), ``onboard_frame_us`` (one frame per call), ``torch_certify_frames_s``.
    """
    import time

    import numpy as np

    from defenses.certify import certify_votes
    from defenses.monitor import CertifiedMonitor
    from drivenet_patch.bench.timing import best_rate, best_rates
    from drivenet_patch.driving.drive import ClosedLoopConfig, drive_closed_loop, make_roads
    from drivenet_patch.models import create_model
    from drivenet_patch.world.camera import Camera

    g = torch.Generator().manual_seed(0)
    pv = (model if model is not None else create_model("patchvote", generator=g)).eval()
    cfg = ClosedLoopConfig()
    road_list = make_roads(roads, steps, cfg, seed)
    camera = Camera().with_size(*pv.input_size)

    def plain() -> None:
        drive_closed_loop(pv, road_list, steps, camera, cfg, np.random.default_rng(0))

    mon = CertifiedMonitor(pv, delta_deg=2.0)  # built once, as on the car (its touch sets come with the model)

    def monitored() -> None:
        drive_closed_loop(mon.policy, road_list, steps, camera, cfg, np.random.default_rng(0), monitor=mon)

    rates = best_rates({"plain": plain, "monitored": monitored}, {"plain": steps, "monitored": steps}, repeats)
    result: dict[str, Any] = {"roads": roads, "steps": steps, "step_ms": round(1e3 / rates["plain"], 3),
                              "monitored_step_ms": round(1e3 / rates["monitored"], 3),
                              "monitor_overhead_pct": round(100 * (rates["plain"] / rates["monitored"] - 1), 2)}
    votes = (torch.randn(cert_frames, pv.n_regions, generator=g) * 0.5).numpy()
    result["onboard_frames_s"] = round(best_rate(lambda: mon.certifier(votes), cert_frames, repeats=3), 1)
    one = votes[:1]
    t0 = time.perf_counter()
    for _ in range(1000):
        mon.certifier(one)
    result["onboard_frame_us"] = round((time.perf_counter() - t0) * 1e3, 1)  # per call: 1000 calls -> us
    touch = pv.touch("2%")
    tv = torch.from_numpy(votes)
    result["torch_certify_frames_s"] = round(best_rate(
        lambda: certify_votes(tv, touch, pv.valid, pv.aggregate_name, trim=pv.trim, bin_deg=pv.bin_deg,
                              tau_deg=pv.tau_deg), cert_frames, repeats=3), 1)
    result["aggregate"] = pv.aggregate_name
    return result


__all__ = ["bench_defense", "bench_monitor"]
