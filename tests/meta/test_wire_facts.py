"""``kcp_cache.meta``: the shared wire facts, their examples, and that each has one home."""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import kcp_cache
from kcp_cache.meta import (
    CLUSTER_ANNOTATION,
    SHARD_ANNOTATION,
    SYSTEM_MASTERS,
    check_line,
    excluded_line,
    health_report,
    partial_object_metadata,
    sort_versions,
)

SRC = Path(kcp_cache.__file__).parent


@pytest.mark.parametrize("module", ["_health", "_partial", "_versions"])
def test_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"kcp_cache.meta.{module}"))
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(
    "literal",
    [SHARD_ANNOTATION, CLUSTER_ANNOTATION, SYSTEM_MASTERS, "/services/cache"],
)
def test_each_wire_name_is_spelled_once_in_the_package(literal: str) -> None:
    """As a string constant; docstrings and examples may still show it."""
    hits = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == literal
    )
    assert hits == ["meta/_names.py"]


def test_the_wildcard_is_spelled_once_in_the_package() -> None:
    """``"*"`` as kcp's wildcard is ``meta.WILDCARD``; the other ``"*"`` constants in the
    package are JSONPath's and HTTP's (``If-None-Match: *``, ``Accept-Encoding: *``)."""
    hits = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == "*"
    )
    assert hits == [
        "meta/_names.py",
        "server/_authz.py",  # a path pattern's trailing "*" (kube's NonResourceURLs)
        "server/api/_encoding.py",
        "server/discovery/_app.py",
        "server/transforms/_jsonpath.py",
    ]


def test_health_report_reads_like_kube_apiserver() -> None:
    lines = [
        check_line("ping", ok=True),
        check_line("etcd", ok=False, reason="connection refused"),
        excluded_line("bootstrap"),
    ]
    assert health_report("readyz", lines) == (
        b"[+]ping ok\n[-]etcd failed: connection refused\n[+]bootstrap excluded: ok\n"
        b"readyz check failed\n"
    )
    assert (
        health_report("livez", [check_line("ping", ok=True)]) == b"[+]ping ok\nlivez check passed\n"
    )
    assert health_report("readyz", [], failed=True).endswith(b"readyz check failed\n")


def test_versions_highest_priority_first() -> None:
    assert sort_versions(["v1alpha1", "v1", "v1", "v2beta1", "zeta", "alpha"]) == [
        "v1",
        "v2beta1",
        "v1alpha1",
        "alpha",
        "zeta",
    ]


def test_partial_object_metadata_keeps_only_metadata() -> None:
    obj = {"kind": "Widget", "apiVersion": "x/v1", "metadata": {"name": "a"}, "spec": {"n": 1}}
    assert partial_object_metadata(obj, version="v1beta1") == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1beta1",
        "metadata": {"name": "a"},
    }
