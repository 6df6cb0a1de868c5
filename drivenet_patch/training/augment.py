"""Training-data augmentation: photometric jitter, horizontal flip and viewpoint shift.

Three pieces, each split into a random *draw* and a deterministic *apply* so that a draw can
be logged, replayed and tested (style rule 5):

* :class:`PhotometricAugment`: brightness/contrast, hue/saturation/value, random shadows,
  motion or Gaussian blur and Gaussian noise, built once with albumentations.
* :func:`hflip`: mirror the frame and negate the steering label.
* :func:`~drivenet_patch.training.viewshift.shift_frame` with
  :func:`~drivenet_patch.training.viewshift.steering_correction_deg`: the PilotNet viewpoint augmentation (Bojarski et al., "End to End Learning for Self-Driving
  Cars", 2016, sec. 4-5). A frame is re-projected as if the car stood ``dy`` metres to the
  left and were yawed ``dpsi`` degrees to the left, assuming a flat ground and objects above
  the horizon at infinity, and the label gets a correction that steers back to the original
  path within ``horizon_s`` seconds.

:class:`Augmenter` composes them for training batches. The viewpoint shift's geometry lives in
:mod:`drivenet_patch.training.viewshift`; its exact counterpart (rendering the world from a truly shifted
pose) in the world package. The batched torch jitter (the default in training) is
:mod:`drivenet_patch.training.augment_batch`.

Randomness: every draw takes an explicit ``numpy.random.Generator``; no global RNG is used.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from drivenet_patch.data.base import CropResize
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import check_finite, check_uint8_frame, check_uint8_rgb
from drivenet_patch.training.viewshift import (
    ViewGeometry,
    as_view,
    batch_homographies,
    steering_correction_deg,
    warp_frame,
)
from drivenet_patch.world.camera import Camera

__all__ = [
    "AugmentParams",
    "Augmenter",
    "PhotometricAugment",
    "PhotometricParams",
    "hflip",
]


# ---------------------------------------------------------------------------------- checks
def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise PDNError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_batch(frames: object, labels: object, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Check uint8 (n, H, W, 3) frames and finite (n,) labels."""
    frames = check_uint8_rgb(frames, "frames", batched=True, size=size)
    lab = np.asarray(labels)
    if lab.shape != (frames.shape[0],) or not (
        np.issubdtype(lab.dtype, np.floating) or np.issubdtype(lab.dtype, np.integer)
    ):
        raise PDNError(
            f"labels: expected {frames.shape[0]} steering angles as a ({frames.shape[0]},) number array, got {lab.dtype} {lab.shape}"
        )
    if not np.all(np.isfinite(lab)):
        raise PDNError(
            f"labels: steering angle at index {int(np.flatnonzero(~np.isfinite(lab))[0])} is not finite"
        )
    return frames, lab


# ------------------------------------------------------------------------------ photometric
@dataclass(frozen=True)
class PhotometricParams:
    """One photometric draw: whether the pipeline runs and the seed that fixes every choice in it.

    Attributes:
        active: False leaves the frame unchanged.
        seed: seeds albumentations' random state for this frame (which ops fire, their
            magnitudes, shadow polygons, noise). Same seed, same frame size -> same output.
    """

    active: bool
    seed: int


