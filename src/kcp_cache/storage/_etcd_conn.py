"""gRPC connections to the members of one etcd cluster, with fail-fast failover.

One ``grpc.aio`` channel per endpoint (so each keeps its own TLS server name), etcd's
protobuf messages and stubs as shipped by ``aetcd`` (``aetcd.rpc``). Why not aetcd's
high-level ``Client``: it connects to one ``host:port`` without TLS, cannot range at a
revision or with a limit, and its watcher drops progress notifications and swallows
errors in callbacks (see ``docs/etcd.md``).

Failover rules, modelled on etcd's Go client:

* A call goes to the current endpoint if its channel is usable, else to the first other
  endpoint whose channel is ``READY``.
* Reads are idempotent: on ``UNAVAILABLE`` they are retried on the next endpoint.
* Writes are retried only when they certainly did not reach etcd: the channel was not
  connected when the call was made, or etcd answered "no leader". A write that failed
  in flight is ambiguous (it may have been applied) and surfaces as ``Unavailable``.
* Every call has one deadline (``request_timeout``) covering its retries; when every
  endpoint is down the call fails at once instead of waiting.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kcp_cache.storage._errors import Unavailable
from kcp_cache.storage._etcd_grpc import grpc, rpc

__all__ = ["EtcdConnection", "EtcdEndpoint", "parse_endpoint"]

# etcd answers a list of 10,000 × 1 KiB in one ~10.6 MB message; gRPC's default receive
# limit is 4 MiB. etcd's own Go clients and kube-apiserver lift it the same way.
_MAX_MESSAGE = 2**31 - 1

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    # Detect a silently dead member (power loss, partition) under an open watch. etcd
    # refuses pings more often than every 5 s and pings without an open stream.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # gRPC's default reconnect backoff grows to 120 s; keep recovery after an etcd
    # outage within a couple of seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

# Errors etcd returns before a proposal enters the raft log: safe to retry anywhere.
_NOT_APPLIED = ("etcdserver: no leader", "etcdserver: not capable", "etcdserver: too many requests")
# Pause between retries while a cluster elects a leader (elections take ~1 s).
_RETRY_PAUSE = 0.05


def parse_endpoint(url: str, *, tls_default: bool) -> tuple[str, bool]:
    """``https://host:2379`` → (``host:2379``, TLS?); ``host:port`` uses ``tls_default``.

    Raises ``ValueError`` with a readable message for anything else.
    """
    text = url.strip()
    if not text:
        raise ValueError("empty etcd endpoint")
    if "://" not in text:
        text = ("https://" if tls_default else "http://") + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "unix", "unixs"):
        raise ValueError(f"etcd endpoint {url!r}: scheme must be http or https")
    if parts.scheme in ("unix", "unixs"):
        return f"unix:{parts.netloc}{parts.path}", parts.scheme == "unixs"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"etcd endpoint {url!r}: expected scheme://host:port, nothing more")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"etcd endpoint {url!r}: bad port") from None
    if not parts.hostname:
        raise ValueError(f"etcd endpoint {url!r}: missing host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port or 2379}", parts.scheme == "https"


@dataclass
class EtcdEndpoint:
    """One member's client URL, its channel and stubs."""

    url: str
    #: ``host:port`` (or ``unix:path``) and whether it speaks TLS, as the channel dials it.
    target: str
    tls: bool
    channel: grpc.aio.Channel
    kv: Any
    watch: Any
    maintenance: Any

    def state(self) -> grpc.ChannelConnectivity:
        return self.channel.get_state(try_to_connect=True)


