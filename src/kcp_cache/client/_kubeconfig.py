"""Kubeconfig files → TLS settings and ready-made ``httpx2`` clients (spec §5.3).

Only what a shard needs to reach a cache server (or any API server) is supported: the
server URL (possibly with a path prefix), a CA (file or inline data, or
``insecure-skip-tls-verify``), a client certificate and key (files or inline data) and a
bearer token. Relative file paths are resolved against the kubeconfig's directory, as
``kubectl`` does.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kcp_cache.meta import WILDCARD

from ._http import (
    URL,
    AsyncBaseTransport,
    AsyncClient,
    AsyncHTTPTransport,
    BaseTransport,
    Client,
    HTTPTransport,
    Limits,
    Timeout,
)
from ._transports import (
    AsyncCacheServiceTransport,
    AsyncDefaultShardTransport,
    AsyncShardTransport,
    CacheServiceTransport,
    DefaultShardTransport,
    ShardTransport,
)

__all__ = [
    "KubeConfig",
    "ServerAddress",
    "async_cache_client_from_kubeconfig",
    "async_cache_transport",
    "async_client_from_kubeconfig",
    "cache_client_from_kubeconfig",
    "cache_transport",
    "client_from_kubeconfig",
    "load_kubeconfig",
]

#: Reads are quick; a watch may stay open for up to ten minutes of server time, and the
#: informer's own inactivity watchdog (not the socket timeout) catches dead streams.
DEFAULT_TIMEOUT = Timeout(30.0, read=None)


@dataclass(frozen=True)
class KubeConfig:
    """The parts of one kubeconfig context that the client uses."""

    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None

    @property
    def address(self) -> ServerAddress:
        """The server URL taken apart (base URL, kcp shard and cluster segments)."""
        return ServerAddress.parse(self.server)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            value = item.get(what) or {}
            return dict(value)
    raise ValueError(f"kubeconfig has no {what} named {name!r}")


def _resolve(directory: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else directory / path)


def load_kubeconfig(path: str | os.PathLike[str], *, context: str | None = None) -> KubeConfig:
    """Read *path* and return the server URL and TLS settings of *context* (default: current).

    ``KUBECONFIG``-style lists of files are not merged; pass one file.
    """
    file = Path(path)
    doc = yaml.safe_load(file.read_text()) or {}
    directory = file.resolve().parent
    context_name = context or doc.get("current-context")
    if not context_name:
        contexts = doc.get("contexts") or []
        if len(contexts) != 1:
            raise ValueError(f"{file}: no current-context and not exactly one context")
        context_name = contexts[0]["name"]
    ctx = _named(doc.get("contexts", []), context_name, "context")
    cluster = _named(doc.get("clusters", []), ctx["cluster"], "cluster")
    user = _named(doc.get("users", []), ctx["user"], "user") if ctx.get("user") else {}

    server = cluster.get("server")
    if not server:
        raise ValueError(f"{file}: cluster {ctx['cluster']!r} has no server")
    verify: ssl.SSLContext | bool
    if cluster.get("insecure-skip-tls-verify"):
        verify = ssl.create_default_context()
        verify.check_hostname = False
        verify.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        verify = ssl.create_default_context(cadata=pem)
    elif cluster.get("certificate-authority"):
        verify = ssl.create_default_context(
            cafile=_resolve(directory, cluster["certificate-authority"])
        )
    else:
        verify = ssl.create_default_context()

    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    cert_file, key_file = user.get("client-certificate"), user.get("client-key")
    if cert_data and key_data:
        _load_chain_from_data(verify, base64.b64decode(cert_data), base64.b64decode(key_data))
    elif cert_file and key_file:
        verify.load_cert_chain(_resolve(directory, cert_file), _resolve(directory, key_file))
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(_resolve(directory, user["tokenFile"])).read_text().strip()
    return KubeConfig(server=server, ssl_context=verify, token=token)


def _load_chain_from_data(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl can only load a client certificate from files; keep them for the blink of an eye,
    # readable by the owner only.
    with tempfile.TemporaryDirectory(prefix="kcp-cache-client-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        context.load_cert_chain(cert_path, key_path)


@dataclass(frozen=True)
class ServerAddress:
    """A server URL taken apart into the HTTP base and kcp's routing segments.

    kubeconfigs for kcp often point into the URL grammar —
    ``https://cache:6443/services/cache/shards/*/clusters/*`` or a workspace URL
    ``https://shard/clusters/root``. The transports and the REST helper build those
    segments per request, so they are cut off the base URL and become defaults.

    >>> a = ServerAddress.parse("https://gw/tenant/services/cache/shards/*/clusters/root")
    >>> a.base_url, a.base_path, a.shard, a.cluster
    ('https://gw/tenant', '/tenant', '*', 'root')
    >>> ServerAddress.parse("https://127.0.0.1:6443/")
    ServerAddress(base_url='https://127.0.0.1:6443', base_path='', shard=None, cluster=None)
    """

    base_url: str
    base_path: str
    shard: str | None
    cluster: str | None

    @classmethod
    def parse(cls, server: str) -> ServerAddress:
        url = URL(server)
        parts = [p for p in url.path.split("/") if p]
        shard: str | None = None
        cluster: str | None = None
        if len(parts) >= 2 and parts[-2] == "clusters":
            cluster = parts[-1]
            parts = parts[:-2]
        if len(parts) >= 2 and parts[-2] == "shards":
            shard = parts[-1]
            parts = parts[:-2]
        if parts[-2:] == ["services", "cache"]:
            parts = parts[:-2]
        path = "".join(f"/{p}" for p in parts)
        base_url = str(url.copy_with(path=path or "/", query=None)).rstrip("/")
        return cls(base_url, path, shard, cluster)


def cache_transport(
    transport: BaseTransport, *, default_shard: str = WILDCARD, base_path: str = ""
) -> BaseTransport:
    """kcp's standard shard-side stack around *transport*: DefaultShard → Shard → CacheService."""
    return DefaultShardTransport(
        ShardTransport(CacheServiceTransport(transport, base_path=base_path), base_path=base_path),
        default_shard,
    )


