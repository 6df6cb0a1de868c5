"""``pdn export``: a trained run folder -> an ONNX file, checked against PyTorch in ONNX Runtime.

The work is :mod:`drivenet_patch.deploy.export`'s; this module parses the flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drivenet_patch.app.cli.common import emit, load_run
from drivenet_patch.app.cli.flags import MAX_CHECK_FRAMES, OPSETS, check_batch, count
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.values import MAX_BATCH, bounded_int

DESCRIPTION = """\
Export a trained steering model (PilotNet, ResNet-18, PatchDrive, PatchVote) to ONNX for ONNX
Runtime or TensorRT on the vehicle. Input 'frames' float32 (B, 3, H, W) RGB in [0, 1]; output
'steering' (B,) road-wheel degrees, positive = left. PatchVote also exports its region 'votes'
(B, N) and 'valid' (B, N) mask, and carries the touch sets of its pixel-patch threats (2%, 1%,
5% of the input; 2% is the default) as JSON under the metadata key 'pdn.certificate', so that
drivenet_patch.deploy.onboard (numpy only) computes the certified interval on the car from the votes.
After writing, the file is run in ONNX Runtime (CPU) on held-out world frames and compared with
PyTorch. Needs the deploy extra: pip install -e '.[deploy]'.
"""


def parse_batch(text: str) -> int | None:
    """``dynamic`` -> None, else a batch size in ``[1, MAX_BATCH]``."""
    if text == "dynamic":
        return None
    try:
        return bounded_int("value", text, low=1, high=MAX_BATCH)
    except PDNError as exc:
        raise argparse.ArgumentTypeError(f"{str(exc).removeprefix('value = ')}: give 'dynamic' or a batch size from "
                                         f"1 to {MAX_BATCH:,}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Register ``pdn export`` on the top-level subparsers ``sub``."""
    c = sub.add_parser("export", help="export a trained model to ONNX and check it in ONNX Runtime",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.set_defaults(fn=cmd_export)
    c.add_argument("--model", required=True, help="run folder (or model .safetensors with config.json beside it)")
    c.add_argument("--out", required=True, help="the .onnx file to write")
    c.add_argument("--batch", type=parse_batch, default=None, help="'dynamic' (default) or a fixed batch size")
    c.add_argument("--opset", type=count(OPSETS[1], "an ONNX opset", low=OPSETS[0]), default=17,
                   help=f"ONNX opset, {OPSETS[0]} to {OPSETS[1]} (default 17)")
    c.add_argument("--check-frames", type=count(MAX_CHECK_FRAMES, "a number of frames", low=0), default=32, metavar="N",
                   help="held-out world frames compared in ONNX Runtime after the export (default 32; 0: skip)")
    c.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_export(args: argparse.Namespace) -> int:
    from drivenet_patch.deploy.export import compare, export_onnx, session, world_frames

    if Path(args.out).suffix.lower() != ".onnx":
        raise PDNError(f"--out: expected a .onnx file name, got {args.out!r}")
    if not 0 <= args.check_frames <= 4096:
        raise PDNError(f"--check-frames must lie in [0, 4096], got {args.check_frames}")
    model = load_run(args.model, "cpu")
    if args.batch is not None:
        check_batch("--batch", args.batch, model.input_size)
    result = export_onnx(model, args.out, batch=args.batch, opset=args.opset)
    result["model"] = str(args.model)
    text = f"wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB; outputs {', '.join(result['outputs'])})"
    if args.check_frames:
        n = args.check_frames if args.batch is None else max(args.batch, args.check_frames - args.check_frames % args.batch)
        frames = world_frames(model.input_size, n)
        diff = compare(model, session(args.out), frames, args.batch)
        result["check"] = {"frames": int(frames.shape[0]), "max_abs_diff": diff}
        text += "; ONNX Runtime vs PyTorch on held-out frames, max |diff|: " + ", ".join(
            f"{k} {v:.2g}" for k, v in diff.items())
    emit(result, args.json, text)
    return 0


cmd_export.out_is_file = True  # type: ignore[attr-defined]  # --out is an .onnx file, not a folder
