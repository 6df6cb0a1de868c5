"""Training-data augmentation: photometric jitter, horizontal flip and viewpoint shift.

Three pieces, each split into a random *draw* and a deterministic *apply* so that a draw can
be logged, replayed and tested (style rule 5):

* :class:`PhotometricAugment`: brightness/contrast, hue/saturation/value, random shadows,
  motion or Gaussian blur and Gaussian noise, built once with albumentations.
* :func:`hflip`: mirror the frame and negate the steering label.
* :func:`shift_frame` / :func:`viewpoint_homographies` / :func:`steering_correction_deg`:
  the PilotNet viewpoint augmentation (Bojarski et al., "End to End Learning for Self-Driving
  Cars", 2016, sec. 4-5). A frame is re-projected as if the car stood ``dy`` metres to the
  left and were yawed ``dpsi`` degrees to the left, assuming a flat ground and objects above
  the horizon at infinity, and the label gets a correction that steers back to the original
  path within ``horizon_s`` seconds.

:class:`Augmenter` composes them for training batches. The exact counterpart of the viewpoint
shift (rendering the world from a truly shifted pose) lives in the world package.

Geometry conventions
--------------------
Vehicle frame: origin on the ground under the rear axle, X forward, Y left, Z up. The shifted
pose is the original one moved ``dy`` metres along the original Y axis and then yawed by
``dpsi`` about its rear axle, i.e. the new rear axle is at ``(0, dy)`` with heading ``dpsi`` in
the original vehicle frame (the pose a renderer would use). For ``dpsi = 0`` the camera moves
exactly ``dy`` to the left; with a rotation it also swings by about ``forward_m * sin(dpsi)``.

A ground point ``P = (X, Y)`` of the original frame has new-frame coordinates
``P' = R(-psi) (P - (0, dy))``, i.e. the 3x3 map ``S = [[c, s, -s dy], [-s, c, -c dy], [0, 0, 1]]``
with ``c, s = cos psi, sin psi``. With ``G`` the ground -> model-pixel homography,

* ground pixels (below the horizon) move with ``H_ground = G S G^-1`` (exact on flat ground);
* sky pixels (above it) move with the infinite homography ``H_sky = A Rz(-psi) A^-1``, where
  ``A = C K R_cam`` maps vehicle-frame directions to model pixels (translation does not move
  points at infinity).

Both agree on the horizon line (yaw and a lateral shift leave it in place) and differ
linearly with the distance from it, so choosing per output row gives no visible tear.

Randomness: every draw takes an explicit ``numpy.random.Generator``; no global RNG is used.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np

from drivenet_patch.data.base import CropResize
from drivenet_patch.errors import PDNError
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.vehicle import WHEELBASE_M, pure_pursuit_deg

__all__ = [
    "AugmentParams",
    "Augmenter",
    "PhotometricAugment",
    "PhotometricParams",
    "ViewGeometry",
    "hflip",
    "shift_frame",
    "steering_correction_deg",
    "viewpoint_homographies",
]


# ---------------------------------------------------------------------------------- checks
def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise PDNError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_rgb(x: object, name: str, batched: bool, size: tuple[int, int] | None) -> np.ndarray:
    """Check a uint8 RGB array, (H, W, 3) or batched (n, H, W, 3), optionally of a given size."""
    ndim, dims = (4, "(n, H, W, 3)") if batched else (3, "(H, W, 3)")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != ndim or x.shape[-1] != 3:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise PDNError(f"{name}: expected a uint8 {dims} RGB array, got {desc}")
    hw = x.shape[-3:-1]
    if size is not None and hw != tuple(size):
        raise PDNError(f"{name}: expected size {size[0]}x{size[1]} to match the view geometry, got {hw[0]}x{hw[1]}")
    return x


def _check_frame(frame: object, name: str = "frame", size: tuple[int, int] | None = None) -> np.ndarray:
    """Check one uint8 (H, W, 3) frame (optionally of a given size); return it contiguous."""
    return np.ascontiguousarray(_check_rgb(frame, name, batched=False, size=size))


def _check_batch(frames: object, labels: object, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Check uint8 (n, H, W, 3) frames and finite (n,) labels."""
    frames = _check_rgb(frames, "frames", batched=True, size=size)
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


