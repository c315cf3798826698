"""The catalog of bootstrapped resources and the storage keys of spec §2."""

from __future__ import annotations

import pytest

from kcp_cache.registry import KeyParts, KeyScheme, ResourceCatalog, load_bootstrap_crds

TABLE = {
    # resource.group: (kind, namespaced, served versions highest priority first, storage version)
    "apiresourceschemas.apis.kcp.io": ("APIResourceSchema", False, ("v1alpha1",), "v1alpha1"),
    "apiconversions.apis.kcp.io": ("APIConversion", False, ("v1alpha1",), "v1alpha1"),
    "apiexports.apis.kcp.io": ("APIExport", False, ("v1alpha2", "v1alpha1"), "v1alpha2"),
    "apiexportendpointslices.apis.kcp.io": (
        "APIExportEndpointSlice",
        False,
        ("v1alpha1",),
        "v1alpha1",
    ),
    "logicalclusters.core.kcp.io": ("LogicalCluster", False, ("v1alpha1",), "v1alpha1"),
    "logicalclustermigrations.migration.kcp.io": (
        "LogicalClusterMigration",
        False,
        ("v1alpha1",),
        "v1alpha1",
    ),
    "shards.core.kcp.io": ("Shard", False, ("v1alpha1",), "v1alpha1"),
    # The cache server's own lifecycle types (beyond-kcp §3.3).
    "cacheshards.cacheserver.kcp.io": ("CacheShard", False, ("v1alpha1",), "v1alpha1"),
    "shardleases.cacheserver.kcp.io": ("ShardLease", False, ("v1alpha1",), "v1alpha1"),
    "shardtombstones.cacheserver.kcp.io": ("ShardTombstone", False, ("v1alpha1",), "v1alpha1"),
    # Added after spec §4 (beyond-kcp §1.5): kcp now keeps these in the cache.
    "caches.core.kcp.io": ("Cache", False, ("v1alpha1",), "v1alpha1"),
    "permissionclaimpolicies.admin.kcp.io": (
        "PermissionClaimPolicy",
        False,
        ("v1alpha1",),
        "v1alpha1",
    ),
    "cachedobjects.cache.kcp.io": ("CachedObject", False, ("v1alpha1",), "v1alpha1"),
    "clustercachedresources.cache.kcp.io": (
        "ClusterCachedResource",
        False,
        ("v1alpha1",),
        "v1alpha1",
    ),
    "clustercachedresourceendpointslices.cache.kcp.io": (
        "ClusterCachedResourceEndpointSlice",
        False,
        ("v1alpha1",),
        "v1alpha1",
    ),
    "workspacetypes.tenancy.kcp.io": ("WorkspaceType", False, ("v1alpha1",), "v1alpha1"),
    "roles.rbac.authorization.k8s.io": ("Role", True, ("v1",), "v1"),
    "clusterroles.rbac.authorization.k8s.io": ("ClusterRole", False, ("v1",), "v1"),
    "rolebindings.rbac.authorization.k8s.io": ("RoleBinding", True, ("v1",), "v1"),
    "clusterrolebindings.rbac.authorization.k8s.io": ("ClusterRoleBinding", False, ("v1",), "v1"),
    "mutatingwebhookconfigurations.admissionregistration.k8s.io": (
        "MutatingWebhookConfiguration",
        False,
        ("v1",),
        "v1",
    ),
    "mutatingadmissionpolicies.admissionregistration.k8s.io": (
        "MutatingAdmissionPolicy",
        False,
        ("v1",),
        "v1",
    ),
    "mutatingadmissionpolicybindings.admissionregistration.k8s.io": (
        "MutatingAdmissionPolicyBinding",
        False,
        ("v1",),
        "v1",
    ),
    "validatingwebhookconfigurations.admissionregistration.k8s.io": (
        "ValidatingWebhookConfiguration",
        False,
        ("v1",),
        "v1",
    ),
    "validatingadmissionpolicies.admissionregistration.k8s.io": (
        "ValidatingAdmissionPolicy",
        False,
        ("v1",),
        "v1",
    ),
    "validatingadmissionpolicybindings.admissionregistration.k8s.io": (
        "ValidatingAdmissionPolicyBinding",
        False,
        ("v1",),
        "v1",
    ),
}


def test_the_26_bootstrapped_crds_match_spec_table_and_kcps_newer_types() -> None:
    crds = load_bootstrap_crds()
    assert len(crds) == 26
    catalog = ResourceCatalog(crds)
    got = {
        info.group_resource: (
            info.kind,
            info.namespaced,
            info.served_versions,
            info.storage_version,
        )
        for info in catalog
        if not info.builtin
    }
    assert got == TABLE
    for crd in crds:
        spec = crd["spec"]
        assert "subresources" not in str(spec)
        for version in spec["versions"]:
            assert version["schema"] == {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            }
        group = spec["group"]
        categories = spec["names"].get("categories")
        if group.endswith("kcp.io"):
            assert categories == ["kcp"]
        elif group == "admissionregistration.k8s.io":
            assert categories == ["api-extensions"]
            assert spec["conversion"] == {"strategy": "None"}
        path_segment = crd["metadata"].get("annotations", {}).get("internal.kcp.io/validate-name")
        assert (path_segment == "path-segment") == (group == "rbac.authorization.k8s.io")
        assert spec["names"]["singular"] == spec["names"]["kind"].lower()
    exports = next(c for c in crds if c["metadata"]["name"] == "apiexports.apis.kcp.io")
    assert exports["spec"]["conversion"] == {"strategy": "None"}
    columns = exports["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Age", "Ready"]