class PhotometricAugment:
    """Seeded, replayable photometric jitter built once on albumentations 2.x.

    The pipeline, each op firing independently with probability ``p_op``, magnitudes scaled by
    ``strength`` (``s``):

    * RandomBrightnessContrast (p_op 0.7): brightness and contrast +-0.25 s.
    * HueSaturationValue (0.5): hue +-8 s (OpenCV units of 2 deg), saturation +-20 s, value +-10 s.
    * RandomShadow (0.3): 1-2 polygons in the lower 70 % of the frame, pixels multiplied by
      ``1 - i`` with ``i`` in [0.2 s, 0.5 s] (at most 0.9).
    * MotionBlur or GaussianBlur (0.3): kernel 3 .. 3 + 2 floor(s) px; Gaussian sigma 0.2 .. 0.2 + 0.8 s.
    * GaussNoise (0.3): per-channel std up to 0.04 s of full scale.

    Replay works by re-seeding: :meth:`draw` returns a :class:`PhotometricParams` holding a seed,
    and :meth:`apply` hands albumentations one fresh ``numpy`` and one ``random.Random``
    generator seeded with it (``Compose.set_random_state``; a single shared stream, so the ops
    draw independent values, unlike ``Compose.set_random_seed`` which gives every op the same
    stream). Replays are exact for the same albumentations version. Not thread-safe: use one
    instance per worker process (DataLoader workers each get their own copy).

    Args:
        strength: magnitude scale in [0, 3]; 0 makes :meth:`apply` the identity.
        p: probability in [0, 1] that a frame is jittered at all.
    """

    P_BRIGHTNESS_CONTRAST = 0.7
    P_HSV = 0.5
    P_SHADOW = 0.3
    P_BLUR = 0.3
    P_NOISE = 0.3

    def __init__(self, strength: float = 1.0, p: float = 1.0) -> None:
        self.strength = check_finite("strength", strength, 0.0, 3.0)
        self.p = check_finite("p", p, 0.0, 1.0)
        s = self.strength
        kmax = 3 + 2 * math.floor(s)
        self._compose = A.Compose(
            [
                A.RandomBrightnessContrast(
                    brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=self.P_BRIGHTNESS_CONTRAST
                ),
                A.HueSaturationValue(
                    hue_shift_limit=8 * s, sat_shift_limit=20 * s, val_shift_limit=10 * s, p=self.P_HSV
                ),
                A.RandomShadow(
                    shadow_roi=(0.0, 0.3, 1.0, 1.0),
                    num_shadows_limit=(1, 2),
                    shadow_dimension=5,
                    shadow_intensity_range=(min(0.2 * s, 0.9), min(0.5 * s, 0.9)),
                    p=self.P_SHADOW,
                ),
                A.OneOf(
                    [
                        A.MotionBlur(blur_limit=(3, kmax), p=1.0),
                        A.GaussianBlur(blur_limit=(3, kmax), sigma_limit=(0.2, 0.2 + 0.8 * s), p=1.0),
                    ],
                    p=self.P_BLUR,
                ),
                A.GaussNoise(std_range=(0.0, 0.04 * s), p=self.P_NOISE),
            ],
            p=1.0,
            seed=0,
        )

    def draw(self, rng: np.random.Generator) -> PhotometricParams:
        """Draw the parameters for one frame (consumes two values from ``rng``)."""
        _check_rng(rng)
        active = bool(rng.random() < self.p)
        seed = int(rng.integers(0, 2**63 - 1))
        return PhotometricParams(active=active and self.strength > 0, seed=seed)

    def apply(self, frame: np.ndarray, params: PhotometricParams) -> np.ndarray:
        """Apply a draw to one frame.

        Args:
            frame: uint8 RGB image.
            params: from :meth:`draw`.

        Returns:
            A new uint8 array of the same shape.

        Shape:
            frame: (H, W, 3) -> (H, W, 3)
        """
        frame = check_uint8_frame(frame)
        if not isinstance(params, PhotometricParams):
            raise PDNError(f"params: expected PhotometricParams, got {type(params).__name__}")
        return self._apply(frame, params.active, params.seed)

    def _apply(self, frame: np.ndarray, active: bool, seed: int) -> np.ndarray:
        if not active:
            return frame.copy()
        self._compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = self._compose(image=frame)["image"]
        return out.copy() if out is frame else out

    def __call__(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw and apply in one go (see :meth:`draw` / :meth:`apply`)."""
        return self.apply(frame, self.draw(rng))


# ----------------------------------------------------------------------------------- flip
def hflip(frames: np.ndarray, labels: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Mirror frames left-right and negate the steering labels (positive = left).

    Exact for a camera on the car's centre line with a centred principal point; for an
    off-centre camera or an asymmetric crop it is the usual approximation.

    Shape:
        frames: (..., H, W, 3) -> same; labels: any -> same.
    """
    arr = np.asarray(frames)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise PDNError(f"frames: expected (..., H, W, 3), got {arr.shape}")
    return np.ascontiguousarray(arr[..., ::-1, :]), -np.asarray(labels, dtype=np.float64)


# ------------------------------------------------------------------------------- geometry


# ------------------------------------------------------------------------------- composed
@dataclass(frozen=True, eq=False)
class AugmentParams:
    """One draw of :class:`Augmenter` for ``n`` frames; replay it with :meth:`Augmenter.apply`.

    Attributes:
        flip: (n,) bool, mirror the frame and negate the label.
        dy: (n,) lateral shift in metres, positive = left.
        dpsi: (n,) yaw in degrees, positive = left.
        photo_active: (n,) bool, run the photometric pipeline.
        photo_seed: (n,) int64 seeds of the photometric pipeline.
    """

    flip: np.ndarray
    dy: np.ndarray
    dpsi: np.ndarray
    photo_active: np.ndarray
    photo_seed: np.ndarray

    def __post_init__(self) -> None:
        n = np.asarray(self.flip).reshape(-1).shape[0]
        kinds = {
            "flip": bool,
            "dy": np.float64,
            "dpsi": np.float64,
            "photo_active": bool,
            "photo_seed": np.int64,
        }
        for name, kind in kinds.items():
            try:
                arr = np.asarray(getattr(self, name), dtype=kind)
            except (TypeError, ValueError, OverflowError):
                raise PDNError(f"params.{name}: expected ({n},) numbers") from None
            if arr.shape != (n,):
                raise PDNError(f"params.{name}: expected shape ({n},), got {arr.shape}")
            object.__setattr__(self, name, arr)
        if not (np.all(np.isfinite(self.dy)) and np.all(np.abs(self.dpsi) <= 90.0)):
            raise PDNError("params: dy must be finite and dpsi must lie in [-90, 90] degrees")

    def __len__(self) -> int:
        return len(self.flip)


class Augmenter:
    """Training augmentation: viewpoint shift + steering correction, flip, photometric jitter.

    Per frame, in this order: warp with :func:`shift_frame` (``dy ~ U(-shift_m, shift_m)``,
    ``dpsi ~ U(-rot_deg, rot_deg)``) and add :func:`steering_correction_deg`; mirror with
    probability ``flip_p`` and negate the label; then :class:`PhotometricAugment`. So the label
    is ``(label + correction(dy, dpsi)) * (-1 if flip else 1)``.

    Args:
        camera: source camera of the frames, or a ready :class:`ViewGeometry`.
        crop: crop/resize from the camera image to the model size (with a Camera only).
        photometric: enable photometric jitter.
        flip_p: probability of a horizontal flip, in [0, 1].
        shift_m: largest absolute lateral shift in metres (0 disables).
        rot_deg: largest absolute yaw in degrees, below 45 (0 disables).
        speed: m/s used for the correction's lookahead ``speed * horizon_s``.
        horizon_s: seconds to rejoin the original path.
        strength: photometric strength (see :class:`PhotometricAugment`).
        photometric_p: probability that a frame is jittered at all.
    """

    def __init__(
        self,
        camera: Camera | ViewGeometry,
        crop: CropResize | None = None,
        photometric: bool = True,
        flip_p: float = 0.5,
        shift_m: float = 1.0,
        rot_deg: float = 5.0,
        speed: float = 10.0,
        horizon_s: float = 2.0,
        strength: float = 1.0,
        photometric_p: float = 1.0,
    ) -> None:
        self.view = as_view(camera, crop)
        self.flip_p = check_finite("flip_p", flip_p, 0.0, 1.0)
        self.shift_m = check_finite("shift_m", shift_m, 0.0, 100.0)
        self.rot_deg = check_finite("rot_deg", rot_deg, 0.0, 45.0)
        self.speed = check_finite("speed", speed, 1e-3, 1e3)
        self.horizon_s = check_finite("horizon_s", horizon_s, 1e-3, 1e3)
        self.photometric = PhotometricAugment(strength, photometric_p) if photometric else None

    def draw(self, rng: np.random.Generator, n: int) -> AugmentParams:
        """Draw parameters for ``n`` frames (the same draws whatever the options, so a seed stays comparable)."""
        _check_rng(rng)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise PDNError(f"n: expected a non-negative integer, got {n!r}")
        n = int(n)
        flip = rng.random(n) < self.flip_p
        dy = rng.uniform(-1.0, 1.0, n) * self.shift_m
        dpsi = rng.uniform(-1.0, 1.0, n) * self.rot_deg
        photo_p = self.photometric.p if self.photometric is not None else 0.0
        photo_active = rng.random(n) < photo_p
        photo_seed = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
        if self.photometric is None or self.photometric.strength == 0:
            photo_active[:] = False
        return AugmentParams(flip=flip, dy=dy, dpsi=dpsi, photo_active=photo_active, photo_seed=photo_seed)

    def apply(
        self, frames: np.ndarray, labels: np.ndarray, params: AugmentParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply a draw to a batch.

        Args:
            frames: uint8 RGB frames at the model size.
            labels: steering in degrees, positive = left.
            params: from :meth:`draw` with the same ``n``.

        Returns:
            ``(frames, labels)``: new arrays; labels keep a float input dtype (else float64).

        Shape:
            frames: (n, H, W, 3) -> (n, H, W, 3); labels: (n,) -> (n,)
        """
        frames, lab = _check_batch(frames, labels, self.view.size)
        if not isinstance(params, AugmentParams):
            raise PDNError(f"params: expected AugmentParams, got {type(params).__name__}")
        n = len(frames)
        if len(params) != n:
            raise PDNError(f"params: drawn for {len(params)} frames, got {n}")
        moved = (params.dy != 0) | (params.dpsi != 0)
        h_ground, h_sky = batch_homographies(self.view, params.dy, params.dpsi)  # (n, 3, 3) each
        row0 = self.view.ground_start_row
        out = np.empty_like(frames)
        for i in range(n):
            f = frames[i]
            if moved[i]:
                f = warp_frame(np.ascontiguousarray(f), h_ground[i], h_sky[i], row0)
            if params.flip[i]:
                f = cv2.flip(f, 1)  # numpy's reversed 3-byte-pixel copy cost ~80 us a frame, this ~3 us
            if params.photo_active[i] and self.photometric is not None:
                f = self.photometric._apply(np.ascontiguousarray(f), True, int(params.photo_seed[i]))
            out[i] = f
        correction = steering_correction_deg(params.dy, params.dpsi, self.speed, self.horizon_s)
        new = (lab.astype(np.float64) + np.where(moved, correction, 0.0)) * np.where(params.flip, -1.0, 1.0)
        dtype = lab.dtype if np.issubdtype(lab.dtype, np.floating) else np.float64
        return out, new.astype(dtype)

    def __call__(
        self, frames: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw for ``len(frames)`` and apply (see :meth:`draw`, :meth:`apply`)."""
        return self.apply(frames, labels, self.draw(rng, len(frames)))
