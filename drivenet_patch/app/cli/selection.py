"""``pdn selection`` (how many patches a patch model uses, and its cost) and ``pdn selection-study``
(the patch-selection study's table)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivenet_patch.app.cli.common import add_command as command
from drivenet_patch.app.cli.common import add_device_and_json, add_format, add_json, emit
from drivenet_patch.app.cli.flags import BATCH, FRAMES, check_batch


def cmd_selection(args: argparse.Namespace) -> int:
    from drivenet_patch.analysis.selection import inference_cost, selection_stats
    from drivenet_patch.data import open_dataset
    from drivenet_patch.models.checkpoint import load_model
    from drivenet_patch.models.patchdrive import has_patches
    from drivenet_patch.storage.atomic import write_json

    model = load_model(args.model, device=args.device)
    check_batch("--batch", args.batch, model.input_size)
    result: dict[str, Any] = {"model": str(args.model), "name": model.name,
                              "input_size": list(model.input_size)}
    if has_patches(model):
        dataset = open_dataset(args.data, format=args.format, size=model.input_size)
        result.update(selection_stats(model, dataset, n=args.frames))
        result["data"] = str(args.data)
    result.update(inference_cost(model, batch=args.batch))
    if Path(args.model).is_dir():  # beside the weights, for the report's model table
        write_json(Path(args.model) / "selection.json", result)
    text = (f"{model.name}: {result['macs'] / 1e6:.1f} M MACs, {result['ms_per_image']:.3f} ms/image"
            + (f"; effective patches {result['effective_patches']:.2f} of {result['k']} (fusion "
               f"{result['effective_patches_fusion']:.2f}) over {result['n_frames']} frames"
               if "k" in result else ""))
    emit(result, args.json, text)
    return 0


def cmd_selection_study(args: argparse.Namespace) -> int:
    from drivenet_patch.analysis.selection_study import write_study_table

    result = write_study_table(args.results)
    emit(result, args.json, Path(result["table_md"]).read_text())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``selection`` and ``selection-study`` to the ``pdn`` sub-commands ``sub``."""
    c = command(sub, "selection", "how many of its patches a patch model uses (effective patches over a "
                "dataset) and what one image costs; writes RUN/selection.json", cmd_selection)
    c.add_argument("--model", required=True, help="run folder (or model .safetensors with config.json beside it)")
    c.add_argument("--data", required=True, help="dataset folder or log file (frames to measure the selection on)")
    add_format(c)
    c.add_argument("--frames", type=FRAMES, default=512, help="frames spread over the dataset (default 512)")
    c.add_argument("--batch", type=BATCH, default=64, help="batch of the timed forward pass (default 64)")
    add_device_and_json(c)

    c = command(sub, "selection-study", "the patch-selection study's table (make patchdrive-selection-study) from "
                "its results folder; writes table.csv and table.md there", cmd_selection_study)
    c.add_argument("--results", required=True, type=Path, help="the study's results folder (*_eval.json, ...)")
    add_json(c)