class EtcdConnection:
    """Channels to every endpoint and the unary-call policy of the module docstring."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        ca_file: str | None,
        cert_file: str | None,
        key_file: str | None,
        request_timeout: float,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if (cert_file is None) != (key_file is None):
            raise ValueError("etcd client certificate and key must be given together")
        tls_default = ca_file is not None or cert_file is not None
        self._targets = [(url, *parse_endpoint(url, tls_default=tls_default)) for url in endpoints]
        self._files = (ca_file, cert_file, key_file)
        self.request_timeout = request_timeout
        self.endpoints: list[EtcdEndpoint] = []
        self._current = 0

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Create the channels (lazily connected; no I/O here)."""
        credentials = None
        if any(tls for _, _, tls in self._targets):
            credentials = grpc.ssl_channel_credentials(*_read_tls_files(*self._files))
        for url, target, tls in self._targets:
            if tls:
                assert credentials is not None
                channel = grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            self.endpoints.append(
                EtcdEndpoint(
                    url=url,
                    target=target,
                    tls=tls,
                    channel=channel,
                    kv=rpc.KVStub(channel),
                    watch=rpc.WatchStub(channel),
                    maintenance=rpc.MaintenanceStub(channel),
                )
            )

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context with the channels' CA and client certificate (None: no TLS)."""
        if not any(tls for _, _, tls in self._targets):
            return None
        ca_file, cert_file, key_file = self._files
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
        context.set_alpn_protocols(["http/1.1"])
        return context

    async def close(self) -> None:
        endpoints, self.endpoints = self.endpoints, []
        for endpoint in endpoints:
            await endpoint.channel.close(grace=None)

    @property
    def urls(self) -> str:
        return ", ".join(url for url, _, _ in self._targets)

    # -- endpoint choice ---------------------------------------------------------------

    def pick(self) -> EtcdEndpoint:
        """The endpoint the next call should use (see the module docstring)."""
        if not self.endpoints:
            raise Unavailable("the etcd storage is closed")
        current = self.endpoints[self._current]
        state = current.state()
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE):
            return current
        count = len(self.endpoints)
        for wanted in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE):
            for step in range(1, count):
                index = (self._current + step) % count
                if self.endpoints[index].state() == wanted:
                    self._current = index
                    return self.endpoints[index]
        return current

    def _failed(self, endpoint: EtcdEndpoint) -> None:
        """Move away from ``endpoint`` after it failed a call."""
        if self.endpoints and self.endpoints[self._current] is endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    # -- calls -------------------------------------------------------------------------

    async def unary(
        self,
        stub: str,
        method: str,
        request: Any,
        *,
        idempotent: bool,
        budget: float | None = None,
    ) -> Any:
        """Call ``stub.method(request)`` under one deadline, retrying where it is safe.

        gRPC errors other than connectivity ones propagate as ``grpc.aio.AioRpcError`` for
        the caller to interpret (compaction, future revision); connectivity errors become
        :class:`Unavailable`.
        """
        budget = self.request_timeout if budget is None else budget
        deadline = time.monotonic() + budget
        failures: list[str] = []
        tried: set[int] = set()
        while True:
            endpoint = self.pick()
            connected = endpoint.state() == grpc.ChannelConnectivity.READY
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(self._give_up(failures, budget))
            try:
                call = getattr(getattr(endpoint, stub), method)
                return await call(request, timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                if not _is_connectivity_error(exc):
                    raise
                failures.append(f"{endpoint.url}: {_describe(exc)}")
                self._failed(endpoint)
                tried.add(id(endpoint))
                not_applied = not connected or (exc.details() or "").startswith(_NOT_APPLIED)
                if not (idempotent or not_applied) or (
                    exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                ):
                    raise Unavailable(self._give_up(failures, budget)) from None
                if len(tried) >= len(self.endpoints):
                    # Every endpoint failed once: wait only if etcd itself said it is
                    # electing a leader; if nothing is reachable, fail fast.
                    if not (exc.details() or "").startswith(_NOT_APPLIED):
                        raise Unavailable(self._give_up(failures, budget)) from None
                    tried.clear()
                    await asyncio.sleep(min(_RETRY_PAUSE, max(0.0, remaining)))

    def _give_up(self, failures: list[str], budget: float) -> str:
        if failures:  # each names its endpoint
            return "etcd is unavailable: " + "; ".join(dict.fromkeys(failures))
        return f"etcd is unavailable ({self.urls}): no answer within {budget:g}s"


def _is_connectivity_error(exc: grpc.aio.AioRpcError) -> bool:
    code = exc.code()
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ):
        return True
    # RESOURCE_EXHAUSTED: "too many requests" or the space quota is exhausted.
    return bool(code == grpc.StatusCode.RESOURCE_EXHAUSTED)


def _describe(exc: grpc.aio.AioRpcError) -> str:
    details = (exc.details() or "").strip()
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        details += " (is this an etcd v3 endpoint?)"
    return f"{exc.code().name}: {details}" if details else exc.code().name


def describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    """A one-line description of a gRPC error, for messages."""
    return _describe(exc)


def _read_tls_files(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> tuple[bytes | None, bytes | None, bytes | None]:
    def read(path: str | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise Unavailable(f"cannot read the etcd {what} {path}: {exc.strerror}") from None

    return (
        read(ca_file, "CA file"),
        read(key_file, "client key file"),
        read(cert_file, "client certificate file"),
    )
