"""Photometric augmentation on a whole batch tensor (torch), as an alternative to per-image albumentations.

Per-image albumentations costs ~0.5 core-ms per 66x200 frame, a sizeable share of a PilotNet
train step on two cores (``pdn bench train``). The same kinds of jitter (brightness, contrast,
saturation, hue, cast shadow, blur, sensor noise) are applied here to the (B, 3, H, W) batch with
a handful of vectorised ops. Parameters are drawn apart from applying them, from an explicit
``torch.Generator``, so a draw can be logged and replayed.

Photometric jitter exists once per path: per-image uint8 frames with albumentations
(:class:`drivenet_patch.training.augment.PhotometricAugment`), float batches here (one OpenCV path for
float32 on the CPU, one torch path for everything else), and the sticker attack's
*differentiable* EOT jitter (:func:`attacks.eot.photometric`: multiplicative brightness and the
renderer's colour temperature, gradients to the sticker), which takes its sensor noise from
:func:`noise_bank` here. The three draw different transforms from different ranges, so they are
kept apart rather than merged (merging would change trained models' and stickers' numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from drivenet_patch.safety.errors import PDNError

# The YIQ axes: luma (BT.601) and two chroma axes; hue rotation rotates I/Q, saturation scales them.
_RGB2YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


_BANK: dict[tuple, torch.Tensor] = {}


def noise_bank(shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device, n: int = 64,
                channels_last: bool = False) -> torch.Tensor:
    """A fixed bank of n unit Gaussian noise fields (drawn once per shape from a fixed seed and
    cached), stored twice in a row (2n, C, H, W), so that any n consecutive fields are a view; the
    same values in any dtype and memory layout.

    Sensor noise for augmentation and EOT is taken from here, scaled per frame: drawing fresh
    Gaussian fields every batch measured a sizeable share of a step (2.5 ms of a 38 ms sticker step
    at batch 16) for no benefit a fixed bank of independent fields does not give.
    """
    key = (shape, dtype, str(device), n, channels_last)
    if key not in _BANK:
        g = torch.Generator().manual_seed(0x401CE)
        bank = torch.randn((n, *shape), generator=g).to(device, dtype)  # the same fields in any dtype
        bank = torch.cat([bank, bank])
        _BANK[key] = bank.contiguous(memory_format=torch.channels_last) if channels_last else bank
    return _BANK[key]


@dataclass(frozen=True)
class BatchPhotometric:
    """Batched photometric jitter of float frames in [0, 1].

    Attributes:
        strength: scales every range (0 = identity, 1 = default, up to 3).
        p: probability that a frame is jittered at all.
        shadow_p: probability of a cast shadow (a soft half-plane darkened by 15-50%).
        blur_p: probability of blur (3x3 Gaussian, blended in with a random weight).
    """

    strength: float = 1.0
    p: float = 1.0
    shadow_p: float = 0.3
    blur_p: float = 0.3

    def __post_init__(self) -> None:
        if not (0.0 <= self.strength <= 3.0 and math.isfinite(self.strength)):
            raise PDNError(f"photometric strength must lie in [0, 3], got {self.strength}")
        for name in ("p", "shadow_p", "blur_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise PDNError(f"photometric {name} must lie in [0, 1], got {v}")

    def draw(self, generator: torch.Generator, n: int) -> dict[str, torch.Tensor]:
        """Per-frame parameters, each (n,) on the CPU (the generator's device)."""
        s = self.strength

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=generator)

        active = (torch.rand(n, generator=generator) < self.p).float()
        params = {
            "brightness": u(-0.2, 0.2) * s,
            "contrast": 1.0 + u(-0.25, 0.25) * s,
            "saturation": 1.0 + u(-0.3, 0.3) * s,
            "hue": u(-1.0, 1.0) * math.radians(10.0) * s,
            "shadow": (torch.rand(n, generator=generator) < self.shadow_p).float() * u(0.15, 0.5) * min(s, 1.0),
            "shadow_angle": u(0.0, 2 * math.pi),
            "shadow_offset": u(-0.5, 0.5),
            "blur": (torch.rand(n, generator=generator) < self.blur_p).float() * u(0.3, 1.0) * min(s, 1.0),
            "noise": u(0.0, 0.02) * s,
            "noise_seed": torch.randint(0, 2**31 - 1, (n,), generator=generator),
        }
        neutral = {"brightness": 0.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0, "shadow": 0.0,
                   "blur": 0.0, "noise": 0.0}
        for k, v in neutral.items():
            params[k] = params[k] * active + v * (1.0 - active)
        return params

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor],
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """Jitter frames (B, 3, H, W) in [0, 1] with drawn ``params``; returns a new tensor in [0, 1]
        in ``memory_format``.

        Brightness, contrast, saturation and hue are all linear in the pixel, so they are folded
        into one per-frame 3x3 colour matrix and offset; then a cast shadow, blur and sensor noise,
        and one clamp at the end. Two implementations give the same values (to float rounding):

        * float32 on the CPU: per frame with OpenCV on the channels-last pixels (``cv2.transform``
          for the colour map, ``sepFilter2D`` for the blur), no layout change, the GIL released;
          measured 64 frames of 66x200 from the training pipeline, 2 threads: 5.8 ms per batch,
          against 8-12 ms for the torch version, whose layout changes cost most of its time;
        * anything else (GPU, float64): whole colour planes in torch (NCHW), the colour map as
          nine scaled plane sums, not a ``bmm`` with an inner size of 3.
        """
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise PDNError(f"frames: expected float (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        B = x.shape[0]
        if params["brightness"].shape[0] != B:
            raise PDNError(f"photometric params were drawn for {params['brightness'].shape[0]} frames, got {B}")
        dt, dev = x.dtype, x.device
        p = {k: v.to(dev, dt) if v.is_floating_point() else v for k, v in params.items()}
        yiq = torch.tensor(_RGB2YIQ, dtype=dt, device=dev)
        cos, sin, sat = torch.cos(p["hue"]), torch.sin(p["hue"]), p["saturation"]
        rot = torch.zeros(B, 3, 3, dtype=dt, device=dev)  # in YIQ: keep Y, rotate and scale I/Q
        rot[:, 0, 0] = 1.0
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = sat * cos, -sat * sin, sat * sin, sat * cos
        colour = torch.linalg.inv(yiq) @ rot @ yiq  # (B, 3, 3) in RGB
        c = p["contrast"].view(B, 1, 1)
        mat = colour * c  # contrast about the frame mean: c x + (1 - c) mean + brightness
        mean = x.mean(dim=(2, 3))  # (B, 3)
        offset = (1.0 - c.view(B, 1)) * torch.bmm(colour, mean.unsqueeze(-1)).squeeze(-1) + p["brightness"].view(B, 1)
        opencv = dev.type == "cpu" and dt == torch.float32  # its output is channels-last, the planes' NCHW
        out = (_apply_opencv if opencv else _apply_planes)(x, p, mat, offset)
        # Sensor noise from a fixed bank of noise fields (in the output's layout), scaled per frame:
        # frame i takes field (seed of frame 0 + i) mod n, a view of the doubled bank when B <= n.
        bank = noise_bank(tuple(x.shape[1:]), dt, dev, channels_last=opencv)
        n = len(bank) // 2
        start = int(p["noise_seed"][0]) % n
        fields = bank[start : start + B] if B <= n else bank[torch.remainder(start + torch.arange(B, device=dev), n)]
        out.addcmul_(p["noise"].view(B, 1, 1, 1), fields)
        return out.clamp_(0.0, 1.0).contiguous(memory_format=memory_format)

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        return self.apply(x, self.draw(generator, x.shape[0]), memory_format)

    def apply_uint8(self, frames: np.ndarray, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`apply` on the CPU straight from uint8 (B, H, W, 3) frames: a channels-last float32 tensor.

        The training pipeline's CPU path. Each frame goes through every stage while it sits in the
        cache (to float, colour map, shadow, blur, noise, clamp), in OpenCV and numpy with the GIL
        released, instead of one pass over the whole batch per stage with torch's small-op overhead
        between them: measured on 64 frames of 66x200 on one thread, 3.9 ms against 6.0 ms for the
        float conversion and :meth:`apply`. The same frames as :meth:`apply` on ``frames / 255``
        to float rounding (the colour matrix is built in float64 here and the frame means are exact).
        """
        import cv2

        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise PDNError(f"frames: expected uint8 (B, H, W, 3), got {arr.dtype} {arr.shape}")
        B, H, W, _ = arr.shape
        if params["brightness"].shape[0] != B:
            raise PDNError(f"photometric params were drawn for {params['brightness'].shape[0]} frames, got {B}")
        p = {k: v.numpy() for k, v in params.items()}
        yiq = np.asarray(_RGB2YIQ, dtype=np.float64)
        cos, sin, sat = np.cos(p["hue"]), np.sin(p["hue"]), p["saturation"].astype(np.float64)
        rot = np.zeros((B, 3, 3))
        rot[:, 0, 0] = 1.0
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = sat * cos, -sat * sin, sat * sin, sat * cos
        colour = np.linalg.inv(yiq) @ rot @ yiq
        c = p["contrast"].astype(np.float64)
        sums = np.array([cv2.sumElems(arr[i])[:3] for i in range(B)], dtype=np.float64).reshape(B, 3)
        mean = sums / (255.0 * H * W)  # exact integer sums: (B, 3)
        offset = (1.0 - c[:, None]) * np.einsum("bij,bj->bi", colour, mean) + p["brightness"][:, None]
        # The colour map reads the 0-255 pixel values: the 1/255 of the float conversion is folded into it.
        affine = np.concatenate([colour * (c / 255.0)[:, None, None], offset[:, :, None]], axis=2).astype(np.float32)
        out = torch.empty((B, 3, H, W), dtype=torch.float32, memory_format=torch.channels_last)
        dst = out.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) views of the output
        shaded = np.flatnonzero(p["shadow"] > 0)
        factor = (_shadow_factor(params, torch.from_numpy(shaded), H, W).float().unsqueeze(-1).expand(-1, H, W, 3)
                  .contiguous().numpy() if len(shaded) else None)  # (n, H, W, 3): same-shape multiplies are fast
        shade_of = {int(i): j for j, i in enumerate(shaded)}
        bank = noise_bank((3, H, W), torch.float32, torch.device("cpu"), channels_last=True)
        fields = bank.permute(0, 2, 3, 1).numpy()
        n = len(bank) // 2
        start = int(p["noise_seed"][0]) % n
        taps = np.asarray(_BLUR_TAPS, dtype=np.float32)
        scratch = np.empty((H, W, 3), np.float32)
        for i in range(B):
            np.copyto(scratch, arr[i], casting="unsafe")
            d = dst[i]
            cv2.transform(scratch, affine[i], dst=d)
            if i in shade_of:
                np.multiply(d, factor[shade_of[i]], out=d)
            if p["blur"][i] > 0:
                blurred = cv2.sepFilter2D(d, -1, taps, taps, borderType=cv2.BORDER_REPLICATE)
                cv2.addWeighted(d, 1.0 - float(p["blur"][i]), blurred, float(p["blur"][i]), 0.0, dst=d)
            cv2.scaleAdd(fields[(start + i) % n], float(p["noise"][i]), d, dst=d)
            np.clip(d, 0.0, 1.0, out=d)
        return out


def _shadow_factor(p: dict[str, torch.Tensor], shaded: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(n, H, W) multipliers of the shaded frames: a soft half-plane at a random angle and offset."""
    dt, dev = p["shadow"].dtype, p["shadow"].device
    vv = torch.linspace(-0.5, 0.5, H, device=dev, dtype=dt).view(1, H, 1)
    uu = torch.linspace(-0.5, 0.5, W, device=dev, dtype=dt).view(1, 1, W)
    ang = p["shadow_angle"][shaded].view(-1, 1, 1)
    side = torch.sigmoid((uu * torch.cos(ang) + vv * torch.sin(ang) - p["shadow_offset"][shaded].view(-1, 1, 1)) * 40.0)
    return 1.0 - p["shadow"][shaded].view(-1, 1, 1) * side


# The 3-tap Gaussian of the blur (sigma ~0.8 px), applied along rows and columns.
_BLUR_TAPS = (0.27, 0.46, 0.27)


def _apply_opencv(x: torch.Tensor, p: dict[str, torch.Tensor], mat: torch.Tensor,
                  offset: torch.Tensor) -> torch.Tensor:
    """Colour map, shadow and blur per frame on channels-last float32 CPU pixels; returns a new
    channels-last tensor (OpenCV reads and writes through numpy views of the tensors)."""
    import cv2
    import numpy as np

    B, _, H, W = x.shape
    src = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) views
    out = torch.empty_like(x, memory_format=torch.channels_last)
    dst = out.permute(0, 2, 3, 1).numpy()
    affine = torch.cat([mat, offset.unsqueeze(-1)], dim=2).numpy()  # (B, 3, 4): [M | offset]
    for i in range(B):
        cv2.transform(src[i], affine[i], dst=dst[i])
    shaded = torch.nonzero(p["shadow"] > 0).flatten()
    if len(shaded):
        factor = _shadow_factor(p, shaded, H, W).numpy()
        for j, i in enumerate(shaded.tolist()):
            np.multiply(dst[i], factor[j][..., None], out=dst[i])
    taps = np.asarray(_BLUR_TAPS, dtype=np.float32)
    blur = p["blur"].numpy()
    for i in np.flatnonzero(blur > 0):
        blurred = cv2.sepFilter2D(dst[i], -1, taps, taps, borderType=cv2.BORDER_REPLICATE)
        cv2.addWeighted(dst[i], 1.0 - float(blur[i]), blurred, float(blur[i]), 0.0, dst=dst[i])
    return out


def _apply_planes(x: torch.Tensor, p: dict[str, torch.Tensor], mat: torch.Tensor,
                  offset: torch.Tensor) -> torch.Tensor:
    """Colour map, shadow and blur on whole NCHW colour planes in torch (any device); returns a
    new NCHW tensor."""
    B, _, H, W = x.shape
    planes = x.contiguous()
    out = torch.empty_like(planes)
    m = mat.view(B, 3, 3, 1, 1)
    for ch in range(3):
        o = out[:, ch]
        torch.mul(planes[:, 0], m[:, ch, 0], out=o)
        o.addcmul_(planes[:, 1], m[:, ch, 1]).addcmul_(planes[:, 2], m[:, ch, 2]).add_(offset[:, ch].view(B, 1, 1))
    # The shadow is multiplied into each shaded frame (~30%) in place: a multiply over the whole
    # batch, or indexing the shaded frames out and back, costs more.
    shaded = torch.nonzero(p["shadow"] > 0).flatten()
    if len(shaded):
        factor = _shadow_factor(p, shaded, H, W)
        for j, i in enumerate(shaded.tolist()):
            out[i].mul_(factor[j])
    blurred_idx = torch.nonzero(p["blur"] > 0).flatten()
    if len(blurred_idx):
        a, b, _ = _BLUR_TAPS
        sub = out[blurred_idx]
        pad = F.pad(sub, (1, 1, 1, 1), mode="replicate")
        rows = pad[..., 1:-1].mul(b).add_(pad[..., :-2] + pad[..., 2:], alpha=a)  # (n, 3, H + 2, W)
        blurred = rows[:, :, 1:-1].mul(b).add_(rows[:, :, :-2] + rows[:, :, 2:], alpha=a)
        out[blurred_idx] = torch.lerp(sub, blurred, p["blur"][blurred_idx].view(-1, 1, 1, 1))
    return out
