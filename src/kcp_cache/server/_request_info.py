"""kube-apiserver's RequestInfo: what a path and method mean (verb, group, resource …).

Authorization messages, the wildcard guard and the request metrics need to know whether a
request is a *resource* request and which verb it is (``list`` vs ``get``, ``watch``,
``deletecollection``). This follows ``k8s.io/apiserver/pkg/endpoints/request`` closely
enough for every path the cache server serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

__all__ = ["RequestInfo", "parse_request_info"]

_METHOD_VERBS: Final = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})
_TRUE: Final = frozenset({"true", "1"})


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
    values = parse_qs(query_string.decode("latin-1")).get("watch")
    if not values:
        return False
    return values[0].lower() in _TRUE


def parse_request_info(method: str, path: str, query_string: bytes = b"") -> RequestInfo:
    """Classify ``method path?query`` the way kube's RequestInfoFactory does.

    ``path`` is the path after the shard and cluster segments were consumed.
    """
    non_resource = RequestInfo(False, path, method.lower())
    stripped = path.strip("/")
    parts = stripped.split("/") if stripped else []
    if len(parts) < 2 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 2:  # /apis/<group> is discovery
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if not parts:  # /api/v1, /apis/<group>/<version>: discovery
        return non_resource

    verb = _METHOD_VERBS.get(method.upper(), method.lower())
    info = RequestInfo(True, path, verb, prefix, group, version)
    # The deprecated /watch/ path segment.
    if parts[0] == "watch":
        parts = parts[1:]
        if verb == "get":
            info.verb = "watch"
    if parts[0] == "namespaces" and len(parts) > 1:
        info.namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    info.resource = parts[0]
    if len(parts) >= 2:
        info.name = parts[1]
    if len(parts) >= 3:
        info.subresource = parts[2]
    if not info.name and info.verb == "get":
        info.verb = "watch" if _is_watch(query_string) else "list"
    if not info.name and info.verb == "delete":
        info.verb = "deletecollection"
    return info
