"""Steering models: a small registry of PilotNet variants and a ResNet-18 regressor.

Every model maps float32 (B, 3, H, W) RGB images in [0, 1] to (B,) steering angles in
road-wheel degrees (positive = left); input normalisation is a layer inside the model.

    >>> from drivenet_patch.models import create_model, list_models
    >>> model = create_model("pilotnet", generator=torch.Generator().manual_seed(0))  # doctest: +SKIP

The package imports its submodules (and torch) on first use of a name, so that importing it
(as the command line does to register its commands) keeps ``pdn --help`` fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ColorNorm": "base",
    "SaliencyStage": "base",
    "SteeringModel": "base",
    "count_macs": "base",
    "count_parameters": "base",
    "use_mode": "base",
    "PilotNet": "pilotnet",
    "ResNetSteering": "resnet",
    "create_model": "registry",
    "list_models": "registry",
    "model_defaults": "registry",
    "model_from_config": "registry",
    "parse_input_size": "registry",
    "parse_model_args": "registry",
    "register_model": "registry",
}

__all__ = [
    "ColorNorm",
    "PilotNet",
    "ResNetSteering",
    "SaliencyStage",
    "SteeringModel",
    "count_macs",
    "count_parameters",
    "create_model",
    "list_models",
    "model_defaults",
    "model_from_config",
    "parse_input_size",
    "parse_model_args",
    "register_model",
    "use_mode",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from drivenet_patch.models.base import (
        ColorNorm,
        SaliencyStage,
        SteeringModel,
        count_macs,
        count_parameters,
        use_mode,
    )
    from drivenet_patch.models.pilotnet import PilotNet
    from drivenet_patch.models.registry import (
        create_model,
        list_models,
        model_defaults,
        model_from_config,
        parse_input_size,
        parse_model_args,
        register_model,
    )
    from drivenet_patch.models.resnet import ResNetSteering
