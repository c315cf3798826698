"""No import cycle among the ``kcp_cache`` modules (a done criterion of the layering).

import-linter's contracts name the layers we chose; this test catches any cycle at all,
including one inside a package no contract covers. Imports under ``TYPE_CHECKING`` count:
a type-only import back up a layer is still a dependency in the wrong direction.
"""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan, iterative)."""
    modules = sorted(m for m in graph.modules if m.startswith("kcp_cache"))
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & set(modules)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                nxt = edges[node][child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
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
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_the_finder_sees_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("kcp_cache", "kcp_cache.a", "kcp_cache.b", "kcp_cache.c"):
        graph.add_module(name)
    graph.add_import(importer="kcp_cache.a", imported="kcp_cache.b")
    graph.add_import(importer="kcp_cache.b", imported="kcp_cache.c")
    graph.add_import(importer="kcp_cache.c", imported="kcp_cache.a")
    assert _cycles(graph) == [["kcp_cache.a", "kcp_cache.b", "kcp_cache.c"]]
    graph.remove_import(importer="kcp_cache.c", imported="kcp_cache.a")
    assert _cycles(graph) == []


def test_no_import_cycle_in_the_package() -> None:
    graph = grimp.build_graph("kcp_cache", cache_dir=None)
    assert _cycles(graph) == []