def test_resolve() -> None:
    catalog = ResourceCatalog()
    assert catalog.resolve("apis.kcp.io", "v1alpha2", "apiexports") is not None
    assert catalog.resolve("apis.kcp.io", "v1beta1", "apiexports") is None
    assert catalog.resolve("", "v1", "configmaps") is None
    crd = catalog.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert crd is not None
    assert crd.builtin
    assert len(catalog) == 27  # 26 bootstrapped CRDs + the CRD resource itself


@pytest.fixture
def scheme() -> KeyScheme:
    return KeyScheme("/cache/")


def test_object_keys(scheme: KeyScheme) -> None:
    catalog = ResourceCatalog()
    exports = catalog.resolve("apis.kcp.io", "v1alpha1", "apiexports")
    roles = catalog.resolve("rbac.authorization.k8s.io", "v1", "roles")
    clusterroles = catalog.resolve("rbac.authorization.k8s.io", "v1", "clusterroles")
    crds = catalog.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert exports is not None
    assert roles is not None
    assert clusterroles is not None
    assert crds is not None
    assert (
        scheme.object_key(exports, "amber", "acme", None, "comicdb")
        == "/cache/apis.kcp.io/apiexports/customresources/amber/acme/comicdb"
    )
    assert (
        scheme.object_key(clusterroles, "root", "root", None, "system:kcp:foo")
        == "/cache/rbac.authorization.k8s.io/clusterroles/customresources/root/root/system:kcp:foo"
    )
    assert (
        scheme.object_key(roles, "s", "c", "ns", "r")
        == "/cache/rbac.authorization.k8s.io/roles/customresources/s/c/ns/r"
    )
    assert (
        scheme.object_key(exports, "s", "c", None, "web", identity="H")
        == "/cache/apis.kcp.io/apiexports/H/s/c/web"
    )
    assert (
        scheme.object_key(crds, "system:cache:server", "system:system-crds", None, "x.y")
        == "/cache/apiextensions.k8s.io/customresourcedefinitions/"
        "system:cache:server/system:system-crds/x.y"
    )


def test_list_scopes_and_parsing(scheme: KeyScheme) -> None:
    catalog = ResourceCatalog()
    exports = catalog.resolve("apis.kcp.io", "v1alpha1", "apiexports")
    roles = catalog.resolve("rbac.authorization.k8s.io", "v1", "roles")
    assert exports is not None
    assert roles is not None
    base = "/cache/apis.kcp.io/apiexports/customresources/"
    exact = scheme.list_scope(exports, "amber", "acme", None)
    assert (exact.prefix, exact.filtered) == (base + "amber/acme/", False)
    one_shard = scheme.list_scope(exports, "amber", "*", None)
    assert (one_shard.prefix, one_shard.filtered) == (base + "amber/", False)
    everything = scheme.list_scope(exports, "*", "*", None)
    assert (everything.prefix, everything.filtered) == (base, False)
    cross = scheme.list_scope(exports, "*", "acme", None)
    assert (cross.prefix, cross.filtered) == (base, True)
    assert cross.matches(KeyParts("beryl", "acme", None, "x"))
    assert not cross.matches(KeyParts("beryl", "zeta", None, "x"))
    # The shared watch feed is per resource, so even prefix-only scopes filter events.
    assert not one_shard.matches(KeyParts("beryl", "acme", None, "x"))
    ns = scheme.list_scope(roles, "s", "c", "default")
    assert ns.prefix == "/cache/rbac.authorization.k8s.io/roles/customresources/s/c/default/"
    wild_ns = scheme.list_scope(roles, "*", "*", "default")
    assert wild_ns.filtered
    assert wild_ns.matches(KeyParts("s", "c", "default", "r"))
    assert not wild_ns.matches(KeyParts("s", "c", "other", "r"))
    key = scheme.object_key(roles, "s", "c", "ns", "r")
    assert scheme.parse(roles, ns.resource_prefix, key) == KeyParts("s", "c", "ns", "r")
    assert scheme.parse(exports, base, base + "a/b/n") == KeyParts("a", "b", None, "n")
    with pytest.raises(ValueError, match="does not fit"):
        scheme.parse(exports, base, base + "a/n")


def test_kube_version_priority() -> None:
    from kcp_cache.meta import sort_versions

    versions = ["v1alpha1", "v2", "foo", "v1beta2", "v1", "v1beta10", "v10alpha1"]
    ordered = sort_versions(versions)
    assert ordered == ["v2", "v1", "v1beta10", "v1beta2", "v10alpha1", "v1alpha1", "foo"]
