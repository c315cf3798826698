"""What discovery adds to the registry's resource model: the verbs and the storage hash.

Discovery, OpenAPI and Table conversion read one model of a served resource,
:class:`~kcp_cache.registry.ResourceInfo` (names, scope, served versions in priority
order, printer columns); only these two wire facts are discovery's own.
"""

from __future__ import annotations

import base64
import hashlib

from kcp_cache.registry import ResourceInfo

__all__ = ["RESOURCE_VERBS", "storage_version_hash"]

#: The verbs kube-apiserver advertises for every custom resource (order as kube lists them).
RESOURCE_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")


def storage_version_hash(resource: ResourceInfo) -> str:
    """Kube's ``storageVersionHash``: base64 of the first 8 bytes of sha256(g/v/kind).

    Clients only compare it for equality (the storage-version migrator); it changes
    when the storage version changes.
    """
    digest = hashlib.sha256(f"{resource.group}/{resource.storage_version}/{resource.kind}".encode())
    return base64.b64encode(digest.digest()[:8]).decode()
