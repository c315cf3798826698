"""Revisions that say which store issued them: ``storeEpoch·2^43 + revision``.

In a hierarchy every cache has its own revision space; a resourceVersion is meaningful
only at the cache that issued it. A client that fails over from one cache to another
with a resourceVersion in hand must relist, not silently resume at whatever that number
means elsewhere (beyond-kcp §3.1). :class:`EpochStorage` wraps an engine so that every
revision it reports carries the store's *epoch* — 20 bits derived from the store's
identity — in the bits above 2^43, and every revision handed to it must carry the same
epoch: one from another store raises :class:`ForeignRevision` (an ``Expired``, so every
caller already answers it with 410 Gone).

2^43 revisions (8.8·10^12) is more than any store writes, and 20 + 43 bits keep the
number a positive int64, so clients that parse resourceVersions as uint64 (kube's
``APIObjectVersioner``) or as JavaScript numbers below 2^53 only for small epochs —
client-go treats them as opaque strings anyway.

The wrapper is the one place where revisions cross between the registry and the
engines; the engines, their files and etcd keep plain revisions (so the mode must be
off when sharing etcd with Go kcp, which reads raw etcd revisions).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Final

from kcp_cache.storage._errors import Conflict, Expired, FutureRevision
from kcp_cache.storage._interface import Storage, WatchStream
from kcp_cache.storage._types import DeleteResult, Event, KeyValue, RangeResult

__all__ = ["EPOCH_SHIFT", "EpochStorage", "ForeignRevision", "epoch_for", "epoch_of"]

EPOCH_SHIFT: Final = 43
EPOCH_BITS: Final = 20
_MASK: Final = (1 << EPOCH_SHIFT) - 1


def epoch_for(store_id: int) -> int:
    """A store's epoch: 20 bits from its identity, never 0 (0 is "no epoch")."""
    return 1 + zlib.crc32(store_id.to_bytes(8, "big", signed=False)) % ((1 << EPOCH_BITS) - 1)


def epoch_of(revision: int) -> int:
    """The epoch a revision carries (0 for a plain one)."""
    return revision >> EPOCH_SHIFT


class ForeignRevision(Expired):
    """A revision issued by another store (another epoch)."""

    def __init__(self, requested: int, own_epoch: int) -> None:
        self.requested = requested
        self.epoch = epoch_of(requested)
        self.own_epoch = own_epoch
        self.compacted = 0
        Exception.__init__(
            self,
            f"revision {requested} was issued by another store (epoch {self.epoch}, "
            f"this store's is {own_epoch})",
        )


class _EpochWatch(WatchStream):
    def __init__(self, inner: WatchStream, base: int) -> None:
        self._inner = inner
        self._base = base

    async def __anext__(self) -> Event:
        event = await self._inner.__anext__()
        prev = event.prev_kv
        return Event(
            event.type,
            _kv(event.kv, self._base),
            _kv(prev, self._base) if prev is not None else None,
        )

    @property
    def progress_revision(self) -> int:
        return self._base + self._inner.progress_revision

    async def close(self) -> None:
        await self._inner.close()


def _kv(kv: KeyValue, base: int) -> KeyValue:
    create = kv.create_revision + base if kv.create_revision else 0
    return KeyValue(kv.key, kv.value, create, kv.mod_revision + base)


