"""Imports point one way (each package's ``__init__`` docstring states its rule; the map is
docs/packages.md): ``cli`` and ``devnet`` may use everything; ``node`` (the daemon) all but
the programs built on it (``cli``, ``light``, ``devnet``); ``light`` only the protocol's
definitions and ``rpcclient``; ``genesis`` may use ``vm``; ``consensus``, ``vm`` and
``p2p`` are leaves apart from ``codec``; ``codec`` uses none of ours. The leaves are what
keep consensus testable in a simulated network and the VM without sockets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"node", "cli", "light", "rpcclient", "consensus", "vm", "p2p", "genesis", "codec", "devnet"}
MAY_IMPORT = {
    "codec": set(),
    "consensus": {"codec"},
    "vm": {"codec"},
    "p2p": set(),
    "genesis": {"vm", "codec"},
    "rpcclient": {"codec"},
    "node": {"consensus", "vm", "p2p", "genesis", "codec"},
    # a light client trusts no node: the protocol's definitions and an RPC client only
    "light": {"codec", "consensus", "vm", "genesis", "rpcclient"},
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


def module_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports, type-only and function-level
    imports included: a type-only circle still means neither side reads alone."""
    paths = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            paths[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            graph[name] |= {t for t in targets if t in paths and t != name}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            name, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[name] = min(low[name], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[name])
                if low[name] == index[name]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == name:
                            break
                    if len(component) > 1:
                        circles.append(component)
    return circles


# Circles that remain, each inside one package and named here so that a new one fails:
# the system-module table (``vm.modules`` imports every module, which import its helpers),
# and the RPC's WebSocket transport, dispatcher and subscription methods, which name each
# other's types (a session carries subscriptions; a subscription answers on a session).
KNOWN_CIRCLES = [
    {"vm.epoch", "vm.events", "vm.modules", "vm.modules.base", "vm.modules.governance",
     "vm.modules.identity", "vm.modules.params", "vm.modules.rewards", "vm.modules.telemetry",
     "vm.modules.validators", "vm.supply", "vm.modules.licenses", "vm.modules.erc721"},
    {"node.rpc.dispatch", "node.rpc.eth", "node.rpc.filters", "node.rpc.registry", "node.rpc.subscriptions",
     "node.rpc.websocket"},
]


def test_no_new_import_circles():
    circles = import_circles(module_graph())
    assert not [c for c in circles if c not in KNOWN_CIRCLES], circles


def test_rpc_depends_on_a_narrow_interface_of_the_node_not_on_the_node():
    """The node starts the RPC server; the server sees only ``node.rpc.nodeapi.NodeAPI``."""
    graph = module_graph()
    for name in (n for n in graph if n.startswith("node.rpc")):
        assert "node.node" not in graph[name], name
