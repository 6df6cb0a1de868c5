"""The PilotNet viewpoint shift: re-project a frame as if the car stood elsewhere, and correct the label.

Bojarski et al., "End to End Learning for Self-Driving Cars", 2016, sec. 4-5. A frame is
re-projected as if the car stood ``dy`` metres to the left and were yawed ``dpsi`` degrees to
the left, assuming a flat ground and objects above the horizon at infinity
(:func:`shift_frame`, :func:`viewpoint_homographies`), and the label gets a correction that
steers back to the original path within ``horizon_s`` seconds (:func:`steering_correction_deg`).
:class:`drivenet_patch.training.augment.Augmenter` draws the shifts and applies them to training batches.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from drivenet_patch.data.base import CropResize
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.tensors import check_finite, check_uint8_frame
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.vehicle import WHEELBASE_M, pure_pursuit_deg

__all__ = [
    "ViewGeometry",
    "as_view",
    "batch_homographies",
    "shift_frame",
    "steering_correction_deg",
    "viewpoint_homographies",
    "warp_frame",
]


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


def as_view(camera: Camera | ViewGeometry, crop: CropResize | None) -> ViewGeometry:
    """A :class:`ViewGeometry` from a source camera (plus crop) or the geometry itself."""
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


def batch_homographies(view: ViewGeometry, dy: np.ndarray, dpsi_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    v = as_view(view, crop)
    dy = check_finite("dy", dy)
    dpsi = check_finite("dpsi", dpsi, -90.0, 90.0)
    h_ground, h_sky = batch_homographies(v, np.array([dy]), np.array([dpsi]))
    return h_ground[0], h_sky[0]


def warp_frame(frame: np.ndarray, h_ground: np.ndarray, h_sky: np.ndarray, row0: int) -> np.ndarray:
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
    v = as_view(view, crop)
    frame = check_uint8_frame(frame, size=v.size)
    h_ground, h_sky = viewpoint_homographies(v, dy, dpsi)
    if dy == 0 and dpsi == 0:
        return frame.copy()
    return warp_frame(frame, h_ground, h_sky, v.ground_start_row)


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
    speed = check_finite("speed", speed, 1e-3, 1e3)
    horizon_s = check_finite("horizon_s", horizon_s, 1e-3, 1e3)
    wheelbase = check_finite("wheelbase", wheelbase, 1e-3, 100.0)
    dy = np.asarray(dy, dtype=np.float64)
    psi = np.radians(np.asarray(dpsi, dtype=np.float64))
    lookahead = speed * horizon_s
    x = lookahead * np.cos(psi) - dy * np.sin(psi)
    y = -lookahead * np.sin(psi) - dy * np.cos(psi)
    return pure_pursuit_deg(x, y, wheelbase)
