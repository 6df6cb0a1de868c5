"""Where a flat road sticker lands in a real frame: the flat-ground homography and the local lighting.

* :func:`homography_maps`: the per-pixel sticker maps (``uv``, ``mask``) of a ``width_m x
  length_m`` rectangle on the ground, seen through a dataset's image-to-ground homography.
* :func:`local_gain`: the sticker's lighting estimated from the road right around it.

:func:`attacks.scenes.frame_scenes` builds attack scenes on real frames from these two; world
scenes get exact maps from the renderer instead (:func:`attacks.scenes.world_scenes`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.composite import mask4


def homography_maps(
    image_to_ground: np.ndarray, size: tuple[int, int], distance_m: float, lateral_m: float = 0.0,
    width_m: float = 3.5, length_m: float = 2.0, yaw_deg: float = 0.0, device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps of a flat road sticker seen through a flat-ground homography.

    The sticker is a ``width_m x length_m`` rectangle on the ground. ``(distance_m, lateral_m)``
    is the midpoint of its near edge in the homography's ground frame (for
    :meth:`DriveDataset.image_to_ground <drivenet_patch.data.base.DriveDataset.image_to_ground>`
    the vehicle frame: X metres ahead of the rear axle, the camera being ``camera.forward_m``
    ahead of it, Y to the left); it extends ``length_m`` ahead from there, turned by ``yaw_deg``
    (counter-clockwise). Texture row 0 is the far end and column 0 the driver's left, as for a
    world road sticker, so the same texture reads the same way in both.

    Args:
        image_to_ground: 3x3, model pixel ``(u, v, 1)`` -> ground ``(X, Y, 1)`` (any scale).
        size: frame ``(H, W)``.
        distance_m, lateral_m, width_m, length_m, yaw_deg: the rectangle (see above).
        device: where the maps go.

    Returns:
        ``(uv, mask)``: (H, W, 2) float32 ``grid_sample`` coordinates and (H, W) bool coverage.
        Pixels above the horizon never see the sticker.

    Raises:
        PDNError: bad matrix, size or rectangle.
    """
    g = np.asarray(image_to_ground, dtype=np.float64)
    if g.shape != (3, 3) or not np.all(np.isfinite(g)):
        raise PDNError(f"image_to_ground: expected a finite 3x3 matrix, got shape {g.shape}")
    try:
        to_image = np.linalg.inv(g)
    except np.linalg.LinAlgError:
        raise PDNError("image_to_ground: matrix is singular") from None
    try:
        H, W = (int(x) for x in size)
    except (TypeError, ValueError):
        raise PDNError(f"size: expected (H, W), got {size!r}") from None
    if H < 1 or W < 1:
        raise PDNError(f"size must be >= 1 x 1, got {size!r}")
    for name, value in (("distance_m", distance_m), ("lateral_m", lateral_m), ("yaw_deg", yaw_deg)):
        if not math.isfinite(value):
            raise PDNError(f"{name} must be finite, got {value}")
    if not (width_m > 0 and length_m > 0 and math.isfinite(width_m) and math.isfinite(length_m)):
        raise PDNError(f"sticker size must be > 0, got {width_m} x {length_m} m")
    # The homography is defined up to scale (and sign): the third coordinate of a ground point in
    # front of the camera has the sign of `front`, found from a point far ahead.
    front = np.sign((to_image @ np.array([1.0e4, 0.0, 1.0]))[2])
    gt = torch.tensor(g * front, dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                          indexing="ij")
    p = torch.stack([u, v, torch.ones_like(u)], dim=-1) @ gt.T  # (H, W, 3)
    ok = p[..., 2] > 1e-12
    wz = torch.where(ok, p[..., 2], torch.ones_like(u))
    X, Y = p[..., 0] / wz, p[..., 1] / wz
    psi = math.radians(yaw_deg)
    c, s = math.cos(psi), math.sin(psi)
    cx, cy = distance_m + 0.5 * length_m * c, lateral_m + 0.5 * length_m * s  # centre
    rx, ry = X - cx, Y - cy
    tu = (rx * s - ry * c) / width_m + 0.5  # towards the driver's right
    tv = 0.5 - (rx * c + ry * s) / length_m  # row 0 at the far end
    mask = ok & (tu >= 0) & (tu <= 1) & (tv >= 0) & (tv <= 1)
    uv = torch.stack([tu * 2.0 - 1.0, tv * 2.0 - 1.0], dim=-1)
    uv = torch.where(mask.unsqueeze(-1), uv, torch.zeros_like(uv)).float()
    return uv.to(device), mask.to(device)


def local_gain(frames: torch.Tensor, mask: torch.Tensor, road_albedo: float = 0.35,
               ring_px: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Lighting of a sticker on a real frame, from the road right around it.

    The road colour is the per-channel median of the pixels in a ring ``ring_px`` wide around
    the sticker (the median ignores lane markings and small shadows in the ring). A surface of
    albedo ``a`` under the light that makes asphalt of albedo ``road_albedo`` look like that
    colour looks ``a * colour / road_albedo``, so ``gain = colour / road_albedo`` (clamped to
    [0.2, 3]). ``road_albedo = 0.35`` is the grey of the world's default asphalt, so gain = 1
    on a world frame in neutral light. Frames whose ring is empty get gain 1.

    Args:
        frames: (B, 3, H, W) frames in [0, 1].
        mask: (B, H, W) or (H, W) bool sticker coverage.
        road_albedo: assumed albedo of the road surface.
        ring_px: width of the ring, pixels.

    Returns:
        ``(gain, road_rgb)``: (B, 3, 1, 1) gain and (B, 3) median road colour (NaN where the ring is empty).
    """
    if not 0.0 < road_albedo <= 1.0:
        raise PDNError(f"road_albedo must lie in (0, 1], got {road_albedo}")
    B = frames.shape[0]
    m = mask4(mask).expand(B, -1, -1, -1).float()
    k = 2 * int(ring_px) + 1
    ring = (F.max_pool2d(m, k, stride=1, padding=int(ring_px)) > 0) & (m == 0)  # (B, 1, H, W)
    vals = torch.where(ring, frames, torch.full_like(frames, float("nan"))).flatten(2)  # (B, 3, HW)
    colour = torch.nanmedian(vals, dim=2).values  # (B, 3)
    gain = torch.where(torch.isnan(colour), torch.ones_like(colour), (colour / road_albedo).clamp(0.2, 3.0))
    return gain.view(B, 3, 1, 1), colour


__all__ = ["homography_maps", "local_gain"]
