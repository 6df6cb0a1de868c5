"""What every report section uses: the page that collects figures, HTML tables, number formatting, and
checked reads of the toolkit's JSON and CSV outputs."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from drivenet_patch.app.report.inputs import check_report_json, check_table
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import folder_file, read_json
from drivenet_patch.storage.atomic import atomic_path, write_bytes

__all__ = ["TEXTURES", "TEXTURE_COLOURS", "Page", "flatten", "fmt", "heading", "html_table", "load_csv", "load_json",
           "model_name", "section_id"]

TEXTURES = ("sticker", "noise", "grey")
TEXTURE_COLOURS = {"sticker": "tab:red", "noise": "tab:blue", "grey": "tab:gray"}


class Page:
    """Collects figures written into the output folder."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.figures: list[str] = []

    def figure(self, fig: Figure, name: str, caption: str) -> str:
        """Save ``fig`` as ``name.png`` and ``name.pdf``; return its HTML ``<figure>``."""
        FigureCanvasAgg(fig)
        fig.tight_layout()
        for ext in ("png", "pdf"):
            with atomic_path(self.out / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, dpi=120)
        self.figures.append(f"{name}.png")
        return (f'<figure><img src="{name}.png" alt="{html.escape(caption)}">'
                f'<figcaption>{html.escape(caption)} (<a href="{name}.pdf">PDF</a>)</figcaption></figure>')

    def copy_image(self, src: Path, name: str, caption: str, css: str = "") -> str:
        """Copy a PNG next to ``index.html``; return its HTML ``<figure>``."""
        write_bytes(self.out / name, src.read_bytes())
        style = f' style="{css}"' if css else ""
        return (f'<figure><img src="{name}" alt="{html.escape(caption)}"{style}>'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    return str(v)


def load_json(path: Path) -> dict[str, Any]:
    """A toolkit JSON output with the fields the report reads checked (:mod:`drivenet_patch.app.report.inputs`)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise PDNError(f"{path}: expected a JSON object")
    return check_report_json(path, obj)


def load_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PDNError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PDNError(f"{path}: missing columns {', '.join(missing)}")
    if df.empty:
        raise PDNError(f"{path}: no rows")
    return check_table(path, df, columns)


def flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k in sorted(obj):
        v = obj[k]
        if isinstance(v, dict):
            rows += flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def heading(path: Path) -> str:
    return f"<h3>{html.escape(str(path))}</h3>"


def section_id(title: str) -> str:
    """The HTML id of a section: ``"Certified in metres"`` -> ``"certified-in-metres"`` (``"Attack"`` -> ``"attack"``)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def model_name(run: Any) -> str:
    """The registered model name in a run folder's ``config.json`` (for ``zoo:NAME``: the zoo's folder), ``?``
    when it is missing or unreadable."""
    from drivenet_patch.models.zoo import is_zoo_ref, zoo_dir

    try:
        folder = zoo_dir(run) if is_zoo_ref(run) else Path(str(run))
        config = folder_file(folder, "config.json", "model config")  # read like a named folder: never a link out
        name = load_json(config).get("model", {}) if config is not None else {}
    except PDNError:
        return "?"
    return str(name.get("name", "?")) if isinstance(name, dict) else "?"
