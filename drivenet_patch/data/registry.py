"""Dataset formats by name, format detection and one entry point, :func:`open_dataset`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from drivenet_patch.data.base import DriveDataset
from drivenet_patch.data.commaai import CommaAiDataset
from drivenet_patch.data.sullychen import SullyChenDataset
from drivenet_patch.data.synth import SynthDataset
from drivenet_patch.data.udacity_ch2 import UdacityCh2Dataset
from drivenet_patch.data.udacity_sim import UdacitySimDataset
from drivenet_patch.safety.errors import PDNError

#: The loaders, in detection order. A new format is a DriveDataset subclass that declares ``format``,
#: ``log_names`` (and ``detect`` / ``names_log`` when a file name is not enough), plus its line here.
LOADERS: tuple[type[DriveDataset], ...] = (
    SynthDataset, UdacitySimDataset, UdacityCh2Dataset, SullyChenDataset, CommaAiDataset,
)
FORMATS: dict[str, type[DriveDataset]] = {cls.format: cls for cls in LOADERS}


def _valid() -> str:
    return ", ".join(FORMATS)


def format_names() -> list[str]:
    """The registered format names, as ``--format`` accepts them (besides ``auto``)."""
    return list(FORMATS)


def detect_format(path: str | Path) -> str:
    """Name of the dataset format at ``path`` (a dataset folder or its log file).

    Rules: ``images.npy`` + ``meta.json`` -> ``synth``; ``driving_log.csv`` -> ``udacity-sim``;
    ``interpolated.csv`` -> ``udacity-ch2``; ``data.txt`` -> ``sullychen``; ``camera/`` and
    ``log/`` folders with ``.h5`` files (or a ``camera/<name>.h5`` file) -> ``commaai``.

    Raises:
        PDNError: when the path does not exist, matches no format, or matches several.
    """
    p = Path(path)
    if p.is_file():
        for cls in LOADERS:
            if cls.names_log(p):
                return cls.format
        raise PDNError(
            f"{p}: cannot tell the dataset format from this file name; pass a format, one of: {_valid()}"
        )
    if not p.is_dir():
        raise PDNError(f"{p}: no such file or folder")
    found = [cls.format for cls in LOADERS if cls.detect(p)]
    if len(found) == 1:
        return found[0]
    if found:
        raise PDNError(f"{p}: looks like several formats ({', '.join(found)}); pass one explicitly")
    raise PDNError(
        f"{p}: no known dataset here (looked for images.npy+meta.json, driving_log.csv, interpolated.csv, "
        f"data.txt, camera/+log/ with .h5); pass a format, one of: {_valid()}"
    )


def open_dataset(
    path: str | Path, format: str = "auto", size: tuple[int, int] | None = None, **options: Any
) -> DriveDataset:
    """Open a dataset of any supported format.

    Args:
        path: dataset folder or log file.
        format: ``"auto"`` (see :func:`detect_format`) or one of :data:`FORMATS`.
        size: output frame size ``(H, W)``; ``None`` = the format's default ((66, 200) for real
            logs; a synth dataset is stored at its own size and cannot be resized here).
        **options: the loader's keyword options, e.g. ``cameras=("center", "left", "right")``,
            ``steering_ratio=15.0``, ``crop=CropResize(...)``, ``allow_outside=True``.

    Returns:
        A :class:`DriveDataset` yielding uint8 (H, W, 3) RGB frames and road-wheel degrees.

    Raises:
        PDNError: unknown format or option, or any bad input the loader finds.
    """
    name = str(format).strip().lower().replace("_", "-")
    if name == "auto":
        name = detect_format(path)
    cls = FORMATS.get(name)
    if cls is None:
        raise PDNError(f"unknown dataset format {format!r}; valid formats: auto, {_valid()}")
    p = Path(path)
    if cls is SynthDataset:
        allow_outside = bool(options.pop("allow_outside", False))  # its files may be symlinks out of the folder
        if options:
            raise PDNError(f"format 'synth' takes no options, got {', '.join(sorted(options))}")
        ds = SynthDataset(p.parent if p.is_file() else p, allow_outside=allow_outside)
        if size is not None and tuple(size) != tuple(ds.size):
            raise PDNError(
                f"{p}: synth frames are stored at {ds.size[0]}x{ds.size[1]}, cannot open at {size[0]}x{size[1]}"
            )
        return ds
    allowed = [
        k
        for k, v in inspect.signature(cls.__init__).parameters.items()
        if v.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise PDNError(f"format {name!r} has no option {unknown[0]!r}; its options: {', '.join(allowed)}")
    if size is not None:
        options["size"] = (int(size[0]), int(size[1]))
    return cls(p, **options)
