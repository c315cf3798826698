"""kube-apiserver's RequestInfo: what a path and method mean (verb, group, resource …).

The one request classifier (kube's ``WithRequestInfo``): the filters parse a request once
and store the result in ``KcpRequest.extra`` (:func:`request_info` reads it); authorization
messages, the wildcard guard, the in-flight limits, the request metrics, audit and the API
handlers' dispatch all read that one value. It follows
``k8s.io/apiserver/pkg/endpoints/request`` closely enough for every path the cache server
serves, with one deliberate extension: a *named* ``GET …/<name>?watch=1`` is ``watch``,
because the API serves it as a watch of that one object and the verb authorized must be
the verb served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from kcp_cache.registry import parse_query_bool
from kcp_cache.server._scope import KcpRequest

__all__ = ["REQUEST_INFO_KEY", "RequestInfo", "parse_request_info", "request_info"]

_METHOD_VERBS: Final = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})
#: Key in ``KcpRequest.extra`` of the request's :class:`RequestInfo` (identity removed).
REQUEST_INFO_KEY: Final = "request_info"


@dataclass(slots=True)
class RequestInfo:
    """The kube view of one request. ``resource`` may still carry ``:identity`` until the
    identity filter splits it off."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def qualified_resource(self) -> str:
        """``resource.group`` (just ``resource`` for the core group), as kube prints it."""
        if self.api_group:
            return f"{self.resource}.{self.api_group}"
        return self.resource


def _is_watch(query_string: bytes) -> bool:
    if b"watch" not in query_string:
        return False
    # kube's rule (the verb authorized must be the verb served): the first ``watch``
    # value, true unless it is 0 or false; ``?watch=`` counts, blank as it is.
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("watch")
    return parse_query_bool(values[0]) if values else False


def parse_request_info(method: str, path: str, query_string: bytes = b"") -> RequestInfo:
    """Classify ``method path?query`` the way kube's RequestInfoFactory does.

    ``path`` is the path after the shard and cluster segments were consumed. Written with
    indexes instead of list slicing: it runs on every request.
    """
    parts = path.strip("/").split("/")
    count = len(parts)
    head = parts[0]
    if head == "apis" and count >= 4:
        group, version, i = parts[1], parts[2], 3
    elif head == "api" and count >= 3:
        group, version, i = "", parts[1], 2
    else:  # discovery (/apis, /apis/g, /apis/g/v, /api/v1) and everything else
        return RequestInfo(False, path, method.lower())

    verb = _METHOD_VERBS.get(method, "") or method.lower()
    # The deprecated /watch/ path segment.
    if parts[i] == "watch" and count > i + 1:
        i += 1
        if verb == "get":
            verb = "watch"
    namespace = ""
    if parts[i] == "namespaces" and count > i + 1:
        namespace = parts[i + 1]
        if count > i + 2 and parts[i + 2] not in _NAMESPACE_SUBRESOURCES:
            i += 2
    resource = parts[i]
    name = parts[i + 1] if count > i + 1 else ""
    subresource = parts[i + 2] if count > i + 2 else ""
    if verb == "get":
        if _is_watch(query_string):
            verb = "watch"  # named: a watch of that one object (see the module docstring)
        elif not name:
            verb = "list"
    elif verb == "delete" and not name:
        verb = "deletecollection"
    return RequestInfo(
        True, path, verb, head, group, version, namespace, resource, subresource, name
    )


def request_info(kcp: KcpRequest) -> RequestInfo | None:
    """The :class:`RequestInfo` the filters stored, ``None`` before they ran."""
    info = kcp.extra.get(REQUEST_INFO_KEY)
    return info if isinstance(info, RequestInfo) else None
