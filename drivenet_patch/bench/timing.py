"""Benchmarks behind ``pdn bench``: measured side by side in one process, best of several repeats.

A shared machine is noisy, so every figure is the best of ``repeats`` timed runs after a warm-up;
ratios are taken between runs made in the same process.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from drivenet_patch.world.camera import Camera
from drivenet_patch.world.render import Lighting, Renderer
from drivenet_patch.world.road import Road


def best_rates(fns: dict[str, Callable[[], Any]], items: dict[str, int], repeats: int = 3) -> dict[str, float]:
    """Items per second of several functions measured *interleaved* (a, b, a, b, ...; best of
    ``repeats`` each, after one warm-up call each), so that a ratio between them is not skewed by
    the machine's load drifting between two separate measurements."""
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: items[k] / best[k] for k in fns}


def best_rate(fn: Callable[[], Any], items: int, repeats: int = 3) -> float:
    """Items per second of ``fn`` (best of ``repeats`` runs, after one warm-up call)."""
    return best_rates({"fn": fn}, {"fn": items}, repeats)["fn"]


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def bench_world(frames: int = 512, compile: bool = True, device: str = "cpu", repeats: int = 2) -> dict[str, Any]:
    """Frames per second of batched rendering (float frames, and uint8 frames as written to datasets,
    measured interleaved), best of ``repeats`` after a warm-up.

    Keys ``fps_<H>x<W>`` hold the fastest mode measured; per-mode figures sit beside them. The defaults keep
    the whole benchmark, both compilations included, within about two minutes on two cores.
    """
    road = Road.generate(0, 1000.0)
    rng = np.random.default_rng(0)
    s = rng.uniform(10.0, 900.0, frames)
    poses = np.stack([road.pose_at(float(v), -1.75 + float(o), float(h))
                      for v, o, h in zip(s, rng.uniform(-0.8, 0.8, frames), rng.uniform(-0.05, 0.05, frames))])
    light = Lighting.sample(rng, frames, device)
    result: dict[str, Any] = {"frames": frames, "device": device, "machine": machine()}
    modes = [False, True] if compile else [False]
    for size in ((66, 200), (160, 320)):
        key = f"{size[0]}x{size[1]}"
        best = 0.0
        for comp in modes:
            r = Renderer(Camera().with_size(*size), device=device, chunk=32, compile=comp)
            tag = "compiled" if comp else "eager"
            t0 = time.perf_counter()
            r.render(road, poses[:32], light.index(slice(0, 32)))
            if comp:
                result[f"compile_s_{key}"] = round(time.perf_counter() - t0, 1)
            rates = best_rates({"float": lambda r=r: r.render(road, poses, light),
                                "uint8": lambda r=r: r.render_uint8(road, poses, light)},
                               {"float": frames, "uint8": frames}, repeats)
            fps, fps_u8 = rates["float"], rates["uint8"]
            result[f"fps_{key}_{tag}"] = round(fps, 1)
            result[f"fps_{key}_{tag}_uint8"] = round(fps_u8, 1)
            best = max(best, fps, fps_u8)
        result[f"fps_{key}"] = round(best, 1)
    return result


