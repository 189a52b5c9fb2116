"""The package layering rules of DESIGN.md, checked on the source: each lower layer imports only downward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# (package, imports it must never make, why)
RULES = [
    ("eval", ("src.trainers",), "evaluation is usable without the trainers"),
    ("models", ("src.trainers", "src.eval", "src.data", "lightning"), "models know nothing of Lightning or data"),
    ("data", ("src.trainers", "src.eval", "src.models"), "data knows nothing of models"),
]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module named by an import statement in `path` (module-level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize(("package", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_package_imports_only_downward(package: str, forbidden: tuple[str, ...], why: str) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files, f"no sources under src/{package}"
    broken = [
        f"{path.relative_to(SRC.parent)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if any(module == bad or module.startswith(bad + ".") for bad in forbidden)
    ]
    assert not broken, f"src/{package} must not import {forbidden} ({why}):\n" + "\n".join(broken)
