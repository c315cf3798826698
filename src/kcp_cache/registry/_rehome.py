"""Moving a shard between caches (beyond-kcp §3.1, "Re-home"), and the root's authority
over the ``CacheShard`` objects.

An admin sets ``spec.homeCache: B`` on shard S's ``CacheShard`` (homed at A), at any
cache: the edit reaches the root (:mod:`._shard_sync`). Then:

1. the root (:class:`ShardAuthority`) bumps ``status.epoch`` and sets phase
   ``Rehoming`` with ``status.rehome: {from: A, to: B}``; the change flows down, and
   every cache answers S's writes with 503 and ``Retry-After: 5`` from the moment it
   stores it (``server/_home_writes.py``);
2. A (:class:`MoveFlusher`) waits a moment for writes admitted just before, then marks
   ``status.rehome.flushed`` on its copy; its exporter sends that change after every
   earlier one, so it reaches the root after S's last data from A;
3. the root, on the flushed mark, sets ``activeHome: B``, phase ``Active``. B's mirror
   applies the root's changes in the root's revision order, so B learns it is S's home
   only after it has applied A's final export: from then on B takes S's writes and A
   holds a read-only mirror. If A does not flush within ``flush_timeout`` (it is
   down), the root completes without it: A, when it comes back, learns the new epoch
   from its parent before it takes S's writes again (``HomeWrites``), and whatever it
   exports for S is refused by the parent as no longer homed there.

The root stamps every ``CacheShard`` it stores (:func:`~._shard_sync.stamped`) in the
same pass; a shard whose ``spec.homeCache`` is set and ``status.activeHome`` is not gets
the spec's home.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from kcp_cache.registry._home import HomeMap
from kcp_cache.registry._shard_sync import stamped
from kcp_cache.registry._wake import next_pass
from kcp_cache.storage import Conflict, KeyValue, NotFound, Storage, StorageError

__all__ = ["DEFAULT_FLUSH_TIMEOUT", "MoveFlusher", "ShardAuthority"]

log = logging.getLogger("kcp_cache.registry.rehome")

#: ``--rehome-flush-timeout``: how long the root waits for the old home's flush.
DEFAULT_FLUSH_TIMEOUT: Final = 60.0
#: How long the old home waits after refusing a shard's writes before it marks the
#: flush: a write admitted just before the refusal commits meanwhile.
FLUSH_GRACE: Final = 0.3
_REHOMING: Final = "Rehoming"
_FENCED: Final = frozenset({"Decommissioning", "Purged"})


def _now_text(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _Loop:
    """One background pass on each wake-up (and every second)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._woken.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while True:
            await next_pass(self._woken, 1.0)
            try:
                await self.reconcile()
            except StorageError as exc:
                log.info("%s: %s; retrying", self._name, exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("%s failed; retrying", self._name)
                await asyncio.sleep(0.5)

    async def reconcile(self) -> None:
        raise NotImplementedError


class ShardAuthority(_Loop):
    """At the root: stamps every ``CacheShard`` and drives re-homes; see the module."""

    def __init__(
        self,
        storage: Storage,
        home: HomeMap,
        *,
        flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("cache-shard authority")
        self.storage = storage
        self.home = home
        self.flush_timeout = flush_timeout
        self.clock = clock

    async def reconcile(self) -> None:
        result = await self.storage.range(self.home.cache_shards_prefix)
        now = self.clock()
        for kv in result.kvs:
            await self._one(kv, now)

    async def _one(self, kv: KeyValue, now: float) -> None:
        try:
            obj = orjson.loads(kv.value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        desired = stamped(self.desired(obj, now))
        if desired == obj:
            return
        try:
            await self.storage.update(
                kv.key, orjson.dumps(desired), expected_mod_revision=kv.mod_revision
            )
        except (Conflict, NotFound):
            self.wake()  # changed meanwhile: look again

    def desired(self, obj: dict[str, Any], now: float) -> dict[str, Any]:
        """*obj* with the re-home steps the root takes now (unstamped)."""
        spec, status = _dict(obj.get("spec")), dict(_dict(obj.get("status")))
        name = _dict(obj.get("metadata")).get("name")
        phase = status.get("phase")
        target = spec.get("homeCache")
        active = status.get("activeHome")
        if phase in _FENCED:
            return obj
        if phase == _REHOMING:
            move = _dict(status.get("rehome"))
            source, dest = move.get("from"), move.get("to")
            started = _parse_time(move.get("since")) or now
            flushed = move.get("flushed") is True
            timed_out = now - started > self.flush_timeout
            if dest and (flushed or source == self.home.name or timed_out):
                status.pop("rehome", None)
                status["phase"] = "Active"
                status["activeHome"] = dest
                status["lastRehome"] = {
                    "from": source,
                    "to": dest,
                    "epoch": status.get("epoch"),
                    "completedAt": _now_text(now),
                    "flushed": flushed or source == self.home.name,
                }
                log.warning(
                    "shard %s: now homed at cache %s (from %s, epoch %s%s)",
                    name, dest, source, status.get("epoch"),
                    "" if flushed or source == self.home.name else "; the old home never flushed",
                )  # fmt: skip
                return {**obj, "status": status}
            return obj
        if not isinstance(target, str) or not target:
            return obj
        if not isinstance(active, str) or not active:
            status["activeHome"] = target
            status.setdefault("phase", "Active")
            status.setdefault("epoch", 1)
            return {**obj, "status": status}
        if target != active:
            epoch = status.get("epoch")
            epoch = (epoch if isinstance(epoch, int) else 1) + 1
            status["phase"] = _REHOMING
            status["epoch"] = epoch
            status["rehome"] = {"from": active, "to": target, "since": _now_text(now),
                                "flushed": False}  # fmt: skip
            log.warning("shard %s: moving from cache %s to %s (epoch %d)",
                        name, active, target, epoch)  # fmt: skip
            return {**obj, "status": status}
        return obj


class MoveFlusher(_Loop):
    """At an old home: marks a moving shard flushed once its writes are refused here."""

    def __init__(self, storage: Storage, home: HomeMap) -> None:
        super().__init__("re-home flush")
        self.storage = storage
        self.home = home
        self._refused_since: dict[tuple[str, int], float] = {}

    async def reconcile(self) -> None:
        moving = {
            (shard, p.epoch)
            for shard, p in self.home.placements.items()
            if p.move is not None and p.move[0] == self.home.name and not p.flushed
        }
        now = time.monotonic()
        for key in list(self._refused_since):
            if key not in moving:
                del self._refused_since[key]
        for shard, epoch in sorted(moving):
            since = self._refused_since.setdefault((shard, epoch), now)
            if now - since < FLUSH_GRACE:
                await asyncio.sleep(FLUSH_GRACE - (now - since))
            await self._mark(shard, epoch)

    async def _mark(self, shard: str, epoch: int) -> None:
        key = self.home.cache_shards_prefix + shard
        try:
            kv = await self.storage.get(key)
        except NotFound:
            return
        obj = orjson.loads(kv.value)
        status = dict(obj.get("status") or {})
        move = dict(status.get("rehome") or {})
        if status.get("epoch") != epoch or move.get("from") != self.home.name:
            return
        if move.get("flushed") is True:
            return
        move["flushed"] = True
        move["flushedAt"] = _now_text(time.time())
        status["rehome"] = move
        with contextlib.suppress(Conflict, NotFound):
            await self.storage.update(
                key, orjson.dumps({**obj, "status": status}), expected_mod_revision=kv.mod_revision
            )
            log.info("shard %s: flushed for its move (epoch %d)", shard, epoch)
