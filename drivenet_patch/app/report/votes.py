"""PatchVote's region votes drawn over a frame (heat map) and as a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from drivenet_patch.app.report.page import Page, load_csv
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import folder_file

__all__ = ["heat", "vote_figure", "votes_grid"]


def votes_grid(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The region votes as a (rows, cols) grid in layout order, and its validity mask."""
    ys, xs = np.sort(table["y0"].unique()), np.sort(table["x0"].unique())
    grid = np.full((len(ys), len(xs)), np.nan)
    ok = np.zeros_like(grid, dtype=bool)
    for r in table.itertuples():
        i, j = np.searchsorted(ys, r.y0), np.searchsorted(xs, r.x0)
        grid[i, j], ok[i, j] = r.vote_deg, bool(r.valid)
    return grid, ok


def heat(image: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Per pixel: the mean vote of the valid regions covering it (NaN where none does)."""
    h, w = image.shape[:2]
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for r in table[table["valid"].astype(bool)].itertuples():
        total[r.y0:r.y1, r.x0:r.x1] += r.vote_deg
        count[r.y0:r.y1, r.x0:r.x1] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def vote_figure(page: Page, path: Path, tag: str, examples: list[tuple[str, dict[str, Any]]]) -> str:
    import cv2

    loaded = []
    for title, ex in examples:
        # the names come from certify.json: each must name a file of this folder ("../x" or "/x" does not)
        image = folder_file(path, str(ex["image"]), "vote example image") or path / str(ex["image"])
        img = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if img is None:
            raise PDNError(f"{image}: not a readable image")
        votes = folder_file(path, str(ex["votes"]), "vote table") or path / str(ex["votes"])
        table = load_csv(votes, ["y0", "x0", "y1", "x1", "vote_deg", "valid"])
        loaded.append((title, ex, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), table))
    lim = max(float(np.nanmax(np.abs(t["vote_deg"]))) for *_, t in loaded) or 1.0
    fig = Figure(figsize=(11, 2.6 * len(loaded) + 0.3))
    axes = np.atleast_2d(fig.subplots(len(loaded), 2, gridspec_kw={"width_ratios": [2, 1]}))
    for (title, ex, img, table), (a1, a2) in zip(loaded, axes):
        a1.imshow(img)
        im = a1.imshow(heat(img, table), cmap="coolwarm", vmin=-lim, vmax=lim, alpha=0.55)
        a1.axis("off")
        facts = [f"output {ex['output_deg']:+.2f} deg ({ex.get('aggregate', '')})"]
        if "label_deg" in ex:
            facts.append(f"label {ex['label_deg']:+.2f}")
        if ex.get("lo_deg") is not None and ex.get("hi_deg") is not None and np.isfinite(ex["lo_deg"]):
            facts.append(f"certified [{ex['lo_deg']:+.2f}, {ex['hi_deg']:+.2f}]")
        a1.set_title(f"{title}: " + ", ".join(facts), fontsize=8)
        grid, ok = votes_grid(table)
        a2.imshow(np.where(ok, grid, np.nan), cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            a2.text(j, i, f"{v:+.1f}" if ok[i, j] else "×", ha="center", va="center", fontsize=7)
        a2.set(xticks=[], yticks=[], title="region votes (deg)")
        fig.colorbar(im, ax=a2, fraction=0.05, label="vote (deg, + = left)")
    return page.figure(fig, f"{tag}_votes", "Region votes of one frame as a heat map over the image (mean vote of "
                                            "the regions covering each pixel) and as the grid of votes")
