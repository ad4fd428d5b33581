"""Imports point one way (each package's ``__init__`` docstring states its rule):
``node`` may use everything; ``genesis`` may use ``vm``; ``consensus``, ``vm`` and ``p2p``
are leaves apart from ``codec``; ``codec`` uses none of ours. The leaves are what keep
consensus testable in a simulated network and the VM without sockets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"node", "consensus", "vm", "p2p", "genesis", "codec", "devnet"}
MAY_IMPORT = {
    "codec": set(),
    "consensus": {"codec"},
    "vm": {"codec"},
    "p2p": set(),
    "genesis": {"vm", "codec"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages ``path`` imports absolutely (relative imports stay inside)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    return imported


MODULES = [(package, path) for package in sorted(MAY_IMPORT)
           for path in sorted((ROOT / package).rglob("*.py"))]


@pytest.mark.parametrize(("package", "path"), MODULES,
                         ids=[str(p.relative_to(ROOT)) for _, p in MODULES])
def test_package_imports_only_what_its_rule_allows(package: str, path: Path) -> None:
    forbidden = OURS - MAY_IMPORT[package] - {package}
    assert not imported_packages(path) & forbidden
