"""``Cache.spec.export`` / ``spec.import`` as the exporter, the mirror and the admission
read them (``kcp_cache.meta.ResourcePolicy``)."""

from __future__ import annotations

from typing import Any

import pytest

from kcp_cache.meta import PolicyError, ResourcePolicy, policy_from_flags


def _obj(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "x", "labels": labels}}


def test_absent_lets_everything_flow_and_an_empty_list_nothing() -> None:
    assert ResourcePolicy.parse(None).wants("apis.kcp.io", "apiexports", _obj())
    nothing = ResourcePolicy.parse([])
    assert not nothing.covers("apis.kcp.io", "apiexports")
    assert nothing.exact_types() == []


def test_wildcards_core_group_and_per_type_selectors() -> None:
    policy = ResourcePolicy.parse([
        {"group": "apis.kcp.io", "resource": "apiexports",
         "labelSelector": {"matchLabels": {"public": "true"}}},
        {"group": "", "resource": "secrets"},
        {"group": "rbac.authorization.k8s.io", "resource": "*", "labelSelector": {
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "hidden", "operator": "DoesNotExist"}]}},
    ])  # fmt: skip
    assert policy.wants("apis.kcp.io", "apiexports", _obj(public="true"))
    assert not policy.wants("apis.kcp.io", "apiexports", _obj())
    assert policy.covers("apis.kcp.io", "apiexports")
    assert policy.wants("core", "secrets", _obj())
    assert policy.wants("rbac.authorization.k8s.io", "roles", _obj(tier="a"))
    assert not policy.wants("rbac.authorization.k8s.io", "roles", _obj(tier="c"))
    assert not policy.wants("rbac.authorization.k8s.io", "roles", _obj(tier="a", hidden="1"))
    assert not policy.covers("apis.kcp.io", "apiresourceschemas")
    assert policy.exact_types() is None  # selectors: the parent cannot filter for us
    exact = ResourcePolicy.parse([{"group": "apis.kcp.io", "resource": "apiexports"},
                                  {"group": "core", "resource": "secrets"}])  # fmt: skip
    assert exact.exact_types() == ["apis.kcp.io/apiexports", "core/secrets"]
    anything = ResourcePolicy.parse([{"group": "*", "resource": "*",
        "labelSelector": {"matchExpressions": [{"key": "a", "operator": "NotIn",
                                                "values": ["b"]}]}}])  # fmt: skip
    assert anything.wants("x.io", "things", _obj())
    assert not anything.wants("x.io", "things", _obj(a="b"))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("all", "spec.export"),
        ([1], "spec.export[0]"),
        ([{"group": "a.io"}], "spec.export[0].resource"),
        ([{"group": "A B", "resource": "x"}], "spec.export[0].group"),
        ([{"group": "a.io", "resource": "x", "extra": 1}], "spec.export[0].extra"),
        ([{"group": "a.io", "resource": "x", "labelSelector": "a=b"}],
         "spec.export[0].labelSelector"),
        ([{"group": "a.io", "resource": "x", "labelSelector": {"matchLabels": {"a": "b c"}}}],
         "spec.export[0].labelSelector.matchLabels[a]"),
        ([{"group": "a.io", "resource": "x", "labelSelector": {"matchExpressions": [
            {"key": "a", "operator": "Exists", "values": ["b"]}]}}],
         "spec.export[0].labelSelector.matchExpressions[0].values"),
    ],
)  # fmt: skip
def test_malformed_specs_name_the_field(spec: Any, field: str) -> None:
    with pytest.raises(PolicyError) as error:
        ResourcePolicy.parse(spec, "spec.export")
    assert field in {where for where, _message in error.value.causes}


def test_the_flags_spelling() -> None:
    assert policy_from_flags([], {}) is None
    assert policy_from_flags([], {"a": "b"}) == [
        {"group": "*", "resource": "*", "labelSelector": {"matchLabels": {"a": "b"}}}
    ]
    assert policy_from_flags(["core/secrets", "apis.kcp.io/apiexports"], {}) == [
        {"group": "", "resource": "secrets"},
        {"group": "apis.kcp.io", "resource": "apiexports"},
    ]
    with pytest.raises(ValueError, match="group/resource"):
        policy_from_flags(["apiexports"], {})
