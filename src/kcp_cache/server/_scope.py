"""What the request filters learn about a request, carried in the ASGI scope.

Every piece of the server is an ASGI app ``(scope, receive, send)``. The filters of spec
§1.2 (prefix → shard → cluster → authn → authz → identity) each consume part of the path
and record what they found in one :class:`KcpRequest` stored at ``scope["kcp"]``; the
API handlers read it with :func:`kcp_request`. ``scope["path"]`` is rewritten as the
filters consume it, so a handler sees only the rest (``/apis/g/v/r/name``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANONYMOUS", "KcpRequest", "User", "kcp_request"]


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated (or anonymous) user: x509 CN → name, O → groups."""

    name: str
    groups: tuple[str, ...] = ()


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))


@dataclass(slots=True)
class KcpRequest:
    """Request facts gathered by the filters.

    ``shard`` is ``None`` for the shard-exempt paths (``/healthz`` …), else a shard name
    or ``"*"``. ``cluster`` is ``None`` when the path had no ``/clusters/…`` segment.
    ``identity`` is the ``resource:identity`` suffix, if any. ``partial_metadata`` is
    true when the Accept header asks for ``PartialObjectMetadata(List)``.
    """

    shard: str | None = None
    cluster: str | None = None
    user: User = ANONYMOUS
    identity: str | None = None
    partial_metadata: bool = False
    accept: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def kcp_request(scope: dict[str, Any]) -> KcpRequest:
    """The :class:`KcpRequest` of this scope, created on first use."""
    state = scope.get("kcp")
    if state is None:
        state = scope["kcp"] = KcpRequest()
    assert isinstance(state, KcpRequest)
    return state
