"""Writing the bootstrapped CRDs into the store at start-up (spec §4, §1.7).

The 26 CRD objects are stored in shard ``system:cache:server``, cluster
``system:system-crds`` — where kcp shards list and watch them to learn which cached
resources exist. Bootstrapping is idempotent: missing CRDs are created, changed ones
updated (uid and creationTimestamp kept), identical ones left alone, so a restart on the
same store writes nothing. :class:`Bootstrapper.ready` is what ``/readyz`` reports.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from kcp_cache.registry._catalog import CRD_GROUP, CRD_RESOURCE, ResourceCatalog
from kcp_cache.registry._keys import KeyScheme
from kcp_cache.storage import (
    AlreadyExists,
    Conflict,
    NotFound,
    Storage,
    StorageError,
    Unavailable,
)

__all__ = ["SYSTEM_CRDS_CLUSTER", "SYSTEM_SHARD", "Bootstrapper"]

SYSTEM_SHARD = "system:cache:server"
SYSTEM_CRDS_CLUSTER = "system:system-crds"

log = logging.getLogger(__name__)


def _desired(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as stored: the data file plus the status an established CRD has."""
    obj = copy.deepcopy(crd)
    spec = obj["spec"]
    storage_version = next(v["name"] for v in spec["versions"] if v.get("storage"))
    names = dict(spec["names"])
    obj["status"] = {
        "acceptedNames": names,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "storedVersions": [storage_version],
    }
    return obj


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for key in ("uid", "creationTimestamp", "generation", "resourceVersion"):
        meta.pop(key, None)
    for cond in out.get("status", {}).get("conditions", []):
        cond.pop("lastTransitionTime", None)
    return out


class Bootstrapper:
    """Creates or updates the bootstrapped CRD objects; flips :attr:`ready` when done."""

    def __init__(self, storage: Storage, catalog: ResourceCatalog) -> None:
        self.storage = storage
        self.catalog = catalog
        self.keys = KeyScheme(storage.prefix)
        self.ready = False
        self.error: str | None = None

    def key(self, name: str) -> str:
        base = f"{self.keys.prefix}/{CRD_GROUP}/{CRD_RESOURCE}"
        return f"{base}/{SYSTEM_SHARD}/{SYSTEM_CRDS_CLUSTER}/{name}"

    async def run(self, *, attempts: int = 10, backoff: float = 0.2) -> None:
        """Bootstrap every CRD, retrying transient storage errors; then set ``ready``."""
        for attempt in range(attempts):
            try:
                await asyncio.gather(*(self._ensure(crd) for crd in self.catalog.bootstrap_crds))
            except StorageError as exc:
                self.error = str(exc)
                log.warning("bootstrapping CRDs failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(backoff * (attempt + 1))
                continue
            self.error = None
            self.ready = True
            log.info("bootstrapped %d CRDs", len(self.catalog.bootstrap_crds))
            return
        raise RuntimeError(f"could not bootstrap the system CRDs: {self.error}")

    async def _ensure(self, crd: dict[str, Any]) -> None:
        desired = _desired(crd)
        key = self.key(desired["metadata"]["name"])
        for _ in range(5):
            try:
                kv = await self.storage.get(key)
            except NotFound:
                obj = copy.deepcopy(desired)
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now, generation=1)
                for cond in obj["status"]["conditions"]:
                    cond["lastTransitionTime"] = now
                try:
                    await self.storage.create(key, orjson.dumps(obj))
                    return
                except AlreadyExists:
                    continue
            current = orjson.loads(kv.value)
            if _comparable(current) == _comparable(desired):
                return
            obj = copy.deepcopy(desired)
            old_meta = current.get("metadata", {})
            for field in ("uid", "creationTimestamp"):
                if field in old_meta:
                    obj["metadata"][field] = old_meta[field]
            changed_spec = current.get("spec") != desired["spec"]
            obj["metadata"]["generation"] = old_meta.get("generation", 1) + (
                1 if changed_spec else 0
            )
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for cond in obj["status"]["conditions"]:
                cond["lastTransitionTime"] = now
            try:
                await self.storage.update(
                    key, orjson.dumps(obj), expected_mod_revision=kv.mod_revision
                )
                return
            except (Conflict, NotFound):
                continue
        # Other writers (replicas of another release?) changed it every time: let run()
        # back off and retry rather than report a CRD as bootstrapped that is not.
        raise Unavailable(f"{key} kept changing while it was being bootstrapped")