class EpochStorage(Storage):
    """*inner* with every revision in and out carrying *epoch*; see the module docstring."""

    def __init__(self, inner: Storage, epoch: int | Callable[[], int]) -> None:
        self.inner = inner
        self.prefix = inner.prefix
        self._epoch_source = epoch
        self.epoch = 0
        self.base = 0
        if isinstance(epoch, int):
            self._set_epoch(epoch)

    def _set_epoch(self, epoch: int) -> None:
        if not 0 < epoch < (1 << EPOCH_BITS):
            raise ValueError(f"epoch must be in 1..{(1 << EPOCH_BITS) - 1}, not {epoch}")
        self.epoch = epoch
        self.base = epoch << EPOCH_SHIFT

    def _in(self, revision: int) -> int:
        """A revision from a caller as the engine's (0 stays 0: "current"/"start")."""
        if revision <= 0:
            return revision
        if revision >> EPOCH_SHIFT != self.epoch:
            raise ForeignRevision(revision, self.epoch)
        return revision & _MASK

    def _translate(self, exc: Expired | FutureRevision) -> Exception:
        if isinstance(exc, FutureRevision):
            return FutureRevision(exc.requested + self.base, exc.current + self.base)
        return Expired(exc.requested + self.base, exc.compacted + self.base)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engine; an epoch given as a function is read now (a store's
        identity is known once it is open)."""
        await self.inner.start()
        if not isinstance(self._epoch_source, int):
            self._set_epoch(self._epoch_source())

    async def close(self) -> None:
        await self.inner.close()

    async def check_health(self) -> None:
        await self.inner.check_health()

    # -- reads -------------------------------------------------------------------------

    async def current_revision(self) -> int:
        return self.base + await self.inner.current_revision()

    @property
    def compacted_revision(self) -> int:
        return self.base + self.inner.compacted_revision

    async def get(self, key: str) -> KeyValue:
        return _kv(await self.inner.get(key), self.base)

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_token: str | None = None,
        revision: int = 0,
    ) -> RangeResult:
        raw = self._in(revision)
        if revision > 0 and raw == 0 and continue_token is None:
            # "As of revision 0" (our base): before the first write; the engine would read
            # 0 as "current".
            if self.inner.compacted_revision > 0:
                raise Expired(revision, self.compacted_revision)
            return RangeResult([], revision, None, 0)
        try:
            result = await self.inner.range(
                prefix, limit=limit, continue_token=continue_token, revision=raw
            )
        except ForeignRevision:
            raise
        except (Expired, FutureRevision) as exc:
            raise self._translate(exc) from None
        base = self.base
        return RangeResult(
            [_kv(kv, base) for kv in result.kvs],
            result.revision + base,
            result.continue_token,
            result.remaining,
        )

    # -- writes ------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        return _kv(await self.inner.create(key, value), self.base)

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        expected = self._expected(expected_mod_revision)
        try:
            kv = await self.inner.update(key, value, expected_mod_revision=expected)
        except Conflict as exc:
            raise self._conflict(key, expected_mod_revision, exc) from None
        return _kv(kv, self.base)

    def _conflict(self, key: str, expected: int, exc: Conflict) -> Conflict:
        return Conflict(key, expected, exc.actual + self.base if exc.actual else 0)

    def _expected(self, revision: int) -> int:
        try:
            return self._in(revision)
        except ForeignRevision:
            return -1  # matches no stored revision: a Conflict, as any stale precondition

    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> DeleteResult:
        expected = None if expected_mod_revision is None else self._expected(expected_mod_revision)
        try:
            result = await self.inner.delete(key, expected_mod_revision=expected)
        except Conflict as exc:
            assert expected_mod_revision is not None
            raise self._conflict(key, expected_mod_revision, exc) from None
        return DeleteResult(_kv(result.prev_kv, self.base), result.revision + self.base)

    async def delete_prefix(self, prefix: str, *, limit: int = 0) -> list[DeleteResult]:
        base = self.base
        return [
            DeleteResult(_kv(r.prev_kv, base), r.revision + base)
            for r in await self.inner.delete_prefix(prefix, limit=limit)
        ]

    # -- watch and history -----------------------------------------------------------

    def watch(self, prefix: str, *, after_revision: int) -> WatchStream:
        try:
            after = self._in(after_revision)
        except ForeignRevision as exc:
            return _FailedWatch(exc)  # raised on first iteration, as Expired is
        inner = self.inner.watch(prefix, after_revision=after)
        return _TranslatedErrors(_EpochWatch(inner, self.base), self)

    async def compact(self, revision: int) -> None:
        await self.inner.compact(self._in(revision))


class _TranslatedErrors(WatchStream):
    """Reports an engine's ``Expired`` in this store's revisions."""

    def __init__(self, inner: WatchStream, storage: EpochStorage) -> None:
        self._inner = inner
        self._storage = storage

    async def __anext__(self) -> Event:
        try:
            return await self._inner.__anext__()
        except ForeignRevision:
            raise
        except (Expired, FutureRevision) as exc:
            raise self._storage._translate(exc) from None

    @property
    def progress_revision(self) -> int:
        return self._inner.progress_revision

    async def close(self) -> None:
        await self._inner.close()


class _FailedWatch(WatchStream):
    def __init__(self, error: Exception) -> None:
        self._error = error

    async def __anext__(self) -> Event:
        raise self._error

    @property
    def progress_revision(self) -> int:
        return 0

    async def close(self) -> None:
        return None
