"""What the package declares: every third-party module it imports, and its licence."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (`typing_extensions` == `Typing-Extensions`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_levels(path: Path) -> Iterator[tuple[str, int]]:
    """Top-level names of the absolute imports in one file (type-checking-only ones included)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            yield node.module.partition(".")[0], node.lineno


def _third_party_imports() -> dict[str, list[str]]:
    """Third-party top-level module -> where the package imports it."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "router").rglob("*.py")):
        for name, line in _imported_top_levels(path):
            if name in sys.stdlib_module_names or name in ("router", "__future__"):
                continue
            found.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def test_every_imported_module_is_a_declared_dependency() -> None:
    declared = {
        _normalized(m[0])
        for spec in PYPROJECT["project"]["dependencies"]
        if (m := re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec))
    }
    providers = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"anthropic", "aiosqlite", "structlog"} <= imports.keys()  # the walk finds imports at all
    problems = []
    for module, where in sorted(imports.items()):
        dists = providers.get(module)
        if not dists:
            problems.append(f"{module} (imported at {where[0]}): no installed distribution provides it")
        elif not any(_normalized(d) in declared for d in dists):
            problems.append(
                f"{module} (imported at {where[0]}): provided by {', '.join(dists)},"
                " which is not in [project] dependencies"
            )
    assert problems == []


def test_the_declared_licence_has_its_file() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the hybrid-router authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
