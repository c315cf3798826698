"""One request, as the verb handlers see it (kube's ``RequestScope`` + ``*http.Request``).

The filters have already classified the request (:class:`~kcp_cache.server.RequestInfo`)
and resolved who sent it and where it goes (``scope["kcp"]``); the API resolves the
resource (:class:`~kcp_cache.registry.Target`). A handler takes all of it as one
:class:`ApiRequest` instead of six positional arguments of which it reads three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kcp_cache.registry import Target
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import KcpRequest
from kcp_cache.server.types import Receive, Scope, Send

if TYPE_CHECKING:
    from kcp_cache.server.api._app import ApiApp

__all__ = ["ApiRequest"]


@dataclass(slots=True)
class ApiRequest:
    """A resource request being served.

    ``name`` is the object's name (``None`` for collection verbs); ``query`` holds the
    first value of each query parameter, as kube decodes ``ListOptions``; ``api`` is the
    app serving it (its registry, limits and metrics).
    """

    api: ApiApp
    scope: Scope
    receive: Receive
    send: Send
    kcp: KcpRequest
    info: RequestInfo
    target: Target
    name: str | None
    query: dict[str, str]
