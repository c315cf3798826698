"""The examples in the docstrings of the client, replication and testing packages run and
stay true (``kcp_cache.meta`` runs its own in ``tests/meta``)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("kcp_cache.client", "kcp_cache.replication", "kcp_cache.testing")


def _has_examples(name: str) -> bool:
    module = importlib.import_module(name)
    return any(test.examples for test in doctest.DocTestFinder().find(module))


def _modules(package: str) -> list[str]:
    path = importlib.import_module(package).__path__
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules(path)]


#: The modules with at least one example (a module without any has nothing to run here).
MODULES = sorted(name for package in PACKAGES for name in _modules(package) if _has_examples(name))


@pytest.mark.parametrize("package", PACKAGES)
def test_the_runner_finds_examples(package: str) -> None:
    assert any(name.startswith(f"{package}.") for name in MODULES), f"no example in {package}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
