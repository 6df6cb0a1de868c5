"""The model zoo: trained models of the built-in world that ship inside the package.

Each model is a run folder (``model.safetensors`` + ``config.json``) in this package, listed in
``manifest.json`` with what it is for, the threat it is certified for (or null), the commands that
made it, the figures measured on it and the sha256 of its weights. ``zoo:NAME`` names one wherever
a run folder is taken (:func:`drivenet_patch.models.checkpoint.load_model`, ``pdn ... --model
zoo:NAME``); its weights are checked against the manifest's sha256 before they are read, so a
changed file is refused. Nothing is downloaded.

The manifest is also the one source of the recipes: ``pdn zoo make`` (``make zoo``) runs each
model's ``steps`` and ``measures`` (``pdn`` commands with the placeholders ``{work}``, ``{model}``
and ``{check}``) and prints what it measures beside the manifest's ``figures``; the tests run the
``checks`` (the same commands on a small held-out set) and compare with ``figures_check``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import open_regular, read_json
from drivenet_patch.safety.values import check_fields, number, obj, text

__all__ = [
    "MANIFEST",
    "ZOO_DIR",
    "ZOO_PREFIX",
    "is_zoo_ref",
    "read_manifest",
    "sha256_file",
    "zoo_dir",
    "zoo_entries",
    "zoo_entry",
    "zoo_folder",
    "zoo_name",
]

#: How a model argument names a zoo model: ``zoo:NAME``.
ZOO_PREFIX = "zoo:"
#: The folder holding ``manifest.json`` and one run folder per model.
ZOO_DIR = Path(__file__).resolve().parent
#: The manifest; the models' folders lie beside it (:func:`zoo_dir`).
MANIFEST = ZOO_DIR / "manifest.json"
#: Placeholders a manifest command may use (filled in by the recipe runner).
PLACEHOLDERS = ("{work}", "{model}", "{check}")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_MODELS = 64
_MAX_COMMANDS = 64
_MAX_ARGS = 128


def is_zoo_ref(ref: Any) -> bool:
    """Whether a model argument (``str`` or ``Path``) names a zoo model (``zoo:NAME``)."""
    return isinstance(ref, (str, Path)) and str(ref).startswith(ZOO_PREFIX)


def zoo_name(ref: str | Path) -> str:
    """``"zoo:NAME"`` (or a bare ``NAME``) -> ``NAME``, refused unless it is a well-formed name."""
    name = str(ref)[len(ZOO_PREFIX):] if is_zoo_ref(ref) else str(ref)
    if not _NAME_RE.match(name):
        raise PDNError(f"zoo model name {name!r}: expected lower-case letters, digits and _ (see pdn zoo list)")
    return name


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a regular file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open_regular(path, "model file") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _commands(where: str, value: Any) -> list[list[str]]:
    """A list of ``pdn`` commands, each a non-empty list of strings."""
    if not isinstance(value, list) or len(value) > _MAX_COMMANDS:
        raise PDNError(f"{where}: expected a list of at most {_MAX_COMMANDS} commands")
    for i, cmd in enumerate(value):
        if (not isinstance(cmd, list) or not cmd or len(cmd) > _MAX_ARGS
                or not all(isinstance(a, str) and len(a) <= 1000 for a in cmd)):
            raise PDNError(f"{where}[{i}]: expected a pdn command as a list of strings")
    return value


def _check_entry(where: str, entry: Any) -> dict[str, Any]:
    fields = check_fields(where, entry, {
        "name": text(), "model": text(), "purpose": text(), "threat": obj(null=True), "sha256": text(),
        "license": text(), "version": text(), "figures": obj(), "figures_check": obj(), "recipe_note": text(),
        "parameters": number(0, 1e9),
    }, required=("name", "model", "purpose", "threat", "sha256", "license", "figures"))
    zoo_name(fields["name"])
    if not _SHA_RE.match(fields["sha256"]):
        raise PDNError(f"{where}: sha256 must be 64 lower-case hex digits")
    for key in ("steps", "measures", "checks"):
        for i, step in enumerate(entry.get(key, [])):
            _commands(f"{where}.{key}[{i}].command", [step.get("command")] if isinstance(step, dict) else None)
    return entry


def read_manifest(path: str | Path | None = None) -> dict[str, Any]:
    """The zoo's manifest (default :data:`MANIFEST`), its entries checked (names, sha256, figures, command lists)."""
    path = MANIFEST if path is None else path
    data = read_json(path, "zoo manifest")
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise PDNError(f"{path}: expected an object with a 'models' list")
    if len(data["models"]) > _MAX_MODELS:
        raise PDNError(f"{path}: more than {_MAX_MODELS} models")
    names = [_check_entry(f"{path}: models[{i}]", e)["name"] for i, e in enumerate(data["models"])]
    if len(set(names)) != len(names):
        raise PDNError(f"{path}: a model name is listed twice")
    for i, step in enumerate(data.get("data_steps", [])):
        _commands(f"{path}: data_steps[{i}].command", [step.get("command")] if isinstance(step, dict) else None)
    return data


def zoo_entries(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Every model of the manifest, in its order."""
    return list(read_manifest(path)["models"])


def zoo_entry(ref: str | Path, path: str | Path | None = None) -> dict[str, Any]:
    """The manifest entry of ``zoo:NAME`` (or ``NAME``); an unknown name is refused with the list of names."""
    name = zoo_name(ref)
    entries = zoo_entries(path)
    for entry in entries:
        if entry["name"] == name:
            return entry
    raise PDNError(f"zoo:{name}: no such zoo model (the zoo has: {', '.join(e['name'] for e in entries)})")


def zoo_dir(ref: str | Path) -> Path:
    """The folder where ``zoo:NAME`` lives (beside the manifest), without checking anything."""
    return MANIFEST.parent / zoo_name(ref)


def zoo_folder(ref: str | Path, verify: bool = True) -> Path:
    """The run folder of ``zoo:NAME``, its ``model.safetensors`` checked against the manifest's sha256.

    Raises:
        PDNError: unknown name, missing file, or weights whose sha256 differs from the manifest's.
    """
    entry = zoo_entry(ref, MANIFEST)
    folder = zoo_dir(entry["name"])
    weights = folder / "model.safetensors"
    if not weights.is_file() or not (folder / "config.json").is_file():
        raise PDNError(f"zoo:{entry['name']}: {folder} lacks model.safetensors or config.json "
                       "(re-install the package, or re-make it with pdn zoo make)")
    if verify:
        got = sha256_file(weights)
        if got != entry["sha256"]:
            raise PDNError(f"zoo:{entry['name']}: {weights} has sha256 {got[:12]}..., the manifest says "
                           f"{entry['sha256'][:12]}...: refusing a changed model file (re-install the package)")
    return folder
