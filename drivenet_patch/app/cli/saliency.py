"""``pdn saliency``: VisualBackProp overlays of a trained model on a dataset.

For a patch-selecting model (PatchDrive) it shows the model's own saliency map with the
selected high-resolution patches outlined instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drivenet_patch.app.cli.common import add_format, emit
from drivenet_patch.app.cli.flags import MAX_SALIENCY_FRAMES, count


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``saliency`` to the ``pdn`` sub-command parsers ``sub``."""
    help_ = ("saliency overlays of a trained model on frames of a dataset (VisualBackProp; PatchDrive: "
             "its saliency map with the selected patches outlined)")
    c = sub.add_parser("saliency", help=help_, description=help_)
    c.add_argument("--model", required=True, help="run folder (model.safetensors + config.json) or .safetensors file")
    c.add_argument("--data", required=True, help="dataset folder or log file")
    c.add_argument("--out", required=True, type=Path, help="output folder for the PNGs and saliency.json")
    c.add_argument("--n", type=count(MAX_SALIENCY_FRAMES, "a number of frames"), default=16,
                   help=f"frames, spread evenly over the dataset (default 16; at most {MAX_SALIENCY_FRAMES:,})")
    add_format(c)
    c.add_argument("--device", default="cpu", help="torch device (default cpu)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(fn=cmd_saliency)


def cmd_saliency(args: argparse.Namespace) -> int:
    """Run ``pdn saliency``; returns the exit code (0)."""
    from drivenet_patch.analysis.saliency import save_saliency
    from drivenet_patch.data import open_dataset
    from drivenet_patch.models.checkpoint import load_model
    from drivenet_patch.storage.folders import prepare_output_folder

    model = load_model(args.model, device=args.device)
    dataset = open_dataset(args.data, format=args.format, size=model.input_size)
    prepare_output_folder(args.out, "saliency")
    result = save_saliency(model, dataset, args.out, n=args.n)
    summary = {"model": str(args.model), "data": str(args.data), "out": result["out"], "grid": result["grid"],
               "frames": result["frames"], "indices": result["indices"], "method": result["method"]}
    emit(summary, args.json, f"wrote {result['frames']} saliency overlays and {result['grid']}")
    return 0


cmd_saliency.out_kind = "saliency"  # type: ignore[attr-defined]  # --out's folder kind
