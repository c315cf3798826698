"""Server-side apply's field sets, FieldsV1 and merge rules for deduced (schemaless) types."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcp_cache.registry import (
    ApiError,
    apply_configuration,
    field_set,
    fields_v1,
    parse_fields_v1,
)

NOW = "2026-12-01T00:00:00Z"


def obj(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "g/v1",
        "kind": "K",
        "metadata": {"name": "x", **meta},
        "spec": spec,
    }


def apply(
    live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool = False
) -> dict[str, Any]:
    return apply_configuration(
        live, applied, manager=manager, force=force, api_version="g/v1", now=NOW
    )


def test_field_set_of_a_deduced_type() -> None:
    body = obj(
        {"a": 1, "m": {"k": "v"}, "l": [1, {"x": 2}]},
        uid="u",
        resourceVersion="5",
        labels={"team": "t"},
        annotations={"kcp.io/cluster": "c", "kcp.io/shard": "s"},
    )
    assert field_set(body) == {
        ("metadata",),
        ("metadata", "labels"),
        ("metadata", "labels", "team"),
        ("spec",),
        ("spec", "a"),
        ("spec", "m"),
        ("spec", "m", "k"),
        ("spec", "l"),  # lists are atomic: one leaf, nothing below
    }


def test_fields_v1_marks_members_with_children() -> None:
    paths = {("spec",), ("spec", "a"), ("spec", "m"), ("spec", "m", "k"), ("status",)}
    assert fields_v1(paths) == {
        "f:spec": {".": {}, "f:a": {}, "f:m": {".": {}, "f:k": {}}},
        "f:status": {},
    }


json_keys = st.text(alphabet="abcxyz.:", min_size=1, max_size=3)
values = st.recursive(
    st.one_of(st.integers(), st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2)),
    lambda children: st.dictionaries(json_keys, children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.dictionaries(json_keys, values, max_size=4))
def test_fields_v1_round_trips(spec: dict[str, Any]) -> None:
    paths = field_set(obj(spec))
    assert parse_fields_v1(fields_v1(paths)) == paths


def test_typed_keys_from_other_servers_make_their_parent_a_leaf() -> None:
    encoded = {"f:spec": {"f:containers": {'k:{"name":"a"}': {".": {}, "f:image": {}}}}}
    assert parse_fields_v1(encoded) == {("spec", "containers")}


def test_conflict_and_force() -> None:
    first = apply(None, obj({"a": 1, "b": 1}), "alice")
    with pytest.raises(ApiError) as raised:
        apply(first, obj({"a": 2}), "bob")
    assert raised.value.code == 409
    assert raised.value.message == 'Apply failed with 1 conflict: conflict with "alice": .spec.a'
    forced = apply(first, obj({"a": 2}), "bob", force=True)
    assert forced["spec"] == {"a": 2, "b": 1}
    entries = {e["manager"]: e for e in forced["metadata"]["managedFields"]}
    assert entries["bob"]["fieldsV1"] == {"f:spec": {".": {}, "f:a": {}}}
    assert "f:a" not in entries["alice"]["fieldsV1"]["f:spec"]


def test_an_update_manager_is_named_with_its_version_and_time() -> None:
    live = obj({"a": 1})
    live["metadata"]["managedFields"] = [
        {
            "manager": "kubectl-edit",
            "operation": "Update",
            "apiVersion": "g/v1",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:a": {}}},
        }
    ]
    with pytest.raises(ApiError) as raised:
        apply(live, obj({"a": 2}), "ssa")
    assert raised.value.message == (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using g/v1 at '
        "2026-01-01T00:00:00Z: .spec.a"
    )


def test_lists_are_replaced_whole_and_maps_merged() -> None:
    live = apply(None, obj({"l": [1, 2], "m": {"x": 1}}), "a")
    after = apply(live, obj({"l": [3], "m": {"y": 2}}), "b", force=True)
    assert after["spec"] == {"l": [3], "m": {"x": 1, "y": 2}}


def test_a_field_no_longer_applied_goes_with_its_emptied_parent() -> None:
    live = apply(None, obj({"keep": 1, "nested": {"x": 1}}), "a")
    after = apply(live, obj({"keep": 1}), "a")
    assert after["spec"] == {"keep": 1}
    assert [e["manager"] for e in after["metadata"]["managedFields"]] == ["a"]


def test_a_manager_that_applies_nothing_loses_its_entry() -> None:
    live = apply(None, obj({"a": 1}), "a")
    live = apply(live, obj({"b": 1}), "b")
    after = apply(live, {"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"}}, "a")
    assert after["spec"] == {"b": 1}
    assert [e["manager"] for e in after["metadata"]["managedFields"]] == ["b"]
