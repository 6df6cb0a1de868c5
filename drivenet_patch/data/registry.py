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
from drivenet_patch.errors import PDNError

FORMATS: dict[str, type[DriveDataset]] = {
    "synth": SynthDataset,
    "udacity-sim": UdacitySimDataset,
    "udacity-ch2": UdacityCh2Dataset,
    "sullychen": SullyChenDataset,
    "commaai": CommaAiDataset,
}

# File name -> format, for a path that names the log itself.
_LOG_NAMES = {
    "driving_log.csv": "udacity-sim",
    "interpolated.csv": "udacity-ch2",
    "data.txt": "sullychen",
    "images.npy": "synth",
    "labels.csv": "synth",
    "meta.json": "synth",
}


def _valid() -> str:
    return ", ".join(FORMATS)


def _formats_in_dir(d: Path) -> list[str]:
    found = []
    # exists(), not is_file(): a FIFO in a log's place is found here and refused by the loader
    if (d / "images.npy").exists() and (d / "meta.json").exists():
        found.append("synth")
    if (d / "driving_log.csv").exists():
        found.append("udacity-sim")
    if (d / "interpolated.csv").exists():
        found.append("udacity-ch2")
    if (d / "data.txt").exists():
        found.append("sullychen")
    if (d / "camera").is_dir() and (d / "log").is_dir() and any((d / "camera").glob("*.h5")):
        found.append("commaai")
    return found


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
        if p.name in _LOG_NAMES:
            return _LOG_NAMES[p.name]
        if p.suffix == ".h5" and p.parent.name == "camera":
            return "commaai"
        raise PDNError(
            f"{p}: cannot tell the dataset format from this file name; pass a format, one of: {_valid()}"
        )
    if not p.is_dir():
        raise PDNError(f"{p}: no such file or folder")
    found = _formats_in_dir(p)
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
