"""The renderer's shading core: one pure tensor function per frame batch, and the road tables it reads.

:func:`render_core` turns poses, lighting and camera-fixed constants into colour (it compiles
into fused loops under ``torch.compile``); :class:`RoadTables` holds everything it reads from a
road as tensors on one device, so one compiled core serves every road.
:class:`drivenet_patch.world.render.Renderer` prepares the arguments and chunks the frames.

Shading: material weights (ground, shoulder, asphalt, edge line, centre line) are box-filtered
by the pixel's ground footprint (analytic anti-aliasing of lane markings), multiplied with a
(materials x RGB) colour table, then lit (brightness, colour temperature, cast shadows) and
hazed with distance: ``colour = albedo * gain + offset`` with ``gain = light (1 - shadow)
(1 - haze)`` and ``offset = haze * haze_rgb``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from drivenet_patch.world.road import LANE_WIDTH_M, Road

NOISE_N = 256  # periodic noise texture size
NOISE_TEXEL_M = 0.04  # asphalt noise texel
GROUND_TEXEL_M = 0.12  # grass/dirt noise texel
TREE_N = 2048  # tree-line height table over 360 degrees
SHADOW_STEP_M = 0.1
FAR_M = 1.0e4  # haze distance for the sky and the ground near the horizon


def _periodic_noise(rng: np.random.Generator, n: int = NOISE_N) -> np.ndarray:
    """Tileable value noise in [-1, 1]: octaves of bilinearly upsampled periodic random grids."""
    out = np.zeros((n, n), np.float32)
    amp, total = 1.0, 0.0
    for cells in (8, 16, 32, 64, 128, 256):
        if cells > n:
            break
        g = rng.standard_normal((cells, cells)).astype(np.float32)
        rep = n // cells
        # periodic bilinear upsampling
        idx = np.arange(n) / rep
        i0 = np.floor(idx).astype(int) % cells
        i1 = (i0 + 1) % cells
        f = (idx - np.floor(idx)).astype(np.float32)
        rows = g[i0] * (1 - f)[:, None] + g[i1] * f[:, None]
        out += amp * (rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :])
        total += amp
        amp *= 0.6
    out /= total
    return np.clip(out / (np.abs(out).max() + 1e-6), -1.0, 1.0)


def _periodic_noise_1d(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Periodic 1-D value noise in [-1, 1] with ``cells`` random knots, linearly interpolated."""
    knots = rng.uniform(-1.0, 1.0, cells)
    x = np.arange(n) * (cells / n)
    i0 = np.floor(x).astype(int) % cells
    f = x - np.floor(x)
    return (knots[i0] * (1 - f) + knots[(i0 + 1) % cells] * f).astype(np.float32)


class RoadTables:
    """A road's lookup tables and style as tensors on one device (built once per road and device).

    Everything the render core reads from the road is a tensor, so a compiled core is reused
    across roads instead of being re-specialised to each road's constants.
    """

    def __init__(self, road: Road, device: torch.device) -> None:
        rng = np.random.default_rng([road.seed if road.seed is not None else 7, 0x7E47])
        f32 = dict(dtype=torch.float32, device=device)
        self.n = len(road.s)
        self.taylor = torch.tensor(road.taylor.reshape(-1, 4), **f32)  # (G, 4) s, d, cos, sin
        self.tmeta = torch.tensor([road.grid_origin[0], road.grid_origin[1]], **f32)
        self.tshape = torch.tensor(road.taylor_shape, dtype=torch.int64, device=device)
        self.noise = torch.tensor(_periodic_noise(rng).ravel(), **f32)
        self.ground_noise = torch.tensor(_periodic_noise(rng).ravel(), **f32)
        tree = road.style.tree_height_deg * (0.55 + 0.45 * _periodic_noise_1d(rng, TREE_N, 24))
        tree = tree + 0.6 * np.abs(_periodic_noise_1d(rng, TREE_N, 400))  # crowns
        self.tree_rad = torch.tensor(np.radians(np.maximum(tree, 0.0)), **f32)
        self.shadows = torch.tensor(road.shadows, **f32)  # (M, 4) opacity, d_lo, d_hi, half-width
        st = road.style
        self.colours_t = torch.tensor(
            [st.ground_rgb, st.shoulder_rgb, st.asphalt_rgb, st.edge_rgb, st.centre_rgb], **f32
        ).t().contiguous()  # (3, 5): ground, shoulder, asphalt, edge, centre
        self.sky_cols = torch.tensor([st.sky_rgb, st.horizon_rgb, st.tree_rgb], **f32)  # (3, 3)
        paint = 1.0 - 0.5 * st.marking_wear
        # Centre marking as one line |d| = offset of some width, painted `dash` metres per `period`:
        # dashed white 3 m every 12 m; double yellow two 0.1 m lines 0.22 m apart; solid yellow.
        offset, width, dash = {"dashed": (0.0, 0.12, 3.0), "double_yellow": (0.11, 0.1, 12.0),
                               "solid_yellow": (0.0, 0.12, 12.0)}[st.markings]
        self.style = torch.tensor(
            [st.shoulder_m, st.asphalt_noise, st.ground_noise, paint, offset, width, dash,
             math.tan(math.radians(st.sun_azimuth_deg))],
            **f32,
        )


