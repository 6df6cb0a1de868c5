"""The architecture's rules, checked on every test run (design.md, "Layers").

- import-linter's contracts in pyproject.toml (the CLI on top, then demo | report, then attacks |
  defenses, then the core) hold;
- the core contract names every core module, so a new one cannot slip past it;
- no library module imports another module's private (``_name``) names.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("drivenet_patch", "attacks", "defenses")
#: drivenet_patch's layers above the core.
NOT_CORE = {"app"}


def _lint_imports() -> str | None:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else shutil.which("lint-imports")


def test_import_linter_contracts_hold() -> None:
    exe = _lint_imports()
    if exe is None:
        pytest.fail("lint-imports is not installed: `make test` installs it with the dev extra")
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_core_contract_lists_every_core_module() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "core")
    listed = set(contract["source_modules"])
    pkg = ROOT / "drivenet_patch"
    present = {f"drivenet_patch.{p.stem}" for p in pkg.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    core = {m for m in present if m.split(".")[1] not in NOT_CORE}
    assert core == listed, f"missing: {sorted(core - listed)}; stale: {sorted(listed - core)}"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``from M import _x`` in ``path`` where ``M`` is another of our modules (dunder names are fine)."""
    me = _module_name(path, root)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module.split(".")[0] not in PACKAGES or node.module == me:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}: from {node.module} import {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 50
    bad = [line for p in files for line in _private_imports(p)]
    assert not bad, "\n".join(bad)


def test_the_private_import_check_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "attacks" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("from __future__ import annotations\nfrom drivenet_patch.training.train import _helper, public\n"
                     "from attacks.probe import _own\n", encoding="utf-8")
    assert _private_imports(probe, tmp_path) == ["attacks/probe.py:2: from drivenet_patch.training.train import _helper"]
