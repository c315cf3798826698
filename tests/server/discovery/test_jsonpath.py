from __future__ import annotations

import pytest

from kcp_cache.server.transforms import compile_path

OBJ = {
    "metadata": {"name": "a", "labels": {"region": "eu", "kcp.io/x": "y"}},
    "spec": {"items": [{"n": 1}, {"n": 2}], "ok": True},
    "status": {
        "conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "VirtualWorkspaceURLsReady", "status": "True", "n": 3},
        ]
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".metadata.name", ["a"]),
        ("{.metadata.name}", ["a"]),
        ("$.metadata.name", ["a"]),
        (".metadata.labels['region']", ["eu"]),
        ('.metadata.labels["kcp.io/x"]', ["y"]),
        (".spec.items[0].n", [1]),
        (".spec.items[-1].n", [2]),
        (".spec.items[*].n", [1, 2]),
        (".spec.items[5].n", []),
        (".spec.ok", [True]),
        ('.status.conditions[?(@.type=="VirtualWorkspaceURLsReady")].status', ["True"]),
        (".status.conditions[?(@.type=='Ready')].status", ["False"]),
        (".status.conditions[?(@.type!='Ready')].type", ["VirtualWorkspaceURLsReady"]),
        (".status.conditions[?(@.n)].type", ["VirtualWorkspaceURLsReady"]),
        (".status.conditions[?(@.n > 2)].type", ["VirtualWorkspaceURLsReady"]),
        (".status.conditions[?(@.n < 2)].type", []),
        (".metadata.*", [{"region": "eu", "kcp.io/x": "y"}, "a"][::-1]),
        (".missing.deep", []),
        (".metadata.name.deeper", []),
    ],
)
def test_find(path: str, expected: list[object]) -> None:
    assert compile_path(path).find(OBJ) == expected


@pytest.mark.parametrize("path", ["..name", "", ".a[", ".a[1:2]", "name", ".a[?(@.x=~/y/)]"])
def test_unsupported(path: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        compile_path(path)


def test_first() -> None:
    assert compile_path(".spec.items[*].n").first(OBJ) == (True, 1)
    assert compile_path(".nope").first(OBJ) == (False, None)


def test_plain_field_paths_take_the_direct_lookup() -> None:
    assert compile_path(".metadata.labels['kcp.io/x']").fields == ("metadata", "labels", "kcp.io/x")
    assert compile_path(".spec.items[0].n").fields is None
    assert compile_path(".metadata.*").fields is None
    assert compile_path(".status.conditions[?(@.type=='Ready')].status").fields is None
    # Same answers as the general pipeline.
    assert compile_path(".metadata.labels['region']").first(OBJ) == (True, "eu")
    assert compile_path(".metadata.name.deeper").first(OBJ) == (False, None)
