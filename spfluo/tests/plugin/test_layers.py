"""The dependency direction of ``docs/architecture.md``, checked on the source with :mod:`ast`.

Worker side ``algorithms`` <- ``io`` <- ``jobs``; engine side ``io`` <- ``objects`` <-
``protocols`` <- ``viewers``/``cli``.  The two sides meet only through files whose formats
live in ``io``, so no engine-side module imports ``spfluo.jobs``.

Every ``import`` statement of every module of ``spfluo`` (tests left out) is read,
including the imports inside functions.  An import inside a function defers the cost
of a heavy package (pyworkflow, matplotlib) until it is needed; it is still a
dependency, and a cycle closed by a deferred import is still a cycle (the two modules
cannot be understood, tested or moved one without the other).  So the layer rules and
the cycle check count deferred imports too; a failure says which edges are deferred.

Edges go to the module named by the import (``from .x import y`` goes to ``x.y`` when
``y`` is a submodule, else to ``x``), not to its parent packages: importing
``spfluo.io.poses`` from ``spfluo.io.particles`` is not a cycle through
``spfluo/io/__init__.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the spfluo package folder

#: Engine-side modules and packages (they talk to jobs through files only).
ENGINE = ("spfluo.objects", "spfluo.protocols", "spfluo.viewers", "spfluo.cli",
          "spfluo.report", "spfluo.demo", "spfluo.workflow", "spfluo.queue", "spfluo.batch",
          "spfluo.catalog", "spfluo.plugin")
#: What the plain libraries (algorithms, io) must never import.
LIBRARY_FORBIDDEN = ("pyworkflow", "matplotlib", "spfluo.jobs") + ENGINE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        if not name.startswith("spfluo.tests"):
            mods[name] = path
    return mods


MODULES = _modules()


def _targets(module: str, is_package: bool, node) -> list[str]:
    """Absolute names of the modules an import statement imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """``(imported module, deferred (inside a function), line)`` for every import."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def walk(node, deferred):
        for child in ast.iter_child_nodes(node):
            inside = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, path.name == "__init__.py", child):
                    found.append((target, inside, child.lineno))
            walk(child, inside)

    walk(tree, False)
    return found


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(sources, forbidden) -> list[str]:
    bad = []
    for module in MODULES:
        if not _within(module, sources):
            continue
        for target, deferred, line in _imports(module):
            if _within(target, forbidden):
                bad.append(f"{MODULES[module].relative_to(ROOT.parent)}:{line} imports "
                           f"{target}{' (inside a function)' if deferred else ''}")
    return list(dict.fromkeys(bad))


def _local(target: str) -> str | None:
    """The spfluo module an import name refers to (longest known prefix), or None."""
    if not _within(target, ("spfluo",)):
        return None
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target if target in MODULES else None


def _graph(*, deferred: bool) -> dict[str, dict[str, bool]]:
    """``graph[a][b]`` is True when a deferred import makes the edge a -> b."""
    graph = {m: {} for m in MODULES}
    for module in MODULES:
        for target, is_deferred, _ in _imports(module):
            local = _local(target)
            if local is None or local == module or (is_deferred and not deferred):
                continue
            graph[module][local] = graph[module].get(local, True) and is_deferred
    return graph


def strongly_connected_components(graph: dict) -> list[list[str]]:
    """Components of more than one node (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _describe(graph, comp) -> str:
    edges = [f"{a} -> {b}{' (deferred)' if graph[a][b] else ''}"
             for a in comp for b in sorted(graph[a]) if b in comp]
    return "cycle among " + ", ".join(comp) + ": " + "; ".join(edges)


def test_the_module_list_is_complete():
    for name in ("spfluo", "spfluo.algorithms.psf", "spfluo.io.volumes", "spfluo.jobs.pick",
                 "spfluo.protocols.protocol_picking", "spfluo.viewers.viewer", "spfluo.cli"):
        assert name in MODULES


@pytest.mark.parametrize("package", ["spfluo.algorithms", "spfluo.io"])
def test_libraries_import_no_engine_and_no_caller(package):
    """algorithms and io: no pyworkflow, no matplotlib, no jobs/objects/protocols/viewers."""
    assert _violations((package,), LIBRARY_FORBIDDEN) == []


def test_engine_side_imports_no_job_module():
    """Protocols, viewers and the commands read job files through spfluo.io only."""
    assert _violations(ENGINE, ("spfluo.jobs",)) == []


def test_no_import_cycle_among_module_level_imports():
    graph = _graph(deferred=False)
    assert [_describe(graph, c) for c in strongly_connected_components(graph)] == []


def test_no_import_cycle_with_deferred_imports():
    graph = _graph(deferred=True)
    assert [_describe(graph, c) for c in strongly_connected_components(graph)] == []


def test_the_checks_see_a_cycle_and_a_forbidden_import():
    graph = {"a": {"b": False}, "b": {"c": True}, "c": {"a": False}, "d": {"a": False}}
    assert strongly_connected_components(graph) == [["a", "b", "c"]]
    assert "b -> c (deferred)" in _describe(graph, ["a", "b", "c"])
    node = ast.parse("from ..io import atomic, write_volume").body[0]
    assert _targets("spfluo.jobs.pick", False, node) == ["spfluo.io.atomic", "spfluo.io"]
    node = ast.parse("from . import psf").body[0]
    assert _targets("spfluo.algorithms", True, node) == ["spfluo.algorithms.psf"]
