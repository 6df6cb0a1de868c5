"""``pdn zoo make``: re-make the zoo's models from the recipes in its manifest, and re-measure them.

The manifest (:mod:`drivenet_patch.models.zoo`) lists, for each model, three lists of ``pdn``
commands, each item ``{"name": ..., "command": [...], "figures": {figure: JSON key}, "tolerance":
{figure: largest difference}}`` (only ``command`` is required):

- ``steps``: the recipe (data synthesis, training); the model is ``{work}/NAME``;
- ``measures``: the full figures (``manifest["figures"]``), measured on ``{model}``;
- ``checks``: the same measurements on a small held-out set rendered into ``{check}`` (a few
  seconds), compared with ``manifest["figures_check"]`` within each item's ``tolerance``.

Each command runs in this process (as :mod:`drivenet_patch.app.demo` runs its stages). A named item
writes ``steps/NAME.json`` (its command and printed JSON) atomically when it finishes and is skipped
when that record exists with the same command, so an interrupted ``make zoo`` resumes at the command
it was stopped in; items with the same name in several models (the shared data) run once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drivenet_patch.app.demo import CommandRunner, run_command
from drivenet_patch.models.zoo import MANIFEST, read_manifest, sha256_file, zoo_name
from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import read_json
from drivenet_patch.storage.atomic import write_bytes, write_json, write_text

__all__ = ["check_figures", "compare", "fill", "make_zoo", "measure", "run_items"]

def fill(command: Sequence[str], work: str | Path = "", model: str | Path = "", check: str | Path = "") -> list[str]:
    """A manifest command with its placeholders ``{work}``, ``{model}`` and ``{check}`` filled in."""
    subs = {"{work}": str(work), "{model}": str(model), "{check}": str(check)}
    out = []
    for arg in command:
        for key, value in subs.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def _lookup(result: Any, key: str, where: str) -> Any:
    """``result["a"]["b"]`` for the dotted key ``"a.b"``."""
    node = result
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PDNError(f"{where}: the command's JSON has no {key!r}")
        node = node[part]
    return node


def run_items(runner: CommandRunner, items: Sequence[dict[str, Any]], folder: Path, *, work: str | Path = "",
              model: str | Path = "", check: str | Path = "", echo: Callable[[str], None] = print,
              log: io.StringIO | None = None) -> dict[str, Any]:
    """Run manifest items in order; returns the figures they measure (``{figure: value}``).

    A named item is skipped when ``folder/steps/NAME.json`` holds the same command (its recorded JSON
    gives its figures); else it runs and that record is written atomically.

    Raises:
        PDNError: a command failed, or a record of the same name holds another command.
    """
    figures: dict[str, Any] = {}
    for item in items:
        argv = fill(item["command"], work, model, check)
        name = item.get("name")
        record = folder / "steps" / f"{name}.json" if name else None
        result = None
        if record is not None and record.is_file():
            old = read_json(record, "zoo step record")
            if not isinstance(old, dict) or old.get("command") != argv:
                raise PDNError(f"{record}: made by another command than `pdn {' '.join(argv)}`; "
                               "use another --work folder or delete that record")
            result = old.get("result")
            echo(f"  {name}: done before, skipped")
        else:
            echo(f"  pdn {' '.join(argv)}")
            result = run_command(runner, argv, log)
            if record is not None:
                write_json(record, {"name": name, "command": argv, "result": result})
        for figure, key in (item.get("figures") or {}).items():
            figures[figure] = _lookup(result, key, f"`pdn {' '.join(argv)}`")
    return figures


def measure(runner: CommandRunner, entry: dict[str, Any], model: str | Path, folder: str | Path,
            which: str = "checks", echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The figures of ``model`` by the entry's ``checks`` (small set in ``folder``) or ``measures``
    (full sets; ``folder`` is the work folder holding them)."""
    if which not in ("checks", "measures"):
        raise ValueError(f"measure: which must be 'checks' or 'measures', got {which!r}")
    folder = Path(folder)
    items = entry.get(which) or []
    if which == "checks":
        return run_items(runner, items, folder, model=model, check=folder, echo=echo)
    return run_items(runner, items, folder, model=model, work=folder, echo=echo)


def tolerances(entry: dict[str, Any]) -> dict[str, float]:
    """``{figure: largest accepted difference}`` of the entry's checks."""
    return {k: float(v) for item in entry.get("checks") or [] for k, v in (item.get("tolerance") or {}).items()}


