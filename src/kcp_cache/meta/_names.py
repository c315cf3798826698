"""The names on the wire that the server and the client must spell alike.

kcp's cache server and the shards that talk to it agree on a handful of strings: the
wildcard that addresses every shard or cluster, the two annotations the server adds to
every object it returns, the group that makes a user an administrator, the prefix under
which shards mount the cache, and the hosts a generated serving certificate covers. Each
is defined here, once; both stacks import it from :mod:`kcp_cache.meta` (the role
``k8s.io/apimachinery`` plays for client-go and kube-apiserver).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CACHE_SERVICE_PREFIX",
    "CLUSTER_ANNOTATION",
    "DEFAULT_SERVING_HOSTS",
    "SHARD_ANNOTATION",
    "SYSTEM_MASTERS",
    "WILDCARD",
]

#: The shard or cluster name that addresses every shard or cluster at once (list and
#: watch only).
WILDCARD: Final = "*"
#: The annotation naming the shard an object came from; the server derives it from the
#: object's key on every read and never stores it.
SHARD_ANNOTATION: Final = "kcp.io/shard"
#: The annotation naming an object's logical cluster (kcp and the cache server set it).
CLUSTER_ANNOTATION: Final = "kcp.io/cluster"
#: The group whose members may do anything (kube's superuser group).
SYSTEM_MASTERS: Final = "system:masters"
#: The prefix under which kcp shards mount the cache server; optional when standalone.
CACHE_SERVICE_PREFIX: Final = "/services/cache"
#: The names a generated serving certificate covers when no host is configured.
DEFAULT_SERVING_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
