"""PilotNet: NVIDIA's end-to-end steering CNN (Bojarski et al. 2016, arXiv:1604.07316).

Architecture at the paper's 66x200 input::

    normalisation   RGB [0, 1] -> BT.601 YUV scaled onto [-1, 1]   (fixed, no weights)
    conv 5x5 /2  24  -> 31x98      ELU
    conv 5x5 /2  36  -> 14x47      ELU
    conv 5x5 /2  48  -> 5x22       ELU
    conv 3x3 /1  64  -> 3x20       ELU
    conv 3x3 /1  64  -> 1x18       ELU
    flatten 1152 -> FC 100 ELU -> FC 50 ELU -> FC 10 ELU -> FC 1 (x out_scale)

252,219 parameters and 26.9 M multiply-accumulates per 66x200 image. The paper names no
activation; ELU is what most re-implementations use. Other input sizes work (the flatten size
is computed); the smallest is 61x61.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drivenet_patch.models.base import ColorNorm, SaliencyStage, SteeringModel
from drivenet_patch.models.registry import register_model
from drivenet_patch.safety.errors import PDNError

# (kernel, stride) of PilotNet's five convolutions.
PILOTNET_CONVS = ((5, 2), (5, 2), (5, 2), (3, 1), (3, 1))


def conv_output_size(size: int, convs: Sequence[tuple[int, int]] = PILOTNET_CONVS) -> int:
    """Spatial size after the unpadded convolutions ``convs`` (0 if the input is too small)."""
    for k, s in convs:
        if size < k:
            return 0
        size = (size - k) // s + 1
    return size


def min_input_size(convs: Sequence[tuple[int, int]] = PILOTNET_CONVS) -> int:
    """Smallest side that leaves a 1-pixel feature map after ``convs``."""
    size = 1
    for k, s in reversed(convs):
        size = (size - 1) * s + k
    return size


class PilotNet(SteeringModel):
    """PilotNet with configurable widths (the paper's are the defaults).

    Args:
        input_size: ``(H, W)`` of the input images.
        channels: output channels of the five convolutions.
        hidden: widths of the hidden fully connected layers.
        dropout: dropout probability applied to the input of every fully connected layer
            (0 = none, as in the paper).
        out_scale: the last layer's output is multiplied by this constant, so that steering
            labels of a few degrees (up to ~25) map to head outputs of order 1 and training
            with default learning rates is well conditioned.

    Shape:
        (B, 3, H, W) float in [0, 1] -> (B,) road-wheel degrees, positive = left.
    """

    def __init__(
        self,
        input_size: tuple[int, int] = (66, 200),
        channels: Sequence[int] = (24, 36, 48, 64, 64),
        hidden: Sequence[int] = (100, 50, 10),
        dropout: float = 0.0,
        out_scale: float = 10.0,
    ) -> None:
        super().__init__(input_size)
        if len(channels) != len(PILOTNET_CONVS):
            raise ValueError(f"PilotNet needs {len(PILOTNET_CONVS)} conv widths, got {len(channels)}")
        h, w = self.input_size
        fh, fw = conv_output_size(h), conv_output_size(w)
        if fh < 1 or fw < 1:
            m = min_input_size()
            raise PDNError(f"input_size {h}x{w} is too small for PilotNet (needs at least {m}x{m})")
        self.out_scale = float(out_scale)
        self.norm = ColorNorm.pilotnet_yuv()
        stages, c_in = [], 3
        for c_out, (k, s) in zip(channels, PILOTNET_CONVS, strict=True):
            stages.append(nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=s), nn.ELU()))
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.flat_features = c_in * fh * fw  # 64 * 1 * 18 = 1152 at 66x200
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.flat_features
        for h_out in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h_out), nn.ELU()]
            width = h_out
        layers += [nn.Dropout(dropout), nn.Linear(width, 1)]
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Steering (B,) in degrees for images (B, 3, H, W) in [0, 1]."""
        self.check_input(x)
        z = self.features(self.norm(x))  # (B, C5, fh, fw)
        return self.head(z)[:, 0] * self.out_scale  # (B,)

    def saliency_stages(self) -> list[SaliencyStage]:
        """The five conv stages (conv + ELU), shallowest first."""
        out = []
        for stage in self.features:
            conv = stage[0]
            out.append(SaliencyStage(stage, tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding)))
        return out


@register_model("pilotnet")
def pilotnet(
    *, input_size: tuple[int, int] = (66, 200), dropout: float = 0.0, out_scale: float = 10.0
) -> PilotNet:
    """NVIDIA PilotNet (2016): 5 convs (24-36-48-64-64), FC 100-50-10-1, ELU, YUV input."""
    return PilotNet(input_size, dropout=dropout, out_scale=out_scale)


@register_model("pilotnet_tiny")
def pilotnet_tiny(
    *, input_size: tuple[int, int] = (66, 200), dropout: float = 0.0, out_scale: float = 10.0
) -> PilotNet:
    """PilotNet's structure with tiny widths (4-6-8-8-8, FC 16-8-1; 5,751 params) for fast tests."""
    return PilotNet(input_size, channels=(4, 6, 8, 8, 8), hidden=(16, 8), dropout=dropout, out_scale=out_scale)
