from kcp_cache.meta import sort_versions


def test_kube_aware_order() -> None:
    versions = ["v1alpha1", "v11alpha2", "foo10", "v10", "v2", "v1", "v10beta3", "v3beta1",
                "v12alpha1", "v11beta2", "foo1", "v1beta1", "v1alpha2"]  # fmt: skip
    assert sort_versions(versions) == [
        "v10", "v2", "v1",
        "v11beta2", "v10beta3", "v3beta1", "v1beta1",
        "v12alpha1", "v11alpha2", "v1alpha2", "v1alpha1",
        "foo1", "foo10",
    ]  # fmt: skip


def test_ga_beats_any_prerelease_and_duplicates_collapse() -> None:
    assert sort_versions(["v1alpha2", "v1beta1", "v1", "v1"]) == ["v1", "v1beta1", "v1alpha2"]
    assert sort_versions(["v1alpha1", "v1alpha2"])[0] == "v1alpha2"
