"""The etcd v3 engine: the store kcp itself uses, shared by several server replicas.

Keys and values are stored exactly as the registry hands them over (spec §2 layout under
``prefix``, JSON values), so a Go kcp pointed at the same etcd and prefix reads the same
objects. The revision is etcd's revision; every write is one etcd transaction guarded on
the key's create or mod revision, so optimistic concurrency holds across replicas.

This module imports grpc; import it only when the etcd engine is wanted (the package
``kcp_cache.storage`` does not import it). It needs the ``etcd`` extra (``aetcd``, which
brings grpcio and etcd's protobufs). See ``docs/etcd.md``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
import weakref
from typing import Any, NoReturn

from kcp_cache.storage._errors import (
    AlreadyExists,
    Conflict,
    Expired,
    FutureRevision,
    NotFound,
    StorageError,
    StorageOpenError,
    Unavailable,
)
from kcp_cache.storage._etcd_conn import EtcdConnection, describe_rpc_error
from kcp_cache.storage._etcd_gateway import GatewayRevision
from kcp_cache.storage._etcd_grpc import grpc, rpc
from kcp_cache.storage._etcd_mirror import EtcdMirror, RevisionBatcher
from kcp_cache.storage._etcd_mirror_state import MirrorState
from kcp_cache.storage._etcd_mirror_watch import MirrorWatchStream
from kcp_cache.storage._etcd_watch import (
    EtcdWatchStream,
    FailedWatchStream,
    kv_from_proto,
)
from kcp_cache.storage._interface import Storage, WatchStream
from kcp_cache.storage._keys import validate_key, validate_prefix, validate_root_prefix
from kcp_cache.storage._tokens import decode_continue_token, encode_continue_token
from kcp_cache.storage._types import DeleteResult, KeyValue, RangeResult

__all__ = ["EtcdStorage", "progress_requests_are_safe"]

log = logging.getLogger(__name__)

# A key nobody writes (outside any prefix), for reads that only want a header.
_PROBE_KEY = b"compact_rev_key\0"

# Keys per page when the watch cache reads the whole prefix (~5 MB of 1 KiB values).
_SNAPSHOT_PAGE = 5_000
# Events the cache's watch may buffer: it is drained without awaiting anything.
_MIRROR_BUFFER = 100_000

_EQUAL = rpc.Compare.EQUAL
_GREATER = rpc.Compare.GREATER


class EtcdStorage(Storage):
    """:class:`~kcp_cache.storage.Storage` on an etcd v3 cluster.

    :param endpoints: client URLs of the members (``http://host:2379``,
        ``https://host:2379``; a bare ``host:port`` uses TLS when a CA or client
        certificate is given). Several members give failover.
    :param prefix: root of every key (``--etcd-prefix``, default ``/cache``).
    :param ca_file: PEM bundle to verify the members' certificates (default: system CAs).
    :param cert_file: client certificate (PEM) for etcd's client-certificate auth.
    :param key_file: its private key (PEM).
    :param request_timeout: deadline in seconds of one request including its retries on
        other members; when etcd is unreachable requests fail at once with
        ``Unavailable`` rather than waiting for it.
    :param health_timeout: deadline of :meth:`check_health` (and of the start-up probe).
    :param watch_progress_interval: a quiet watch asks etcd for a progress notification
        this often, which keeps :attr:`WatchStream.progress_revision` (bookmarks) fresh.
        Only on etcd versions where that is safe (:func:`progress_requests_are_safe`);
        older ones rely on etcd's ``--experimental-watch-progress-notify-interval``.
    :param watch_buffer_size: events a watch buffers for a slow consumer; beyond that
        the watch ends with ``Unavailable`` and the consumer resumes from its last
        revision.
    :param compaction_interval: seconds between automatic compactions (0 disables).
    :param history_retention: keep at least this many seconds of history …
    :param max_history_events: … but no more than this many revisions. Each turn
        compacts etcd to the newer of the two bounds, as the embedded engines do.
        Several replicas sharing one etcd may each run the policy: compaction is
        idempotent and they compute nearly the same targets.
    :param watch_cache: keep an in-memory copy of the prefix fed by one etcd watch and
        serve ``get`` and ``range`` from it with consistent-read semantics (see
        ``_etcd_mirror.py``); reads it cannot serve go to etcd.
    :param watch_cache_wait: how long a consistent read waits for the copy to catch up
        with etcd's revision before it reads etcd instead.
    :param watch_cache_history: events of history the copy keeps for reads at a past
        revision (later pages of a paginated range, exact revisions).
    :param revision_gateway: take etcd's current revision (consistent reads) from its
        JSON gateway rather than gRPC, at a quarter of the CPU (``_etcd_gateway.py``);
        gRPC answers whenever the gateway cannot.
    """

    def __init__(
        self,
        endpoints: list[str],
        prefix: str = "/cache",
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        request_timeout: float = 5.0,
        health_timeout: float = 2.0,
        watch_progress_interval: float = 5.0,
        watch_buffer_size: int = 10_000,
        compaction_interval: float = 60.0,
        history_retention: float = 300.0,
        max_history_events: int = 100_000,
        watch_cache: bool = True,
        watch_cache_wait: float = 3.0,
        watch_cache_history: int = 10_000,
        revision_gateway: bool = True,
    ) -> None:
        self._root = validate_root_prefix(prefix)
        self.prefix = self._root
        self._conn = EtcdConnection(
            list(endpoints),
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            request_timeout=request_timeout,
        )
        self._health_timeout = health_timeout
        self._progress_interval = watch_progress_interval
        self._watch_buffer_size = watch_buffer_size
        self._compaction_interval = compaction_interval
        self._history_retention = history_retention
        self._max_history_events = max_history_events
        self._compacted = 0
        self._watches: weakref.WeakSet[EtcdWatchStream | MirrorWatchStream] = weakref.WeakSet()
        self._compactor: asyncio.Task[None] | None = None
        self._started = False
        self._request_progress = False
        self._watch_cache = watch_cache
        self._cache_wait = watch_cache_wait
        self._cache_history = watch_cache_history
        self._mirror: EtcdMirror | None = None
        self._revisions = RevisionBatcher(self.current_revision)
        self._use_gateway = revision_gateway
        #: The cheap way to etcd's current revision (None: not started, switched off, or
        #: no usable TLS context).
        self.gateway: GatewayRevision | None = None
        #: Reads served by the watch cache, and reads it could not serve that etcd
        #: answered (for diagnostics and tests).
        self.cache_hits = 0
        self.cache_fallbacks = 0
        #: Watches served from the watch cache (the others are etcd watches).
        self.cache_watches = 0
        #: The version the first member reported at start-up (for diagnostics).
        self.etcd_version = ""

    def __repr__(self) -> str:
        return f"EtcdStorage({self._conn.urls}, prefix={self._root!r})"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and check that etcd answers; raise ``StorageOpenError`` if not.

        The error message names the endpoints and the reason (refused, timed out, not
        an etcd); the engine is closed again, so ``start()`` may simply be retried.
        """
        if self._started:
            return
        try:
            self._conn.open()
            await self._probe("cannot reach etcd", StorageOpenError)
            if self._use_gateway:
                self.gateway = self._open_gateway()
            await self._learn_compacted_revision()
            await self._learn_progress_support()
        except StorageOpenError:
            await self._conn.close()
            raise
        except Unavailable as exc:
            await self._conn.close()
            raise StorageOpenError(f"cannot open the etcd storage: {exc}") from None
        except BaseException:
            await self._conn.close()
            raise
        self._started = True
        if self._watch_cache:
            self._mirror = EtcdMirror(
                self._root,
                read_snapshot=self._read_snapshot_page,
                open_watch=self._open_mirror_watch,
                compacted=lambda: self._compacted,
                max_history_events=self._cache_history,
            )
            self._mirror.start()
            # Serve from the cache right away when the first copy is quick to read (a
            # large prefix keeps loading in the background; reads go to etcd meanwhile).
            await self._mirror.wait_loaded(self._cache_wait)
        if self._compaction_interval > 0:
            self._compactor = asyncio.get_running_loop().create_task(self._compact_forever())

    async def __aenter__(self) -> EtcdStorage:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
            self._compactor = None
        if self._mirror is not None:
            await self._mirror.close()
            self._mirror = None
        await self._revisions.close()
        if self.gateway is not None:
            self.gateway.close()
            self.gateway = None
        for stream in list(self._watches):
            await stream.abort(Unavailable("the etcd storage was closed"))
        await self._conn.close()
        self._started = False

    async def check_health(self) -> None:
        """A linearizable read of one key: it needs a reachable member *and* a leader."""
        await self._probe("etcd is not healthy", Unavailable)

    async def _probe(self, what: str, error: type[Unavailable]) -> None:
        request = rpc.RangeRequest(key=self._root.encode(), count_only=True)
        try:
            await self._conn.unary(
                "kv", "Range", request, idempotent=True, budget=self._health_timeout
            )
        except Unavailable as exc:
            raise error(f"{what}: {exc}") from None
        except grpc.aio.AioRpcError as exc:
            raise error(f"{what} ({self._conn.urls}): {describe_rpc_error(exc)}") from None

    async def _learn_compacted_revision(self) -> None:
        """Find etcd's compaction revision by bisection.

        etcd has no call that reports it; a read at revision ``r`` fails with
        "compacted" exactly when ``r`` is below it. About 30 tiny reads at most.
        """
        low, high = 1, await self.current_revision()
        probe_key = _PROBE_KEY
        while low < high:
            middle = (low + high) // 2
            request = rpc.RangeRequest(key=probe_key, revision=middle, count_only=True)
            try:
                await self._conn.unary("kv", "Range", request, idempotent=True)
            except grpc.aio.AioRpcError as exc:
                if "compacted" not in (exc.details() or ""):
                    raise StorageOpenError(
                        f"cannot read etcd's compaction state: {describe_rpc_error(exc)}"
                    ) from None
                low = middle + 1
            else:
                high = middle
        self._note_compacted(low if low > 1 else 0)

    async def _learn_progress_support(self) -> None:
        """Decide whether watches may ask etcd for progress notifications.

        Before etcd 3.4.31 / 3.5.13 the answer to a progress request could overtake
        events still queued for the watch (etcd-io/etcd#15220), so a bookmark built
        on it could skip events. Those versions only get etcd's own periodic
        notifications (``--experimental-watch-progress-notify-interval``), which are
        ordered with the events. These are the versions kube-apiserver trusts too.
        """
        endpoint = self._conn.pick()
        try:
            status = await endpoint.maintenance.Status(
                rpc.StatusRequest(), timeout=self._conn.request_timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise StorageOpenError(
                f"cannot read etcd's version from {endpoint.url}: {describe_rpc_error(exc)}"
            ) from None
        self.etcd_version = status.version
        self._request_progress = progress_requests_are_safe(status.version)

    # -- reads -------------------------------------------------------------------------

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    def _open_gateway(self) -> GatewayRevision | None:
        try:
            context = self._conn.ssl_context()
        except (OSError, ssl.SSLError) as exc:  # gRPC took the files; stay on gRPC
            log.info("etcd gateway not used (TLS files: %s); revisions are read over gRPC", exc)
            return None
        return GatewayRevision(self._conn, self._root.encode(), context)

    async def current_revision(self) -> int:
        """etcd's current revision by a linearizable read: on the gateway, else gRPC."""
        budget = self._conn.request_timeout
        if self.gateway is not None:
            started = time.monotonic()
            revision = await self.gateway.revision(budget)
            if revision is not None:
                return revision
            # What the gateway spent counts against the request's one deadline.
            budget = max(0.001, budget - (time.monotonic() - started))
        request = rpc.RangeRequest(key=self._root.encode(), count_only=True)
        response = await self._call("Range", request, idempotent=True, budget=budget)
        current: int = response.header.revision
        return current

    async def get(self, key: str) -> KeyValue:
        validate_key(self._root, key)
        started = time.monotonic()
        state = await self._fresh_copy()
        if state is not None:
            self.cache_hits += 1
            kv = state.get(key)
            if kv is None:
                raise NotFound(key)
            return kv
        response = await self._call(
            "Range", rpc.RangeRequest(key=key.encode()), idempotent=True, budget=self._left(started)
        )
        if not response.kvs:
            raise NotFound(key)
        return kv_from_proto(response.kvs[0])

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_token: str | None = None,
        revision: int = 0,
    ) -> RangeResult:
        validate_prefix(self._root, prefix)
        start_after = None
        if continue_token is not None:
            position = decode_continue_token(continue_token, prefix)
            revision = position.revision
            start_after = position.start_after
        if revision and revision < self._compacted:
            raise Expired(revision, self._compacted)
        if self._mirror is not None:
            started = time.monotonic()
            cached = await self._range_cached(prefix, start_after, limit, revision)
            if cached is not None:
                return cached
            return await self._range_etcd(
                prefix, start_after, limit, revision, budget=self._left(started)
            )
        return await self._range_etcd(prefix, start_after, limit, revision)

    def _left(self, started: float) -> float:
        """What remains of a read's one deadline after a wait for the watch cache that
        began at *started* (a hung etcd answers in ``request_timeout``, not in that plus
        the cache wait)."""
        return max(0.001, self._conn.request_timeout - (time.monotonic() - started))

    async def _range_cached(
        self, prefix: str, start_after: str | None, limit: int, revision: int
    ) -> RangeResult | None:
        """One page from the watch cache; ``None`` if it cannot serve it."""
        assert self._mirror is not None
        if revision == 0:
            state = await self._fresh_copy()
            if state is None:
                return None
            revision = state.revision
        else:
            state = self._mirror.state
            if state is not None and revision < state.revision and state.holds(revision):
                # Another replica may have compacted etcd past it: answer as etcd would
                # (Expired), with a one-key read at that revision. The newest revision
                # cannot have been compacted away (etcd keeps the state at its
                # compaction revision readable), short of writes the watch has not
                # delivered yet: the pages of a LIST on a quiet store need no request.
                await self._check_not_compacted(revision)
            if state is None or not state.holds(revision):  # (history trimmed meanwhile)
                self.cache_fallbacks += 1
                return None
        self.cache_hits += 1
        return _page_result(state, prefix, start_after, limit, revision)

    async def _range_etcd(
        self,
        prefix: str,
        start_after: str | None,
        limit: int,
        revision: int,
        *,
        budget: float | None = None,
    ) -> RangeResult:
        """One page read from etcd itself (within *budget* seconds, default the
        connection's request timeout)."""
        start = prefix.encode() if start_after is None else start_after.encode() + b"\0"
        request = rpc.RangeRequest(
            key=start, range_end=_prefix_end(prefix.encode()), revision=revision, limit=limit
        )
        response = await self._call(
            "Range", request, idempotent=True, revision=revision, budget=budget
        )
        kvs = [kv_from_proto(kv) for kv in response.kvs]
        read_at = revision or response.header.revision
        token = None
        if response.more and kvs:
            token = encode_continue_token(read_at, kvs[-1].key)
        return RangeResult(
            kvs=kvs,
            revision=read_at,
            continue_token=token,
            remaining=max(0, response.count - len(kvs)),
        )

    # -- watch cache -------------------------------------------------------------------

    async def _fresh_copy(self) -> MirrorState | None:
        """The watch cache once it holds every write acknowledged before this call.

        ``None`` when there is no copy yet or it did not catch up in time: the caller
        reads etcd. etcd being unreachable raises ``Unavailable`` (no stale answer).
        """
        mirror = self._mirror
        if mirror is None:
            return None
        if mirror.state is None:
            self.cache_fallbacks += 1
            return None
        target = await self._revisions.current(self._conn.request_timeout)
        state = await mirror.wait_until(target, self._cache_wait)
        if state is None:
            self.cache_fallbacks += 1
        return state

    async def _check_not_compacted(self, revision: int) -> None:
        request = rpc.RangeRequest(key=_PROBE_KEY, revision=revision, count_only=True)
        await self._call("Range", request, idempotent=True, revision=revision)

    async def cache_ready(self, patience: float = 30.0) -> bool:
        """Wait until the watch cache caught up with etcd (False: no cache, or too slow)."""
        mirror = self._mirror
        if mirror is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        target = await self.current_revision()
        while True:
            # The copy may still be loading, or its watch being re-established.
            if await mirror.wait_until(target, max(0.0, deadline - loop.time())) is not None:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)

    async def _read_snapshot_page(self, revision: int, token: str | None) -> RangeResult:
        start_after = None
        if token is not None:
            position = decode_continue_token(token, self._root)
            revision, start_after = position.revision, position.start_after
        return await self._range_etcd(self._root, start_after, _SNAPSHOT_PAGE, revision)

    def _open_mirror_watch(self, after_revision: int) -> WatchStream:
        """The cache's watch: the whole keyspace, keeping only this engine's prefix."""
        if after_revision < self._compacted:
            return FailedWatchStream(Expired(after_revision, self._compacted), after_revision)
        try:
            endpoint = self._conn.pick()
        except Unavailable as exc:
            return FailedWatchStream(exc, after_revision)
        mirror = self._mirror
        assert mirror is not None
        return EtcdWatchStream(
            endpoint,
            b"\0",
            b"\0",
            after_revision=after_revision,
            progress_interval=0.0,
            buffer_size=max(self._watch_buffer_size, _MIRROR_BUFFER),
            on_compacted=self._note_compacted,
            prev_kv=False,
            keep_prefix=self._root.encode(),
            on_progress=mirror.on_progress,
        )

    # -- writes ------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        validate_key(self._root, key)
        raw = key.encode()
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=raw, target=rpc.Compare.CREATE, result=_EQUAL)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=value))],
        )
        response = await self._call("Txn", request, idempotent=False)
        if not response.succeeded:
            raise AlreadyExists(key)
        revision: int = response.header.revision
        return KeyValue(key, value, revision, revision)

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        validate_key(self._root, key)
        raw = key.encode()
        look = rpc.RequestOp(request_range=rpc.RangeRequest(key=raw, keys_only=True))
        request = rpc.TxnRequest(
            compare=_guard(raw, expected_mod_revision),
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=value)), look],
            failure=[look],
        )
        response = await self._call("Txn", request, idempotent=False)
        if not response.succeeded:
            self._raise_guard_failure(key, expected_mod_revision, response)
        created: int = response.responses[1].response_range.kvs[0].create_revision
        return KeyValue(key, value, created, response.header.revision)

    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> DeleteResult:
        validate_key(self._root, key)
        raw = key.encode()
        if expected_mod_revision is None:
            return await self._delete_one(key)
        request = rpc.TxnRequest(
            compare=_guard(raw, expected_mod_revision),
            success=[
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=raw, prev_kv=True))
            ],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=raw, keys_only=True))],
        )
        response = await self._call("Txn", request, idempotent=False)
        if not response.succeeded:
            self._raise_guard_failure(key, expected_mod_revision, response)
        deleted = response.responses[0].response_delete_range
        return DeleteResult(kv_from_proto(deleted.prev_kvs[0]), response.header.revision)

    async def delete_prefix(self, prefix: str, *, limit: int = 0) -> list[DeleteResult]:
        """Delete every key under ``prefix`` as it is now (the first ``limit`` if > 0),
        one etcd revision per key.

        One ranged etcd delete would give all keys the same revision, which the storage
        interface rules out (each event needs its own revision to resume after). Keys
        created under the prefix while this runs are not deleted.
        """
        validate_prefix(self._root, prefix)
        if limit < 0:
            raise ValueError("limit must not be negative")
        raw = prefix.encode()
        listing = await self._call(
            "Range",
            rpc.RangeRequest(key=raw, range_end=_prefix_end(raw), keys_only=True, limit=limit),
            idempotent=True,
        )
        results = []
        for kv in listing.kvs:
            with contextlib.suppress(NotFound):
                results.append(await self._delete_one(kv.key.decode()))
        return results

    async def _delete_one(self, key: str) -> DeleteResult:
        request = rpc.DeleteRangeRequest(key=key.encode(), prev_kv=True)
        response = await self._call("DeleteRange", request, idempotent=False)
        if not response.deleted:
            raise NotFound(key)
        return DeleteResult(kv_from_proto(response.prev_kvs[0]), response.header.revision)

    def _raise_guard_failure(self, key: str, expected: int, response: Any) -> NoReturn:
        current = response.responses[0].response_range.kvs
        if not current:
            raise NotFound(key)
        raise Conflict(key, expected, current[0].mod_revision)

    # -- watch and history -------------------------------------------------------------

    def watch(self, prefix: str, *, after_revision: int) -> WatchStream:
        validate_prefix(self._root, prefix)
        if after_revision < self._compacted:
            return FailedWatchStream(Expired(after_revision, self._compacted), after_revision)
        if self._mirror is not None:
            served = self._mirror.open_watch(
                prefix,
                after_revision,
                buffer_size=self._watch_buffer_size,
                check=lambda: self._check_not_compacted(after_revision),
            )
            if served is not None:
                self.cache_watches += 1
                self._watches.add(served)
                return served
        try:
            endpoint = self._conn.pick()
        except Unavailable as exc:
            return FailedWatchStream(exc, after_revision)
        raw = prefix.encode()
        stream = EtcdWatchStream(
            endpoint,
            raw,
            _prefix_end(raw),
            after_revision=after_revision,
            progress_interval=self._progress_interval if self._request_progress else 0.0,
            buffer_size=self._watch_buffer_size,
            on_compacted=self._note_compacted,
        )
        self._watches.add(stream)
        return stream

    async def compact(self, revision: int) -> None:
        """Compact etcd at ``revision`` (clamped to the current revision).

        etcd keeps the state *as of* the compaction revision readable and drops the
        history before it, which is what :attr:`compacted_revision` means here too.
        """
        if revision <= self._compacted:
            return
        revision = min(revision, await self.current_revision())
        request = rpc.CompactionRequest(revision=revision)
        try:
            await self._conn.unary("kv", "Compact", request, idempotent=True)
        except grpc.aio.AioRpcError as exc:
            # "required revision has been compacted": someone compacted further already.
            if "compacted" not in (exc.details() or ""):
                raise Unavailable(f"etcd compaction failed: {describe_rpc_error(exc)}") from None
        self._note_compacted(revision)

    def _note_compacted(self, revision: int) -> None:
        if revision > self._compacted:
            self._compacted = revision
            if self._mirror is not None:
                self._mirror.note_compacted(revision)

    async def _compact_forever(self) -> None:
        """The automatic compaction policy (see the class docstring)."""
        samples: collections.deque[tuple[float, int]] = collections.deque()
        while True:
            await asyncio.sleep(self._compaction_interval)
            try:
                await self._compact_turn(samples)
            except StorageError as exc:
                log.warning("etcd compaction skipped: %s", exc)

    async def _compact_turn(self, samples: collections.deque[tuple[float, int]]) -> None:
        now = time.monotonic()
        current = await self.current_revision()
        samples.append((now, current))
        by_age = 0
        while samples and samples[0][0] <= now - self._history_retention:
            by_age = samples.popleft()[1]
        if by_age:
            samples.appendleft((now - self._history_retention, by_age))
        target = max(by_age, current - self._max_history_events)
        if target > self._compacted:
            await self.compact(target)

    # -- plumbing ----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        request: Any,
        *,
        idempotent: bool,
        revision: int = 0,
        budget: float | None = None,
    ) -> Any:
        """A KV call with etcd's errors translated into the storage layer's."""
        try:
            return await self._conn.unary(
                "kv", method, request, idempotent=idempotent, budget=budget
            )
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if "required revision has been compacted" in details:
                # etcd does not say where it compacted; it is above the revision asked for.
                self._note_compacted(revision + 1)
                raise Expired(revision, self._compacted) from None
            if "required revision is a future revision" in details:
                current = 0
                with contextlib.suppress(StorageError):
                    current = await self.current_revision()
                raise FutureRevision(revision, current) from None
            raise Unavailable(f"etcd ({self._conn.urls}): {describe_rpc_error(exc)}") from None


