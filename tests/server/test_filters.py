"""The filter chain of spec §1.2 through the ASGI app, with a placeholder API app."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kcp_cache.registry import ApiError
from kcp_cache.server import (
    ANONYMOUS,
    CacheServerApp,
    KcpRequest,
    ReadinessChecks,
    ServerMetrics,
    User,
    create_app,
)
from kcp_cache.server.types import Receive, Scope, Send
from kcp_cache.storage import MemoryStorage, Unavailable

from ..kube_status import failure_status as status
from ._asgi import ADMIN, call, echo_api, header_authenticator

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


@pytest.fixture
def app() -> CacheServerApp:
    return create_app(storage=None, api_app=echo_api, authenticator=header_authenticator)


async def test_filters_record_shard_cluster_and_consume_the_path(app: CacheServerApp) -> None:
    response = await call(app, "GET", EXPORTS)
    assert response.status == 200
    assert response.json() == {
        "path": "/apis/apis.kcp.io/v1alpha1/apiexports",
        "shard": "amber",
        "cluster": "acme",
        "identity": None,
        "user": "admin",
        "groups": ["system:masters"],
        "accept": "",
        "partial": False,
        "verb": "list",
        "resource": "apiexports",
    }


async def test_prefix_is_optional(app: CacheServerApp) -> None:
    response = await call(app, "GET", EXPORTS.removeprefix("/services/cache") + "/earth")
    assert response.json()["path"] == "/apis/apis.kcp.io/v1alpha1/apiexports/earth"
    assert response.json()["verb"] == "get"


async def test_bad_shard_is_a_400_status_body(app: CacheServerApp) -> None:
    response = await call(app, "GET", "/services/cache/shards/amber")
    assert response.status == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == status(
        400, "BadRequest", "unable to parse shard: no `/` found in path amber"
    )


async def test_workspace_path_as_cluster_is_a_400(app: CacheServerApp) -> None:
    response = await call(app, "GET", "/shards/amber/clusters/root:org/apis/g/v/r")
    assert response.json() == status(
        400, "BadRequest", 'invalid cluster: "root:org" is not a logical cluster name'
    )


@pytest.mark.parametrize(
    "path",
    [
        "/services/cache/shards/amber/metrics",
        "/services/cache/shards/amber/clusters/root/metrics",
        "/services/cache/shards/amber/clusters/some-ws/metrics",
        "/shards/*/metrics",
        "/shards/*/clusters/*/metrics",
    ],
)
async def test_scoped_metrics_is_501_plain_text_before_authz(
    app: CacheServerApp, path: str
) -> None:
    # Anonymous too: the guard runs before authorization.
    for user in (ADMIN, None):
        response = await call(app, "GET", path, user=user)
        assert response.status == 501
        assert response.headers["content-type"].startswith("text/plain")
        assert response.body == b"shard-level endpoint not available at shard or workspace scope"


async def test_cluster_invariant_guards_clusters_set_by_a_host(app: CacheServerApp) -> None:
    response = await call(
        app, "GET", "/shards/amber/apis/g/v/r", kcp=KcpRequest(cluster="root:org")
    )
    assert response.status == 500
    assert response.json()["reason"] == "InternalError"
    assert 'cluster name "root:org" is a workspace path' in response.json()["message"]


async def test_cluster_already_in_context_is_a_400(app: CacheServerApp) -> None:
    response = await call(app, "GET", EXPORTS, kcp=KcpRequest(cluster="acme"))
    assert response.json() == status(
        400,
        "BadRequest",
        'found cluster "acme" in the request context, when trying to read cluster from URL',
    )


async def test_anonymous_resource_request_is_forbidden(app: CacheServerApp) -> None:
    response = await call(app, "GET", EXPORTS, user=None)
    assert response.status == 403
    assert response.json() == status(
        403,
        "Forbidden",
        'apiexports.apis.kcp.io is forbidden: User "system:anonymous" cannot list resource '
        '"apiexports" in API group "apis.kcp.io" at the cluster scope',
        details={"group": "apis.kcp.io", "kind": "apiexports"},
    )


async def test_forbidden_message_names_object_and_namespace(app: CacheServerApp) -> None:
    user = User("authz-test-user", ("some-other-group",))
    path = "/shards/a/clusters/c/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles/r1"
    response = await call(app, "DELETE", path, user=user)
    assert response.status == 403
    assert response.json()["message"] == (
        'roles.rbac.authorization.k8s.io "r1" is forbidden: User "authz-test-user" cannot '
        'delete resource "roles" in API group "rbac.authorization.k8s.io" in the namespace "ns"'
    )


async def test_non_resource_paths_need_masters_unless_always_allowed(
    app: CacheServerApp,
) -> None:
    response = await call(app, "GET", "/metrics", user=None)
    assert response.json() == status(
        403, "Forbidden", 'forbidden: User "system:anonymous" cannot get path "/metrics"'
    )
    response = await call(app, "GET", "/shards/amber/version", user=None)
    assert response.status == 403
    for path in ("/healthz", "/readyz", "/livez", "/services/cache/livez"):
        assert (await call(app, "GET", path, user=None)).status == 200, path


async def test_always_allow_paths_are_configurable_with_prefix_wildcards() -> None:
    app = create_app(
        storage=None,
        api_app=echo_api,
        authenticator=header_authenticator,
        always_allow_paths=["/livez", "/version*"],
    )
    assert (await call(app, "GET", "/livez", user=None)).status == 200
    assert (await call(app, "GET", "/healthz", user=None)).status == 403
    assert (await call(app, "GET", "/shards/a/version", user=None)).status == 200
    assert (await call(app, "GET", "/shards/a/versionz/x", user=None)).status == 200
    # Never for resource requests.
    assert (await call(app, "GET", EXPORTS, user=None)).status == 403


async def test_identity_suffix_is_split_off(app: CacheServerApp) -> None:
    path = "/shards/amber/clusters/acme/apis/cache.kcp.io/v1alpha1/instances:abc123/x"
    response = await call(app, "GET", path)
    assert response.json()["identity"] == "abc123"
    assert response.json()["path"] == "/apis/cache.kcp.io/v1alpha1/instances/x"
    assert response.json()["resource"] == "instances"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_empty_identity_is_a_500_for_all_verbs(app: CacheServerApp, method: str) -> None:
    path = "/shards/amber/clusters/acme/apis/cache.kcp.io/v1alpha1/instances:"
    response = await call(app, method, path)
    assert response.json() == status(
        500, "InternalError", 'invalid resource "instances": missing identity'
    )


@pytest.mark.parametrize(("shard", "cluster"), [("*", "*"), ("*", "acme"), ("amber", "*")])
@pytest.mark.parametrize(
    ("method", "suffix", "verb"),
    [
        ("GET", "/earth", "get"),
        ("POST", "", "create"),
        ("PUT", "/earth", "update"),
        ("PATCH", "/earth", "patch"),
        ("DELETE", "/earth", "delete"),
        ("DELETE", "", "deletecollection"),
    ],
)
async def test_wildcards_only_list_and_watch(
    app: CacheServerApp, shard: str, cluster: str, method: str, suffix: str, verb: str
) -> None:
    base = f"/shards/{shard}/clusters/{cluster}/apis/apis.kcp.io/v1alpha1/apiexports"
    response = await call(app, method, base + suffix)
    assert response.status == 405
    body = response.json()
    assert body["reason"] == "MethodNotAllowed"
    assert body["message"].startswith(
        f'{verb} is not supported on resources of kind "apiexports.apis.kcp.io"'
    )
    for query in (b"", b"watch=true"):
        listed = await call(app, "GET", base, query=query)
        assert listed.status == 200
        assert (listed.json()["shard"], listed.json()["cluster"]) == (shard, cluster)


async def test_resource_request_without_cluster_is_a_400(app: CacheServerApp) -> None:
    response = await call(app, "GET", "/shards/amber/apis/apis.kcp.io/v1alpha1/apiexports")
    assert response.status == 400
    assert response.json()["reason"] == "BadRequest"
    assert "logical cluster" in response.json()["message"]
    # Non-resource requests without a cluster reach the handler.
    response = await call(app, "GET", "/shards/amber/apis")
    assert response.status == 200
    assert response.json()["cluster"] is None


async def test_accept_header_and_partial_metadata_are_recorded(app: CacheServerApp) -> None:
    accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
    response = await call(app, "GET", EXPORTS, headers=[(b"accept", accept.encode())])
    assert response.json()["accept"] == accept
    assert response.json()["partial"] is True


async def test_synthetic_delay_runs_before_the_handler() -> None:
    app = create_app(
        storage=None, api_app=echo_api, authenticator=header_authenticator, synthetic_delay=0.2
    )
    start = time.monotonic()
    response = await call(app, "GET", "/livez")
    assert response.status == 200
    assert time.monotonic() - start >= 0.2


async def test_status_errors_and_crashes_of_the_api_app_become_status_bodies() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].endswith("/conflict"):
            raise ApiError(409, "Conflict", "the object has been modified")
        raise RuntimeError("boom")

    app = create_app(storage=None, api_app=failing, authenticator=header_authenticator)
    response = await call(app, "PUT", EXPORTS + "/conflict")
    assert response.json() == status(409, "Conflict", "the object has been modified")
    response = await call(app, "GET", EXPORTS)
    assert response.json() == status(500, "InternalError", "Internal error occurred: boom")


class SickStorage(MemoryStorage):
    async def check_health(self) -> None:
        raise Unavailable("database is locked")


async def test_health_endpoints_kube_format() -> None:
    readiness = ReadinessChecks()
    flag = readiness.add_flag("poststarthook/bootstrap-cache-server")
    storage = MemoryStorage()
    await storage.start()
    app = create_app(
        storage=storage,
        api_app=echo_api,
        authenticator=header_authenticator,
        readiness=readiness,
    )
    live = await call(app, "GET", "/livez", user=ANONYMOUS)
    assert (live.status, live.body) == (200, b"ok")
    assert live.headers["content-type"].startswith("text/plain")

    not_ready = await call(app, "GET", "/readyz", user=None)
    assert not_ready.status == 500
    assert not_ready.body.decode().splitlines() == [
        "[+]ping ok",
        "[+]storage ok",
        "[+]shutdown ok",
        "[-]poststarthook/bootstrap-cache-server failed: reason withheld",
        "readyz check failed",
    ]
    verbose = await call(app, "GET", "/readyz", user=None, query=b"verbose")
    assert "[-]poststarthook/bootstrap-cache-server failed: not finished" in verbose.body.decode()

    excluded = await call(
        app, "GET", "/readyz", query=b"exclude=poststarthook/bootstrap-cache-server"
    )
    assert (excluded.status, excluded.body) == (200, b"ok")

    flag.set_ready()
    ready = await call(app, "GET", "/services/cache/readyz", query=b"verbose")
    assert ready.status == 200
    assert ready.body.decode().splitlines() == [
        "[+]ping ok",
        "[+]storage ok",
        "[+]shutdown ok",
        "[+]poststarthook/bootstrap-cache-server ok",
        "readyz check passed",
    ]
    healthz = await call(app, "GET", "/healthz", user=None)
    assert (healthz.status, healthz.body) == (200, b"ok")

    await app.shutdown()
    assert (await call(app, "GET", "/readyz", user=None)).status == 500
    assert (await call(app, "GET", "/livez", user=None)).status == 200
    await storage.close()


async def test_storage_failure_fails_readyz_and_healthz_not_livez() -> None:
    app = create_app(storage=SickStorage(), api_app=echo_api, authenticator=header_authenticator)
    verbose = await call(app, "GET", "/readyz", query=b"verbose")
    assert verbose.status == 500
    assert "[-]storage failed: database is locked" in verbose.body.decode()
    assert (await call(app, "GET", "/healthz")).status == 500
    assert (await call(app, "GET", "/livez")).status == 200


async def test_metrics_count_requests_by_verb_resource_and_code() -> None:
    metrics = ServerMetrics()
    app = create_app(
        storage=None, api_app=echo_api, authenticator=header_authenticator, metrics=metrics
    )
    await call(app, "GET", EXPORTS)
    await call(app, "GET", EXPORTS, user=None)
    await call(app, "GET", EXPORTS, query=b"watch=true")
    await call(app, "POST", EXPORTS)
    with metrics.track_watch("apiexports.apis.kcp.io"):
        response = await call(app, "GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.body.decode()
    labels = 'group="apis.kcp.io",resource="apiexports",verb="{}",version="v1alpha1"'
    assert f'apiserver_request_total{{code="200",{labels.format("LIST")}}} 1.0' in text
    assert f'apiserver_request_total{{code="403",{labels.format("LIST")}}} 1.0' in text
    assert f'apiserver_request_total{{code="200",{labels.format("WATCH")}}} 1.0' in text
    assert f'apiserver_request_total{{code="200",{labels.format("POST")}}} 1.0' in text
    assert 'kcp_cache_open_watches{resource="apiexports.apis.kcp.io"} 1.0' in text
    assert "apiserver_request_duration_seconds_bucket" in text
    # Watches are long-running: no latency observation for them.
    assert f"apiserver_request_duration_seconds_count{{{labels.format('WATCH')}}}" not in text


async def test_storage_latency_is_recorded() -> None:
    metrics = ServerMetrics()
    storage = metrics.instrument_storage(MemoryStorage())
    await storage.start()
    try:
        await storage.create("/cache/a", b"1")
        await storage.get("/cache/a")
        await storage.range("/cache/")
    finally:
        await storage.close()
    text = metrics.exposition()[0].decode()
    for operation in ("create", "get", "range"):
        assert (
            f'kcp_cache_storage_operation_duration_seconds_count{{operation="{operation}"}} 1.0'
            in text
        )


async def test_lifespan_runs_shutdown_hooks(app: CacheServerApp) -> None:
    calls: list[str] = []

    async def hook() -> None:
        calls.append("hook")

    app.on_shutdown.append(hook)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert calls == ["hook"]


@pytest.mark.parametrize("value", [b"1", b"", b"3", b"not-a-number"])
@pytest.mark.parametrize("user", [ADMIN, None])
async def test_requests_through_a_workspace_mount_are_a_400_before_authentication(
    app: CacheServerApp, value: bytes, user: User | None
) -> None:
    # kcp's cache server refuses anything relayed by the mount proxy, whatever the value
    # and whoever asks: the anonymous caller gets the same 400, not the 403 of authz.
    response = await call(app, "GET", EXPORTS, user=user, headers=[(b"x-kcp-mount-hops", value)])
    assert response.status == 400
    assert response.json() == status(
        400,
        "BadRequest",
        "the cache server does not serve requests relayed through a workspace mount "
        "(X-Kcp-Mount-Hops header present)",
    )


async def test_the_first_accept_header_wins_when_several_are_sent(app: CacheServerApp) -> None:
    headers = [(b"accept", b"application/json"), (b"accept", b"application/yaml")]
    response = await call(app, "GET", EXPORTS, headers=headers)
    assert response.json()["accept"] == "application/json"
