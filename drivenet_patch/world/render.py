"""Batched, vectorised dashcam renderer for the procedural driving world.

Rays are fixed in the camera frame, so everything that depends on the pixel alone (ground
hit point in the vehicle frame, pixel footprint on the ground, distance, sky direction) is
computed once per camera. Per frame only the pose transform, the road-coordinate lookup
(coarse grid guess + two projection steps onto the centre line) and the shading remain, all
as batched torch ops over (frames x pixels).

The per-frame shading is one pure tensor function, :func:`drivenet_patch.world.shading.render_core`;
this module holds the lighting, the camera-fixed constants, chunking and the sticker maps.

Stickers: a planar texture at a fixed world pose, on the road surface or as a billboard.
With ``with_maps=True`` the renderer also returns each pixel's sticker coordinates (in
``grid_sample``'s [-1, 1] convention), the coverage mask and the per-pixel gain/offset, so
the one compositing function (:func:`drivenet_patch.world.composite.apply_sticker`) re-creates
the frame from any differentiable texture.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.world.camera import Camera
from drivenet_patch.world.road import Road
from drivenet_patch.world.shading import (
    FAR_M,
    GROUND_TEXEL_M,
    NOISE_TEXEL_M,
    RoadTables,
    render_core,
    render_image_core,
    render_uint8_core,
)
from drivenet_patch.world.sticker import ResolvedSticker, StickerPlacement


@dataclass
class Lighting:
    """Per-frame lighting, each a (B,) float tensor.

    Attributes:
        brightness: overall gain (1 = nominal daylight).
        temperature: -1 (cool, blue) ... +1 (warm, orange).
        haze: extinction coefficient in 1/m (0 = clear; 0.01 = thick haze).
        shadow: opacity scale of cast shadows (0 = overcast, 1 = direct sun).
        sun_elevation_deg: height of the sun; None means 45 deg for every frame. The direct
            share of the light goes with sin(elevation): a low sun lights the scene less and
            casts weaker shadows (more of the light is diffuse sky light); 45 deg is neutral.
    """

    brightness: torch.Tensor
    temperature: torch.Tensor
    haze: torch.Tensor
    shadow: torch.Tensor
    sun_elevation_deg: torch.Tensor | None = None

    @classmethod
    def neutral(cls, n: int, device: str | torch.device = "cpu") -> Lighting:
        one = torch.ones(n, device=device)
        return cls(one, one * 0.0, one * 0.002, one * 0.8, one * 45.0)

    @classmethod
    def sample(cls, rng: np.random.Generator, n: int, device: str | torch.device = "cpu") -> Lighting:
        """Varied daylight: brightness 0.55-1.3, colour temperature, light to thick haze, sun or
        overcast, sun 10-70 deg high."""

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=device)

        return cls(
            brightness=t(rng.uniform(0.55, 1.3, n)),
            temperature=t(rng.uniform(-1.0, 1.0, n)),
            haze=t(rng.uniform(0.0, 1.0, n) ** 2 * 0.012 + 0.0005),
            shadow=t(np.where(rng.random(n) < 0.25, rng.uniform(0.0, 0.3, n), rng.uniform(0.6, 1.0, n))),
            sun_elevation_deg=t(rng.uniform(10.0, 70.0, n)),
        )

    def _elevation(self) -> torch.Tensor:
        if self.sun_elevation_deg is None:
            return torch.full_like(self.brightness, 45.0)
        return self.sun_elevation_deg

    def direct(self) -> torch.Tensor:
        """Direct-light share relative to a 45 deg sun: sin(elevation) / sin(45 deg), (B,)."""
        return torch.sin(torch.deg2rad(self._elevation().clamp(0.0, 90.0))) / math.sin(math.pi / 4)

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(brightness, shadow opacity) after the sun's elevation, each (B,)."""
        direct = self.direct()
        return self.brightness * (0.6 + 0.4 * direct), self.shadow * direct.clamp(0.2, 1.0)

    def index(self, idx: slice | torch.Tensor) -> Lighting:
        return Lighting(self.brightness[idx], self.temperature[idx], self.haze[idx], self.shadow[idx],
                        self._elevation()[idx])

    def repeat(self, n: int) -> Lighting:
        """The lighting of frame 0 for ``n`` frames."""
        return Lighting(*(v[:1].expand(n) for v in (self.brightness, self.temperature, self.haze, self.shadow,
                                                     self._elevation())))

    def to_dict(self, i: int) -> dict[str, float]:
        return {"brightness": float(self.brightness[i]), "temperature": float(self.temperature[i]),
                "haze": float(self.haze[i]), "shadow": float(self.shadow[i]),
                "sun_elevation_deg": float(self._elevation()[i])}


