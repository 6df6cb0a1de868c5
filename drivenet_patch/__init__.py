"""PatchDriveNet core: driving world, datasets, models, training, reports and the `pdn` CLI.

Conventions (see docs/architecture.md): images in the library are float32 NCHW RGB in [0, 1]; on disk and in
datasets uint8 HWC. Steering is the road-wheel angle in degrees, positive = left (ISO 8855).
"""

from __future__ import annotations

__version__ = "0.2.0"

from drivenet_patch.safety.errors import PDNError

__all__ = ["PDNError", "__version__"]
