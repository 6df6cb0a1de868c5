"""The steering-model base class, the colour-normalisation layer and small model utilities.

Every model takes float32 NCHW RGB images in [0, 1] and returns ``(B,)`` steering angles in
road-wheel degrees (positive = left). Input normalisation is a layer *inside* the model, so
gradients and attacks see raw pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from drivenet_patch.safety.errors import PDNError


@dataclass(frozen=True)
class SaliencyStage:
    """One convolutional stage as VisualBackProp sees it.

    Attributes:
        module: the module whose output is the stage's feature map *after* its activation,
            shape (B, C, h, w).
        kernel: ``(kh, kw)`` of the stage's (strided) convolution or pooling.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)``.
    """

    module: nn.Module
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)


class SteeringModel(nn.Module):
    """Base class: images (B, 3, H, W) in [0, 1] -> steering (B,) in road-wheel degrees.

    Attributes:
        input_size: ``(H, W)`` the model is built for.
        config: JSON-serialisable ``{"name": ..., **cfg}`` with every config key (defaults
            included); :func:`drivenet_patch.models.create_model` fills it, and
            ``create_model(**config)`` rebuilds the same architecture.
    """

    def __init__(self, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.config: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return str(self.config.get("name", type(self).__name__))

    def check_input(self, x: torch.Tensor) -> None:
        """Shape-only check of a batch (no value-range check: that would sync a GPU every call).

        Raises:
            PDNError: if ``x`` is not (B, 3, H, W) at the model's input size.
        """
        h, w = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or (x.shape[2], x.shape[3]) != (h, w):
            raise PDNError(f"{self.name}: expected images of shape (B, 3, {h}, {w}), got {tuple(x.shape)}")

    def saliency_stages(self) -> list[SaliencyStage]:
        """Convolutional stages, shallowest first, for VisualBackProp.

        Raises:
            PDNError: if the model does not expose its stages.
        """
        raise PDNError(f"model {self.name!r} does not expose convolutional stages for VisualBackProp")


# ---------------------------------------------------------------------------- normalisation
# PilotNet's input colour space (Bojarski et al. 2016): YUV of ITU-R BT.601.
#   Y = KR R + KG G + KB B                  in [0, 1]        (KR, KG, KB = 0.299, 0.587, 0.114)
#   U = 0.436 (B - Y) / (1 - KB)            in [-0.436, 0.436]  ( = -0.14713 R - 0.28886 G + 0.436 B)
#   V = 0.615 (R - Y) / (1 - KR)            in [-0.615, 0.615]  ( =  0.615 R - 0.51499 G - 0.10001 B)
# then each channel is scaled onto [-1, 1] (0 = mid grey / colourless, unit half-range):
#   y' = (Y - 0.5) / 0.5,    u' = U / 0.436 = (B - Y) / 0.886,    v' = V / 0.615 = (R - Y) / 0.701
# Written with (1 - KB), (1 - KR) rather than the rounded table values so that greys map to
# exactly u' = v' = 0.
BT601_LUMA = (0.299, 0.587, 0.114)
YUV_OFFSET = (0.5, 0.0, 0.0)
YUV_HALF_RANGE = (0.5, 0.436, 0.615)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ColorNorm(nn.Module):
    """A fixed per-pixel affine colour map ``out = W @ rgb + b`` (no learned parameters).

    The constants are non-persistent buffers: they belong to the architecture, not to the
    weights, so they never appear in a state dict or a model file.

    Shape:
        (B, 3, H, W) -> (B, 3, H, W).
    """

    def __init__(self, weight: Sequence[Sequence[float]], bias: Sequence[float]) -> None:
        super().__init__()
        w = torch.tensor(weight, dtype=torch.float32)
        b = torch.tensor(bias, dtype=torch.float32)
        if w.shape != (3, 3) or b.shape != (3,):
            raise ValueError(f"ColorNorm needs a 3x3 weight and 3 biases, got {tuple(w.shape)} and {tuple(b.shape)}")
        self.register_buffer("weight", w[:, :, None, None], persistent=False)  # (3, 3, 1, 1)
        self.register_buffer("bias", b, persistent=False)  # (3,)

    @classmethod
    def pilotnet_yuv(cls) -> ColorNorm:
        """RGB in [0, 1] -> BT.601 YUV, each channel scaled onto [-1, 1] (see the constants above)."""
        kr, kg, kb = BT601_LUMA
        m = torch.tensor(
            [
                [kr, kg, kb],
                [-0.436 * kr / (1 - kb), -0.436 * kg / (1 - kb), 0.436],
                [0.615, -0.615 * kg / (1 - kr), -0.615 * kb / (1 - kr)],
            ],
            dtype=torch.float64,
        )
        off = torch.tensor(YUV_OFFSET, dtype=torch.float64)
        half = torch.tensor(YUV_HALF_RANGE, dtype=torch.float64)
        return cls((m / half[:, None]).tolist(), (-off / half).tolist())

    @classmethod
    def imagenet(cls) -> ColorNorm:
        """RGB in [0, 1] -> (x - mean) / std with the ImageNet statistics torchvision uses."""
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
        return cls(torch.diag(1.0 / std).tolist(), (-mean / std).tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


# ---------------------------------------------------------------------------- utilities
@contextlib.contextmanager
def use_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run a block with ``model`` in train (``True``) or eval (``False``) mode, then restore.

    The mode of every submodule is restored individually, so a model with, say, frozen
    batch-norm layers inside a training model comes back exactly as it was.
    """
    before = [(m, m.training) for m in model.modules()]
    if any(t != training for _, t in before):
        model.train(training)
    try:
        yield model
    finally:
        for m, t in before:
            m.training = t


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements), optionally only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: SteeringModel, input_size: tuple[int, int] | None = None) -> int:
    """Multiply-accumulates of all ``nn.Conv2d`` and ``nn.Linear`` layers for one image.

    Counted from the layers' real output shapes (one forward pass on a zero image in eval
    mode); element-wise work (normalisation, activations, pooling, batch norm) is left out.
    """
    h, w = input_size or model.input_size
    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    param = next(model.parameters())
    try:
        with use_mode(model, False), torch.no_grad():
            model(torch.zeros(1, 3, h, w, dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
    return total