def _line(x: torch.Tensor, centre: float | torch.Tensor, width: float | torch.Tensor, fp: torch.Tensor,
          inv_fp: torch.Tensor) -> torch.Tensor:
    """Box-filtered coverage of the line |x - centre| < width/2 by a pixel of ground footprint fp."""
    cov = (0.5 * width + 0.5 * fp - (x - centre).abs()) * inv_fp
    return torch.minimum(cov.clamp(0.0, 1.0), (width * inv_fp).clamp(max=1.0))


def _dashes(s: torch.Tensor, fp: torch.Tensor, period: float, dash: float | torch.Tensor) -> torch.Tensor:
    """Box-filtered coverage along s of ``dash`` metres painted every ``period`` metres."""

    def integral(x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x * (1.0 / period)) * dash + torch.remainder(x, period).clamp(max=dash)

    half = 0.5 * fp
    return ((integral(s + half) - integral(s - half)) / fp).clamp(0.0, 1.0)


def render_core(
    px: torch.Tensor, py: torch.Tensor, yaw: torch.Tensor, light_rgb: torch.Tensor, haze_beta: torch.Tensor,
    shadow_str: torch.Tensor, haze_rgb: torch.Tensor,
    gX: torch.Tensor, gY: torch.Tensor, g_dist: torch.Tensor, fp: torch.Tensor, fp_lon: torch.Tensor,
    noise_att: torch.Tensor, ground_att: torch.Tensor, s_az: torch.Tensor, s_elev: torch.Tensor, pix_rad: float,
    taylor: torch.Tensor, tmeta: torch.Tensor, tshape: torch.Tensor, noise: torch.Tensor, gnoise: torch.Tensor,
    shadows: torch.Tensor, tree_rad: torch.Tensor, style: torch.Tensor, colours_t: torch.Tensor,
    sky_cols: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The whole per-frame shading as one pure tensor function (compiles into fused loops).

    Shapes: poses px, py, yaw (B, 1); light_rgb, haze_rgb (B, 3); haze_beta, shadow_str (B, 1);
    ground constants (Pg,); sky constants (Ps,). Returns image, albedo, gain, offset as
    (B, 3, Ps + Pg) and the ground pixels' world coordinates wx, wy as (B, Pg).
    """
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    # ---------------- ground: world point -> road coordinates (first-order from cell centre)
    wx = px + gX * cos - gY * sin  # (B, Pg)
    wy = py + gX * sin + gY * cos
    fx = wx - tmeta[0]
    fy = wy - tmeta[1]
    ci = fx.floor()
    cj = fy.floor()
    inside = (ci >= 0) & (ci < tshape[0]) & (cj >= 0) & (cj < tshape[1])
    idx = ci.long().clamp(min=0).minimum(tshape[0] - 1) * tshape[1] + cj.long().clamp(min=0).minimum(tshape[1] - 1)
    cell = taylor[idx]  # (B, Pg, 4)
    dx = fx - ci - 0.5
    dy = fy - cj - 0.5
    c, sn = cell[..., 2], cell[..., 3]
    s = cell[..., 0] + dx * c + dy * sn
    d = torch.where(inside, cell[..., 1] - dx * sn + dy * c, torch.full_like(dx, 1e3))
    ad = d.abs()
    inv_fp = 1.0 / fp
    w_road = ((LANE_WIDTH_M - ad) * inv_fp + 0.5).clamp(0.0, 1.0)
    w_sh = ((LANE_WIDTH_M + style[0] - ad) * inv_fp + 0.5).clamp(0.0, 1.0) - w_road
    paint = style[3]
    w_edge = _line(ad, LANE_WIDTH_M - 0.2, 0.15, fp, inv_fp) * paint
    w_ctr = _line(ad, style[4], style[5], fp, inv_fp) * _dashes(s, fp_lon, 12.0, style[6]) * paint
    n_idx = ((s * (1.0 / NOISE_TEXEL_M)).long() & (NOISE_N - 1)) * NOISE_N + (
        ((d + 1000.0) * (1.0 / NOISE_TEXEL_M)).long() & (NOISE_N - 1))
    g_idx = ((wx * (1.0 / GROUND_TEXEL_M)).long() & (NOISE_N - 1)) * NOISE_N + (
        (wy * (1.0 / GROUND_TEXEL_M)).long() & (NOISE_N - 1))
    nz = noise[n_idx] * noise_att
    gz = gnoise[g_idx] * ground_att
    w_asph = (w_road - w_edge - w_ctr) * (1.0 + style[1] * nz)
    w_gr = (1.0 - w_road - w_sh) * (1.0 + style[2] * gz)
    w_sh = w_sh * (1.0 + 0.5 * style[2] * gz)
    # (3, 5) colour table times the five material weights -> (B, 3, Pg), written out so it fuses.
    col = colours_t.unsqueeze(0).unsqueeze(-1)  # (1, 3, 5, 1)
    albedo_g = (
        col[:, :, 0] * w_gr.unsqueeze(1) + col[:, :, 1] * w_sh.unsqueeze(1) + col[:, :, 2] * w_asph.unsqueeze(1)
        + col[:, :, 3] * w_edge.unsqueeze(1) + col[:, :, 4] * w_ctr.unsqueeze(1)
    )
    u_idx = ((s - d * style[7]) * (1.0 / SHADOW_STEP_M)).round().clamp(0, shadows.shape[0] - 1).long()
    sh = shadows[u_idx]  # (B, Pg, 4)
    in_band = (d > sh[..., 1]) & (d < sh[..., 2])
    # A caster narrower than the pixel's footprint darkens only part of it (anti-aliasing).
    cover = (2.0 * sh[..., 3] / fp_lon).clamp(max=1.0)
    lit = 1.0 - torch.where(in_band, sh[..., 0] * cover, torch.zeros_like(d)) * shadow_str * 0.75
    hz = 1.0 - torch.exp(-haze_beta * g_dist)  # (B, Pg)
    gain_g = light_rgb.unsqueeze(-1) * ((1.0 - hz) * lit).unsqueeze(1)  # (B, 3, Pg)
    offset_g = hz.unsqueeze(1) * haze_rgb.unsqueeze(-1)
    # ---------------- sky: gradient, tree line by azimuth
    az = s_az + yaw  # (B, Ps)
    t_idx = torch.remainder((az * (TREE_N / (2 * math.pi))).floor().long(), TREE_N)
    elev = s_elev.unsqueeze(0)
    w_tree = ((tree_rad[t_idx] - elev) * (1.0 / pix_rad) + 0.5).clamp(0.0, 1.0)  # (B, Ps)
    grad = (elev.clamp(min=0.0) * 4.0).clamp(max=1.0)
    sky = sky_cols[1].view(1, 3, 1) + grad.unsqueeze(1) * (sky_cols[0] - sky_cols[1]).view(1, 3, 1)
    albedo_s = sky + w_tree.unsqueeze(1) * (sky_cols[2].view(1, 3, 1) - sky)  # (B, 3, Ps)
    hz_s = w_tree * (1.0 - torch.exp(-haze_beta * 400.0)) + (1.0 - w_tree) * 0.35
    gain_s = light_rgb.unsqueeze(-1) * (1.0 - hz_s).unsqueeze(1)
    offset_s = hz_s.unsqueeze(1) * haze_rgb.unsqueeze(-1)
    albedo = torch.cat([albedo_s, albedo_g], dim=2)
    gain = torch.cat([gain_s, gain_g], dim=2)
    offset = torch.cat([offset_s, offset_g], dim=2)
    image = (albedo * gain + offset).clamp(0.0, 1.0)
    return image, albedo, gain, offset, wx, wy


def render_image_core(*args: torch.Tensor | float) -> torch.Tensor:
    """Only the image of :func:`render_core` (compiled alone, the unused outputs are never stored)."""
    return render_core(*args)[0]


def render_uint8_core(*args: torch.Tensor | float) -> torch.Tensor:
    """The image of :func:`render_core` as uint8 (B, P, 3), rounded to nearest (the dataset format)."""
    image = render_core(*args)[0]
    return (image * 255.0).round().to(torch.uint8).transpose(1, 2)


__all__ = [
    "FAR_M",
    "GROUND_TEXEL_M",
    "NOISE_N",
    "NOISE_TEXEL_M",
    "SHADOW_STEP_M",
    "TREE_N",
    "RoadTables",
    "render_core",
    "render_image_core",
    "render_uint8_core",
]
