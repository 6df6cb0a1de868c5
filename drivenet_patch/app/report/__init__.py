"""``pdn report``: one self-contained HTML page from the folders the toolkit writes.

Each input is recognised by its files (see :func:`detect_kind`): a dataset, a training run, a
closed-loop drive, a sticker attack, a sticker-size sweep, a certify output (pixel patch or
physical), or a JSON benchmark file. The page (``index.html``) holds sections Data, Model, Attack,
"Sticker size that breaks the model", Defense, "Certified in metres" and Benchmarks, each only when
its inputs were given; figures are PNG files next to it, each also saved as PDF for papers.
No network resources and no JavaScript: the folder can be zipped and mailed.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas), never through
``pyplot``, so no global backend or figure state is touched.

The package: :mod:`~drivenet_patch.app.report.page` (figures, tables, reads), :mod:`~drivenet_patch.app.report.sections`
(one per input kind), :mod:`~drivenet_patch.app.report.compare` (blocks across inputs),
:mod:`~drivenet_patch.app.report.votes` (PatchVote figures), :mod:`~drivenet_patch.app.report.break_size` (attack
sweeps), :mod:`~drivenet_patch.app.report.metres` (physical certificates), :mod:`~drivenet_patch.app.report.summary`
(the findings the page opens with).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drivenet_patch.app.report.break_size import SWEEP_TITLE, sweep_section
from drivenet_patch.app.report.compare import (
    attack_rows,
    attack_summary,
    defended_vs_undefended,
    model_comparison,
)
from drivenet_patch.app.report.inputs import check_inputs
from drivenet_patch.app.report.metres import METRES_TITLE, is_physical, metres_section
from drivenet_patch.app.report.page import Page, section_id
from drivenet_patch.app.report.sections import (
    attack_section,
    bench_section,
    certify_section,
    data_section,
    drive_section,
    saliency_section,
    train_section,
)
from drivenet_patch.app.report.summary import summarize, summary_html
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import check_folder_contained
from drivenet_patch.storage.atomic import write_json, write_text
from drivenet_patch.storage.folders import replace_output_folder

__all__ = ["SECTIONS", "build_report", "detect_kind"]

#: Section title of each input kind; sections appear in the order of their first kind here.
SECTIONS: dict[str, str] = {"data": "Data", "train": "Model", "saliency": "Model", "drive": "Model",
                            "attack": "Attack", "sweep": SWEEP_TITLE, "certify": "Defense",
                            "certify_physical": METRES_TITLE, "bench": "Benchmarks"}

# Marker files per kind, checked in this order (a folder may hold several; the first wins).
# A folder with none of them that holds a dataset of a known format is a "data" input.
_MARKERS: list[tuple[str, tuple[str, ...]]] = [
    ("sweep", ("sweep.json", "sweep.csv")),  # pdn attack sweep (a certify folder's sweep.csv has no sweep.json)
    ("attack", ("attack.json", "sticker.png")),
    ("certify", ("certify.json", "certify_frames.csv")),
    ("drive", ("drive.json", "drive_log.csv")),
    ("train", ("config.json", "metrics.csv")),
    ("saliency", ("saliency.json", "saliency_grid.png")),
]


def detect_kind(path: str | os.PathLike[str]) -> str:
    """Return the kind of an input: ``data``, ``train``, ``saliency``, ``drive``, ``attack``, ``sweep``,
    ``certify``, ``certify_physical`` (``pdn certify --physical``: its certify.json has a threat) or ``bench``.

    Raises:
        PDNError: the path does not exist, is empty, or holds none of the known file sets.
    """
    p = Path(path)
    if not p.exists():
        raise PDNError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() != ".json":
            raise PDNError(f"{p}: not a report input (expected a folder or a benchmark .json file)")
        return "bench"
    if not any(p.iterdir()):
        raise PDNError(f"{p}: empty folder")
    for kind, names in _MARKERS:
        if all((p / n).is_file() for n in names):
            return "certify_physical" if kind == "certify" and is_physical(p) else kind
    from drivenet_patch.data import detect_format

    try:
        detect_format(p)
        return "data"
    except PDNError:
        pass
    known = ", ".join("+".join(n) for _, n in _MARKERS)  # compact: the folder's path must fit in the message
    raise PDNError(f"{p}: not a dataset or toolkit output folder (none of {known})")


def build_report(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 notes: Sequence[str] = ()) -> dict[str, Any]:
    """Write ``out/index.html``, ``out/summary.json`` and the figures from the toolkit outputs ``paths``.

    Args:
        paths: dataset, run, drive, attack, attack sweep or certify folders, or benchmark ``.json`` files.
        out: output folder (created).
        notes: sentences about how the inputs were made, shown under the summary.

    Returns:
        ``{"index": path of index.html, "summary": path of summary.json (the findings the page opens with,
        :func:`drivenet_patch.app.report.summary.summarize`), "figures": PNG file names in page order,
        "sections": section titles in page order (after the summary), "inputs": [{"path", "kind"}, ...]}``.

    Raises:
        PDNError: no paths, or a path that is missing, empty or of unknown kind (checked for
        all paths before anything is written).
    """
    if not paths:
        raise PDNError("report: give at least one input folder or .json file")
    inputs = [(Path(p), detect_kind(p)) for p in paths]
    for p, kind in inputs:  # a named folder is read like a dataset folder: no symbolic link may lead out of it
        if kind != "data" and p.is_dir():  # a dataset's files are contained by its loader
            check_folder_contained(p)
    check_inputs(inputs)  # every field the report reads, typed and bounded, before anything is written
    out = Path(out)
    # Built in a staging folder beside ``out`` and swapped in whole: a failure or a kill at any moment
    # leaves the previous report as it was (never new figures under an old index.html).
    with replace_output_folder(out, "report") as staging:
        figures, sections = _write_report(inputs, staging, notes)
    return {"index": str(out / "index.html"), "summary": str(out / "summary.json"), "figures": figures,
            "sections": sections, "inputs": [{"path": str(p), "kind": k} for p, k in inputs]}


def _write_report(inputs: list[tuple[Path, str]], out: Path, notes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Write index.html, summary.json and the figures of ``inputs`` (path, kind) into ``out``; (figures, sections)."""
    page = Page(out)
    renderers: dict[str, Callable[[Page, Path, str], str]] = {
        "data": data_section, "train": train_section, "saliency": saliency_section, "drive": drive_section,
        "attack": attack_section, "certify": certify_section, "bench": bench_section}
    titles = list(dict.fromkeys(SECTIONS.values()))
    blocks: dict[str, list[str]] = {t: [] for t in titles}
    counts: dict[str, int] = dict.fromkeys(SECTIONS, 0)
    for kind in renderers:  # page order: by kind, then in the order given
        for path, k in inputs:
            if k == kind:
                counts[kind] += 1
                blocks[SECTIONS[kind]].append(renderers[kind](page, path, f"{kind}{counts[kind]}"))
    # sweeps and physical certificates: one block each over all their folders (the models share the plots)
    physical = [p for p, k in inputs if k == "certify_physical"]
    blocks[SWEEP_TITLE].append(sweep_section(page, [p for p, k in inputs if k == "sweep"], physical))
    blocks[METRES_TITLE].append(metres_section(page, physical))
    rows = attack_rows([p for p, k in inputs if k == "attack"])  # read once, used by three blocks
    blocks["Model"].append(model_comparison([p for p, k in inputs if k == "train"],
                                             [p for p, k in inputs if k == "drive"], rows))
    blocks["Attack"].append(attack_summary(page, rows))
    blocks["Defense"].append(defended_vs_undefended(page, rows))
    sections = [t for t in titles if any(blocks[t])]
    body = "".join(f'<section id="{section_id(t)}"><h2>{t}</h2>{"".join(blocks[t])}</section>\n'
                   for t in sections)
    summary = summarize(inputs, notes)
    head = summary_html(summary)
    nav = " · ".join(f'<a href="#{section_id(s)}">{s}</a>' for s in (["Summary"] if head else []) + sections)
    write_json(out / "summary.json", summary)
    write_text(out / "index.html", _HTML.format(title="PatchDriveNet report", nav=nav, body=head + body))
    return list(page.figures), sections


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 0.9em; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0.5em 0; }} figure img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }} .big {{ font-size: 1.4em; font-weight: bold; }}
#summary {{ background: #f6f8fa; border: 1px solid #d0d7de; padding: 0.2em 1em 0.5em; }}
#summary h2 {{ margin: 0.4em 0; }} .findings li {{ margin: 0.35em 0; line-height: 1.35; }}
.findings li.weak {{ border-left: 4px solid #d4a72c; padding-left: 0.5em; list-style: none; margin-left: -1.2em; }}
.notes {{ font-size: 0.85em; color: #555; }} .notes-title {{ margin: 0.3em 0 0; font-size: 0.85em; }}
</style></head>
<body><h1>{title}</h1><nav>{nav}</nav>
{body}</body></html>
"""
