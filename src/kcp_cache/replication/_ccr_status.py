"""The coalescing status writer of one ClusterCachedResource (kcp's bug 3 fixed).

Events only mark the status dirty; a task writes it at most once per interval, and only
when it differs from the live object's — counts come from the informers, never from LISTs.
While a restarted controller's informers sync, a Ready CCR is left alone (no flapping).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from kcp_cache.client import ApiError, SharedInformer, TransportError, cancel_and_wait

from ._ccr_model import set_condition
from ._ccr_replication import CopyReplication

__all__ = ["StatusHost", "StatusWriter"]

log = logging.getLogger("kcp_cache.replication.cachedresources")

Obj = dict[str, Any]


class StatusHost(Protocol):
    """What a :class:`StatusWriter` needs of the controller that owns it.

    The controller satisfies it structurally; naming only this much keeps the status
    writer below the controller (no import back up, so no cycle).
    """

    status_interval: float

    @property
    def replications(self) -> Mapping[str, CopyReplication]:
        """The running replications by CCR key."""

    @property
    def ccrs(self) -> SharedInformer:
        """The informer over the CCRs themselves (the live objects)."""

    async def _write_status(self, cluster: str, name: str, status: Obj) -> Obj | None:
        """Writes *status* to the CCR *cluster*/*name*; the CCR as written, if it was."""


class StatusWriter:
    """Coalesces one CCR's status: at most one write per interval, none if unchanged."""

    def __init__(self, controller: StatusHost, key: str) -> None:
        self.controller = controller
        self.key = key
        self.cluster, self.name = key.split("|", 1)
        self.phase: str | None = None
        self.identity: str | None = None
        self.conditions: dict[str, tuple[bool, str, str]] = {}
        self._dirty = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"ccr-status-{key}")

    def want(self, kind: str, status: bool, reason: str = "", message: str = "") -> None:
        if self.conditions.get(kind) != (status, reason, message):
            self.conditions[kind] = (status, reason, message)
            self.changed()

    def changed(self) -> None:
        self._dirty.set()

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        ctrl = self.controller
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.flush()
            except (ApiError, TransportError) as err:
                log.info("status of %s: %s; retrying", self.key, err)
                self._dirty.set()
            await asyncio.sleep(ctrl.status_interval)

    def desired(self, live: Obj) -> Obj | None:
        """The status to write, or ``None`` to write nothing yet."""
        status: Obj = dict(live.get("status") or {})
        replication = self.controller.replications.get(self.key)
        conditions: list[Obj] = list(status.get("conditions") or [])
        for kind, (ok, reason, message) in self.conditions.items():
            conditions = set_condition(conditions, kind, ok, reason, message)
        if self.identity is not None:
            status["identityHash"] = self.identity
        phase = self.phase
        if replication is not None and phase is None:
            if replication.cache_served is None:
                return None  # checking: do not flap a Ready CCR while restarting
            if replication.cache_served is False:
                conditions = set_condition(
                    conditions,
                    "CacheTypeServed",
                    False,
                    "CacheTypeNotServed",
                    "the cache does not serve this resource's identity yet",
                )
                phase = "Initializing"
            else:
                conditions = set_condition(conditions, "CacheTypeServed", True)
                conditions = set_condition(conditions, "ReplicationStarted", True)
                if not replication.synced:
                    if status.get("phase") == "Ready":
                        return None  # restarting: informers not synced yet
                    phase = "Initializing"
                else:
                    phase = "Ready"
                    local, cached = replication.counts()
                    status["resourceCounts"] = {"cache": cached, "local": local}
                    in_sync = replication.idle() and local == cached
                    conditions = set_condition(
                        conditions,
                        "Synced",
                        in_sync,
                        "" if in_sync else "Replicating",
                        "" if in_sync else "copies are being written",
                    )
        elif replication is None and phase is None:
            phase = status.get("phase") or "Initializing"
            if any(not ok for ok, _, _ in self.conditions.values()):
                phase = "Initializing"
        if phase is not None:
            status["phase"] = phase
        status["conditions"] = conditions
        return status

    async def flush(self, live: Obj | None = None) -> Obj | None:
        """Write the status if it differs from *live*'s (default: the informer's copy).

        Returns the object as written, or ``None`` when nothing was written."""
        if live is None:
            live = self.controller.ccrs.store.get(self.key)
            if live is None:
                return None
        status = self.desired(live)
        if status is None or status == live.get("status"):
            return None
        return await self.controller._write_status(self.cluster, self.name, status)
