"""README.md and docs/*.md are checked like code: their Python examples run, their `pdn` commands exist
with the flags they show, their links resolve, and the public API they list is the one exported.

Everything here is fast (seconds): the examples run on tiny models with small step counts
substituted, and commands are checked against the argparse tree without running them.
"""

from __future__ import annotations

import argparse
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
LINKED = [*PAGES, ROOT / "data" / "README.md", ROOT / "CHANGELOG.md"]
SHELL_FENCES = ("bash", "sh", "shell", "console", "text", "")

_FENCE = re.compile(r"^[ \t]*```([^\n`]*)\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _fences(path: Path) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of a page."""
    return [(m.group(1).strip(), textwrap.dedent(m.group(2))) for m in _FENCE.finditer(path.read_text(encoding="utf-8"))]


def _prose(path: Path) -> str:
    """The page without its fenced blocks (links and headings live in prose)."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- python blocks
def _python_blocks() -> list[tuple[str, int, str]]:
    out = []
    for page in PAGES:
        for i, (info, body) in enumerate(_fences(page)):
            if info.split()[:1] == ["python"] and "no-run" not in info:
                out.append((_rel(page), i, body))
    return out


def test_no_run_blocks_state_a_reason() -> None:
    for page in PAGES:
        for info, _ in _fences(page):
            if info.startswith("python") and "no-run" in info:
                assert re.fullmatch(r"python no-run: \S.{5,}", info), f"{_rel(page)}: ```{info} needs a reason"


#: Small settings for the examples: they show real step counts, the test runs a few.
_SMALL = (
    (r"\bsteps=\d+", "steps=2"),
    (r"\broads=\d+, poses=\d+", "roads=1, poses=4"),
    (r"\bframes=\d[\d_]*", "frames=24"),
    (r"\bepochs=\d+", "epochs=1"),
    (r"\bbatch=\d+", "batch=16"),
    (r"\bsamples_per_epoch=\d[\d_]*", "samples_per_epoch=16"),
    (r"\bspacing_m=[\d.]+", "spacing_m=1.0"),
    (r"\blength_m=1000\b", "length_m=200"),
)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with what the examples expect from `make demo`: runs/demo/{pilotnet,patchvote}
    (tiny models of the same kinds) and an exported PatchVote."""
    from drivenet_patch.deploy.export import export_onnx
    from drivenet_patch.models import create_model
    from drivenet_patch.models.checkpoint import save_model

    root = tmp_path_factory.mktemp("docs")
    g = torch.Generator().manual_seed(0)
    save_model(root / "runs/demo/pilotnet", create_model("pilotnet_tiny", generator=g))
    pv = create_model("patchvote_tiny", layout="strips", generator=g)
    save_model(root / "runs/demo/patchvote", pv)
    export_onnx(pv.eval(), root / "patchvote.onnx")
    return root


@pytest.mark.parametrize(("page", "index", "code"), _python_blocks(),
                         ids=[f"{p}#{i}" for p, i, _ in _python_blocks()])
def test_python_block_runs(page: str, index: int, code: str, demo_runs: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cli", "argparse", "subprocess"):  # the examples stay on the library
        assert not re.search(rf"^\s*(from|import) \S*\b{name}\b", code, flags=re.M), f"{page}: imports {name}"
    small = code
    for pattern, repl in _SMALL:
        small = re.sub(pattern, repl, small)
    monkeypatch.chdir(demo_runs)
    namespace: dict = {"__name__": "docs_example",
                       "frames": torch.rand(2, 3, 66, 200, generator=torch.Generator().manual_seed(1)).numpy()}
    exec(compile(small, f"{page} block {index}", "exec"), namespace)


def test_readme_has_a_quick_start() -> None:
    blocks = [b for p, _, b in _python_blocks() if p == "README.md"]
    assert len(blocks) == 1 and 8 <= len(blocks[0].strip().splitlines()) <= 22


# ---------------------------------------------------------------------------------------------- pdn commands
def _commands() -> dict[tuple[str, ...], set[str]]:
    """Every ``pdn`` command path (``("attack", "eval")``, ``("bench",)``, ...) and its long options."""
    return {path: flags for path, (flags, _) in _command_tree().items()}


def _command_tree() -> dict[tuple[str, ...], tuple[set[str], bool]]:
    """Every ``pdn`` command path, its long options and whether it runs without a sub-command."""
    from drivenet_patch.app.cli import build_parser

    out: dict[tuple[str, ...], tuple[set[str], bool]] = {}

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        runnable = not any(a.required for a in subs)
        out[path] = ({o for a in p._actions for o in a.option_strings if o.startswith("--")}, runnable)
        for action in subs:
            for name, sub in action.choices.items():
                # `pdn attack eval|sweep` are the parser's `attack-eval|attack-sweep` (cli.attack.route_argv)
                walk(sub, (*path, *name.split("-", 1)) if name in ("attack-eval", "attack-sweep") else (*path, name))

    walk(build_parser(), ())
    return out


def _resolve(tokens: list[str], commands: dict[tuple[str, ...], set[str]]) -> tuple[tuple[str, ...], list[str]]:
    """The command path a ``pdn`` line names and the long options it uses."""
    path: tuple[str, ...] = ()
    flags = []
    for tok in tokens:
        if tok.startswith("--"):
            flags.append(re.match(r"--[\w-]*", tok).group(0))
        elif not tok.startswith("-") and (*path, tok) in commands:
            path = (*path, tok)
    return path, flags


def _pdn_lines(text: str) -> list[str]:
    """``pdn ...`` invocations in a shell block (continuations joined, comments dropped); ``torchrun ... -m
    drivenet_patch.app.cli`` counts as ``pdn``."""
    text = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip().removeprefix("$ ")
        m = re.search(r"(?:^|\s|/)pdn\s(.*)$", line) or re.search(r"-m drivenet_patch\.app\.cli\s(.*)$", line)
        if m and not re.match(r"pdn[\w -]*:", line):  # `pdn: error: ...`, `pdn bench monitor: error: ...` are output
            lines.append(m.group(1))
    return lines


def _inline_pdn(text: str) -> list[str]:
    """``pdn ...`` inline code spans of the prose (the command tables)."""
    return [m.group(1) for m in re.finditer(r"`pdn ([^`]+)`", text.replace("\\|", "|"))]


def _check_command(where: str, rest: str, commands: dict[tuple[str, ...], set[str]]) -> tuple[str, ...]:
    try:
        tokens = shlex.split(rest)
    except ValueError:
        tokens = rest.split()
    path, flags = _resolve(tokens, commands)
    assert path, f"{where}: `pdn {rest}` names no pdn command"
    first = next((t for t in tokens if not t.startswith("-")), None)
    assert first == path[0], f"{where}: `pdn {rest}`: {first!r} is not a pdn command"
    unknown = [f for f in flags if f not in commands[path]]
    assert not unknown, f"{where}: `pdn {' '.join(path)}` has no option {', '.join(unknown)}"
    return path


def test_shown_commands_exist_with_their_flags() -> None:
    commands = _commands()
    seen = 0
    for page in PAGES:
        for info, body in _fences(page):
            if (info.split() or [""])[0] in SHELL_FENCES:
                for rest in _pdn_lines(body):
                    _check_command(_rel(page), rest, commands)
                    seen += 1
        for rest in _inline_pdn(_prose(page)):
            if rest.split()[0] in {p[0] for p in commands if p}:
                _check_command(_rel(page), rest, commands)
                seen += 1
    assert seen > 30


def test_console_transcripts_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """```console check blocks show `$ pdn ...` and what it prints; each is run in-process in an empty
    folder and must print exactly that (error examples: fast, no work done). Plain ```console blocks
    are illustrations (their flags are still checked)."""
    from drivenet_patch.app.cli import main

    monkeypatch.chdir(tmp_path)
    ran = 0
    for page in PAGES:
        for info, body in _fences(page):
            if info.split() != ["console", "check"]:
                continue
            for cmd, *expected in (chunk.splitlines() for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]):
                argv = shlex.split(cmd)
                assert argv[0] == "pdn", f"{_rel(page)}: console blocks show pdn commands, got {cmd!r}"
                capsys.readouterr()
                rc = main(argv[1:])
                out = capsys.readouterr()
                assert (out.out + out.err).strip() == "\n".join(expected).strip(), f"{_rel(page)}: $ {cmd}"
                assert rc == (2 if out.err.startswith("pdn: error:") else 0)
                ran += 1
    assert ran >= 1


def test_readme_command_table_lists_every_command_once() -> None:
    """One row per runnable command; a row may cover its sub-commands by naming them (`pdn bench [world|...]`)."""
    tree = _command_tree()
    commands = _commands()
    rows = [line.replace("\\|", "|") for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `pdn ")]
    named = {}
    for row in rows:
        rest = re.match(r"\| `pdn ([^`]+)`", row).group(1)
        path, _ = _resolve(shlex.split(rest), commands)
        assert path not in named, f"README's command table lists pdn {' '.join(path)} twice"
        named[path] = rest
    for path, (_, runnable) in tree.items():
        if not path or not runnable or path in named:
            continue
        parent = path[:-1]
        assert parent in named and re.search(rf"\b{path[-1]}\b", named[parent]), (
            f"README's command table misses pdn {' '.join(path)}")


# ---------------------------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6} (.+?)\s*#*$", _prose(path), flags=re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_relative_links_and_anchors_resolve() -> None:
    checked = 0
    for page in [p for p in LINKED if p.exists()]:
        for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", _prose(page)):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            assert dest.exists(), f"{_rel(page)}: link to {target} (no such file)"
            if anchor:
                assert dest.suffix == ".md", f"{_rel(page)}: anchor into a non-page {target}"
                assert anchor in _anchors(dest), f"{_rel(page)}: no heading for #{anchor} in {_rel(dest)}"
            checked += 1
    assert checked > 40


def test_every_docs_page_is_linked_from_the_readme() -> None:
    prose = _prose(README)
    for page in DOCS:
        assert f"(docs/{page.name}" in prose, f"README does not link docs/{page.name}"


# ---------------------------------------------------------------------------------------------- product text
def test_readme_is_a_short_product_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "<!--" not in text
    assert not re.search(r"\btarget", text, flags=re.I)
    assert not re.search(r"this VM", text, flags=re.I)
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dates belong in CHANGELOG.md"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_pages_carry_no_work_tracking(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"\bissues?\s*#?\d+", text, flags=re.I), f"{_rel(page)} names an issue number"
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", text), f"{_rel(page)}: a commit hash"
    assert "<!--" not in text and not re.search(r"this VM|this session", text, flags=re.I)
    assert not re.search(r"\|\s*target\s*\|", text, flags=re.I), f"{_rel(page)}: a target column"


def test_changelog_has_the_current_version() -> None:
    import drivenet_patch

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'^version = "([^"]+)"', pyproject, flags=re.M).group(1)
    assert drivenet_patch.__version__ == version
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(version)}\]", text, flags=re.M)


# ---------------------------------------------------------------------------------------------- public API
@pytest.mark.parametrize("package", ["drivenet_patch", "attacks", "defenses"])
def test_public_api_listed_in_architecture(package: str) -> None:
    """docs/architecture.md lists each package's ``__all__`` under ``### `package```, exactly."""
    import importlib

    text = _prose(ROOT / "docs" / "architecture.md")
    section = re.search(rf"^### `{package}`\n(.*?)(?=^#)", text + "\n#", flags=re.S | re.M)
    assert section, f"docs/architecture.md has no section ### `{package}`"
    listed = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section.group(1))
    exported = importlib.import_module(package).__all__
    assert sorted(set(listed)) == sorted(exported), (
        f"{package}: listed but not exported {sorted(set(listed) - set(exported))}, "
        f"exported but not listed {sorted(set(exported) - set(listed))}")
