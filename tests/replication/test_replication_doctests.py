"""The examples in the replication package's docstrings run and stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import kcp_cache.replication

MODULES = sorted(
    f"kcp_cache.replication.{m.name}" for m in pkgutil.iter_modules(kcp_cache.replication.__path__)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
