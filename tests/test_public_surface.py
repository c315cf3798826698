"""Private modules stay private: no ``kcp_cache.<pkg>._<module>`` is imported from outside
``<pkg>``, in the package, the tests, the benchmarks or the examples.

A package's public surface is its ``__init__`` (and its public modules); its ``_modules``
are free to change. ruff's ``PLC2701`` only sees private *names*, not private *modules*,
so this walks every file's syntax tree: for an imported module ``kcp_cache.a.b._c.d``
the owner is ``kcp_cache.a.b`` (the package above the first private part), and only
modules inside the owner may import it. Tests that need an internal get it through a
public home — a package's ``__init__`` re-export, or :mod:`kcp_cache.testing`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
TREES = ("src", "tests", "bench", "examples")


def _module_name(path: Path) -> str | None:
    """The dotted name of a file of the package (``None`` outside ``src/``)."""
    if SRC not in path.parents:
        return None
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(node: ast.ImportFrom, importer: str | None, package: bool) -> str | None:
    """The module an ``import from`` names, made absolute for relative imports in src."""
    if node.level == 0:
        return node.module
    if importer is None:
        return None  # a relative import between test or benchmark modules
    base = importer.split(".") if package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_module(dotted: str) -> bool:
    path = SRC.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported(path: Path) -> Iterator[tuple[int, str]]:
    """Every ``kcp_cache`` module *path* imports, with its line."""
    importer = _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, _is_package(path))
            if module is None:
                continue
            yield node.lineno, module
            for alias in node.names:  # ``from kcp_cache.x import _mod``
                if alias.name.startswith("_") and _is_module(f"{module}.{alias.name}"):
                    yield node.lineno, f"{module}.{alias.name}"


def _owner(module: str) -> str | None:
    """The package whose private module *module* is, or ``None`` for a public one."""
    parts = module.split(".")
    if parts[0] != "kcp_cache":
        return None
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _violations(tree: str) -> list[str]:
    found = []
    for path in sorted((ROOT / tree).rglob("*.py")):
        importer = _module_name(path) or ""
        for line, module in _imported(path):
            owner = _owner(module)
            inside = importer == owner or importer.startswith(f"{owner}.")
            if owner is not None and not inside:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("tree", TREES)
def test_no_private_module_is_imported_from_outside_its_package(tree: str) -> None:
    assert (ROOT / tree).is_dir()
    assert _violations(tree) == []


def test_the_check_sees_private_imports() -> None:
    # The walker itself: a private module of another package is found, one's own is not.
    assert _owner("kcp_cache.server._auth") == "kcp_cache.server"
    assert _owner("kcp_cache.server.tls._io") == "kcp_cache.server.tls"
    assert _owner("kcp_cache.server.tls") is None
    assert _owner("kcp_cache.__init__") is None
    own = SRC / "kcp_cache" / "testing" / "__init__.py"
    assert any(m == "kcp_cache.testing._asgi" for _, m in _imported(own))
