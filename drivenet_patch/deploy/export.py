"""ONNX export of steering models, and their check against PyTorch in ONNX Runtime.

The exported graph takes ``frames`` (B, 3, H, W) float32 RGB in [0, 1] (the normalisation is
inside, as in the library) and returns ``steering`` (B,) road-wheel degrees, positive = left.
A model may add outputs and metadata through two optional methods (duck typing, so the core
never imports a defense):

- ``export_outputs(x) -> dict[str, Tensor]``: named outputs in order (PatchVote: ``steering``,
  ``votes`` (B, N) and ``valid`` (B, N) bool);
- ``export_metadata() -> dict[str, str]``: extra ONNX metadata (PatchVote: the certificate's
  touch sets under :data:`drivenet_patch.deploy.onboard.CERT_KEY`).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. With torch 2.14 the
default is the dynamo exporter, which needs the extra ``onnxscript`` package; the TorchScript
exporter needs only ``onnx``, exports every registered model here (PilotNet, ResNet-18,
PatchDrive's top-k crops, PatchVote's region gather and sort-based aggregates) and gives
graphs whose outputs match PyTorch to ~1e-6 degrees. Not exportable: PatchVote's ``vote``
aggregate (``aten::searchsorted`` has no ONNX op); such a model exports its votes and mask
only, and the vehicle computes the aggregate from them (:mod:`drivenet_patch.deploy.onboard`).

``onnx`` and ``onnxruntime`` come with the ``deploy`` extra (``pip install -e '.[deploy]'``).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from drivenet_patch.models.base import use_mode
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.storage.atomic import atomic_path

DEFAULT_OPSET = 17
INPUT_NAME = "frames"
#: ONNX metadata keys every export carries.
CONFIG_KEY = "pdn.model_config"
INPUT_KEY = "pdn.input"
INPUT_DOC = "frames: float32 (B, 3, H, W) RGB in [0, 1]; steering: road-wheel degrees, positive = left"


def require(module: str) -> Any:
    """Import an optional deploy dependency or fail with one line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PDNError(f"{module} is not installed; install the deploy extra: pip install -e '.[deploy]'") from None


class _Outputs(nn.Module):
    """Wraps a model so that ``forward`` returns its named export outputs as a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(export_outputs(self.model, x).values())


def export_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named outputs a model exports: ``model.export_outputs(x)`` if it has one, else ``{"steering": model(x)}``."""
    fn = getattr(model, "export_outputs", None)
    return fn(x) if callable(fn) else {"steering": model(x)}