def _page_result(
    state: MirrorState, prefix: str, start_after: str | None, limit: int, revision: int
) -> RangeResult:
    """One page read from the watch cache, with a token etcd would understand too."""
    page = state.range_page(prefix, start_after=start_after, limit=limit, revision=revision)
    token = None
    if page.more and page.kvs:
        token = encode_continue_token(page.revision, page.kvs[-1].key)
    return RangeResult(
        kvs=page.kvs, revision=page.revision, continue_token=token, remaining=page.remaining
    )


def progress_requests_are_safe(version: str) -> bool:
    """Whether etcd ``version`` orders progress replies after pending events."""
    try:
        major, minor, patch = (int(part) for part in version.split("-")[0].split(".")[:3])
    except ValueError:
        return False
    if (major, minor) == (3, 4):
        return patch >= 31
    if (major, minor) == (3, 5):
        return patch >= 13
    return (major, minor) > (3, 5)


def _guard(key: bytes, expected_mod_revision: int) -> list[Any]:
    """Compare: the key exists and was last written at ``expected_mod_revision``."""
    return [
        rpc.Compare(
            key=key, target=rpc.Compare.MOD, result=_EQUAL, mod_revision=expected_mod_revision
        ),
        rpc.Compare(key=key, target=rpc.Compare.CREATE, result=_GREATER, create_revision=0),
    ]


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with ``prefix``"."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])
