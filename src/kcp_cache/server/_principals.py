"""Who is calling: the principals of the cache server, read from a user's name and groups.

Like Kubernetes' node convention (``system:node:<name>`` in ``system:nodes``), the
x509 subject says what a client is (beyond-kcp §3.0):

============  ===========================  ============================
who           CN (user name)               O (groups)
============  ===========================  ============================
shard S       ``system:kcp:shard:S``       ``system:kcp:shards``
cache C       ``system:kcp:cache:C``       ``system:kcp:caches``
reader        any                          ``system:kcp:cache-readers``
admin         any                          ``system:masters`` (kcp) or
                                           ``system:kcp:cache:admins``
============  ===========================  ============================

A shard or cache name needs both its CN and its group: a certificate whose CN merely
looks like a shard's, issued for some other purpose, is nobody special.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from kcp_cache.meta import SYSTEM_MASTERS
from kcp_cache.server._scope import User

__all__ = [
    "ADMIN_GROUPS",
    "CACHES_GROUP",
    "CACHE_PREFIX",
    "READERS_GROUP",
    "SHARDS_GROUP",
    "SHARD_PREFIX",
    "Principal",
    "Role",
    "cache_user",
    "principal_of",
    "shard_user",
]

SHARD_PREFIX: Final = "system:kcp:shard:"
SHARDS_GROUP: Final = "system:kcp:shards"
CACHE_PREFIX: Final = "system:kcp:cache:"
CACHES_GROUP: Final = "system:kcp:caches"
READERS_GROUP: Final = "system:kcp:cache-readers"
ADMIN_GROUPS: Final = frozenset({SYSTEM_MASTERS, "system:kcp:cache:admins"})


class Role(enum.StrEnum):
    # A StrEnum, not an Enum: str's hash is C, Enum's is a Python call, and every read
    # looks its decision up by role.
    ADMIN = "admin"
    SHARD = "shard"
    CACHE = "cache"
    READER = "reader"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Principal:
    """A user's role; ``name`` is the shard or cache name for those roles."""

    role: Role
    name: str = ""


#: ``principal_of``'s answers by (name, groups): a tuple key hashes and compares in C,
#: where the frozen dataclass ``User`` would call its generated ``__hash__`` and
#: ``__eq__`` (an ``lru_cache`` keyed by the user cost ~0.3 µs a request).
_PRINCIPALS: Final[dict[tuple[str, tuple[str, ...]], Principal]] = {}
_PRINCIPALS_KEPT: Final = 4096


def principal_of(user: User) -> Principal:
    """The role *user* plays (admin wins over the others, as its groups allow all).

    Cached: every request asks, and a server sees few distinct users (when more than
    4,096 have asked, the cache starts afresh)."""
    key = (user.name, user.groups)
    principal = _PRINCIPALS.get(key)
    if principal is None:
        if len(_PRINCIPALS) >= _PRINCIPALS_KEPT:
            _PRINCIPALS.clear()
        principal = _PRINCIPALS[key] = _principal(user)
    return principal


def _principal(user: User) -> Principal:
    groups = user.groups
    if not ADMIN_GROUPS.isdisjoint(groups):
        return Principal(Role.ADMIN)
    if SHARDS_GROUP in groups and user.name.startswith(SHARD_PREFIX):
        shard = user.name[len(SHARD_PREFIX) :]
        if shard:
            return Principal(Role.SHARD, shard)
    if CACHES_GROUP in groups and user.name.startswith(CACHE_PREFIX):
        cache = user.name[len(CACHE_PREFIX) :]
        if cache:
            return Principal(Role.CACHE, cache)
    if READERS_GROUP in groups:
        return Principal(Role.READER)
    return Principal(Role.OTHER)


def shard_user(shard: str) -> User:
    """The user a shard's certificate names."""
    return User(SHARD_PREFIX + shard, (SHARDS_GROUP,))


def cache_user(cache: str) -> User:
    """The user a cache's certificate names."""
    return User(CACHE_PREFIX + cache, (CACHES_GROUP,))
