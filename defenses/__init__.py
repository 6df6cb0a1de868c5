"""Certified patch defenses for steering models: region geometry, PatchVote, aggregators, certificates.

    >>> from drivenet_patch.models import create_model
    >>> model = create_model("patchvote", generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> cert = model.certify(frames, "2%")  # doctest: +SKIP
    >>> cert.lo, cert.hi  # (B,) certified steering interval, degrees  # doctest: +SKIP

Pure functions: :func:`touch_matrix` (geometry) and :func:`certify_votes` (votes -> interval) can
be used on hand-built votes without any model.
"""

from __future__ import annotations

from defenses.aggregate import (
    METHODS,
    BinVote,
    aggregate_votes,
    bin_index,
    bin_vote,
    median,
    outlier_mean,
    trimmed_mean,
)
from defenses.certify import (
    Certificate,
    certified_accuracy,
    certify_median,
    certify_reject,
    certify_trimmed,
    certify_vote,
    certify_votes,
    within,
)
from defenses.patchvote import PatchVote
from defenses.regions import (
    LAYOUTS,
    RegionLayout,
    camera_box_to_model,
    camera_patch_to_model,
    k_max,
    make_layout,
    maximal_touch_sets,
    parse_patch,
    patch_positions,
    region_starts,
    touch_matrix,
)

__all__ = [
    "LAYOUTS",
    "METHODS",
    "BinVote",
    "Certificate",
    "PatchVote",
    "RegionLayout",
    "aggregate_votes",
    "bin_index",
    "bin_vote",
    "camera_box_to_model",
    "camera_patch_to_model",
    "certified_accuracy",
    "certify_median",
    "certify_reject",
    "certify_trimmed",
    "certify_vote",
    "certify_votes",
    "k_max",
    "make_layout",
    "maximal_touch_sets",
    "median",
    "outlier_mean",
    "parse_patch",
    "patch_positions",
    "region_starts",
    "touch_matrix",
    "trimmed_mean",
    "within",
]