def compare(expected: dict[str, Any], measured: dict[str, Any],
            tol: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per figure: ``{figure, manifest, measured, difference, tolerance, ok}`` (``ok`` is None
    where no tolerance is given)."""
    rows = []
    for figure in sorted(set(expected) | set(measured)):
        a, b = expected.get(figure), measured.get(figure)
        diff = abs(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
        limit = (tol or {}).get(figure)
        ok = None if limit is None else diff is not None and diff <= limit
        rows.append({"figure": figure, "manifest": a, "measured": b, "difference": diff, "tolerance": limit,
                     "ok": ok})
    return rows


def check_figures(runner: CommandRunner, entry: dict[str, Any], model: str | Path, folder: str | Path,
                  echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The entry's checks on ``model``, compared with its ``figures_check`` within their tolerances."""
    got = measure(runner, entry, model, folder, "checks", echo)
    return compare(entry.get("figures_check") or {}, got, tolerances(entry))


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`compare` as aligned text."""
    lines = [f"    {'figure':32s} {'manifest':>10s} {'measured':>10s}"]
    for r in rows:
        mark = "" if r["ok"] is None else ("  ok" if r["ok"] else f"  DIFFERS by more than {r['tolerance']:g}")
        lines.append(f"    {r['figure']:32s} {_show(r['manifest']):>10s} {_show(r['measured']):>10s}{mark}")
    return "\n".join(lines)


def _install(entry: dict[str, Any], run: Path, figures: dict[str, Any], check: dict[str, Any],
             manifest: Path) -> str:
    """Copy ``run``'s model files into the zoo and write its sha256 and figures into the manifest."""
    from drivenet_patch import __version__
    from drivenet_patch.models.checkpoint import load_model

    model = load_model(run)
    dest = manifest.parent / entry["name"]
    for name in ("model.safetensors", "config.json"):
        write_bytes(dest / name, (run / name).read_bytes())
    digest = sha256_file(dest / "model.safetensors")
    data = read_manifest(manifest)
    for e in data["models"]:
        if e["name"] == entry["name"]:
            e.update(sha256=digest, version=__version__, figures=figures, figures_check=check,
                     parameters=sum(p.numel() for p in model.parameters()))
    write_text(manifest, json.dumps(data, indent=2) + "\n")
    return digest


def make_zoo(runner: CommandRunner, work: str | Path = "runs/zoo", names: Sequence[str] = (), install: bool = False,
             check_only: bool = False, echo: Callable[[str], None] = print,
             manifest: str | Path | None = None) -> dict[str, Any]:
    """Re-make the zoo's models (all, or ``names``) from their recipes into ``work`` and re-measure them.

    Args:
        runner: runs one ``pdn`` command in this process (``drivenet_patch.app.cli.main``).
        work: folder of the data, runs and step records (resumable).
        names: zoo model names (default: every model in the manifest).
        install: copy the re-made models into the package's zoo and write their sha256 and the
            figures measured here into the manifest (how the shipped zoo is made).
        check_only: skip the recipes and the full measures: run only the checks, on the shipped models.
        echo: receives the progress lines and the tables.
        manifest: the manifest to read (and write with ``install``).

    Returns:
        ``{"work", "models": [{"name", "run", "figures": [rows], "figures_check": [rows]}]}`` (rows of
        :func:`compare`).
    """
    manifest = Path(MANIFEST if manifest is None else manifest)
    work = Path(work)
    entries = read_manifest(manifest)["models"]
    wanted = [zoo_name(n) for n in names]
    unknown = sorted(set(wanted) - {e["name"] for e in entries})
    if unknown:
        raise PDNError(f"no such zoo model: {', '.join(unknown)} (the zoo has: {', '.join(e['name'] for e in entries)})")
    out = []
    for entry in entries:
        if wanted and entry["name"] not in wanted:
            continue
        name = entry["name"]
        echo(f"{name}: {entry.get('purpose', '')}")
        if check_only:
            run: str | Path = f"zoo:{name}"
            full_rows: list[dict[str, Any]] = []
        else:
            run_items(runner, entry.get("steps") or [], work, work=work, echo=echo)
            run = work / name
            if not (run / "model.safetensors").is_file():
                raise PDNError(f"{name}: its recipe finished but {run}/model.safetensors is missing")
            figures = measure(runner, entry, run, work, "measures", echo)
            full_rows = compare(entry.get("figures") or {}, figures)
            echo(f"  figures on the full held-out sets (manifest beside re-measured):\n{table(full_rows)}")
        check = measure(runner, entry, run, work / "check", "checks", echo)
        check_rows = compare(entry.get("figures_check") or {}, check, tolerances(entry))
        echo(f"  figures on the small check set:\n{table(check_rows)}")
        if install and not check_only:
            digest = _install(entry, Path(run), figures, check, manifest)
            echo(f"  installed into {manifest.parent / name} (sha256 {digest[:12]}...)")
        out.append({"name": name, "run": str(run), "figures": full_rows, "figures_check": check_rows})
    return {"work": str(work), "models": out}

