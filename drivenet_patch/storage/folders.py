"""Which folders a command may write into: never a folder it would take over.

A command writes only into

1. a folder it creates (a new path, or an empty folder);
2. a folder of its own kind, which it resumes or adds to. Such a folder is recognised by the marker
   file :data:`MARKER` the command wrote when it claimed the folder (``{"kind": "run", ...}``); a
   folder written before markers existed is recognised by its manifest (e.g. a run's
   ``config.json``) when every entry in it is one the command writes;
3. a folder the user explicitly overwrites with the command's flag (``pdn demo --restart``), which
   deletes only entries the command itself writes.

Anything else (a user's folder, a dataset folder, another command's folder, a new folder inside a
dataset) is refused with one line naming the folder, why, and what to do, before any work and
without changing anything on disk. :func:`check_output_folder` is the rule (no side effects; the
command line calls it for every folder option before a command starts); :func:`prepare_output_folder`
applies it again just before the first write and then creates and marks the folder;
:func:`replace_output_folder` does the same for outputs written whole and swapped in
(a dataset, a report).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from drivenet_patch.safety.errors import PDNError
from drivenet_patch.safety.inputs import check_folder_contained, inside, read_json
from drivenet_patch.storage.atomic import is_temp_name, remove_stale_temps, replace_folder, write_json

__all__ = ["DATASET_SIGNS", "KINDS", "MARKER", "FolderKind", "check_output_folder", "dataset_sign",
           "folder_kind", "is_kind", "prepare_output_folder", "replace_output_folder", "same_folder"]

#: The file by which a command recognises a folder it made (hidden; JSON ``{"kind", "command"}``).
MARKER = ".pdn-folder.json"
#: The marker's format version.
MARKER_VERSION = 1


@dataclass(frozen=True)
class FolderKind:
    """What one command writes into its output folder.

    Attributes:
        name: the kind, as stored in the marker (``"run"``).
        command: the command that writes it, for messages (``"pdn train"``).
        owned: glob patterns of the top-level entries the command writes (files and its subfolders).
        manifest: patterns that must all be present for a folder without a marker (written before
            markers existed) to count as this kind, together with every entry being ``owned``.
        marked: the command writes :data:`MARKER` (a synth dataset, swapped in whole and so never
            half-written, is recognised by its files alone and carries no marker).
        adds_to: other kinds whose folders this command may add its (``owned``) files to.
    """

    name: str
    command: str
    owned: tuple[str, ...]
    manifest: tuple[str, ...]
    marked: bool = True
    adds_to: tuple[str, ...] = ()

    def owns(self, name: str) -> bool:
        """True for a top-level entry name the command writes (its marker and temporary files included)."""
        return name == MARKER or is_temp_name(name) or any(fnmatch.fnmatchcase(name, p) for p in self.owned)

    @property
    def what(self) -> str:
        return f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name} folder of {self.command}"


_EVAL_FILES = ("eval.json", "eval_frames.csv", "eval_approaches.csv", "eval_tracks.csv")

#: Every command's output folder kind (docs/hostile_inputs.md, "Folders", lists them).
KINDS: dict[str, FolderKind] = {k.name: k for k in (
    FolderKind("run", "pdn train", ("config.json", "*.safetensors", "metrics.csv", "predictions.csv",
                                    "selection.json", "certify"), ("config.json",)),
    FolderKind("attack", "pdn attack", ("sticker.png", "sticker_print.pdf", "sticker_palette.png", "attack.json",
                                        "history.csv", "examples.png", *_EVAL_FILES), ("attack.json",)),
    FolderKind("attack eval", "pdn attack eval", _EVAL_FILES, ("eval.json",), adds_to=("attack",)),
    FolderKind("attack sweep", "pdn attack sweep", ("area_*", "sweep.csv", "sweep.json", "sweep.png"),
               ("sweep.json",)),
    FolderKind("certify", "pdn certify", ("certify.json", "certify_frames.csv", "sweep.csv", "attacks.csv",
                                          "sweep_physical.csv", "attacks_physical.csv", "example_*"),
               ("certify.json",)),
    FolderKind("drive", "pdn drive", ("drive_log.csv", "drive.json", "monitor_trace.png", "monitor_trace.pdf",
                                      "*.mp4", "*.avi"), ("drive.json",)),
    FolderKind("saliency", "pdn saliency", ("saliency.json", "*.png"), ("saliency.json",)),
    FolderKind("tensorboard", "pdn train --tensorboard", ("events.out.tfevents.*",), ("events.out.tfevents.*",)),
    FolderKind("demo", "pdn demo", ("demo.json", "stages", "logs", "world_preview.png", "data", "heldout", "pilotnet",
                                    "patchvote", "drive", "drive_*", "saliency", "attack", "attack_*", "certify",
                                    "certify_*", "report"), ("demo.json",)),
    FolderKind("dataset", "pdn data synth", ("images.npy", "labels.csv", "meta.json"),
               ("images.npy", "labels.csv", "meta.json"), marked=False),
    FolderKind("report", "pdn report", ("index.html", "summary.json", "*.png", "*.pdf"),
               ("index.html", "summary.json")),
    # the study's results folder: the JSON results of its steps (make patchdrive-selection-study), and the table
    FolderKind("selection study", "pdn selection-study", ("*.json", "*.json.tmp", "table.csv", "table.md"),
               ("*_eval.json",)),
)}

#: Files (or folders, ending in ``/``) that make a folder a dataset of a supported format; a command
#: never writes into one, nor creates a folder inside one (as :func:`drivenet_patch.data.detect_format`).
DATASET_SIGNS: tuple[tuple[str, ...], ...] = (("images.npy", "meta.json"), ("driving_log.csv",),
                                              ("interpolated.csv",), ("data.txt",), ("camera/", "log/"))


def dataset_sign(folder: str | os.PathLike[str]) -> str | None:
    """The file that makes ``folder`` a dataset folder (``"labels.csv"``...), or None."""
    folder = Path(folder)
    for names in DATASET_SIGNS:
        if all((folder / n).is_dir() if n.endswith("/") else os.path.lexists(folder / n) for n in names):
            return names[0]
    return None


def _kind(name: str) -> FolderKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown folder kind {name!r}") from None


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise PDNError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None


def folder_kind(folder: str | os.PathLike[str]) -> str | None:
    """The kind named by ``folder``'s marker (None without a readable marker inside the folder)."""
    marker = Path(folder) / MARKER
    if not os.path.lexists(marker) or not inside(marker, folder):
        return None
    try:
        obj = read_json(marker, "folder marker")
    except PDNError:
        return None
    kind = obj.get("kind") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) else None


