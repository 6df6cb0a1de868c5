"""Votes that read what the threat cannot reach: PatchVote for one physical threat (model ``patchvote_road``).

A PatchVote certificate counts, for every placement of a sticker, the votes whose *dependency set* the sticker
can touch (:mod:`defenses.physical`). Pixels that no sticker of the threat can ever touch, the threat's
**context** (the complement of :func:`defenses.physical.threat_zone`), may therefore belong to *every* vote's
dependency set without adding a single touch. For the road threat "any 2.0 x 3.5 m sticker 5-30 m ahead,
lateral +-2.5 m, yaw +-15 deg" that is the road beyond 32 m and the horizon, the sky, and the shoulders and
the far road edge beyond the threat's lateral reach: the curvature ahead and the road's edge, seen by every vote.

:class:`ContextLayout` cuts the threat's zone into **pieces**, non-overlapping rectangles (strips bounded by
ground distances, optionally cut into column windows); vote ``r`` depends on piece ``r``'s box plus the
context, its mask ``box_r | context``. A piece's box holds no pixel of another piece (the pieces tile rows and
columns without overlap), so nothing inside a vote's mask needs hiding but the zone outside its own box.

:class:`ContextVote` computes each vote from two parts:

- the piece: its box resampled to one crop size (as :class:`defenses.regions.StripLayout` does) through a
  shared crop network, exactly as PatchVote's strips;
- the context: the whole frame with every zone pixel set to exactly 0 after the colour normalisation
  (``torch.where``, so no value of the zone reaches it), cropped to the rows that hold any context, through a
  small PilotNet-shaped network, once per frame for all votes.

A joint layer adds the two (``ELU(A f_r + B g + c)``) and a per-vote linear head gives the vote. The dependency
test (``tests/defenses/test_context.py``) changes every pixel outside a vote's mask and checks that the vote stays
bit-identical, in PyTorch and in ONNX Runtime. ``context_votes`` adds votes that read the context alone (never
touched by the threat).

The touch sets are computed from the masks (:func:`defenses.regions.region_masks`) with the covering argument
of :mod:`defenses.physical`; for the threat the context was cut for they equal the pieces' own, and for any
other threat whose footprints reach the context (a billboard, a wider range) a sticker touches every vote,
which ``pdn certify`` says in words. The model's ``config.json`` records the threat (``threat_*`` keys).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defenses.patchvote import EXPORT_PATCHES, PatchVote, config_keys
from defenses.physical import ImageGeometry, PhysicalThreat, physical_touch, threat_zone
from defenses.regions import StripLayout, box_masks, ground_row
from drivenet_patch.deploy.onboard import maximal_sets, sets_to_lists
from drivenet_patch.models.pilotnet import PILOTNET_CONVS, conv_output_size, min_input_size
from drivenet_patch.models.registry import register_model
from drivenet_patch.safety.errors import PDNError

#: The road threat the preset is cut for: any 2.0 x 3.5 m sticker 5-30 m ahead, lateral +-2.5 m, yaw +-15 deg.
ROAD_THREAT = PhysicalThreat(2.0, 3.5, "road", (5.0, 30.0), (-2.5, 2.5), 15.0)
#: Ground distances (metres ahead of the camera) of the pieces' row edges; the last piece runs to the zone's top.
ROAD_PIECE_EDGES_M = (6.0, 8.0, 10.5, 14.0, 19.0, 27.0)


@dataclass(frozen=True, eq=False)
class ContextLayout:
    """Pieces of a threat's zone plus the context every vote reads.

    Attributes:
        pieces: the pieces' boxes and their resampling (:class:`~defenses.regions.StripLayout` whose column
            windows do not overlap: ``stride == width``).
        context: (H, W) bool, the pixels no sticker of ``threat`` can touch.
        threat: the threat the context was cut for (:meth:`PhysicalThreat.to_dict` and the camera).
    """

    pieces: StripLayout
    context: torch.Tensor = field(repr=False)
    threat: dict[str, Any] = field(default_factory=dict)
    context_votes: int = 0

    def __post_init__(self) -> None:
        if self.pieces.stride < self.pieces.width:
            raise PDNError(f"context layout: pieces must not overlap (column stride {self.pieces.stride} < width "
                           f"{self.pieces.width})")
        ctx = torch.as_tensor(self.context).to(torch.bool)
        if tuple(ctx.shape) != tuple(self.pieces.input_size):
            raise PDNError(f"context layout: the context mask is {tuple(ctx.shape)}, the input {self.pieces.input_size}")
        object.__setattr__(self, "context", ctx)
        if isinstance(self.context_votes, bool) or not 0 <= int(self.context_votes) <= 64:
            raise PDNError(f"context layout: context_votes must be an integer in [0, 64], got {self.context_votes!r}")
        object.__setattr__(self, "context_votes", int(self.context_votes))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.pieces.input_size

    @property
    def n(self) -> int:
        """Votes: one per piece, then ``context_votes`` that read the context alone."""
        return self.pieces.n + self.context_votes

    @property
    def shape(self) -> tuple[int, int]:
        return self.pieces.shape

    @property
    def size(self) -> tuple[int, int]:
        return self.pieces.size

    @property
    def edges(self) -> tuple[int, ...]:
        return self.pieces.edges

    @property
    def xs(self) -> tuple[int, ...]:
        return self.pieces.xs

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """The pieces' boxes ``(y0, x0, y1, x1)`` (an empty box for each context vote); every vote also reads the
        context (:meth:`masks`)."""
        return self.pieces.boxes() + [(0, 0, 0, 0)] * self.context_votes

    def masks(self) -> torch.Tensor:
        """(N, H, W) bool: vote ``r``'s dependency set, piece ``r``'s box plus the context (a context vote: the
        context alone)."""
        return box_masks(self.input_size, self.boxes()) | self.context[None]

    def context_rows(self) -> int:
        """Rows ``[0, R)`` that hold every context pixel the network reads (below them the frame is all zone)."""
        rows = self.context.any(1).nonzero()
        return int(rows.max()) + 1 if rows.numel() else 0

    def row_sources(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pieces.row_sources()

    def col_sources(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pieces.col_sources()

    def to_dict(self) -> dict[str, Any]:
        return {**self.pieces.to_dict(), "n": self.n, "pieces": self.pieces.n, "context_votes": self.context_votes,
                "kind": "context", "context_px": int(self.context.sum()), "threat": dict(self.threat)}


def zone_pieces(input_size: tuple[int, int], zone: torch.Tensor, edges_m: Sequence[float] = ROAD_PIECE_EDGES_M,
                width: int | None = None, crop: tuple[int, int] = (33, 100)) -> StripLayout:
    """Pieces that tile the zone's rows: strips between the ground rows of ``edges_m`` (and the zone's top and
    bottom rows), each cut into column windows of ``width`` (default the full width) without overlap."""
    h, w = int(input_size[0]), int(input_size[1])
    rows = zone.any(1).nonzero()
    if not rows.numel():
        raise PDNError("context layout: the threat touches no pixel of the model input")
    top, bottom = int(rows.min()), int(rows.max()) + 1
    cuts = {top, bottom}
    for d in edges_m:
        r = round(ground_row((h, w), float(d)) + 0.5)
        if top < r < bottom:
            cuts.add(r)
    cw = w if width is None else int(width)
    if not 1 <= cw <= w or w % cw:
        raise PDNError(f"context layout: piece width must divide the input width {w}, got {cw}")
    return StripLayout((h, w), tuple(sorted(cuts)), cw, cw, crop_h=int(crop[0]), crop_w=int(crop[1]))


def road_layout(input_size: tuple[int, int], threat: PhysicalThreat = ROAD_THREAT,
                edges_m: Sequence[float] = ROAD_PIECE_EDGES_M, width: int | None = None,
                crop: tuple[int, int] = (33, 100), context_votes: int = 0) -> ContextLayout:
    """The context layout of ``threat`` for the world camera drawn at ``input_size``."""
    geom = ImageGeometry.world(tuple(input_size))
    zone = torch.from_numpy(threat_zone(threat, geom))
    pieces = zone_pieces(input_size, zone, edges_m, width, crop)
    return ContextLayout(pieces, ~zone, {**threat.to_dict(), "camera": "world"}, context_votes)


class ContextVote(PatchVote):
    """PatchVote whose votes each read one piece of the threat's zone plus all of its context.

    Args:
        input_size: ``(H, W)``.
        layout: a :class:`ContextLayout`.
        channels, hidden: the piece crop network's conv widths and fully connected widths.
        context_channels: the context network's five conv widths (PilotNet's kernels and strides, unpadded).
        context_hidden: width of the context feature vector.
        joint: width of the joint layer that adds a piece's features and the context's.
        **kw: PatchVote's aggregate settings (``abstain``, ``aggregate``, ``trim``, ...).
    """

    def __init__(self, input_size: tuple[int, int], layout: ContextLayout,
                 channels: Sequence[int] = (16, 24, 32, 32), hidden: Sequence[int] = (64,),
                 context_channels: Sequence[int] = (16, 24, 32, 48, 48), context_hidden: int = 64,
                 joint: int = 64, **kw: Any) -> None:
        if not isinstance(layout, ContextLayout):
            raise PDNError(f"context vote: needs a ContextLayout, got {type(layout).__name__}")
        super().__init__(input_size, layout, channels=channels, hidden=hidden, **kw)
        if len(context_channels) != len(PILOTNET_CONVS):
            raise PDNError(f"context vote: needs {len(PILOTNET_CONVS)} context conv widths, got {list(context_channels)}")
        # The rows that hold context, or as many as the network needs (zone rows below them hold zeros).
        rows = min(self.input_size[0], max(layout.context_rows(), min_input_size(PILOTNET_CONVS)))
        ch, cw = conv_output_size(rows, PILOTNET_CONVS), conv_output_size(self.input_size[1], PILOTNET_CONVS)
        if ch < 1 or cw < 1:
            raise PDNError(f"context vote: a {self.input_size[0]}x{self.input_size[1]} input is too small for "
                           "the context network")
        self.context_rows = rows
        self.register_buffer("context_mask", layout.context[None, None, :rows].clone(), persistent=False)
        stages, c_in = [], 3
        for c_out, (k, s) in zip(context_channels, PILOTNET_CONVS, strict=True):
            stages += [nn.Conv2d(c_in, c_out, k, stride=s), nn.ELU()]
            c_in = c_out
        self.context_net = nn.Sequential(*stages, nn.Flatten(), nn.Linear(c_in * ch * cw, int(context_hidden)), nn.ELU())
        width = int(hidden[-1]) if len(hidden) else self.head_weight.shape[1]
        self.joint_piece = nn.Linear(width, int(joint))
        self.joint_context = nn.Linear(int(context_hidden), int(joint), bias=False)
        bound = 1.0 / math.sqrt(int(joint))
        self.head_weight = nn.Parameter(torch.empty(self.n_regions, int(joint)).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.empty(self.n_regions).uniform_(-bound, bound))
        pieces = layout.pieces.n
        self.register_buffer("active_pieces", self.active[self.active < pieces], persistent=False)
        self.register_buffer("active_context", self.active[self.active >= pieces] - pieces, persistent=False)
        if layout.context_votes:
            # each context vote's own joint bias, so the votes differ (their heads alone could be scaled copies)
            self.context_vote_bias = nn.Parameter(torch.empty(layout.context_votes, int(joint)).uniform_(-bound, bound))

    def context_features(self, z: torch.Tensor) -> torch.Tensor:
        """(B, context_hidden) from normalised frames ``z``: every zone pixel is exactly 0 before the network."""
        zc = torch.where(self.context_mask, z[:, :, : self.context_rows], 0.0)
        return self.context_net(zc.contiguous(memory_format=torch.channels_last))

    def votes(self, x: torch.Tensor, with_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        b, na = x.shape[0], self.active.numel()
        z = self.norm(x)  # per pixel
        np_ = self.active_pieces.numel()
        f = self.trunk(self.features(self.strip_crops(z, self.active_pieces))).view(b, np_, -1)  # (B, Np, F): each piece's own box
        g = self.joint_context(self.context_features(z))  # (B, J): the context, once per frame
        j = F.elu(self.joint_piece(f) + g[:, None, :])  # (B, Np, J)
        if na > np_:  # context votes: the context alone
            j = torch.cat([j, F.elu(g[:, None, :] + self.context_vote_bias[self.active_context])], 1)
        w = self.head_weight[self.active]
        v = ((j * w).sum(2) + self.head_bias[self.active]) * self.out_scale  # (B, Na)
        if na != self.n_regions:
            v = v.new_zeros(b, self.n_regions).index_copy(1, self.active, v)
        if with_mask:
            return v, self.valid[None, :].expand(b, -1)
        return v

    def threat_touch_sets(self, patches: Sequence[str] = EXPORT_PATCHES) -> dict[str, dict[str, Any]]:
        """The touch sets an exported model carries: first (the default threat) the road sticker the context was cut
        for, from the world camera at the model input and a 0.25 m covering; then the pixel patches (a patch that
        reaches the context touches every vote, so those rarely certify)."""
        threat = self.context_threat()
        touch = physical_touch(threat, ImageGeometry.world(self.input_size), self.layout, 0.25)
        name = f"road_{threat.width_m:g}x{threat.length_m:g}m"
        road = {name: {"kind": "physical_sticker", "threat": threat.to_dict(), "spacing_m": 0.25, "camera": "world",
                       "touch_sets": sets_to_lists(maximal_sets(touch.touch.numpy()))}}
        return {**road, **super().threat_touch_sets(patches)}

    def context_threat(self) -> PhysicalThreat:
        """The threat this model's context was cut for."""
        t = self.layout.threat
        return PhysicalThreat(t["width_m"], t["length_m"], t["place"], tuple(t["distance_m"]), tuple(t["lateral_m"]),
                              t["yaw_deg"])


