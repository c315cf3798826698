"""One request, as the verb handlers see it (kube's ``RequestScope`` + ``*http.Request``).

The filters have already classified the request (:class:`~kcp_cache.server.RequestInfo`)
and resolved who sent it and where it goes (``scope["kcp"]``); the API resolves the
resource (:class:`~kcp_cache.registry.Target`). A handler takes all of it as one
:class:`ApiRequest` instead of six positional arguments of which it reads three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kcp_cache.registry import Registry, Target, Watcher
from kcp_cache.server._deadlines import Deadlines
from kcp_cache.server._heap import HeapTrimmer
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import KcpRequest
from kcp_cache.server.api._encoding import Compression
from kcp_cache.server.types import Receive, Scope, Send

__all__ = ["ApiMetrics", "ApiRequest", "ApiServices"]


class ApiMetrics(Protocol):
    """What the server's metrics implement to observe watches and compression (requests
    themselves are counted once, by the filters)."""

    def watch_opened(self, resource: str) -> None: ...

    def watch_closed(self, resource: str) -> None: ...

    def response_compressed(self, resource: str) -> None: ...

    def watch_terminated(self, reason: str) -> None: ...


class ApiServices(Protocol):
    """What a handler may use of the app serving it (:class:`~._app.ApiApp` is one)."""

    registry: Registry
    compression: Compression
    metrics: ApiMetrics | None
    max_body_bytes: int
    min_request_timeout: float
    rng: Callable[[float, float], float]
    #: The open watches' watchers (closed on shutdown).
    sessions: set[Watcher]
    heap: HeapTrimmer
    deadlines: Deadlines
    shutting_down: bool


@dataclass(slots=True)
class ApiRequest:
    """A resource request being served.

    ``name`` is the object's name (``None`` for collection verbs); ``query`` holds the
    first value of each query parameter, as kube decodes ``ListOptions``; ``api`` is the
    app serving it (its registry, limits and metrics).
    """

    api: ApiServices
    scope: Scope
    receive: Receive
    send: Send
    kcp: KcpRequest
    info: RequestInfo
    target: Target
    name: str | None
    query: dict[str, str]
