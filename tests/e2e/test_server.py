"""Black-box: the real binary with real TLS — kcp's TestCacheServerAuthz (spec §7) and
the health and metrics endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kcp_cache.testing import CacheServer, TestCA, start_cache_server

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"), name="client-ca")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, ca: TestCA, module_storage_flags: tuple[str, ...]
) -> Iterator[CacheServer]:
    """One standalone server trusting the test's own client CA, as in kcp's test (on
    SQLite, then on etcd)."""
    with start_cache_server(
        tmp_path_factory.mktemp("authz"), *module_storage_flags, client_ca=ca
    ) as server:
        yield server


# -- TestCacheServerAuthz ---------------------------------------------------------------


def test_health_endpoints_without_auth(server: CacheServer) -> None:
    with server.client(cert=None) as client:
        for path in ("/healthz", "/readyz", "/livez"):
            response = client.get(path)
            assert (response.status_code, response.text) == (200, "ok"), path


def test_anonymous_access_to_cache_api_is_denied(server: CacheServer) -> None:
    with server.client(cert=None) as client:
        response = client.get(EXPORTS)
    assert response.status_code == 403
    assert response.json()["reason"] == "Forbidden"
    assert 'User "system:anonymous" cannot list resource "apiexports"' in response.json()["message"]


def test_cert_signed_by_different_ca_is_rejected(server: CacheServer, tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other", name="other-ca")
    cert = other.issue("untrusted-client", ["system:masters"])
    with server.client(cert=cert) as client:
        response = client.get(EXPORTS)  # the handshake completes: no TLS error
    assert response.status_code == 403
    assert 'User "system:anonymous"' in response.json()["message"]


def test_valid_cert_without_system_masters_is_forbidden(server: CacheServer, ca: TestCA) -> None:
    cert = ca.issue("authz-test-user", ["some-other-group"])
    with server.client(cert=cert) as client:
        response = client.get(EXPORTS)
    assert response.status_code == 403
    assert 'User "authz-test-user" cannot list' in response.json()["message"]


def test_valid_cert_with_system_masters_is_allowed(server: CacheServer) -> None:
    with server.client() as client:
        response = client.get(EXPORTS)
    assert response.status_code == 200
    assert response.json()["kind"] == "APIExportList"


def test_requests_relayed_by_a_workspace_mount_are_refused(server: CacheServer) -> None:
    for cert in (None, "admin"):
        with server.client() if cert else server.client(cert=None) as client:
            response = client.get(EXPORTS, headers={"X-Kcp-Mount-Hops": "1"})
            assert response.status_code == 400, cert
            assert response.json()["reason"] == "BadRequest"
            assert "X-Kcp-Mount-Hops" in response.json()["message"]
            # The same client without the header is served as before.
            assert client.get(EXPORTS).status_code == (200 if cert else 403)


@pytest.mark.parametrize(
    "path",
    [
        "/services/cache/shards/amber/metrics",
        "/services/cache/shards/amber/clusters/root/metrics",
        "/services/cache/shards/amber/clusters/some-ws/metrics",
    ],
)
def test_metrics_at_shard_or_workspace_scope_is_rejected(server: CacheServer, path: str) -> None:
    with server.client() as client:
        response = client.get(path)
    assert response.status_code == 501
    assert response.text == "shard-level endpoint not available at shard or workspace scope"


# -- health and metrics -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/services/cache"])
def test_readyz_verbose_lists_the_checks(server: CacheServer, prefix: str) -> None:
    with server.client(cert=None) as client:
        response = client.get(f"{prefix}/readyz", params={"verbose": ""})
    assert response.status_code == 200
    assert response.text.splitlines() == [
        "[+]ping ok",
        "[+]storage ok",
        "[+]shutdown ok",
        "[+]poststarthook/bootstrap-cache-server ok",
        "readyz check passed",
    ]


@pytest.mark.parametrize("path", ["/readyz/ping", "/services/cache/livez/x", "/version"])
def test_health_sub_paths_need_a_shard(server: CacheServer, path: str) -> None:
    with server.client() as client:
        response = client.get(path)
    assert response.status_code == 400
    assert response.json()["message"] == "a shard name is required"


def test_metrics_for_admins_only(server: CacheServer) -> None:
    with server.client(cert=None) as anonymous:
        denied = anonymous.get("/metrics")
    assert denied.status_code == 403
    assert denied.json()["message"] == (
        'forbidden: User "system:anonymous" cannot get path "/metrics"'
    )
    with server.client() as admin:
        admin.get(EXPORTS)
        for path in ("/metrics", "/services/cache/metrics"):
            response = admin.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            assert "apiserver_request_total{" in response.text
            assert 'resource="apiexports",verb="LIST"' in response.text
            assert "kcp_cache_storage_operation_duration_seconds_bucket" in response.text


def open_watches(server: CacheServer) -> float:
    with server.client() as admin:
        text = admin.get("/metrics").text
    for line in text.splitlines():
        if line.startswith('kcp_cache_open_watches{resource="apiexports.apis.kcp.io"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_goes_away_ends_its_watch(server: CacheServer) -> None:
    # The TLS layer must pass the disconnect on, or idle watch streams would leak.
    with (
        server.client() as client,
        client.stream("GET", EXPORTS, params={"watch": "true"}) as response,
    ):
        assert response.status_code == 200
        assert open_watches(server) == 1.0
    deadline = time.monotonic() + 10
    while open_watches(server) != 0.0:
        assert time.monotonic() < deadline, "the watch stream was not ended"
        time.sleep(0.05)