def ratio_table(parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratios of ``pdn bench``: each one from two measurements taken side by side in one run.

    Args:
        parts: ``{"world": bench_world(...), "train": bench_train(...), "attack": bench_attack(...),
            "defense": bench_defense(...), "models": bench_models(...)}`` (missing parts or keys are
            skipped).

    Returns:
        Rows ``{"measure", "value", "detail"}``.
    """
    rows: list[dict[str, Any]] = []

    def add(measure: str, num: Any, den: Any, detail: str) -> None:
        if isinstance(num, (int, float)) and isinstance(den, (int, float)) and den > 0:
            rows.append({"measure": measure, "value": float(num) / float(den), "detail": detail})

    w, t, a, d, m = (parts.get(k, {}) for k in ("world", "train", "attack", "defense", "models"))
    for size in ("66x200", "160x320"):
        add(f"world {size}: torch.compile / eager renderer", w.get(f"fps_{size}_compiled"),
            w.get(f"fps_{size}_eager"), f"{_num(w.get(f'fps_{size}_compiled'))} vs {_num(w.get(f'fps_{size}_eager'))} frames/s")
    add("train: end-to-end / bare step", t.get("train_e2e_img_s"),
        t.get("train_step_img_s_interleaved"),
        f"{_num(t.get('train_e2e_img_s'))} vs {_num(t.get('train_step_img_s_interleaved'))} img/s")
    add("inference: achieved / matmul GFLOP/s", t.get("infer_gflops"), t.get("matmul_gflops"),
        f"{_num(t.get('infer_img_s'))} img/s = {_num(t.get('infer_gflops'))} GFLOP/s of {_num(t.get('matmul_gflops'))}")
    add("attack: our sticker step speed / ART AdversarialPatchPyTorch", a.get("art_s_per_step"),
        a.get("ours_s_per_step"), f"{_num(a.get('ours_s_per_step'))} vs {_num(a.get('art_s_per_step'))} s/step")
    add("attack: ART step / the model's own forward + backward (bound on any speed-up)", a.get("art_s_per_step"),
        a.get("model_pass_s"), f"{_num(a.get('art_s_per_step'))} vs {_num(a.get('model_pass_s'))} s")
    add("attack: our deviation / ART's at equal steps", a.get("ours_dev_deg"), a.get("art_dev_deg"),
        f"{_num(a.get('ours_dev_deg'))} vs {_num(a.get('art_dev_deg'))} deg")
    add("defense: PatchVote / PilotNet inference (defended / undefended)", d.get("patchvote_img_s"),
        d.get("pilotnet_img_s"), f"{_num(d.get('patchvote_img_s'))} vs {_num(d.get('pilotnet_img_s'))} img/s")
    add("defense: PatchVote / ART derandomized smoothing inference", d.get("patchvote_img_s"),
        d.get("art_ds_img_s"), f"{_num(d.get('patchvote_img_s'))} vs {_num(d.get('art_ds_img_s'))} img/s")
    pd, pn = "patchdrive_160x320", "pilotnet_66x200"
    add("models: PatchDrive 160x320 / PilotNet 66x200 multiply-adds", m.get(f"{pd}_macs"),
        m.get(f"{pn}_macs"), f"{_mega(m.get(f'{pd}_macs'))} vs {_mega(m.get(f'{pn}_macs'))} M per image")
    add("models: PatchDrive 160x320 / PilotNet 66x200 time per image", m.get(f"{pn}_img_s"),
        m.get(f"{pd}_img_s"), f"{_num(m.get(f'{pd}_img_s'))} vs {_num(m.get(f'{pn}_img_s'))} img/s")
    return rows


def _num(x: Any) -> Any:
    """Four significant digits for a float in a table's detail column (other values unchanged)."""
    return f"{x:.4g}" if isinstance(x, float) else x


def _mega(n: Any) -> Any:
    return round(n / 1e6, 1) if isinstance(n, (int, float)) else n


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a benchmark result."""
    lines = [f"{'measure':<34} value", "-" * 48]
    for k, v in result.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        lines.append(f"{k:<34} {v}")
    return "\n".join(lines)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matmul: the practical compute ceiling of this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return best_rate(lambda: a @ b, 2 * n**3, repeats) / 1e9


#: ``bench_train``'s default models: PilotNet alone (the app layer adds the defended models).
DEFAULT_TRAIN_MODELS: tuple[tuple[str, dict[str, Any]], ...] = (("pilotnet", {}),)


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimiser step as ``pdn train`` takes it (a model's own ``training_loss`` when it has one, else MSE)."""
    own = getattr(model, "training_loss", None)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = own(x, y, "mse") if own is not None else torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
    return step


def _batches_for(fn: Callable[[], Any], seconds: float, most: int) -> int:
    """How many calls of ``fn`` (one train step) fill about ``seconds`` (6 .. ``most``), from 3 timed calls."""
    fn()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    per = (time.perf_counter() - t0) / 3
    return int(min(most, max(min(6, most), round(seconds / max(per, 1e-6)))))


def bench_train(batches: int | None = None, batch: int = 64, device: str = "cpu", repeats: int = 3,
                compile: bool = False, models: tuple[tuple[str, dict[str, Any]], ...] = DEFAULT_TRAIN_MODELS,
                data: str | None = None, seconds: float = 0.75, frames: int = 1024,
                ceiling_n: int = 2048) -> dict[str, Any]:
    """End-to-end training vs the bare train step, and inference, in images/s, for each model of ``models``
    (``(registry name, config)`` pairs), each pair measured side by side (see :func:`best_rates`).

    *Bare step*: forward, loss, backward and AdamW step on one fixed channels-last batch. *End to end*:
    the same steps fed by ``pdn train``'s own input pipeline (memory-mapped frames, balanced sampling,
    viewpoint shifts and flips, batched photometric jitter, prefetch thread) from ``data`` (a dataset
    folder) or ``frames`` world frames rendered into a temporary folder. Each side runs ``batches``
    steps, by default 6 to 30 (about ``seconds`` of the model's step), so the whole benchmark stays
    short on a small machine. ``compile`` adds PilotNet's ``torch.compile``'d bare step.

    Returns:
        ``models``: one object per model (``model``, ``layout`` or None, ``batches``, ``e2e_img_s``,
        ``bare_img_s``, ``e2e_over_bare``, ``infer_img_s``, ``macs``, ``infer_gflops``,
        ``train_gflops`` (3x the forward FLOPs per image), their shares of ``matmul_gflops``, and
        ``train_over_pilotnet`` / ``infer_over_pilotnet``); ``matmul_gflops``, the machine's 2048x2048
        float32 matmul rate (``ceiling_n`` a side); and PilotNet's figures under the keys ``pdn bench``'s ratio table reads.
    """
    import tempfile

    from drivenet_patch.data import open_dataset
    from drivenet_patch.data.synthesize import synthesize
    from drivenet_patch.models import count_macs, create_model
    from drivenet_patch.training.augment import Augmenter
    from drivenet_patch.training.config import TrainConfig
    from drivenet_patch.training.data import Subset, correction_horizon_s, prefetch, tensor_batches

    result: dict[str, Any] = {"batch": batch, "device": device, "machine": machine(),
                              "matmul_gflops": round(matmul_gflops(ceiling_n), 1)}
    rows: list[dict[str, Any]] = []
    datasets: dict[tuple[int, int], Subset] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in models:
            g = torch.Generator().manual_seed(0)
            model = create_model(name, generator=g, **cfg).to(device).to(memory_format=torch.channels_last)
            size = tuple(int(v) for v in model.input_size)
            if size not in datasets:
                folder = data
                if folder is None:
                    folder = f"{tmp}/{size[0]}x{size[1]}"
                    synthesize(folder, frames, seed=0, size=size, cameras=("center", "left", "right"),
                               progress=False)
                ds = open_dataset(folder, size=size)
                datasets[size] = Subset(ds, np.arange(len(ds)))
            train_set = datasets[size]
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            step = _train_step(model, opt)
            x = torch.rand(batch, 3, *size, generator=g).to(device).contiguous(memory_format=torch.channels_last)
            y = torch.randn(batch, generator=g).to(device)
            model.train()
            n = batches or _batches_for(lambda step=step, x=x, y=y: step(x, y), seconds, 30)
            tcfg = TrainConfig(model=name, batch=batch, samples_per_epoch=n * batch, device=str(device))
            augmenter = Augmenter(train_set.camera, train_set.crop, shift_m=tcfg.shift_m, rot_deg=tcfg.rot_deg,
                                  speed=10.0, horizon_s=correction_horizon_s(train_set, tcfg), photometric=False)
            runs = iter(range(10**6))

            def epoch(tcfg: TrainConfig = tcfg, augmenter: Augmenter = augmenter, train_set: Subset = train_set,
                      step: Callable = step, runs: Any = runs) -> None:
                for xi, yi in prefetch(tensor_batches(train_set, tcfg, next(runs), augmenter, device)):
                    step(xi, yi)

            fns = {"bare": lambda step=step, x=x, y=y, n=n: [step(x, y) for _ in range(n)], "e2e": epoch}
            rates = best_rates(fns, dict.fromkeys(fns, n * batch), repeats)
            model.eval()
            with torch.no_grad():
                ni = _batches_for(lambda m=model, x=x: m(x), seconds / 2, 120)
                infer = best_rate(lambda m=model, x=x, ni=ni: [m(x) for _ in range(ni)], ni * batch, repeats)
            macs = count_macs(model)
            layout = cfg.get("layout", getattr(model, "config", {}).get("layout"))
            row = {"model": name, "layout": layout, "config": dict(cfg), "batches": n,
                   "e2e_img_s": round(rates["e2e"], 1), "bare_img_s": round(rates["bare"], 1),
                   "e2e_over_bare": round(rates["e2e"] / rates["bare"], 3), "infer_img_s": round(infer, 1),
                   "macs": macs, "infer_gflops": round(infer * 2 * macs / 1e9, 1),
                   "train_gflops": round(rates["bare"] * 6 * macs / 1e9, 1)}
            rows.append(row)
            del model, opt
        for ds in datasets.values():
            ds.base.release()
    pilot = next((r for r in rows if r["model"] == "pilotnet"), None)
    for r in rows:
        if pilot is not None:
            r["train_over_pilotnet"] = round(r["e2e_img_s"] / pilot["e2e_img_s"], 3)
            r["infer_over_pilotnet"] = round(r["infer_img_s"] / pilot["infer_img_s"], 3)
    result["models"] = rows
    if pilot is not None:  # the keys of pdn bench's ratio table
        result.update({"train_e2e_img_s": pilot["e2e_img_s"], "train_step_img_s_interleaved": pilot["bare_img_s"],
                       "e2e_over_step": pilot["e2e_over_bare"], "infer_img_s": pilot["infer_img_s"],
                       "infer_gflops": pilot["infer_gflops"]})
    if compile and pilot is not None:
        result.update(_compiled_step(batch, device, repeats))
    # The ceiling measured again at the end (best of both): a busy moment must not make a share exceed 1.
    result["matmul_gflops"] = max(result["matmul_gflops"], round(matmul_gflops(ceiling_n), 1))
    for r in rows:
        r["infer_share_of_matmul"] = round(r["infer_gflops"] / result["matmul_gflops"], 3)
        r["train_share_of_matmul"] = round(r["train_gflops"] / result["matmul_gflops"], 3)
    return result


def train_breakdown(data: str | None = None, batches: int = 30, batch: int = 64, frames: int = 1024,
                    device: str = "cpu") -> dict[str, float]:
    """Where one PilotNet default-recipe training batch spends its time, stage by stage, run one after
    the other on this thread (no prefetch): milliseconds per batch of each stage of the input pipeline
    (``gather`` the memory-mapped uint8 frames, ``warp_flip`` the viewpoint shifts and flips,
    ``float_jitter`` the float conversion with the batched photometric jitter, fused on the CPU as in
    ``pdn train``) and of the step (``forward``,
    ``backward``, ``optimizer``), averaged over ``batches`` after one warm-up epoch of them."""
    import tempfile

    from drivenet_patch.data import open_dataset
    from drivenet_patch.data.synthesize import synthesize
    from drivenet_patch.models import create_model
    from drivenet_patch.training.augment import Augmenter
    from drivenet_patch.training.augment_batch import BatchPhotometric
    from drivenet_patch.training.config import TrainConfig
    from drivenet_patch.training.data import Subset, correction_horizon_s, device_frames

    cfg = TrainConfig(batch=batch)
    model = create_model("pilotnet", generator=torch.Generator().manual_seed(0)).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    photo, gen = BatchPhotometric(), torch.Generator().manual_seed(0)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = data
        if folder is None:
            folder = f"{tmp}/world"
            synthesize(folder, frames, seed=0, cameras=("center", "left", "right"), progress=False)
        ds = open_dataset(folder, size=tuple(model.input_size))
        train_set = Subset(ds, np.arange(len(ds)))
        aug = Augmenter(train_set.camera, train_set.crop, shift_m=cfg.shift_m, rot_deg=cfg.rot_deg, speed=10.0,
                        horizon_s=correction_horizon_s(train_set, cfg), photometric=False)
        steering = train_set.steering
        totals: dict[str, float] = {}
        for rep in range(2):  # the first pass warms the page cache and the allocator
            rng = np.random.default_rng(rep)
            totals = dict.fromkeys(("gather", "warp_flip", "float_jitter", "forward", "backward",
                                    "optimizer"), 0.0)
            for _ in range(batches):
                idx = rng.integers(0, len(train_set), batch)
                marks = [time.perf_counter()]
                frames_u8 = train_set.frames(idx)
                marks.append(time.perf_counter())
                frames_u8, labels = aug(frames_u8, steering[idx], rng)
                marks.append(time.perf_counter())
                if dev.type == "cpu":  # the training pipeline's fused path
                    x = photo.apply_uint8(frames_u8, photo.draw(gen, len(frames_u8)))
                else:
                    x = photo(device_frames(frames_u8, dev), gen, torch.channels_last)
                y = torch.from_numpy(labels.astype(np.float32)).to(dev)
                sync()
                marks.append(time.perf_counter())
                loss = torch.nn.functional.mse_loss(model(x), y)
                sync()
                marks.append(time.perf_counter())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                sync()
                marks.append(time.perf_counter())
                opt.step()
                sync()
                marks.append(time.perf_counter())
                for k, (a, b) in zip(totals, pairwise(marks), strict=True):
                    totals[k] += b - a
        ds.release()
    out = {k: round(1000 * v / batches, 2) for k, v in totals.items()}
    out["pipeline"] = round(sum(out[k] for k in ("gather", "warp_flip", "float_jitter")), 2)
    out["step"] = round(sum(out[k] for k in ("forward", "backward", "optimizer")), 2)
    return out


def _compiled_step(batch: int, device: str, repeats: int) -> dict[str, Any]:
    """PilotNet's bare train step eager and through ``torch.compile`` (channels-last), side by side; the
    one-off compile time apart."""
    from drivenet_patch.models import create_model

    g = torch.Generator().manual_seed(0)
    model = create_model("pilotnet", generator=g).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, *model.input_size, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randn(batch, generator=g).to(device)
    compiled = torch.compile(model)
    eager, fast = _train_step(model, opt), _train_step(compiled, opt)
    t0 = time.perf_counter()
    fast(x, y)
    out: dict[str, Any] = {"compile_s": round(time.perf_counter() - t0, 1)}
    rates = best_rates({"eager": lambda: [eager(x, y) for _ in range(5)],
                        "compiled": lambda: [fast(x, y) for _ in range(5)]}, {"eager": 5 * batch, "compiled": 5 * batch},
                       repeats)
    out["train_step_img_s_eager"] = round(rates["eager"], 1)
    out["train_step_img_s_compiled"] = round(rates["compiled"], 1)
    return out


def bench_models(batch: int = 64, device: str = "cpu", repeats: int = 5, onnx: bool = False) -> dict[str, Any]:
    """Inference cost of PatchDrive beside PilotNet: multiply-adds per image and images/s.

    PilotNet at its own 66x200, PilotNet at 160x320 and PatchDrive at 160x320 (``k=8``, ``patch=32``),
    untrained (cost does not depend on the weights), eval mode, no grad, channels-last, measured
    interleaved (see :func:`best_rates`). Keys ``<name>_macs``, ``<name>_params``, ``<name>_img_s``.

    With ``onnx`` on a CPU and the deploy extra installed, each model (plus ResNet-18 and PatchVote
    at 66x200, PyTorch and ONNX Runtime) is also exported to ONNX and run in ONNX Runtime on the
    same batch with the same number of threads as torch, interleaved with the PyTorch runs:
    ``<name>_ort_img_s`` and ``<name>_ort_max_diff_deg`` (max |ONNX Runtime - PyTorch| on the batch).
    """
    from drivenet_patch.models import count_parameters, create_model
    from drivenet_patch.models.patchdrive import model_macs

    g = torch.Generator().manual_seed(0)
    models = {"pilotnet_66x200": create_model("pilotnet", generator=g),
              "pilotnet_160x320": create_model("pilotnet", input_size=(160, 320), generator=g),
              "patchdrive_160x320": create_model("patchdrive", generator=g)}
    ort_ok = onnx and torch.device(device).type == "cpu" and _has_onnxruntime()
    if ort_ok:
        models["resnet18_66x200"] = create_model("resnet18", generator=g)
        models["patchvote_66x200"] = create_model("patchvote", generator=g)
    result: dict[str, Any] = {"batch": batch, "device": device, "machine": machine()}
    fns: dict[str, Callable[[], Any]] = {}
    for name, m in models.items():
        result[f"{name}_macs"] = model_macs(m)
        result[f"{name}_params"] = count_parameters(m)
        m = m.to(device).eval().to(memory_format=torch.channels_last)
        x = torch.rand(batch, 3, *m.input_size, generator=g).to(device).contiguous(memory_format=torch.channels_last)

        def infer(m: torch.nn.Module = m, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                m(x)
                m(x)
            if x.is_cuda:
                torch.cuda.synchronize()
        fns[name] = infer
        if ort_ok:
            fns[f"{name}_ort"] = _ort_infer(m, x, batch, result, name)
    rates = best_rates(fns, dict.fromkeys(fns, 2 * batch), repeats)
    result.update({f"{k}_img_s": round(v, 1) for k, v in rates.items()})
    for name in models:
        if f"{name}_ort" in rates:
            result[f"{name}_ort_over_torch"] = round(rates[f"{name}_ort"] / rates[name], 3)
    for name in ("pilotnet_66x200", "pilotnet_160x320", "patchdrive_160x320"):  # relative to PilotNet at 66x200
        result[f"{name}_macs_over_pilotnet_66x200"] = round(result[f"{name}_macs"] / result["pilotnet_66x200_macs"], 3)
        result[f"{name}_time_over_pilotnet_66x200"] = round(rates["pilotnet_66x200"] / rates[name], 3)
    return result


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _ort_infer(model: torch.nn.Module, x: torch.Tensor, batch: int, result: dict[str, Any], name: str
               ) -> Callable[[], Any]:
    """Export ``model`` with a fixed batch, load it in ONNX Runtime with torch's thread count; record its error."""
    import tempfile

    from drivenet_patch.deploy.export import compare, export_onnx, run_session, session

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, f"{tmp}/m.onnx", batch=batch)
        sess = session(f"{tmp}/m.onnx", threads=torch.get_num_threads())
    xc = x.contiguous()
    result[f"{name}_ort_max_diff_deg"] = float(f"{compare(model, sess, xc)['steering']:.3g}")
    xn = xc.numpy()

    def infer() -> None:
        run_session(sess, xn)
        run_session(sess, xn)
    return infer
