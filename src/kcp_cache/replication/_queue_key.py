"""The write controller's work-queue key.

Format: ``<version>.<resource>.<group>::<cluster>|[<ns>/]<name>``.

The format is kcp's (spec §6.1), so logs and metrics read the same as kcp's. The group is
whatever follows the second dot — dotted groups work and the core group is empty.

>>> key = queue_key(Resource("apis.kcp.io", "v1alpha2", "apiexports"), "acme", "comics")
>>> key
'v1alpha2.apiexports.apis.kcp.io::acme|comics'
>>> parsed = parse_queue_key(key)
>>> parsed.gvr, parsed.cluster, parsed.namespace, parsed.name
(('apis.kcp.io', 'v1alpha2', 'apiexports'), 'acme', '', 'comics')
>>> parse_queue_key("v1.roles.rbac.authorization.k8s.io::root|default/admin").namespace
'default'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kcp_cache.client import Resource

__all__ = ["QueueKey", "parse_queue_key", "queue_key", "queue_key_for"]


@dataclass(frozen=True)
class QueueKey:
    """A parsed queue key."""

    version: str
    resource: str
    group: str
    cluster: str
    namespace: str
    name: str

    @property
    def gvr(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.resource)

    @property
    def namespaced_name(self) -> str:
        """``[<ns>/]<name>`` as in the informer indexes."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def queue_key(resource: Resource, cluster: str, name: str, namespace: str = "") -> str:
    """The key for one object of *resource* in logical cluster *cluster*."""
    local = f"{namespace}/{name}" if namespace else name
    return f"{resource.version}.{resource.resource}.{resource.group}::{cluster}|{local}"


def queue_key_for(resource: Resource, obj: dict[str, Any], cluster: str) -> str:
    meta = obj.get("metadata") or {}
    return queue_key(resource, cluster, str(meta.get("name", "")), str(meta.get("namespace") or ""))


def parse_queue_key(key: str) -> QueueKey:
    """Split a key; ``ValueError`` if it is not one (such keys are dropped, not retried)."""
    gvr, sep, cluster_key = key.partition("::")
    if not sep:
        raise ValueError(f"queue key {key!r} has no '::'")
    parts = gvr.split(".", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"queue key {key!r}: expected <version>.<resource>.<group>")
    version, resource = parts[0], parts[1]
    group = parts[2] if len(parts) == 3 else ""
    cluster, sep, local = cluster_key.partition("|")
    if not sep or not cluster or not local:
        raise ValueError(f"queue key {key!r}: expected <cluster>|[<namespace>/]<name>")
    namespace, slash, name = local.rpartition("/")
    if not name or (slash and not namespace):
        raise ValueError(f"queue key {key!r}: empty name or namespace")
    return QueueKey(version, resource, group, cluster, namespace, name)
