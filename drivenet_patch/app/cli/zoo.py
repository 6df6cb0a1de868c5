"""``pdn zoo``: the trained models shipped in the package (list, show) and their re-making (make).

``--model zoo:NAME`` loads one of them in every command that takes a run folder; the manifest and
the loader are :mod:`drivenet_patch.models.zoo`, the recipe runner :mod:`drivenet_patch.app.zoo`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from drivenet_patch.app.cli.common import add_command, add_group, add_json, emit


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields ``pdn zoo list --json`` prints for one model."""
    return {"name": entry["name"], "model": entry["model"], "purpose": entry["purpose"], "threat": entry["threat"],
            "figures": entry["figures"], "sha256": entry["sha256"], "license": entry["license"],
            "version": entry.get("version"), "parameters": entry.get("parameters"), "ref": f"zoo:{entry['name']}"}


def cmd_list(args: argparse.Namespace) -> int:
    from drivenet_patch.models.zoo import zoo_entries

    entries = [_summary(e) for e in zoo_entries()]
    if args.json:
        print(json.dumps(entries, sort_keys=True))
        return 0
    lines = []
    for e in entries:
        lines.append(f"zoo:{e['name']}  ({e['model']}, {e['parameters'] or '?'} parameters)  {e['purpose']}")
        lines.append("    " + ", ".join(f"{k} {_fmt(v)}" for k, v in e["figures"].items()))
    lines.append("details: pdn zoo show NAME; use one: pdn eval --model zoo:NAME ...")
    print("\n".join(lines))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from drivenet_patch.app.zoo import fill
    from drivenet_patch.models.zoo import zoo_dir, zoo_entry

    entry = dict(zoo_entry(args.name))
    entry["folder"] = str(zoo_dir(entry["name"]))
    if args.json:
        emit(entry, True)
        return 0
    lines = [f"zoo:{entry['name']}: {entry['purpose']}",
             f"  model {entry['model']}, {entry.get('parameters', '?')} parameters, version {entry.get('version')}, "
             f"license {entry['license']}",
             f"  threat: {_fmt(entry['threat']) if entry['threat'] else 'none (not a certified model)'}",
             f"  files: {entry['folder']} (model.safetensors sha256 {entry['sha256']})"]
    if entry.get("recipe_note"):
        lines.append(f"  recipe: {entry['recipe_note']}")
    ref = f"zoo:{entry['name']}"

    def shown(items: list[dict[str, Any]], work: str, check: str) -> list[str]:
        return [f"      pdn {' '.join(fill(i['command'], work, ref, check))}" for i in items or []]

    lines += ["  made by (pdn zoo make --name NAME runs these, then the measures):"]
    lines += shown(entry.get("steps"), "runs/zoo", "")
    lines += ["  figures (full held-out sets):"] + [f"    {k}: {_fmt(v)}" for k, v in entry["figures"].items()]
    lines += ["    measured by:", *shown(entry.get("measures"), "runs/zoo", "")]
    lines += ["  figures on the small check set (tests/test_zoo.py; pdn zoo make --check-only):"] + [
        f"    {k}: {_fmt(v)}" for k, v in (entry.get("figures_check") or {}).items()]
    lines += ["    measured by:", *shown(entry.get("checks"), "", "runs/zoo/check")]
    print("\n".join(lines))
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    from drivenet_patch.app.cli import main
    from drivenet_patch.app.zoo import make_zoo

    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    result = make_zoo(main, args.work, names=args.name or (), install=args.install, check_only=args.check_only,
                      echo=echo)
    differs = [f"{m['name']}.{r['figure']}" for m in result["models"] for r in m["figures_check"] if r["ok"] is False]
    result["differs"] = differs
    if args.install:  # the manifest now holds what was measured: the old figures are shown, not enforced
        emit(result, args.json, "installed: " + ", ".join(m["name"] for m in result["models"]))
        return 0
    emit(result, args.json, "every check figure within its tolerance" if not differs
         else f"outside their tolerance: {', '.join(differs)}")
    return 1 if differs else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``zoo list``, ``zoo show`` and ``zoo make`` to the ``pdn`` sub-commands ``sub``."""
    s = add_group(sub, "zoo", "trained models shipped in the package: --model zoo:NAME (list, show, make)")
    c = add_command(s, "list", "the zoo's models: name, what each is for, its figures", cmd_list)
    add_json(c)
    c = add_command(s, "show", "one zoo model: recipe, figures, threat, files, sha256", cmd_show)
    c.add_argument("name", help="zoo model name (pdn zoo list), with or without zoo:")
    add_json(c)
    c = add_command(s, "make", "re-make the zoo's models from the manifest's recipes (resumable) and print their "
                    "re-measured figures beside the manifest's", cmd_make)
    c.add_argument("--work", type=Path, default=Path("runs/zoo"),
                   help="folder of the data, runs and step records (default runs/zoo); a re-run skips finished steps")
    c.add_argument("--name", action="append", help="only this model (repeatable; default every model)")
    c.add_argument("--check-only", action="store_true",
                   help="no training: re-measure the shipped models on the small check set only (seconds)")
    c.add_argument("--install", action="store_true",
                   help="copy the re-made models into the package's zoo and write their sha256 and measured "
                        "figures into its manifest (how the shipped zoo is made)")
    add_json(c)
