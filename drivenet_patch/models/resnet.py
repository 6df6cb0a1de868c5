"""ResNet-18 steering regressor: torchvision's ``resnet18(weights=None)`` with a 1-output head.

Nothing is ever downloaded. ``init`` may name a local ``.safetensors`` file holding a
torchvision-style ResNet-18 state dict (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...;
e.g. exported once with ``safetensors.torch.save_file(resnet18(weights=...).state_dict(), f)``),
which initialises the backbone; its ``fc.*`` classifier is ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from drivenet_patch.models.base import ColorNorm, SaliencyStage, SteeringModel
from drivenet_patch.models.registry import register_model
from drivenet_patch.safety.errors import PDNError


class ResNetSteering(SteeringModel):
    """ImageNet normalisation -> ResNet-18 backbone -> dropout -> Linear(512, 1) x out_scale.

    Args:
        input_size: ``(H, W)``; at least 32x32 (the backbone downsamples by 32 and pools).
        dropout: dropout before the head.
        out_scale: fixed output multiplier (see :class:`~drivenet_patch.models.pilotnet.PilotNet`).
        init: optional path of a local ``.safetensors`` backbone state dict.

    Shape:
        (B, 3, H, W) float in [0, 1] -> (B,) road-wheel degrees, positive = left.
    """

    def __init__(
        self,
        input_size: tuple[int, int] = (66, 200),
        dropout: float = 0.0,
        out_scale: float = 10.0,
        init: str | None = None,
    ) -> None:
        super().__init__(input_size)
        if min(self.input_size) < 32:
            raise PDNError(f"input_size {self.input_size[0]}x{self.input_size[1]} is too small for resnet18 (needs 32x32)")
        self.out_scale = float(out_scale)
        self.norm = ColorNorm.imagenet()
        self.backbone = tv_resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(512, 1)
        if init is not None:
            self.load_backbone(init)

    def load_backbone(self, path: str | Path) -> None:
        """Copy a torchvision ResNet-18 state dict from a ``.safetensors`` file into the backbone.

        Raises:
            PDNError: missing/unreadable file, missing or unexpected keys, or a shape mismatch
                (each message names the file and the first offending key).
        """
        from drivenet_patch.storage.state import check_finite, load_state

        path = Path(path)
        if path.suffix != ".safetensors":
            raise PDNError(f"{path}: resnet18 init must be a .safetensors file")
        state = load_state(path)
        if state and all(k.startswith("backbone.") for k in state):
            state = {k[len("backbone.") :]: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.backbone.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            what = f"missing {missing[0]!r} ({len(missing)} missing)" if missing else ""
            what += ("; " if what else "") + (f"unexpected {unexpected[0]!r} ({len(unexpected)} unexpected)" if unexpected else "")
            raise PDNError(f"{path}: not a ResNet-18 state dict: {what}")
        for key, ref in own.items():
            if tuple(state[key].shape) != tuple(ref.shape):
                raise PDNError(
                    f"{path}: shape mismatch for {key!r}: file has {tuple(state[key].shape)}, resnet18 needs {tuple(ref.shape)}"
                )
        check_finite(path, state, own)
        self.backbone.load_state_dict(state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Steering (B,) in degrees for images (B, 3, H, W) in [0, 1]."""
        self.check_input(x)
        z = self.backbone(self.norm(x))  # (B, 512) pooled features
        return self.head(self.drop(z))[:, 0] * self.out_scale  # (B,)

    def saliency_stages(self) -> list[SaliencyStage]:
        """Stem (conv 7x7/2 + BN + ReLU), max-pool 3x3/2, then the four residual layers.

        A residual layer is treated as its first 3x3 convolution (stride 1 for ``layer1``, 2
        for the others, padding 1): that reproduces its resolution change exactly, and its
        footprint is what VisualBackProp's all-ones deconvolution spreads a value over.
        """
        b = self.backbone
        stages = [
            SaliencyStage(b.relu, (7, 7), (2, 2), (3, 3)),  # b.relu is only used by the stem
            SaliencyStage(b.maxpool, (3, 3), (2, 2), (1, 1)),
        ]
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            conv = layer[0].conv1
            stages.append(SaliencyStage(layer, tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding)))
        return stages


@register_model("resnet18", init_keys=("init",))
def resnet18(
    *,
    input_size: tuple[int, int] = (66, 200),
    dropout: float = 0.0,
    out_scale: float = 10.0,
    init: str | None = None,
) -> ResNetSteering:
    """torchvision ResNet-18 (random init, or a local .safetensors backbone) with a regression head."""
    if init is not None and not isinstance(init, (str, Path)):
        raise PDNError(f"model 'resnet18': init must be a file path or None, got {init!r}")
    return ResNetSteering(input_size, dropout=dropout, out_scale=out_scale, init=None if init is None else str(init))
