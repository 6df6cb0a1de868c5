"""The real-driving-log loaders, one module per format, gathered here.

=================  =======================  ==================================================
format             class                    source
=================  =======================  ==================================================
``udacity-sim``    :class:`UdacitySimDataset`  Udacity simulator ``driving_log.csv`` + ``IMG/``
``udacity-ch2``    :class:`UdacityCh2Dataset`  Udacity Challenge 2 ``interpolated.csv``
``sullychen``      :class:`SullyChenDataset`   SullyChen ``data.txt`` + JPEGs
``commaai``        :class:`CommaAiDataset`     comma.ai research ``camera/*.h5`` + ``log/*.h5``
=================  =======================  ==================================================

Units, signs and the assumptions behind them are in each module's docstring and in
``data/README.md``.
"""

from __future__ import annotations

from drivenet_patch.data.commaai import COMMA_CAMERA, CommaAiDataset
from drivenet_patch.data.sullychen import SULLY_CAMERA, SullyChenDataset
from drivenet_patch.data.udacity_ch2 import CH2_CAMERA, UdacityCh2Dataset
from drivenet_patch.data.udacity_sim import SIM_CAMERA, UdacitySimDataset

__all__ = [
    "CH2_CAMERA",
    "COMMA_CAMERA",
    "SIM_CAMERA",
    "SULLY_CAMERA",
    "CommaAiDataset",
    "SullyChenDataset",
    "UdacityCh2Dataset",
    "UdacitySimDataset",
]
