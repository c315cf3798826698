"""Queue keys (kcp's format) and the replicated resource list."""

from __future__ import annotations

import pytest

from kcp_cache.client import Resource
from kcp_cache.replication import (
    DEFAULT_RESOURCES,
    MUTATING_ADMISSION_POLICY_RESOURCES,
    parse_queue_key,
    parse_resources,
    queue_key,
)


@pytest.mark.parametrize(
    ("resource", "cluster", "namespace", "name", "key"),
    [
        (
            Resource("apis.kcp.io", "v1alpha2", "apiexports"),
            "acme",
            "",
            "comics",
            "v1alpha2.apiexports.apis.kcp.io::acme|comics",
        ),
        (
            Resource("rbac.authorization.k8s.io", "v1", "roles", namespaced=True),
            "root:org",
            "default",
            "admin",
            "v1.roles.rbac.authorization.k8s.io::root:org|default/admin",
        ),
        (Resource("", "v1", "configmaps"), "c", "ns", "x", "v1.configmaps.::c|ns/x"),
        (
            Resource("rbac.authorization.k8s.io", "v1", "clusterroles"),
            "root",
            "",
            "system:kcp:foo",
            "v1.clusterroles.rbac.authorization.k8s.io::root|system:kcp:foo",
        ),
    ],
)
def test_queue_key_round_trip(
    resource: Resource, cluster: str, namespace: str, name: str, key: str
) -> None:
    assert queue_key(resource, cluster, name, namespace) == key
    parsed = parse_queue_key(key)
    assert parsed.gvr == (resource.group, resource.version, resource.resource)
    assert (parsed.cluster, parsed.namespace, parsed.name) == (cluster, namespace, name)


@pytest.mark.parametrize(
    "key",
    ["", "no-separator", "v1::c|n", "v1.r.g::nocluster", "v1.r.g::|n", "v1.r.g::c|", "v1.r::c|/n"],
)
def test_unparsable_keys_raise(key: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        parse_queue_key(key)


def test_default_resources_are_spec_6_1s_list() -> None:
    names = {r.name for r in DEFAULT_RESOURCES}
    assert names == {
        "apiexports.apis.kcp.io",
        "apiexportendpointslices.apis.kcp.io",
        "apiresourceschemas.apis.kcp.io",
        "apiconversions.apis.kcp.io",
        "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
        "validatingadmissionpolicies.admissionregistration.k8s.io",
        "validatingadmissionpolicybindings.admissionregistration.k8s.io",
        "clustercachedresources.cache.kcp.io",
        "clustercachedresourceendpointslices.cache.kcp.io",
        "shards.core.kcp.io",
        "logicalclusters.core.kcp.io",
        "logicalclustermigrations.migration.kcp.io",
        "workspacetypes.tenancy.kcp.io",
        "clusterroles.rbac.authorization.k8s.io",
        "clusterrolebindings.rbac.authorization.k8s.io",
    }
    apiexports = next(r for r in DEFAULT_RESOURCES if r.resource.resource == "apiexports")
    assert apiexports.resource.version == "v1alpha2"
    filtered = {r.resource.resource for r in DEFAULT_RESOURCES if r.filter is not None}
    assert filtered == {"logicalclusters", "clusterroles", "clusterrolebindings"}


def test_parse_resources() -> None:
    assert parse_resources(None) == DEFAULT_RESOURCES
    assert parse_resources("all") == DEFAULT_RESOURCES
    chosen = parse_resources(["apiexports", "shards.core.kcp.io,apiexports.apis.kcp.io"])
    assert [r.name for r in chosen] == ["apiexports.apis.kcp.io", "shards.core.kcp.io"]
    gated = parse_resources("mutatingadmissionpolicies")
    assert gated == MUTATING_ADMISSION_POLICY_RESOURCES[:1]
    everything = parse_resources("all,mutatingadmissionpolicies,mutatingadmissionpolicybindings")
    assert everything == DEFAULT_RESOURCES + MUTATING_ADMISSION_POLICY_RESOURCES
    with pytest.raises(ValueError, match="unknown replicated resource 'roles'"):
        parse_resources("roles")