def is_kind(folder: str | os.PathLike[str], kind: str) -> bool:
    """Whether ``folder`` is a folder of ``kind``: its marker says so, or (made before markers) it holds the
    kind's manifest and only files of that kind."""
    p = Path(folder)
    if not p.is_dir():
        return False
    marked = folder_kind(p)
    if marked is not None:
        return marked == kind
    k, names = _kind(kind), _entries(p)
    mine = [n for n in names if n != MARKER and not is_temp_name(n)]
    return bool(mine) and _manifest_matches(k, names) and all(k.owns(n) for n in mine)


def same_folder(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same folder (links followed)."""
    return os.path.realpath(a) == os.path.realpath(b)


def _manifest_matches(kind: FolderKind, names: list[str]) -> bool:
    return all(any(fnmatch.fnmatchcase(n, p) for n in names) for p in kind.manifest)


def _contained(folder: Path) -> None:
    """An own folder is resumed only when nothing in it leads out of it: a sub-folder that is a link elsewhere
    (a demo's ``pilotnet/`` or a sweep's ``area_2/`` pointing at someone's folder) would be written through."""
    check_folder_contained(folder, hint="a folder a command resumes may not lead out of itself; remove the link")


def _not_in_dataset(where: str, above: Path | None, verb: str) -> None:
    """Refuse a new or empty output folder inside a dataset folder (``above`` or the folder above it: a
    dataset's image folder such as Udacity's ``IMG/`` lies one level down)."""
    for folder in ([above, above.parent] if above is not None else []):
        if folder.is_dir() and (sign := dataset_sign(folder)) is not None:
            raise PDNError(f"{where} {verb} inside the dataset folder {folder} (it holds {sign}); "
                           "choose a folder outside it")


def check_output_folder(out: str | os.PathLike[str], kind: str, option: str = "out") -> str:
    """Refuse ``out`` unless the command of ``kind`` may write into it; changes nothing on disk.

    Args:
        out: the folder the command is about to write.
        kind: the command's folder kind (a key of :data:`KINDS`).
        option: the parameter (or flag) that named ``out``, leading the message.

    Returns:
        ``"new"`` (absent: the command creates it), ``"empty"`` or ``"own"`` (a folder of this kind,
        or of a kind the command adds to).

    Raises:
        PDNError: one line naming the folder, why it is refused and what to do.
    """
    k = _kind(kind)
    p = Path(out)
    where = f"{option}: {p}"
    if not os.path.exists(p):
        if os.path.lexists(p):
            raise PDNError(f"{where} is a broken symbolic link; choose another folder")
        above = next((a for a in p.absolute().parents if os.path.exists(a)), None)
        if above is not None and not above.is_dir():
            raise PDNError(f"{where} cannot be created (Not a directory: {above} is a file); choose another folder")
        _not_in_dataset(where, above, "would be created")
        return "new"
    if not p.is_dir():
        raise PDNError(f"{where} is a file, not a folder; choose a folder")
    names = _entries(p)
    mine = [n for n in names if n != MARKER and not is_temp_name(n)]
    marked = folder_kind(p)
    if marked is not None:
        if marked == k.name or marked in k.adds_to:
            _contained(p)
            return "own"
        other = KINDS.get(marked)
        theirs = f"{other.what}" if other else f"a {marked!r} folder"
        raise PDNError(f"{where} is {theirs}, not {k.what}; choose another folder (nothing was changed)")
    if os.path.lexists(p / MARKER):
        raise PDNError(f"{where} holds a {MARKER} that is not a readable pdn folder marker; choose another folder "
                       "(nothing was changed)")
    if not mine:
        _not_in_dataset(where, p.absolute().parent, "lies")
        return "empty"
    sign = dataset_sign(p)
    if sign is not None and k.name != "dataset":
        raise PDNError(f"{where} is a dataset folder (it holds {sign}); choose another folder (nothing was changed)")
    for kk in (k, *(KINDS[a] for a in k.adds_to)):
        if _manifest_matches(kk, names) and all(kk.owns(n) for n in mine):
            _contained(p)
            return "own"
    foreign = next((n for n in mine if not k.owns(n)), None)
    if foreign is not None:
        why = f"holds {foreign!r}, which {k.command} did not write"
    else:
        why = f"has no {' + '.join(k.manifest)}, so it is not {k.what}"
    raise PDNError(f"{where} {why}; choose a new or empty folder (nothing was changed)")


def prepare_output_folder(out: str | os.PathLike[str], kind: str, option: str = "out",
                          remove: Iterable[str] = ()) -> Path:
    """Apply :func:`check_output_folder`, then create ``out`` and mark it as the kind's folder.

    Call it just before the command's first write (after every argument is checked), so that a
    refused command changes nothing on disk.

    Args:
        out: the output folder.
        kind: the command's folder kind.
        option: the option that named ``out``.
        remove: paths relative to ``out`` the command overwrites from scratch (``pdn demo --restart``):
            each is deleted when it is a file (or symbolic link) whose top-level entry the kind owns;
            nothing else is ever deleted.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.
    """
    k = _kind(kind)
    state = check_output_folder(out, kind, option)
    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PDNError(f"{option}: cannot create {p} ({exc.strerror or exc})") from None
    if k.marked and not (state == "own" and folder_kind(p) is not None):
        write_json(p / MARKER, {"kind": k.name, "command": k.command, "format_version": MARKER_VERSION})
    remove_stale_temps(p)
    for rel in remove:
        target = p / rel
        top = Path(rel).parts[0] if Path(rel).parts else ""
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not k.owns(top) or top == MARKER:
            raise ValueError(f"{rel!r} is not an entry {k.command} writes")
        if (target.is_symlink() or target.is_file()) and inside(target.parent, p):
            target.unlink()
    return p


@contextlib.contextmanager
def replace_output_folder(out: str | os.PathLike[str], kind: str, option: str = "out") -> Iterator[Path]:
    """:func:`drivenet_patch.storage.atomic.replace_folder` for a kind's folder written whole.

    The folder is refused by :func:`check_output_folder` first; the staging folder gets the marker
    (for a marked kind), so the swapped-in folder is recognised next time.
    """
    k = _kind(kind)
    check_output_folder(out, kind, option)
    with replace_folder(out, k.owns, k.what) as staging:
        if k.marked:
            write_json(staging / MARKER, {"kind": k.name, "command": k.command, "format_version": MARKER_VERSION})
        yield staging
