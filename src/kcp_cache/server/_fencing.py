"""Fencing: no writes into a decommissioned shard's space (beyond-kcp §3.2, §3.3).

From the moment an admin asks for a shard's decommission (or the lifecycle controller
decides it) until the shard is re-registered, every write under ``/shards/S/…`` — and
the shard's own ``ShardLease`` — is 403 ``shard "S" is decommissioned``, whoever sends
it: the purge must not race new data, and a shard that was removed must not come back
by itself. It wraps the authorizer of either mode, so kcp-mode deployments (where every
shard is ``system:masters``) are fenced too.
"""

from __future__ import annotations

from typing import Final, Protocol

from kcp_cache.meta import WILDCARD
from kcp_cache.registry import (
    LIFECYCLE_GROUP,
    SHARD_LEASES,
    SYSTEM_CACHE_CLUSTER,
    SYSTEM_SHARD,
    ApiError,
)
from kcp_cache.server._authz import Decision, RequestAuthorizer
from kcp_cache.server._principals import Role, principal_of
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import KcpRequest, User

__all__ = ["FencedAuthorizer", "ShardFence"]

_WRITE_VERBS: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class ShardFence(Protocol):
    """What the lifecycle controller answers: are this shard's writes refused?"""

    def is_fenced(self, shard: str) -> bool: ...


def _written_shard(user: User, info: RequestInfo, kcp: KcpRequest) -> str | None:
    """The shard whose space a write goes into; for a ShardLease, the lease's shard (a
    create names it in the body, and only that shard's principal may create it)."""
    if (
        kcp.shard == SYSTEM_SHARD
        and kcp.cluster == SYSTEM_CACHE_CLUSTER
        and info.api_group == LIFECYCLE_GROUP
        and info.resource == SHARD_LEASES
        and info.verb != "delete"
    ):
        if info.name:
            return info.name
        principal = principal_of(user)
        return principal.name if principal.role is Role.SHARD else None
    return kcp.shard


class FencedAuthorizer:
    """*inner*'s decision, turned into a 403 for writes into a fenced shard's space."""

    def __init__(self, inner: RequestAuthorizer, fence: ShardFence) -> None:
        self.inner = inner
        self.fence = fence

    def decide(self, user: User, info: RequestInfo, kcp: KcpRequest) -> Decision:
        decision = self.inner.decide(user, info, kcp)
        if not decision.allowed or info.verb not in _WRITE_VERBS:
            return decision
        shard = _written_shard(user, info, kcp)
        if shard and shard not in (SYSTEM_SHARD, WILDCARD) and self.fence.is_fenced(shard):
            message = f'shard "{shard}" is decommissioned'
            details = {"name": shard, "causes": [{"reason": "ShardDecommissioned",
                                                  "message": message}]}  # fmt: skip
            return Decision(False, message, ApiError.forbidden(message, details))
        return decision