def async_cache_transport(
    transport: AsyncBaseTransport, *, default_shard: str = WILDCARD, base_path: str = ""
) -> AsyncBaseTransport:
    """Async twin of :func:`cache_transport`."""
    return AsyncDefaultShardTransport(
        AsyncShardTransport(
            AsyncCacheServiceTransport(transport, base_path=base_path), base_path=base_path
        ),
        default_shard,
    )


def cache_client_from_kubeconfig(
    path: str | os.PathLike[str],
    *,
    context: str | None = None,
    default_shard: str | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    http2: bool = True,
) -> Client:
    """A sync client for a cache server, with kcp's standard transport stack (spec §5.3).

    Requests use cluster-aware paths (``/clusters/<c>/apis/…``); the shard comes from
    :func:`~kcp_cache.client.shard`, else *default_shard*, else the ``/shards/<s>`` of the
    kubeconfig's server URL, else ``*``; ``/services/cache`` is added. One line::

        http = cache_client_from_kubeconfig("/data/cache/admin.kubeconfig")

    With *http2* (the default) the client speaks HTTP/2 when the server offers it by
    ALPN — one connection multiplexes every request and watch, as client-go does — and
    HTTP/1.1 otherwise.
    """
    config = load_kubeconfig(path, context=context)
    address = ServerAddress.parse(config.server)
    inner = HTTPTransport(verify=config.ssl_context, http2=http2)
    return Client(
        base_url=address.base_url,
        headers=config.headers,
        timeout=timeout,
        transport=cache_transport(
            inner,
            default_shard=default_shard or address.shard or WILDCARD,
            base_path=address.base_path,
        ),
    )


def async_cache_client_from_kubeconfig(
    path: str | os.PathLike[str],
    *,
    context: str | None = None,
    default_shard: str | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    max_connections: int = 100,
    http2: bool = True,
) -> AsyncClient:
    """Async twin of :func:`cache_client_from_kubeconfig`.

    Over HTTP/2 all informers share one connection per server (up to the server's
    ``SETTINGS_MAX_CONCURRENT_STREAMS`` streams on it); *max_connections* bounds the
    HTTP/1.1 fallback, where each watch holds a connection.
    """
    config = load_kubeconfig(path, context=context)
    address = ServerAddress.parse(config.server)
    inner = AsyncHTTPTransport(
        verify=config.ssl_context, limits=Limits(max_connections=max_connections), http2=http2
    )
    return AsyncClient(
        base_url=address.base_url,
        headers=config.headers,
        timeout=timeout,
        transport=async_cache_transport(
            inner,
            default_shard=default_shard or address.shard or WILDCARD,
            base_path=address.base_path,
        ),
    )


def client_from_kubeconfig(
    path: str | os.PathLike[str],
    *,
    context: str | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    http2: bool = True,
) -> Client:
    """A plain sync client (no shard rewriting): for a kcp shard or a Kubernetes API server.

    HTTP/2 when the server offers it (and *http2*), else HTTP/1.1.
    """
    config = load_kubeconfig(path, context=context)
    return Client(
        base_url=config.server,
        headers=config.headers,
        timeout=timeout,
        transport=HTTPTransport(verify=config.ssl_context, http2=http2),
    )


def async_client_from_kubeconfig(
    path: str | os.PathLike[str],
    *,
    context: str | None = None,
    server_url: str | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    max_connections: int | None = None,
    http2: bool = True,
) -> AsyncClient:
    """Async twin of :func:`client_from_kubeconfig`.

    *server_url* replaces the kubeconfig's server (credentials and CA still come from the
    kubeconfig); *max_connections* bounds the connection pool (the HTTP library's default
    limits otherwise).
    """
    config = load_kubeconfig(path, context=context)
    if max_connections is None:
        transport = AsyncHTTPTransport(verify=config.ssl_context, http2=http2)
    else:
        limits = Limits(max_connections=max_connections)
        transport = AsyncHTTPTransport(verify=config.ssl_context, http2=http2, limits=limits)
    return AsyncClient(
        base_url=server_url or config.server,
        headers=config.headers,
        timeout=timeout,
        transport=transport,
    )