@dataclass
class RenderOutput:
    """What :meth:`Renderer.render` returns; maps are ``None`` unless asked for.

    Shapes: image, background, gain, offset (B, 3, H, W); uv (B, H, W, 2); mask (B, H, W) bool.
    """

    image: torch.Tensor
    background: torch.Tensor | None = None
    uv: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    gain: torch.Tensor | None = None
    offset: torch.Tensor | None = None


def _bilinear_lookup(texture: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear texel lookup written out by hand (the renderer's own path, independent of grid_sample).

    texture (3, h, w); u, v (...) in [0, 1] texture coordinates -> (..., 3), border-clamped.
    """
    _, h, w = texture.shape
    x = (u * w - 0.5).clamp(0, w - 1)
    y = (v * h - 0.5).clamp(0, h - 1)
    x0 = x.floor().clamp(max=w - 2).long() if w > 1 else x.floor().long()
    y0 = y.floor().clamp(max=h - 2).long() if h > 1 else y.floor().long()
    fx = (x - x0).unsqueeze(-1)
    fy = (y - y0).unsqueeze(-1)
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    flat = texture.reshape(3, -1).t()  # (h*w, 3)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat[(yy * w + xx).reshape(-1)].reshape(*yy.shape, 3)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bot = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bot * fy


def temperature_rgb(t: torch.Tensor) -> torch.Tensor:
    """Colour-temperature gain (B,) -> (B, 3): warm boosts red, cool boosts blue."""
    return torch.stack([1.0 + 0.12 * t, 1.0 + 0.0 * t, 1.0 - 0.14 * t], dim=-1)


class Renderer:
    """Renders batches of dashcam frames of a :class:`Road` from vehicle poses.

    Args:
        camera: the :class:`Camera` (size, field of view, mount).
        device: torch device for all work.
        chunk: frames processed together (keeps the working set in cache on CPU).
        compile: run the render core through ``torch.compile`` (fused loops, several times
            faster; the first call compiles for ~30 s, later processes reuse the on-disk cache).
            Falls back to eager execution, with a warning, if compilation fails.
    """

    def __init__(self, camera: Camera | None = None, device: str | torch.device = "cpu", chunk: int = 16,
                 compile: bool = False) -> None:
        self.camera = camera or Camera()
        self.device = torch.device(device)
        self.chunk = max(int(chunk), 1)
        cam = self.camera
        f32 = dict(dtype=torch.float32, device=self.device)
        H = cam.height
        X, Y, dist, valid = cam.ground_points()
        rows_valid = valid.all(axis=1)
        self.r0 = int(np.argmax(rows_valid)) if rows_valid.any() else H  # first ground row
        g = slice(self.r0, H)
        Xg, Yg, Dg = X[g], Y[g], dist[g]
        # Ground footprint of each pixel (metres): spacing to the neighbouring row / column.
        fp_lon = np.abs(np.gradient(Xg, axis=0)) if Xg.shape[0] > 1 else np.full_like(Xg, 0.1)
        fp_lat = np.abs(np.gradient(Yg, axis=1))
        fp_lon = np.clip(fp_lon, 0.005, 50.0)
        fp_lat = np.clip(fp_lat, 0.005, 50.0)
        self.consts = {
            "gX": torch.tensor(Xg.ravel(), **f32),
            "gY": torch.tensor(Yg.ravel(), **f32),
            "g_dist": torch.tensor(np.minimum(Dg, FAR_M).ravel(), **f32),
            "fp": torch.tensor(np.maximum(fp_lat, 0.5 * fp_lon).ravel(), **f32),
            "fp_lon": torch.tensor(fp_lon.ravel(), **f32),
            "noise_att": torch.tensor((1.0 / (1.0 + 0.5 * fp_lon / NOISE_TEXEL_M)).ravel(), **f32),
            "ground_att": torch.tensor((1.0 / (1.0 + 0.5 * fp_lon / GROUND_TEXEL_M)).ravel(), **f32),
        }
        rays = cam.ray_dirs()
        sky = rays[: self.r0]
        self.consts["s_az"] = torch.tensor(np.arctan2(sky[..., 1], sky[..., 0]).ravel(), **f32)
        elev = np.arctan2(sky[..., 2], np.hypot(sky[..., 0], sky[..., 1]))
        self.consts["s_elev"] = torch.tensor(elev.ravel(), **f32)
        self.pix_rad = float(math.atan(1.0 / cam.focal_px))
        self.rays = torch.tensor(rays.reshape(-1, 3), **f32)  # for billboards
        self.compiled = bool(compile)
        self._cores = {True: render_core, False: render_image_core, "uint8": render_uint8_core}
        if compile:
            # On CPU-only machines inductor logs a misleading "No CUDA runtime is found" warning.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            self._cores = {k: torch.compile(v, dynamic=False) for k, v in self._cores.items()}

    # ------------------------------------------------------------------ helpers
    def _road_tables(self, road: Road) -> RoadTables:
        """The road's tensors on this device, cached on the road (shared by all renderers)."""
        tab = road._device_cache.get(self.device)
        if tab is None:
            tab = road._device_cache[self.device] = RoadTables(road, self.device)
        if self.compiled and not getattr(tab, "marked", False):
            # Table lengths differ from road to road: one compiled kernel serves them all.
            # (Only when compiling: importing torch._dynamo costs ~2 s.)
            for table in (tab.taylor, tab.shadows):
                torch._dynamo.maybe_mark_dynamic(table, 0)
            tab.marked = True
        return tab

    def _run_core(self, tab: RoadTables, poses: torch.Tensor, light: Lighting, full: bool | str
                  ) -> tuple[torch.Tensor, ...]:
        """Run the render core; ``full=True`` also returns albedo, gain, offset and world coordinates,
        ``full="uint8"`` returns only the uint8 (B, P, 3) image."""
        dev = self.device
        brightness, shadow = light.effective()
        light_rgb = brightness[:, None] * temperature_rgb(light.temperature)  # (B, 3)
        haze_rgb = (0.5 * tab.sky_cols[1] + 0.5 * tab.sky_cols[0])[None, :] * light_rgb.clamp(max=1.25)
        c = self.consts
        args = (
            poses[:, 0:1].to(dev, torch.float32), poses[:, 1:2].to(dev, torch.float32),
            poses[:, 2:3].to(dev, torch.float32), light_rgb, light.haze[:, None], shadow[:, None], haze_rgb,
            c["gX"], c["gY"], c["g_dist"], c["fp"], c["fp_lon"], c["noise_att"], c["ground_att"],
            c["s_az"], c["s_elev"], self.pix_rad,
            tab.taylor, tab.tmeta, tab.tshape, tab.noise, tab.ground_noise, tab.shadows, tab.tree_rad,
            tab.style, tab.colours_t, tab.sky_cols,
        )
        core = self._cores[full]
        if not self.compiled:
            out = core(*args)
        else:
            try:
                out = core(*args)
            except Exception as exc:  # compilation is an optimisation: never a reason to fail
                warnings.warn(f"torch.compile of the renderer failed ({type(exc).__name__}: {exc}); using eager mode",
                              RuntimeWarning, stacklevel=3)
                self._cores = {True: render_core, False: render_image_core, "uint8": render_uint8_core}
                self.compiled = False
                out = self._cores[full](*args)
        return out if full is True else (out,)

    # ------------------------------------------------------------------ main entry
    def render(
        self,
        road: Road,
        poses: np.ndarray | torch.Tensor,
        lighting: Lighting | None = None,
        sticker: StickerPlacement | None = None,
        texture: torch.Tensor | None = None,
        with_maps: bool = False,
    ) -> RenderOutput:
        """Render frames of ``road`` seen from vehicle ``poses``.

        Args:
            road: the road.
            poses: (B, 3) rear-axle poses (x, y, yaw) in world metres / radians.
            lighting: per-frame :class:`Lighting`; neutral daylight when None.
            sticker: where a sticker sits in the world (None: no sticker).
            texture: (3, h, w) sticker texture in [0, 1]. With a ``sticker`` but no texture,
                the frame is rendered without it (useful with ``with_maps``).
            with_maps: also return background, uv, mask, gain and offset for
                :func:`~drivenet_patch.world.composite.apply_sticker`.

        Returns:
            A :class:`RenderOutput`; ``image`` is (B, 3, H, W) float32 in [0, 1].
        """
        P = torch.as_tensor(poses if torch.is_tensor(poses) else np.array(poses, dtype=np.float64))
        if P.ndim != 2 or P.shape[1] != 3:
            raise PDNError(f"poses: expected shape (B, 3) = (x, y, yaw), got {tuple(P.shape)}")
        B = P.shape[0]
        if lighting is None:
            lighting = Lighting.neutral(B, self.device)
        if texture is not None:
            if texture.ndim != 3 or texture.shape[0] != 3:
                raise PDNError(f"sticker texture: expected (3, h, w), got {tuple(texture.shape)}")
            texture = texture.detach().to(self.device, torch.float32)
        tab = self._road_tables(road)
        resolved = sticker.resolve(road) if sticker is not None else None
        outs: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for start, stop, idx in self._chunks(B):
                part = self._render_chunk(tab, P[idx], lighting.index(idx.to(lighting.brightness.device)),
                                          resolved, texture, with_maps)
                for k, v in part.items():
                    if k not in outs:
                        outs[k] = torch.empty((B, *v.shape[1:]), dtype=v.dtype, device=v.device)
                    outs[k][start:stop] = v[: stop - start]
        return RenderOutput(
            image=outs["image"], background=outs.get("background"), uv=outs.get("uv"), mask=outs.get("mask"),
            gain=outs.get("gain"), offset=outs.get("offset"),
        )

    def _chunks(self, n: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(start, stop, indices) per chunk; a compiled renderer pads the last chunk to one static shape."""
        for start in range(0, n, self.chunk):
            stop = min(start + self.chunk, n)
            idx = torch.arange(start, stop)
            if self.compiled and stop - start < self.chunk:
                idx = torch.cat([idx, idx[-1:].expand(self.chunk - (stop - start))])
            yield start, stop, idx

    def render_uint8(self, road: Road, poses: np.ndarray | torch.Tensor, lighting: Lighting | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
        """Render straight to the dataset format: uint8 (B, H, W, 3) RGB, written into ``out`` if given.

        Equivalent to ``to_uint8(render(road, poses, lighting).image)`` (no stickers), but the
        conversion happens inside the render core, so a large batch never exists as float.
        """
        P = torch.as_tensor(poses if torch.is_tensor(poses) else np.array(poses, dtype=np.float64))
        if P.ndim != 2 or P.shape[1] != 3:
            raise PDNError(f"poses: expected shape (B, 3) = (x, y, yaw), got {tuple(P.shape)}")
        B = P.shape[0]
        H, W = self.camera.height, self.camera.width
        if out is None:
            out = np.empty((B, H, W, 3), np.uint8)
        elif out.shape != (B, H, W, 3) or out.dtype != np.uint8:
            raise PDNError(f"out: expected uint8 {(B, H, W, 3)}, got {out.dtype} {out.shape}")
        if lighting is None:
            lighting = Lighting.neutral(B, self.device)
        tab = self._road_tables(road)
        with torch.no_grad():
            for start, stop, idx in self._chunks(B):
                img = self._run_core(tab, P[idx], lighting.index(idx.to(lighting.brightness.device)), "uint8")[0]
                out[start:stop] = img[: stop - start].reshape(-1, H, W, 3).cpu().numpy()
        return out

    def _render_chunk(
        self, tab: RoadTables, poses: torch.Tensor, light: Lighting, sticker: ResolvedSticker | None,
        texture: torch.Tensor | None, with_maps: bool,
    ) -> dict[str, torch.Tensor]:
        B = poses.shape[0]
        H, W = self.camera.height, self.camera.width
        if sticker is None and not with_maps:
            return {"image": self._run_core(tab, poses, light, full=False)[0].view(B, 3, H, W)}
        image, _albedo, gain, offset, wx, wy = self._run_core(tab, poses, light, full=True)
        if sticker is None:
            out = {"image": image.view(B, 3, H, W)}
            if with_maps:
                z = torch.zeros(B, H, W, device=self.device)
                out.update(background=out["image"], uv=torch.stack([z, z], dim=-1), mask=z.bool(),
                           gain=gain.view(B, 3, H, W), offset=offset.view(B, 3, H, W))
            return out
        Ps = self.r0 * W
        if sticker.kind == "road":
            su, sv, sm = sticker.road_uv(wx, wy)
            pad = torch.zeros(B, Ps, device=self.device)
            su, sv = torch.cat([pad, su], dim=1), torch.cat([pad, sv], dim=1)
            sm = torch.cat([pad.bool(), sm], dim=1)
            sgain, soff, background = gain, offset, image
        else:
            light_rgb = light.effective()[0][:, None] * temperature_rgb(light.temperature)
            haze_rgb = (0.5 * tab.sky_cols[1] + 0.5 * tab.sky_cols[0])[None, :] * light_rgb.clamp(max=1.25)
            yaw = poses[:, 2:3].to(self.device, torch.float32)
            su, sv, sm, sgain, soff, post = sticker.billboard_uv(
                self.rays, poses[:, 0:1].to(self.device, torch.float32), poses[:, 1:2].to(self.device, torch.float32),
                torch.cos(yaw), torch.sin(yaw), self.camera, light.haze, light_rgb, haze_rgb)
            sgain, soff = sgain.transpose(1, 2), soff.transpose(1, 2)  # (B, 3, P)
            # The billboard's posts belong to the scene: drawn into the background.
            pm = post.unsqueeze(1)
            background = torch.where(pm, (0.25 * sgain + soff).clamp(0.0, 1.0), image)
        m = sm.unsqueeze(1)
        if texture is not None:
            texel = _bilinear_lookup(texture, su, sv).transpose(1, 2)  # (B, 3, P)
            final = torch.where(m, (texel * sgain + soff).clamp(0.0, 1.0), background)
        else:
            final = background
        out = {"image": final.reshape(B, 3, H, W)}
        if with_maps:
            out.update(
                background=background.reshape(B, 3, H, W),
                uv=torch.stack([su * 2.0 - 1.0, sv * 2.0 - 1.0], dim=-1).reshape(B, H, W, 2),
                mask=sm.reshape(B, H, W),
                gain=sgain.reshape(B, 3, H, W),
                offset=soff.reshape(B, 3, H, W),
            )
        return out
