"""The official ``kubernetes`` Python client (37.x) against the real binary.

Configured the way a user would: ``Configuration.host`` is the shard/cluster URL, the
admin client certificate and the serving certificate as CA — nothing else.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client, dynamic, informer, watch
from kubernetes.client.exceptions import ApiException

from kcp_cache.testing import CacheServer

GROUP, VERSION, PLURAL = "apis.kcp.io", "v1alpha2", "apiexports"


def api_client(server: CacheServer, scope: str) -> client.ApiClient:
    assert server.admin_cert is not None
    config = client.Configuration()
    config.host = f"{server.base_url}/services/cache{scope}"
    config.ssl_ca_cert = str(server.serving_cert)
    config.cert_file = str(server.admin_cert.cert)
    config.key_file = str(server.admin_cert.key)
    return client.ApiClient(config)


@pytest.fixture
def acme(server: CacheServer) -> Iterator[client.ApiClient]:
    with api_client(server, "/shards/amber/clusters/acme") as api:
        yield api


def export(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "APIExport",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_custom_objects_crud(acme: client.ApiClient) -> None:
    api = client.CustomObjectsApi(acme)
    created = api.create_cluster_custom_object(GROUP, VERSION, PLURAL, export("crud", a=1))
    assert created["metadata"]["annotations"]["kcp.io/cluster"] == "acme"
    got = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "crud")
    assert got["spec"] == {"a": 1}
    got["spec"]["a"] = 2
    replaced = api.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "crud", got)
    assert replaced["spec"] == {"a": 2}
    assert int(replaced["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])
    patched = api.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "crud", {"spec": {"b": 3}})
    assert patched["spec"] == {"a": 2, "b": 3}
    listed = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["crud"]
    # A stale resourceVersion is a conflict, as Status 409.
    with pytest.raises(ApiException) as conflict:
        api.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "crud", got)
    assert conflict.value.status == 409
    api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "crud")
    with pytest.raises(ApiException) as missing:
        api.get_cluster_custom_object(GROUP, VERSION, PLURAL, "crud")
    assert missing.value.status == 404


def test_watch_stream(server: CacheServer) -> None:
    with api_client(server, "/shards/amber/clusters/streamed") as api:
        custom = client.CustomObjectsApi(api)
        start = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        stream = watch.Watch()
        events = stream.stream(
            custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            resource_version=start["metadata"]["resourceVersion"],
            timeout_seconds=30,
        )
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, export("w1"))
        custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "w1", {"spec": {"x": 1}})
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "w1")
        seen = []
        for event in events:
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if len(seen) == 3:
                stream.stop()
        assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
        assert int(stream.resource_version) > int(start["metadata"]["resourceVersion"])


def test_dynamic_client_discovery_and_reads(acme: client.ApiClient, tmp_path: Path) -> None:
    client.CustomObjectsApi(acme).create_cluster_custom_object(
        GROUP, VERSION, PLURAL, export("dyn", z=1)
    )
    dyn = dynamic.DynamicClient(acme, cache_file=str(tmp_path / "discovery.json"))
    exports = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="APIExport")
    assert (exports.name, exports.namespaced) == ("apiexports", False)
    one = exports.get(name="dyn")
    assert one.spec.z == 1
    assert "dyn" in [item.metadata.name for item in exports.get().items]
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    assert crds.name == "customresourcedefinitions"


def test_generated_discovery_apis(acme: client.ApiClient) -> None:
    assert client.VersionApi(acme).get_code().minor == "37"
    groups = client.ApisApi(acme).get_api_versions().groups
    kcp = next(g for g in groups if g.name == "apis.kcp.io")
    assert kcp.preferred_version.version == "v1alpha2"
    resources = client.ApiextensionsV1Api(acme).get_api_resources().resources
    assert [r.name for r in resources] == ["customresourcedefinitions"]
    assert client.CoreApi(acme).get_api_versions().versions == []


def test_dynamic_client_resolves_preferred_and_explicit_versions(
    acme: client.ApiClient, tmp_path: Path
) -> None:
    dyn = dynamic.DynamicClient(acme, cache_file=str(tmp_path / "discovery.json"))
    preferred = dyn.resources.get(api_version="apis.kcp.io/v1alpha2", kind="APIExport")
    assert (preferred.name, preferred.namespaced, preferred.preferred) == (
        "apiexports",
        False,
        True,
    )
    older = dyn.resources.get(api_version="apis.kcp.io/v1alpha1", kind="APIExport")
    assert older.preferred is False
    roles = dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="Role")
    assert roles.namespaced is True
    created = preferred.create(body=export("from-python"))
    assert created.metadata.annotations["kcp.io/cluster"] == "acme"
    names = [item.metadata.name for item in preferred.get().items]
    assert "from-python" in names


def _exports_lister(custom: client.CustomObjectsApi) -> Any:
    """``list_func`` for the informer.

    ``SharedInformer`` reads ``resp.items`` and ``resp.metadata.resource_version`` like
    on the generated typed lists; ``CustomObjectsApi`` returns plain dicts, so the list
    is wrapped. Watches go through unchanged (``Watch.stream`` handles dicts).
    """
    list_all = functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)

    def list_exports(**kwargs: Any) -> Any:
        result = list_all(**kwargs)
        if kwargs.get("watch"):
            return result
        meta = SimpleNamespace(resource_version=result["metadata"]["resourceVersion"])
        return SimpleNamespace(items=result["items"], metadata=meta)

    return list_exports


def _cluster_key(obj: dict[str, Any]) -> str:
    # A wildcard list spans clusters: the name alone is not unique.
    meta = obj["metadata"]
    annotations = meta["annotations"]
    return f"{annotations['kcp.io/shard']}|{annotations['kcp.io/cluster']}|{meta['name']}"


def test_informer_syncs_a_wildcard_list(server: CacheServer) -> None:
    with (
        api_client(server, "/shards/amber/clusters/inf-a") as a,
        api_client(server, "/shards/beech/clusters/inf-b") as b,
        api_client(server, "/shards/*/clusters/*") as everywhere,
    ):
        for api, name in ((a, "shared"), (b, "shared"), (b, "only-b")):
            client.CustomObjectsApi(api).create_cluster_custom_object(
                GROUP, VERSION, PLURAL, export(name)
            )
        cache_informer = informer.SharedInformer(
            _exports_lister(client.CustomObjectsApi(everywhere)),
            key_func=_cluster_key,
            resync_period=1,  # watches end after 1 s, so stop() returns promptly
        )
        initial = {"amber|inf-a|shared", "beech|inf-b|shared", "beech|inf-b|only-b"}
        added: list[str] = []
        synced, arrived = threading.Event(), threading.Event()

        def on_added(obj: dict[str, Any]) -> None:
            added.append(_cluster_key(obj))
            if initial <= set(added):
                synced.set()
            if obj["metadata"]["name"] == "late":
                arrived.set()

        cache_informer.add_event_handler(informer.ADDED, on_added)
        cache_informer.start()
        try:
            assert synced.wait(30), f"the initial list did not sync; added {added}"
            assert not arrived.is_set()
            client.CustomObjectsApi(a).create_cluster_custom_object(
                GROUP, VERSION, PLURAL, export("late")
            )
            assert arrived.wait(30), f"the watch did not deliver; added {added}"
            keys = set(cache_informer.cache.list_keys())
            assert {*initial, "amber|inf-a|late"} <= keys
            late = cache_informer.cache.get_by_key("amber|inf-a|late")
            assert late is not None
            assert late["kind"] == "APIExport"
        finally:
            cache_informer.stop()
