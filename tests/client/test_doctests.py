"""The examples in the client's docstrings run and stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import kcp_cache.client


def _has_examples(name: str) -> bool:
    module = importlib.import_module(name)
    return any(test.examples for test in doctest.DocTestFinder().find(module))


#: The modules with at least one example (a module without any has nothing to run here).
MODULES = sorted(
    name
    for name in (
        f"kcp_cache.client.{m.name}" for m in pkgutil.iter_modules(kcp_cache.client.__path__)
    )
    if _has_examples(name)
)


def test_the_runner_finds_examples() -> None:
    assert MODULES, "no module with a docstring example was found: is the discovery broken?"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
