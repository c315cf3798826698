"""Kubeconfig loading and the one-line constructors (real TLS against the real server)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kcp_cache.client import (
    AsyncRESTClient,
    Forbidden,
    Resource,
    RESTClient,
    ServerAddress,
    async_cache_client_from_kubeconfig,
    cache_client_from_kubeconfig,
    client_from_kubeconfig,
    load_kubeconfig,
    shard,
)
from kcp_cache.testing import CacheServer

EXPORTS = Resource("apis.kcp.io", "v1alpha2", "apiexports")


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("https://h:6443", ("https://h:6443", "", None, None)),
        ("https://h:6443/", ("https://h:6443", "", None, None)),
        ("https://h/services/cache", ("https://h", "", None, None)),
        ("https://h/shards/*/clusters/*", ("https://h", "", "*", "*")),
        ("https://h/clusters/root", ("https://h", "", None, "root")),
        ("https://gw/t/services/cache/shards/amber", ("https://gw/t", "/t", "amber", None)),
        ("https://gw/a/b", ("https://gw/a/b", "/a/b", None, None)),
    ],
)
def test_server_address(server: str, expected: tuple[str, str, str | None, str | None]) -> None:
    a = ServerAddress.parse(server)
    assert (a.base_url, a.base_path, a.shard, a.cluster) == expected


def write(path: Path, server: str, cluster: dict[str, object], user: dict[str, object]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_token_insecure_and_errors(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    config = load_kubeconfig(
        write(
            tmp_path / "k", "https://h", {"insecure-skip-tls-verify": True}, {"tokenFile": "token"}
        )
    )
    assert config.headers == {"Authorization": "Bearer s3cret"}
    assert isinstance(config.ssl_context, ssl.SSLContext)
    assert config.ssl_context.verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="no context named"):
        load_kubeconfig(tmp_path / "k", context="nope")


def test_plain_client_keeps_the_url(tmp_path: Path) -> None:
    path = write(tmp_path / "k", "https://h/clusters/root", {}, {"token": "t"})
    with client_from_kubeconfig(path) as http:
        assert str(http.base_url) == "https://h/clusters/root/"
        assert http.headers["authorization"] == "Bearer t"


async def test_inline_data_and_prefixed_url_against_real_server(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    server = cache_server("--storage", "memory")
    assert server.admin_cert is not None

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    # Inline CA/cert/key, and a server URL pointing at the shard-amber cache service.
    path = write(
        tmp_path / "inline.kubeconfig",
        f"{server.base_url}/services/cache/shards/amber",
        {"certificate-authority-data": b64(server.serving_cert)},
        {
            "client-certificate-data": b64(server.admin_cert.cert),
            "client-key-data": b64(server.admin_cert.key),
        },
    )
    http = async_cache_client_from_kubeconfig(path)
    try:
        rest = AsyncRESTClient(http)
        created = await rest.create(
            EXPORTS,
            {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "a"}},
            cluster="root",
        )
        assert created["metadata"]["annotations"]["kcp.io/shard"] == "amber"  # from the URL
        with shard("jade"):
            await rest.create(
                EXPORTS,
                {
                    "apiVersion": "apis.kcp.io/v1alpha2",
                    "kind": "APIExport",
                    "metadata": {"name": "b"},
                },
                cluster="root",
            )
    finally:
        await http.aclose()
    # The generated admin.kubeconfig (server URL .../shards/*/clusters/*), sync twin.
    with cache_client_from_kubeconfig(server.kubeconfig) as sync_http:
        items = RESTClient(sync_http).list(EXPORTS, cluster="*").items
        shards = sorted(o["metadata"]["annotations"]["kcp.io/shard"] for o in items)
        assert shards == ["amber", "jade"]
    # A client without the certificate is anonymous: 403, not a TLS failure.
    anonymous = write(
        tmp_path / "anon.kubeconfig",
        server.base_url,
        {"certificate-authority": str(server.serving_cert)},
        {},
    )
    with cache_client_from_kubeconfig(anonymous) as anon, pytest.raises(Forbidden):
        RESTClient(anon).list(EXPORTS, cluster="*")
