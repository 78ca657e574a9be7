"""The import graph keeps the house's shape, checked on every run:

    contracts -> services.common -> shared packages (services.sending, services.credentials,
              services.api_keys)
              -> each service -> tools (services.wactl, services.devstack, bench) -> tests

- no module imports from a layer above its own;
- no service imports another service's modules (shared logic gets its own package), and
  `wactl` uses the public contract or the admin libraries (services.credentials,
  services.api_keys), not a service's modules;
- tests do not import benchmarks;
- no import cycle among the project's modules, including imports made inside functions and
  under TYPE_CHECKING (a cycle hidden there is still a knot for a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("contracts", "services", "bench", "tests")
SHARED = ("services.common", "services.sending", "services.credentials", "services.api_keys")
TOOLS = ("services.wactl", "services.devstack", "bench")
LAYERS = {"contracts": 0, "common": 1, "shared": 2, "service": 3, "tool": 4, "tests": 5}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for top in OURS:
        for path in sorted((root / top).rglob("*.py")):
            if "schemas" not in path.parts:
                found[module_name(path, root)] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project's modules `path` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod where there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in OURS and target != name:
                found.add(target)
    return found


def service_of(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "services" and len(parts) > 1 and not name.startswith((*SHARED, *TOOLS)):
        return parts[1] if parts[1] != "__init__" else None
    return None


def layer(name: str) -> int:
    if name.startswith("contracts"):
        return LAYERS["contracts"]
    if name == "services" or name.startswith("services.common"):
        return LAYERS["common"]
    if name.startswith(SHARED):
        return LAYERS["shared"]
    if name.startswith(TOOLS):
        return LAYERS["tool"]
    if name.startswith("tests"):
        return LAYERS["tests"]
    return LAYERS["service"]


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(path, name, known) for name, path in known.items()}


def layering_violations(edges: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer(target) > layer(source):
                problems.append(f"{source} imports {target}, a higher layer")
            mine, theirs = service_of(source), service_of(target)
            if mine and theirs and mine != theirs:
                problems.append(f"{source} imports {target}, another service's module")
            if source.startswith("services.wactl") and theirs:
                problems.append(f"{source} imports {target}, a service's module")
            if source.startswith("tests") and target.startswith("bench"):
                problems.append(f"{source} imports {target}, a benchmark")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(ROOT)


def test_no_module_imports_from_a_higher_layer_or_another_service(edges: dict[str, set[str]]) -> None:
    assert layering_violations(edges) == []


def test_no_import_cycle_among_the_projects_modules(edges: dict[str, set[str]]) -> None:
    assert cycles(edges) == []


def test_the_checks_see_what_they_guard_against() -> None:
    """The checker itself: a cycle, an upward import and a cross-service import are found."""
    edges = {
        "services.session_actor.actor": {"services.session_actor.node"},
        "services.session_actor.node": {"services.session_actor.actor", "services.outbound_queue.ledger"},
        "contracts.asyncapi": {"services.persistence.queries"},
        "bench.harness": {"tests.support"},
        "services.wactl.main": {"services.session_actor.vault"},
        "tests.test_vault": {"bench.neonize_idle"},
    }
    assert cycles(edges) == [["services.session_actor.actor", "services.session_actor.node"]]
    assert layering_violations(edges) == [
        "bench.harness imports tests.support, a higher layer",
        "contracts.asyncapi imports services.persistence.queries, a higher layer",
        "services.session_actor.node imports services.outbound_queue.ledger, another service's module",
        "services.wactl.main imports services.session_actor.vault, a service's module",
        "tests.test_vault imports bench.neonize_idle, a benchmark",
    ]
