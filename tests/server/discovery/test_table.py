from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kcp_cache.meta import partial_object_metadata
from kcp_cache.registry import CRD_RESOURCE_INFO, PrinterColumn
from kcp_cache.server.transforms import (
    IncludeObject,
    TableColumns,
    format_age,
    partial_object_metadata_list,
    table_columns_for,
    to_table,
)

from ._crds import APIEXPORTS, APIRESOURCESCHEMAS, SHARDS, info


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _obj(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "core.kcp.io/v1alpha1",
        "kind": "Shard",
        "metadata": {
            "name": name,
            "resourceVersion": "7",
            "creationTimestamp": _ago(minutes=5),
            "labels": {"region": "eu"},
            "annotations": {"kcp.io/shard": "amber", "kcp.io/cluster": "root"},
            "managedFields": [{"manager": "m"}],
        },
        "spec": {"baseURL": "https://a", "externalURL": "https://b"},
        **extra,
    }


def _list(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "core.kcp.io/v1alpha1",
        "kind": "ShardList",
        "metadata": {"resourceVersion": "42", "continue": "tok", "remainingItemCount": 3},
        "items": list(items),
    }


def test_printer_columns_of_the_crd() -> None:
    table = to_table(_list(_obj("s1"), _obj("s2")), table_columns_for(info(SHARDS), "v1alpha1"))
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {
        "resourceVersion": "42",
        "continue": "tok",
        "remainingItemCount": 3,
    }
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Region", "URL", "External URL", "Age"]
    assert table["columnDefinitions"][0]["format"] == "name"
    assert table["columnDefinitions"][-1]["type"] == "date"
    assert [r["cells"] for r in table["rows"]] == [
        ["s1", "eu", "https://a", "https://b", "5m"],
        ["s2", "eu", "https://a", "https://b", "5m"],
    ]


def test_default_columns_are_name_and_age() -> None:
    columns = table_columns_for(info(APIRESOURCESCHEMAS), "v1alpha1")
    table = to_table(_obj("x"), columns)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["x", "5m"]
    assert table["metadata"] == {"resourceVersion": "7"}


def test_columns_are_per_version_with_filters() -> None:
    columns = table_columns_for(info(APIEXPORTS), "v1alpha1")
    ready = {"conditions": [{"type": "VirtualWorkspaceURLsReady", "status": "True"}]}
    table = to_table(_list(_obj("e", status=ready), _obj("f")), columns)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age", "Ready"]
    assert [r["cells"][2] for r in table["rows"]] == ["True", None]
    v2 = table_columns_for(info(APIEXPORTS), "v1alpha2")
    assert [c["name"] for c in v2.definitions()] == ["Name", "Age"]


def test_wildcard_columns_follow_the_name() -> None:
    columns = table_columns_for(info(SHARDS), "v1alpha1", shard=True, cluster=True)
    table = to_table(_list(_obj("s1")), columns)
    assert [c["name"] for c in table["columnDefinitions"]][:3] == ["Name", "Shard", "Cluster"]
    assert table["rows"][0]["cells"][:3] == ["s1", "amber", "root"]
    only_cluster = table_columns_for(info(SHARDS), "v1alpha1", cluster=True)
    assert to_table(_obj("s"), only_cluster)["rows"][0]["cells"][:2] == ["s", "root"]


def test_crd_resource_columns() -> None:
    columns = table_columns_for(CRD_RESOURCE_INFO, "v1")
    assert [c["name"] for c in columns.definitions()] == ["Name", "Created At"]
    crd = {"metadata": {"name": "shards.core.kcp.io", "creationTimestamp": "2026-01-02T03:04:05Z"}}
    # As kube prints it: the timestamp, not an age.
    assert columns.cells(crd) == ["shards.core.kcp.io", "2026-01-02T03:04:05Z"]


def test_include_object_modes() -> None:
    columns = table_columns_for(info(SHARDS), "v1alpha1")
    obj = _obj("s1")
    default = to_table(obj, columns)["rows"][0]["object"]
    assert default == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
    full = to_table(obj, columns, include_object=IncludeObject.OBJECT)["rows"][0]["object"]
    assert full == obj
    assert to_table(obj, columns, include_object=IncludeObject.NONE)["rows"][0]["object"] is None
    assert IncludeObject.parse(None) is IncludeObject.METADATA
    assert IncludeObject.parse("Object") is IncludeObject.OBJECT
    with pytest.raises(ValueError, match="unrecognized includeObject"):
        IncludeObject.parse("Everything")


def test_no_headers_and_v1beta1() -> None:
    table = to_table(_obj("a"), TableColumns(()), include_headers=False, version="v1beta1")
    assert table["columnDefinitions"] is None
    assert table["apiVersion"] == "meta.k8s.io/v1beta1"
    assert table["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"


@pytest.mark.parametrize(
    ("type_", "value", "cell"),
    [
        ("string", "x", "x"),
        ("string", 3, "3"),
        ("string", 2.5, "2.5"),
        ("string", True, "true"),
        ("string", {"a": [1]}, '{"a":[1]}'),
        ("integer", 3, 3),
        ("integer", 3.9, 3),
        ("integer", "3", None),
        ("integer", True, None),
        ("number", 3, 3.0),
        ("number", "x", None),
        ("boolean", False, False),
        ("boolean", "true", None),
        ("date", "not a date", "<invalid>"),
        ("date", 5, None),
        ("string", None, None),
    ],
)
def test_cell_types(type_: str, value: Any, cell: Any) -> None:
    columns = TableColumns([PrinterColumn(name="C", type=type_, json_path=".spec.v")])
    obj = {"metadata": {"name": "n"}, "spec": {"v": value}}
    assert to_table(obj, columns)["rows"][0]["cells"] == ["n", cell]


def test_unsupported_path_renders_empty() -> None:
    columns = TableColumns([PrinterColumn(name="C", type="string", json_path="..deep")])
    assert to_table({"metadata": {"name": "n"}}, columns)["rows"][0]["cells"] == ["n", None]


@pytest.mark.parametrize(
    ("seconds", "age"),
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600 + 120, "3h2m"),
        (10 * 3600, "10h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_format_age(seconds: int, age: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=4000)
    then = (now - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    assert format_age(then, now=now) == age


def test_partial_object_metadata_helpers() -> None:
    obj = _obj("s1")
    partial = partial_object_metadata(obj)
    assert partial == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
    lst = partial_object_metadata_list([obj], metadata={"resourceVersion": "9"})
    assert lst["kind"] == "PartialObjectMetadataList"
    assert lst["metadata"] == {"resourceVersion": "9"}
    assert lst["items"] == [partial]