def _check_finite(name: str, value: float, low: float = -math.inf, high: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PDNError(f"{name}: expected a number, got {value!r}") from None
    if not (math.isfinite(v) and low <= v <= high):
        raise PDNError(f"{name}: must be a finite number in [{low}, {high}], got {value!r}")
    return v


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
        self.strength = _check_finite("strength", strength, 0.0, 3.0)
        self.p = _check_finite("p", p, 0.0, 1.0)
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
        frame = _check_frame(frame)
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
def _camera_rotation(pitch_deg: float) -> np.ndarray:
    """Vehicle-frame direction (X fwd, Y left, Z up) -> camera (right, down, forward); see Camera.project."""
    p = math.radians(pitch_deg)
    return np.array(
        [
            [0.0, -1.0, 0.0],
            [-math.sin(p), 0.0, -math.cos(p)],
            [math.cos(p), 0.0, -math.sin(p)],
        ]
    )


@dataclass(frozen=True, eq=False)
class ViewGeometry:
    """What the viewpoint shift needs to know about a model-size frame.

    Build it with :meth:`from_camera` (a source :class:`Camera` plus the dataset's
    :class:`CropResize`, e.g. ``ViewGeometry.from_camera(ds.camera, ds.crop)``) or
    :meth:`from_homography` (an image -> ground homography plus model-pixel intrinsics). The
    camera is assumed to have no roll, so the horizon is an image row.

    Attributes:
        ground_to_image: 3x3, vehicle-frame ground ``(X, Y, 1)`` -> model pixel ``(u, v, 1)``.
        ray_to_image: 3x3, vehicle-frame direction ``(dX, dY, dZ)`` -> model pixel ``(u, v, 1)``.
        size: model frame ``(H, W)``.
    """

    ground_to_image: np.ndarray
    ray_to_image: np.ndarray
    size: tuple[int, int]
    _inv_ground: np.ndarray = field(init=False, repr=False)
    _inv_ray: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        g = np.asarray(self.ground_to_image, dtype=np.float64)
        a = np.asarray(self.ray_to_image, dtype=np.float64)
        for name, m in (("ground_to_image", g), ("ray_to_image", a)):
            if m.shape != (3, 3) or not np.all(np.isfinite(m)):
                raise PDNError(f"{name}: expected a finite 3x3 matrix, got shape {m.shape}")
            if not np.linalg.cond(m) < 1e12:
                raise PDNError(f"{name}: matrix is singular")
        try:
            h, w = (int(x) for x in self.size)
        except (TypeError, ValueError):
            raise PDNError(f"size: expected (H, W), got {self.size!r}") from None
        if h < 2 or w < 2:
            raise PDNError(f"size: expected at least 2x2, got {self.size!r}")
        object.__setattr__(self, "ground_to_image", g)
        object.__setattr__(self, "ray_to_image", a)
        object.__setattr__(self, "size", (h, w))
        object.__setattr__(self, "_inv_ground", np.linalg.inv(g))
        object.__setattr__(self, "_inv_ray", np.linalg.inv(a))

    @classmethod
    def from_camera(cls, camera: Camera, crop: CropResize | None = None) -> ViewGeometry:
        """Geometry of a source camera's frames after ``crop`` (identity crop when None)."""
        if not isinstance(camera, Camera):
            raise PDNError(f"camera: expected a Camera, got {type(camera).__name__}")
        if crop is None:
            c, size = np.eye(3), (camera.height, camera.width)
        elif isinstance(crop, CropResize):
            if crop.top + crop.bottom >= camera.height or crop.left + crop.right >= camera.width:
                raise PDNError(
                    f"crop: {crop} leaves nothing of the {camera.height}x{camera.width} camera image"
                )
            c, size = crop.matrix((camera.height, camera.width)), crop.size
        else:
            raise PDNError(f"crop: expected a CropResize or None, got {type(crop).__name__}")
        return cls(
            ground_to_image=c @ camera.ground_homography(),
            ray_to_image=c @ camera.intrinsics() @ _camera_rotation(camera.pitch_deg),
            size=size,
        )

    @classmethod
    def from_homography(
        cls, image_to_ground: np.ndarray, intrinsics: np.ndarray, size: tuple[int, int]
    ) -> ViewGeometry:
        """Geometry from a model-pixel -> ground homography (e.g. ``DriveDataset.image_to_ground()``).

        Args:
            image_to_ground: 3x3, model pixel -> vehicle ground ``(X, Y, 1)``.
            intrinsics: 3x3 K of the *model-size* image (after crop and resize).
            size: model frame ``(H, W)``.

        The camera rotation is recovered from ``K^-1 G = lambda [r_x, r_y, t]`` with
        ``r_z = r_x x r_y``; the scale is fixed by unit-length ``r_x``, ``r_y`` and the sign by a
        positive depth of the forward direction.
        """
        m_i2g = np.asarray(image_to_ground, dtype=np.float64)
        k = np.asarray(intrinsics, dtype=np.float64)
        if (
            m_i2g.shape != (3, 3)
            or k.shape != (3, 3)
            or not (np.all(np.isfinite(m_i2g)) and np.all(np.isfinite(k)))
        ):
            raise PDNError(
                f"image_to_ground / intrinsics: expected finite 3x3 matrices, got {m_i2g.shape} and {k.shape}"
            )
        try:
            g = np.linalg.inv(m_i2g)
            m = np.linalg.solve(k, g)
        except np.linalg.LinAlgError:
            raise PDNError("image_to_ground / intrinsics: matrix is singular") from None
        m = m / (0.5 * (np.linalg.norm(m[:, 0]) + np.linalg.norm(m[:, 1])))
        if m[2, 0] < 0:  # forward must lie in front of the camera
            m = -m
        rot = np.column_stack([m[:, 0], m[:, 1], np.cross(m[:, 0], m[:, 1])])
        return cls(ground_to_image=g, ray_to_image=k @ rot, size=size)

    @property
    def horizon_row(self) -> float:
        """Model-pixel row of the horizon at the centre column (may be fractional or outside)."""
        # image of the ground's line at infinity: through the vanishing points of X and Y
        line = np.cross(self.ray_to_image[:, 0], self.ray_to_image[:, 1])
        u = (self.size[1] - 1) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(-(line[0] * u + line[2]) / line[1])

    @property
    def ground_start_row(self) -> int:
        """First model row warped as ground (``ceil(horizon_row)`` clipped to ``[0, H]``)."""
        h = self.horizon_row
        if math.isnan(h):
            return 0
        return int(np.clip(math.ceil(h) if math.isfinite(h) else h, 0, self.size[0]))

    def image_to_ground(self) -> np.ndarray:
        """3x3, model pixel -> vehicle ground ``(X, Y, 1)``."""
        return self._inv_ground.copy()


def _as_view(camera: Camera | ViewGeometry, crop: CropResize | None) -> ViewGeometry:
    if isinstance(camera, ViewGeometry):
        if crop is not None:
            raise PDNError(
                "crop: give a crop with a Camera, not with a ViewGeometry (it already includes it)"
            )
        return camera
    return ViewGeometry.from_camera(camera, crop)


def _motion_matrices(dy: np.ndarray, dpsi_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Old-frame -> new-frame maps for ground points (S) and directions (Rz), each (n, 3, 3)."""
    psi = np.radians(dpsi_deg)
    c, s = np.cos(psi), np.sin(psi)
    zero, one = np.zeros_like(c), np.ones_like(c)
    ground = np.stack(
        [np.stack([c, s, -s * dy], -1), np.stack([-s, c, -c * dy], -1), np.stack([zero, zero, one], -1)], -2
    )
    rot = np.stack(
        [np.stack([c, s, zero], -1), np.stack([-s, c, zero], -1), np.stack([zero, zero, one], -1)], -2
    )
    return ground, rot


def _homographies(view: ViewGeometry, dy: np.ndarray, dpsi_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched :func:`viewpoint_homographies`: (n,) shifts -> two (n, 3, 3) stacks."""
    s_ground, r_sky = _motion_matrices(dy, dpsi_deg)
    h_ground = view.ground_to_image @ s_ground @ view._inv_ground  # (n, 3, 3)
    h_sky = view.ray_to_image @ r_sky @ view._inv_ray  # (n, 3, 3)
    return h_ground / h_ground[:, 2:3, 2:3], h_sky / h_sky[:, 2:3, 2:3]


def viewpoint_homographies(
    view: ViewGeometry | Camera, dy: float, dpsi: float, crop: CropResize | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel maps of the PilotNet viewpoint shift, original model pixel -> shifted model pixel.

    Args:
        view: the frame's geometry (or a source :class:`Camera`, then with ``crop``).
        dy: lateral shift of the car in metres, positive = to the left.
        dpsi: yaw of the car about its rear axle in degrees, positive = to the left.
        crop: only with a Camera: the crop/resize to model size.

    Returns:
        ``(H_ground, H_sky)``, each 3x3 normalised to ``H[2, 2] = 1``: ``H_ground = G S G^-1``
        for points on the flat ground, ``H_sky = A Rz(-psi) A^-1`` for points at infinity
        (see the module docstring).
    """
    v = _as_view(view, crop)
    dy = _check_finite("dy", dy)
    dpsi = _check_finite("dpsi", dpsi, -90.0, 90.0)
    h_ground, h_sky = _homographies(v, np.array([dy]), np.array([dpsi]))
    return h_ground[0], h_sky[0]


def _warp(frame: np.ndarray, h_ground: np.ndarray, h_sky: np.ndarray, row0: int) -> np.ndarray:
    """Rows >= row0 through h_ground, rows < row0 through h_sky; bilinear, borders replicated."""
    height, width = frame.shape[:2]
    # OpenCV's bilinear warp has a vectorised path for 4 channels that a 3-channel image misses:
    # the detour through RGBA gives identical pixels in about half the time.
    rgba = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA)
    out = np.empty_like(rgba)
    flags, border = cv2.INTER_LINEAR, cv2.BORDER_REPLICATE
    if row0 > 0:
        out[:row0] = cv2.warpPerspective(rgba, h_sky, (width, row0), flags=flags, borderMode=border)
    if row0 < height:
        to_band = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -row0], [0.0, 0.0, 1.0]])  # output rows start at row0
        out[row0:] = cv2.warpPerspective(
            rgba, to_band @ h_ground, (width, height - row0), flags=flags, borderMode=border
        )
    return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB)


def shift_frame(
    frame: np.ndarray, view: ViewGeometry | Camera, dy: float, dpsi: float, crop: CropResize | None = None
) -> np.ndarray:
    """Re-project a frame as seen from a car shifted ``dy`` m left and yawed ``dpsi`` deg left.

    Flat-ground approximation (PilotNet sec. 5): rows below the horizon are warped with
    ``H_ground``, rows above with ``H_sky`` (:func:`viewpoint_homographies`), bilinear, with
    border pixels replicated where the new view looks outside the original one. Objects that
    stand on the road (cars, poles) are smeared as if painted on it.

    Args:
        frame: uint8 RGB model-size frame.
        view: its geometry (or a source :class:`Camera`, then with ``crop``).
        dy: lateral shift in metres, positive = left.
        dpsi: yaw in degrees, positive = left.
        crop: only with a Camera.

    Returns:
        The warped frame, a new uint8 array.

    Shape:
        frame: (H, W, 3) -> (H, W, 3)
    """
    v = _as_view(view, crop)
    frame = _check_frame(frame, size=v.size)
    h_ground, h_sky = viewpoint_homographies(v, dy, dpsi)
    if dy == 0 and dpsi == 0:
        return frame.copy()
    return _warp(frame, h_ground, h_sky, v.ground_start_row)


def steering_correction_deg(
    dy: np.ndarray | float,
    dpsi: np.ndarray | float,
    speed: float = 10.0,
    horizon_s: float = 2.0,
    wheelbase: float = WHEELBASE_M,
) -> np.ndarray:
    """Steering to add to a label after a viewpoint shift so the car returns to its path.

    The original path is taken as locally straight: the ray from the original rear axle along
    the original heading. Its point ``L = speed * horizon_s`` metres ahead, ``(L, 0)`` in the
    original vehicle frame, is expressed in the shifted frame (rear axle at ``(0, dy)``, heading
    ``psi``)::

        x' =  L cos psi - dy sin psi
        y' = -L sin psi - dy cos psi

    and the correction is the pure-pursuit angle toward it,
    ``atan(2 wheelbase y' / (x'^2 + y'^2))`` (Coulter 1992), clipped to +-MAX_STEER_DEG. The
    corrected label is ``original + correction`` (not clipped again). Driving that arc puts the
    rear axle on the path at the target after about ``horizon_s`` seconds. A car moved left
    (``dy > 0``) or turned left (``dpsi > 0``) gets a negative (rightward) correction.

    Args:
        dy: lateral shift in metres, positive = left.
        dpsi: yaw in degrees, positive = left.
        speed: m/s, > 0.
        horizon_s: seconds to rejoin the path, > 0.
        wheelbase: metres.

    Returns:
        Corrections in degrees, positive = left, broadcast shape of ``dy`` and ``dpsi``.
    """
    speed = _check_finite("speed", speed, 1e-3, 1e3)
    horizon_s = _check_finite("horizon_s", horizon_s, 1e-3, 1e3)
    wheelbase = _check_finite("wheelbase", wheelbase, 1e-3, 100.0)
    dy = np.asarray(dy, dtype=np.float64)
    psi = np.radians(np.asarray(dpsi, dtype=np.float64))
    lookahead = speed * horizon_s
    x = lookahead * np.cos(psi) - dy * np.sin(psi)
    y = -lookahead * np.sin(psi) - dy * np.cos(psi)
    return pure_pursuit_deg(x, y, wheelbase)


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
        self.view = _as_view(camera, crop)
        self.flip_p = _check_finite("flip_p", flip_p, 0.0, 1.0)
        self.shift_m = _check_finite("shift_m", shift_m, 0.0, 100.0)
        self.rot_deg = _check_finite("rot_deg", rot_deg, 0.0, 45.0)
        self.speed = _check_finite("speed", speed, 1e-3, 1e3)
        self.horizon_s = _check_finite("horizon_s", horizon_s, 1e-3, 1e3)
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
        h_ground, h_sky = _homographies(self.view, params.dy, params.dpsi)  # (n, 3, 3) each
        row0 = self.view.ground_start_row
        out = np.empty_like(frames)
        for i in range(n):
            f = frames[i]
            if moved[i]:
                f = _warp(np.ascontiguousarray(f), h_ground[i], h_sky[i], row0)
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