def export_onnx(model: nn.Module, path: str | Path, batch: int | None = None, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write ``model`` as an ONNX file (atomically) with its metadata.

    Args:
        model: a :class:`~drivenet_patch.models.base.SteeringModel` (put in eval mode for the
            export and restored after).
        path: the ``.onnx`` file.
        batch: a fixed batch size, or None for a dynamic batch axis.
        opset: ONNX opset (>= 13).

    Returns:
        ``{"path", "outputs", "input_size", "batch", "opset", "metadata_keys", "bytes"}``.

    Raises:
        PDNError: onnx missing, a bad opset or batch, or an operator ONNX cannot express.
    """
    onnx = require("onnx")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= 21:
        raise PDNError(f"opset must be an integer in [13, 21], got {opset!r}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise PDNError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    h, w = model.input_size
    x = torch.rand(batch or 2, 3, h, w, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with use_mode(model, False), torch.no_grad():
        names = list(export_outputs(model, x))
        dyn = None if batch else {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            try:
                torch.onnx.export(_Outputs(model), (x,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=names, dynamic_axes=dyn)
            except Exception as exc:  # an unsupported operator: one line naming it
                if type(exc).__name__ in ("UnsupportedOperatorError", "SymbolicValueError", "OnnxExporterError"):
                    raise PDNError(f"{getattr(model, 'name', 'model')} cannot be exported to ONNX: "
                                   f"{str(exc).splitlines()[0]}") from None
                raise
            proto = onnx.load(str(tmp))
            meta = {CONFIG_KEY: json.dumps(getattr(model, "config", {}), sort_keys=True), INPUT_KEY: INPUT_DOC}
            extra = getattr(model, "export_metadata", None)
            meta.update(extra() if callable(extra) else {})
            for key, value in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            proto.producer_name = "patchdrivenet"
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    return {"path": str(path), "outputs": names, "input_size": [h, w], "batch": batch or "dynamic", "opset": opset,
            "metadata_keys": sorted(meta), "bytes": path.stat().st_size}


def session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (sequential execution)."""
    ort = require("onnxruntime")
    if not Path(path).is_file():
        raise PDNError(f"path: {path} does not exist")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph types
        raise PDNError(f"cannot load {path} in ONNX Runtime: {str(exc).splitlines()[0]}") from None


def run_session(sess: Any, frames: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Named outputs of an ONNX Runtime session for (B, 3, H, W) frames in [0, 1]."""
    x = frames.detach().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    outs = sess.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    return dict(zip([o.name for o in sess.get_outputs()], outs, strict=True))


def compare(model: nn.Module, sess: Any, frames: torch.Tensor, batch: int | None = None) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| per floating output over ``frames`` (in chunks of ``batch``).

    Boolean outputs (PatchVote's mask) must match exactly: their entry is the count of mismatches.

    Raises:
        PDNError: an output (of ONNX Runtime or of PyTorch) holds NaN or an infinity: the check fails
            rather than report a difference of NaN (which would compare as no difference).
    """
    step = batch or frames.shape[0]
    worst: dict[str, float] = {}
    with use_mode(model, False), torch.no_grad():
        for i in range(0, frames.shape[0], step):
            x = frames[i : i + step]
            if batch and x.shape[0] != batch:
                break  # a fixed-batch graph takes only full batches
            ref = {k: v.cpu().numpy() for k, v in export_outputs(model, x).items()}
            got = run_session(sess, x)
            for k, r in ref.items():
                if r.dtype == np.bool_:
                    d = float((got[k] != r).sum())
                else:
                    for who, out in (("ONNX Runtime", got[k]), ("PyTorch", r)):
                        bad = int((~np.isfinite(out)).sum())
                        if bad:
                            raise PDNError(f"export check: {who}'s output {k!r} holds {bad} NaN or infinite "
                                           f"value(s) on held-out frames; the exported model is unusable "
                                           "(check its weights, e.g. with pdn eval)")
                    d = float(np.abs(got[k].astype(np.float64) - r.astype(np.float64)).max(initial=0.0))
                worst[k] = max(worst.get(k, 0.0), d)
    return worst


def ort_images_per_s(sess: Any, frames: torch.Tensor, repeats: int = 5) -> float:
    """ONNX Runtime inference images/s on one batch (best of ``repeats`` after a warm-up)."""
    x = np.ascontiguousarray(frames.cpu().numpy(), dtype=np.float32)
    sess.run(None, {INPUT_NAME: x})
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {INPUT_NAME: x})
        best = min(best, time.perf_counter() - t)
    return x.shape[0] / best


def world_frames(input_size: tuple[int, int], n: int = 32, seed: int = 10_000) -> torch.Tensor:
    """(n, 3, H, W) frames of a held-out procedural road (road seed ``seed``), for checking an export."""
    from drivenet_patch.world.camera import Camera
    from drivenet_patch.world.render import Lighting, Renderer
    from drivenet_patch.world.road import Road

    rng = np.random.default_rng([seed, 0xE4])
    road = Road.generate(int(seed), 600.0)
    s = np.sort(rng.uniform(20.0, 500.0, n))
    poses = np.stack([road.pose_at(float(v)) for v in s])
    poses[:, 1] += rng.uniform(-0.5, 0.5, n)  # off the lane centre, as the car will be
    poses[:, 2] += np.radians(rng.uniform(-3.0, 3.0, n))
    renderer = Renderer(Camera().with_size(*input_size))
    return torch.cat([renderer.render(road, poses[i : i + 1], Lighting.sample(rng, 1)).image for i in range(n)])


__all__ = ["CONFIG_KEY", "DEFAULT_OPSET", "INPUT_NAME", "compare", "export_onnx", "export_outputs",
           "ort_images_per_s", "run_session", "session", "world_frames"]