def _road_keys() -> Any:
    import inspect

    base = {k: p for k, p in config_keys().parameters.items()
            if k not in ("layout", "region", "stride", "strips", "abstain")}
    own = [
        ("threat_m", (ROAD_THREAT.width_m, ROAD_THREAT.length_m)),
        ("threat_distance_m", ROAD_THREAT.distance_m),
        ("threat_lateral_m", ROAD_THREAT.lateral_m),
        ("threat_yaw_deg", ROAD_THREAT.yaw_deg),
        ("pieces_m", ()),
        ("piece_width", 0),
        ("crop", (33, 64)),
        ("channels", (16, 24, 32, 32)),
        ("hidden", (64,)),
        ("context_channels", (16, 24, 32, 48, 48)),
        ("context_hidden", 64),
        ("joint", 64),
        ("abstain", ()),
        ("context_votes", 0),
    ]
    params = [base["input_size"]] + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=d) for k, d in own]
    params += [p for k, p in base.items() if k != "input_size"]
    return inspect.Signature(params)


def _build_road(**cfg: Any) -> ContextVote:
    defaults = {k: p.default for k, p in _road_keys().parameters.items()}
    c = {**defaults, **cfg}
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise PDNError(f"patchvote_road: unknown config keys {sorted(unknown)}")
    wm, lm = c.pop("threat_m")
    threat = PhysicalThreat(float(wm), float(lm), "road", tuple(c.pop("threat_distance_m")),
                            tuple(c.pop("threat_lateral_m")), float(c.pop("threat_yaw_deg")))
    edges = tuple(c.pop("pieces_m")) or ROAD_PIECE_EDGES_M
    width = int(c.pop("piece_width")) or None
    size = tuple(int(v) for v in c.pop("input_size"))
    layout = road_layout(size, threat, edges, width, tuple(c.pop("crop")), c.pop("context_votes"))
    abstain = c.pop("abstain")
    if isinstance(abstain, (str, bytes)) or not isinstance(abstain, Sequence):
        raise PDNError(f"patchvote_road: abstain must be a list of region indices, got {abstain!r}")
    return ContextVote(size, layout, abstain=list(abstain), **c)


_build_road.__signature__ = _road_keys()  # type: ignore[attr-defined]
_build_road.__doc__ = ("PatchVote for the road sticker (2.0 x 3.5 m, 5-30 m ahead): each vote reads one piece of the "
                       "threat's zone plus all the context no sticker can reach.")
patchvote_road = register_model("patchvote_road")(_build_road)

__all__ = ["ROAD_PIECE_EDGES_M", "ROAD_THREAT", "ContextLayout", "ContextVote", "road_layout", "zone_pieces"]
