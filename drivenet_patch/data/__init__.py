"""Datasets: the built-in driving world and real driving logs behind one interface.

Every dataset yields uint8 (H, W, 3) RGB frames at the model size and the steering label in
road-wheel degrees, positive = left. :func:`open_dataset` picks the loader from the folder's
contents; :func:`check_dataset` decodes everything and reports problems.
"""

from __future__ import annotations

from drivenet_patch.data.base import CropResize, DriveDataset
from drivenet_patch.data.check import check_dataset, format_report
from drivenet_patch.data.loaders import CommaAiDataset, SullyChenDataset, UdacityCh2Dataset, UdacitySimDataset
from drivenet_patch.data.registry import FORMATS, detect_format, open_dataset
from drivenet_patch.data.synth import SynthDataset

__all__ = [
    "FORMATS",
    "CommaAiDataset",
    "CropResize",
    "DriveDataset",
    "SullyChenDataset",
    "SynthDataset",
    "UdacityCh2Dataset",
    "UdacitySimDataset",
    "check_dataset",
    "detect_format",
    "format_report",
    "open_dataset",
]
