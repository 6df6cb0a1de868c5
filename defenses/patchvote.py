"""PatchVote: a steering model whose output is an aggregate of N region votes.

The frame (model input, 66x200 by default) is cut into N equally sized regions
(:mod:`defenses.regions`). All regions are stacked into one batch of crops, (B*N, 3, rh, rw),
and one shared small CNN maps each crop to a feature vector; a per-region linear head
(its own weights and bias: the vote knows where its region lies) turns it into the region's
vote. Vote ``r`` is therefore a function of region ``r``'s pixels alone, exactly: the colour
normalisation before the crop is per pixel, the crop is a plain copy, the convolutions are
unpadded, and no layer mixes batch entries (no batch norm). The output aggregates the votes (median by default, :mod:`defenses.aggregate`), and
:meth:`PatchVote.certify` bounds it under any patch (:mod:`defenses.certify`).

This is the derandomized-smoothing idea (Levine & Feizi 2020: predictions from image
ablations, certified by counting how many a patch can reach) with two changes for steering:
the base predictor is a regressor and the aggregate is a median / trimmed mean / bin vote,
and all regions are evaluated in one batched pass over small crops instead of N full-image
passes with the rest masked out.

Crop network at a 66x40 band (the default)::

    normalisation   RGB [0, 1] -> BT.601 YUV scaled onto [-1, 1]   (PilotNet's, fixed)
    conv 5x5 /2  24  -> 31x18  ELU
    conv 3x3 /2  36  -> 15x8   ELU
    conv 3x3 /2  48  -> 7x3    ELU
    conv 3x3 /1  64  -> 5x1    ELU
    flatten 320 -> FC 100 ELU -> FC 50 ELU -> per-region FC 1 (x out_scale)

About 2.4 M multiply-accumulates per crop, 22 M for the 9 default bands: 0.82x PilotNet's
26.9 M. Regions must be at least 33x33 pixels.

With ``layout="strips"`` (:class:`defenses.regions.StripLayout`, made for the physical threat) the
regions are horizontal strips bounded by ground distances, 3 to 14 rows tall; each is cut out and
resized (bilinear) to one 33x100 crop, so the same network serves them all and a vote still reads
its own box alone (the resize reads the cropped box only).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defenses.aggregate import METHODS, aggregate_votes
from defenses.certify import Certificate, certify_votes
from defenses.regions import RegionLayout, StripLayout, make_layout, parse_patch, touch_matrix
from drivenet_patch.deploy.onboard import CERT_KEY, certificate_metadata, maximal_sets, sets_to_lists
from drivenet_patch.models.base import ColorNorm, SteeringModel, use_mode
from drivenet_patch.models.pilotnet import conv_output_size, min_input_size
from drivenet_patch.models.registry import register_model
from drivenet_patch.safety.errors import PDNError

#: (kernel, stride) of the crop network's convolutions (unpadded).
CROP_CONVS = ((5, 2), (3, 2), (3, 2), (3, 1))
#: Pixel-patch threats whose touch sets an exported model carries (``pdn export``); the first is the default.
EXPORT_PATCHES = ("2%", "1%", "5%")
#: Losses :meth:`PatchVote.training_loss` knows (the same names as ``pdn train --loss``).
LOSSES = ("mse", "huber")


class PatchVote(SteeringModel):
    """N region votes from one shared crop network, aggregated into one steering angle.

    Args:
        input_size: ``(H, W)`` of the model input.
        layout: the regions (:func:`defenses.regions.make_layout`); default: 9 bands 40 px
            wide every 20 px at 66x200.
        channels: widths of the four crop convolutions.
        hidden: widths of the shared fully connected layers after them.
        abstain: indices of regions that never vote (e.g. regions entirely above the horizon).
        aggregate: ``median``, ``trimmed``, ``vote`` or ``reject`` (see
            :mod:`defenses.aggregate`); what :meth:`forward` returns.
        trim: votes dropped at each end by the trimmed mean.
        bin_deg: bin width of the bin vote, degrees.
        tau_deg: outlier-rejection threshold, degrees.
        aggregate_weight: weight of the aggregate's loss in :meth:`training_loss`.
        dropout: dropout probability before every fully connected layer.
        out_scale: votes are the heads' outputs times this (labels of a few degrees map to
            outputs of order 1, as in PilotNet).

    Shape:
        (B, 3, H, W) float in [0, 1] -> (B,) road-wheel degrees, positive = left.
    """

    def __init__(
        self,
        input_size: tuple[int, int] = (66, 200),
        layout: RegionLayout | StripLayout | None = None,
        channels: Sequence[int] = (24, 36, 48, 64),
        hidden: Sequence[int] = (100, 50),
        abstain: Sequence[int] = (),
        aggregate: str = "median",
        trim: int = 3,
        bin_deg: float = 2.0,
        tau_deg: float = 3.0,
        aggregate_weight: float = 1.0,
        dropout: float = 0.0,
        out_scale: float = 10.0,
    ) -> None:
        super().__init__(input_size)
        self.layout = layout or make_layout(self.input_size)
        if tuple(self.layout.input_size) != self.input_size:
            raise PDNError(f"patchvote: region layout is for {self.layout.input_size}, the model input is {self.input_size}")
        if len(channels) != len(CROP_CONVS):
            raise ValueError(f"PatchVote needs {len(CROP_CONVS)} conv widths, got {len(channels)}")
        rh, rw = self.layout.size
        fh, fw = conv_output_size(rh, CROP_CONVS), conv_output_size(rw, CROP_CONVS)
        if fh < 1 or fw < 1:
            m = min_input_size(CROP_CONVS)
            raise PDNError(f"patchvote: regions of {rh}x{rw} are too small for the crop network (needs at least {m}x{m})")
        n = self.layout.n
        bad = [a for a in abstain if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < n]
        if bad:
            raise PDNError(f"patchvote: abstain must list region indices in [0, {n}), got {list(abstain)!r}")
        if len(set(abstain)) >= n:
            raise PDNError(f"patchvote: all {n} regions abstain; at least one must vote")
        if aggregate not in METHODS:
            raise PDNError(f"patchvote: unknown aggregate {aggregate!r}; valid aggregates: {', '.join(METHODS)}")
        if isinstance(trim, bool) or int(trim) != trim or trim < 0:
            raise PDNError(f"patchvote: trim must be an integer >= 0, got {trim!r}")
        n_voting = n - len(set(abstain))
        if aggregate == "trimmed" and 2 * int(trim) >= n_voting:
            raise PDNError(f"patchvote: trim {trim} leaves no vote of {n_voting} (needs 2 * trim < voting regions)")
        if not bin_deg > 0 or not tau_deg >= 0 or not aggregate_weight >= 0:
            raise PDNError(
                f"patchvote: need bin_deg > 0, tau_deg >= 0, aggregate_weight >= 0; got {bin_deg}, {tau_deg}, {aggregate_weight}"
            )
        self.aggregate_name = aggregate
        self.trim, self.bin_deg, self.tau_deg = int(trim), float(bin_deg), float(tau_deg)
        self.aggregate_weight = float(aggregate_weight)
        self.out_scale = float(out_scale)

        valid = torch.ones(n, dtype=torch.bool)
        valid[list(abstain)] = False
        active = valid.nonzero()[:, 0]
        # Geometry is architecture, not weights: non-persistent buffers (they follow .to(device)).
        self.register_buffer("valid", valid, persistent=False)  # (N,)
        self.register_buffer("active", active, persistent=False)  # (Na,) voting region indices
        self.strips = hasattr(self.layout, "row_sources")  # StripLayout, or a ContextLayout of strip pieces
        if self.strips:
            # Strips: resampling sources per output row and column, all inside the region's own box
            # (StripLayout.row_sources / col_sources), so a vote reads its box alone.
            lo, hi, wt = self.layout.row_sources()  # (S, crop_h)
            clo, chi, cwt = self.layout.col_sources()  # (ncol, crop_w)
            for name, t in (("row_lo", lo), ("row_hi", hi), ("row_w", wt), ("col_lo", clo), ("col_hi", chi),
                            ("col_w", cwt)):
                self.register_buffer(name, t.reshape(-1), persistent=False)
            self.shared_first = False
        else:
            rows, cols = self.layout.index_tensors()
            self.register_buffer("rows", rows[active], persistent=False)  # (Na, rh, 1)
            self.register_buffer("cols", cols[active], persistent=False)  # (Na, 1, rw)
            # The first convolution (stride 2, unpadded) can run once on the whole frame when every
            # region starts on an even row and column: feature (i, j) of a region's crop is then feature
            # (y0 / 2 + i, x0 / 2 + j) of the frame, computed from the same pixels, all inside the region,
            # so each vote still depends on its region alone. Overlapping regions no longer repeat that
            # layer's work (default bands overlap by half: 40% fewer first-layer activations).
            _, s1 = CROP_CONVS[0]
            f1h, f1w = conv_output_size(rh, CROP_CONVS[:1]), conv_output_size(rw, CROP_CONVS[:1])
            self.shared_first = all(v % s1 == 0 for v in (*self.layout.ys, *self.layout.xs))
            ys1 = torch.tensor([y // s1 for y in self.layout.ys])
            xs1 = torch.tensor([x // s1 for x in self.layout.xs])
            rows1 = (ys1.repeat_interleave(len(xs1))[:, None] + torch.arange(f1h)[None, :])[:, :, None]  # (N, f1h, 1)
            cols1 = (xs1.repeat(len(ys1))[:, None] + torch.arange(f1w)[None, :])[:, None, :]  # (N, 1, f1w)
            self.register_buffer("rows1", rows1[active], persistent=False)
            self.register_buffer("cols1", cols1[active], persistent=False)

        self.norm = ColorNorm.pilotnet_yuv()
        stages, c_in = [], 3
        for c_out, (k, s) in zip(channels, CROP_CONVS, strict=True):
            stages.append(nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=s), nn.ELU()))
            c_in = c_out
        self.features = nn.Sequential(*stages)
        layers: list[nn.Module] = [nn.Flatten()]
        width = c_in * fh * fw
        for h_out in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h_out), nn.ELU()]
            width = h_out
        layers.append(nn.Dropout(dropout))
        self.trunk = nn.Sequential(*layers)
        # Per-region head: vote_r = <w_r, f_r> + b_r, initialised like nn.Linear(width, 1).
        bound = 1.0 / math.sqrt(width)
        self.head_weight = nn.Parameter(torch.empty(n, width).uniform_(-bound, bound))  # (N, F)
        self.head_bias = nn.Parameter(torch.empty(n).uniform_(-bound, bound))  # (N,)

    @property
    def n_regions(self) -> int:
        return self.layout.n

    def crops(self, x: torch.Tensor) -> torch.Tensor:
        """The voting regions' pixels, stacked: (B, C, H, W) -> (B * Na, C, rh, rw), region-major per image.

        A plain copy of each region's pixels (strips: its rows resampled to ``crop_h`` from rows of the
        same strip), returned in channels-last memory layout (faster convolutions on the CPU; the
        values are the same in any layout).
        """
        b, ch = x.shape[:2]
        rh, rw = self.layout.size
        if self.strips:
            return self.strip_crops(x, self.active)
        c = x.permute(0, 2, 3, 1)[:, self.rows, self.cols]  # (B, Na, rh, rw, C), a copy
        return c.reshape(b * self.active.numel(), rh, rw, ch).permute(0, 3, 1, 2)

    def strip_crops(self, x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """Strip layouts: the boxes ``which`` (indices in ``[0, S * ncol)``) resampled to the crop size,
        (B * len(which), C, rh, rw) in channels-last memory layout.

        Columns first (every window's own columns, (B, C, H, ncol * rw)), then every strip's own rows
        ((B, C, S * rh, ncol * rw)): separable linear resampling with half-pixel centres, as torch's
        bilinear resize of each cropped box, reading the box's own pixels only.
        """
        b, ch = x.shape[:2]
        rh, rw = self.layout.size
        s_, ncol = self.layout.shape
        c = torch.lerp(x.index_select(3, self.col_lo), x.index_select(3, self.col_hi), self.col_w.to(x.dtype))
        c = torch.lerp(c.index_select(2, self.row_lo), c.index_select(2, self.row_hi), self.row_w.to(x.dtype)[:, None])
        c = c.reshape(b, ch, s_, rh, ncol, rw).permute(0, 2, 4, 1, 3, 5).reshape(b, s_ * ncol, ch, rh, rw)
        c = c[:, which] if which.numel() != s_ * ncol else c
        return c.reshape(b * which.numel(), ch, rh, rw).contiguous(memory_format=torch.channels_last)

    def votes(self, x: torch.Tensor, with_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Every region's vote, in one batched pass.

        Args:
            x: (B, 3, H, W) in [0, 1].
            with_mask: also return the validity mask.

        Returns:
            votes (B, N) in degrees (abstaining regions hold 0), and with ``with_mask`` the
            mask (B, N) bool, False where a region abstains.
        """
        self.check_input(x)
        b, na = x.shape[0], self.active.numel()
        z = self.norm(x)  # per pixel
        if self.shared_first:
            f1 = self.features[0](z.contiguous(memory_format=torch.channels_last))  # (B, C1, H1, W1)
            c1 = f1.permute(0, 2, 3, 1)[:, self.rows1, self.cols1]  # (B, Na, f1h, f1w, C1), a copy
            c1 = c1.reshape(b * na, *c1.shape[2:]).permute(0, 3, 1, 2)
            feats = self.features[1:](c1)
        else:
            feats = self.features(self.crops(z))
        f = self.trunk(feats).view(b, na, -1)  # (B, Na, F)
        w = self.head_weight[self.active]  # (Na, F)
        v = ((f * w).sum(2) + self.head_bias[self.active]) * self.out_scale  # (B, Na)
        if na != self.n_regions:
            v = v.new_zeros(b, self.n_regions).index_copy(1, self.active, v)  # (B, N)
        if with_mask:
            return v, self.valid[None, :].expand(b, -1)
        return v

    def aggregate_votes(self, votes: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """Aggregate (B, N) votes with ``method`` (default: the model's), ignoring abstentions -> (B,)."""
        return aggregate_votes(
            votes, self.valid, method or self.aggregate_name, trim=self.trim, bin_deg=self.bin_deg, tau_deg=self.tau_deg
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Aggregated steering (B,) in degrees for images (B, 3, H, W) in [0, 1]."""
        return self.aggregate_votes(self.votes(x))  # type: ignore[arg-type]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, loss_name: str = "mse") -> torch.Tensor:
        """Every voting region's vote is supervised by the label, plus the aggregate.

        ``loss = mean_r L(v_r, y) + aggregate_weight * L(agg(v), y)``, with ``L`` the MSE or
        the Huber loss (delta 1 degree). The aggregate term uses the model's own aggregator:
        its gradient reaches only the votes it selects (for the median the one or two middle
        votes), which the dense per-region term complements; the two together train votes
        that are each accurate and an aggregate fitted where it is actually taken.

        Args:
            x: (B, 3, H, W) in [0, 1].
            y: (B,) labels in degrees.
            loss_name: ``mse`` or ``huber``.

        Returns:
            Scalar loss.
        """
        if loss_name not in LOSSES:
            raise PDNError(f"patchvote: loss must be one of {LOSSES}, got {loss_name!r}")
        v = self.votes(x)  # (B, N)
        va = v[:, self.active]  # (B, Na)
        target = y.to(va.dtype)
        per_region = _loss(va, target[:, None].expand_as(va), loss_name)
        if self.aggregate_weight == 0:
            return per_region
        agg = self.aggregate_votes(v)  # (B,)
        return per_region + self.aggregate_weight * _loss(agg, target, loss_name)

    def touch(self, patch: str | int | Sequence[int]) -> torch.Tensor:
        """(P, N) bool: regions each position of a model-input patch (``"16x16"``, ``"2%"``) touches."""
        return touch_matrix(self.layout, parse_patch(patch, self.input_size))

    @torch.no_grad()
    def certify(
        self, x: torch.Tensor, patch: str | int | Sequence[int] | torch.Tensor, method: str | None = None
    ) -> Certificate:
        """Clean outputs and certified intervals for a batch (eval mode, restored after).

        Args:
            x: (B, 3, H, W) in [0, 1].
            patch: a patch spec for :func:`defenses.regions.parse_patch`, or a ready (P, N)
                touch matrix (e.g. from a camera patch mapped through a crop).
            method: aggregator (default: the model's).

        Returns:
            :class:`defenses.certify.Certificate` of (B,) tensors.
        """
        touch = patch if isinstance(patch, torch.Tensor) else self.touch(patch)
        with use_mode(self, False):
            v = self.votes(x)
        return certify_votes(
            v, touch, self.valid, method or self.aggregate_name, trim=self.trim, bin_deg=self.bin_deg, tau_deg=self.tau_deg
        )

    # ------------------------------------------------------------------ deployment (pdn export)
    def export_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of the ONNX graph: ``steering`` (B,), ``votes`` (B, N) and ``valid`` (B, N) bool.

        The ``vote`` aggregate has no ONNX form (``searchsorted``): its graph exports the votes
        and mask only, and the vehicle aggregates them (:func:`drivenet_patch.deploy.onboard.certify`).
        """
        v, valid = self.votes(x, with_mask=True)  # type: ignore[misc]
        out = {} if self.aggregate_name == "vote" else {"steering": self.aggregate_votes(v)}
        return {**out, "votes": v, "valid": valid}

    def threat_touch_sets(self, patches: Sequence[str] = EXPORT_PATCHES) -> dict[str, dict[str, Any]]:
        """Maximal touch sets of pixel-patch threats, in the format of :mod:`drivenet_patch.deploy.onboard`.

        A physical sticker threat would be one more entry of the same shape (its own ``kind``).
        """
        threats = {}
        for spec in patches:
            ph, pw = parse_patch(spec, self.input_size)
            sets = maximal_sets(touch_matrix(self.layout, (ph, pw)).numpy())
            threats[f"patch_{spec}"] = {"kind": "pixel_patch", "patch": spec, "patch_px": [ph, pw],
                                        "touch_sets": sets_to_lists(sets)}
        return threats

    def export_metadata(self) -> dict[str, str]:
        """ONNX metadata: the certificate settings and touch sets (``CERT_KEY``), so a car certifies from votes alone."""
        threats = self.threat_touch_sets()
        meta = certificate_metadata(self.n_regions, self.valid.tolist(), self.aggregate_name, self.trim, self.bin_deg,
                                    self.tau_deg, threats, next(iter(threats)))
        return {CERT_KEY: json.dumps(meta, sort_keys=True)}


def _loss(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    return F.mse_loss(pred, target) if name == "mse" else F.huber_loss(pred, target, delta=1.0)


def _build(channels: Sequence[int], hidden: Sequence[int], *, input_size: Any, layout: str, region: Any, stride: Any,
           strips: Any, abstain: Any, **kw: Any) -> PatchVote:
    if isinstance(abstain, (str, bytes)) or not isinstance(abstain, Sequence):
        raise PDNError(f"patchvote: abstain must be a list of region indices, got {abstain!r}")
    regions = make_layout(tuple(input_size), layout, region, stride, strips)
    return PatchVote(tuple(input_size), regions, channels=channels, hidden=hidden, abstain=list(abstain), **kw)


def config_keys() -> inspect.Signature:
    """The config keys of the registered builders, with their defaults written once: the region layout's
    (:func:`~defenses.regions.make_layout`: ``input_size``, ``layout``, ``region``, ``stride``, ``strips``),
    then :class:`PatchVote`'s own settings but its layer widths (``abstain``, ``aggregate`` ... ``out_scale``)."""
    layout = inspect.signature(make_layout).parameters
    own = inspect.signature(PatchVote).parameters
    keys = [*layout.values(), *(p for k, p in own.items() if k not in (*layout, "channels", "hidden"))]
    return inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in keys])


def _variant(channels: Sequence[int], hidden: Sequence[int], doc: str) -> Callable[..., PatchVote]:
    """A builder of PatchVote with these layer widths, taking the config keys of :func:`config_keys`."""

    def builder(**cfg: Any) -> PatchVote:
        return _build(channels, hidden, **cfg)

    builder.__signature__ = config_keys()  # type: ignore[attr-defined]  # the registry reads the keys from it
    builder.__doc__ = doc
    return builder


patchvote = register_model("patchvote")(_variant(
    *(inspect.signature(PatchVote).parameters[k].default for k in ("channels", "hidden")),  # the class's widths
    "PatchVote defense: N region votes (9 bands of 40 px every 20 px by default), median aggregate."))
patchvote_tiny = register_model("patchvote_tiny")(
    _variant((4, 6, 8, 8), (16, 8), "PatchVote with tiny widths (4-6-8-8, FC 16-8) for fast tests."))
