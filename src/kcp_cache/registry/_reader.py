"""Reading a resource from storage: pages, the LIST hot loop, errors, revision waits.

kube's ``generic/registry/store.go`` reads through ``storage.Interface``; here that narrow
read side is one object, :class:`Reader`, shared by the verbs (:mod:`._registry`), the
LIST responses (:mod:`._listing`) and the WATCH sessions (:mod:`._watching`) — none of
which needs the others. It maps storage errors to :class:`~._errors.ApiError`s, waits for
revisions a client saw elsewhere, reads pages with read-ahead for filtered LISTs, and runs
the LIST hot loop (:meth:`Reader.filter_render`), which keeps per-item work to a key split
and a byte splice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from kcp_cache.meta import WILDCARD
from kcp_cache.registry._catalog import ResourceInfo
from kcp_cache.registry._continue import bad_continue_start, decode_continue, encode_continue
from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._keys import KeyParts, KeyScheme, ListScope
from kcp_cache.registry._options import EXACT, ListOptions, Target
from kcp_cache.registry._render import decorate, encode_object, splicer
from kcp_cache.registry._selectors import labels_of
from kcp_cache.registry._strategy import validate_namespace
from kcp_cache.storage import (
    AlreadyExists,
    BadContinueToken,
    Conflict,
    Expired,
    FutureRevision,
    InvalidKey,
    KeyValue,
    NotFound,
    Storage,
    StorageError,
    Unavailable,
)

__all__ = ["BATCH", "LIST_TOO_OLD", "PAGE", "Page", "Reader", "render", "render_unstored"]

# Internal page size when a LIST or an initial watch snapshot is read without a limit.
PAGE = 1000
# Items per chunk handed to the HTTP layer (LIST bodies, initial watch events).
BATCH = 256
_T = TypeVar("_T")
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list."
)


@dataclass(slots=True)
class Page:
    items: list[bytes]
    revision: int
    continue_token: str | None
    remaining: int | None


def render_unstored(parts: KeyParts, target: Target, obj: dict[str, Any]) -> bytes:
    """An object as served that was never stored (a dry-run create): no resourceVersion."""
    decorate(obj, parts.shard, parts.cluster, 0)
    del obj["metadata"]["resourceVersion"]
    return encode_object(obj, target.api_version, target.partial)


def render(
    kv: KeyValue, parts: KeyParts, target: Target, obj: dict[str, Any] | None = None
) -> bytes:
    if not target.partial:
        info = target.info
        spliced = splicer(info.storage_api_version, info.kind, target.api_version).render(
            kv.value, parts.shard, parts.cluster, kv.mod_revision
        )
        if spliced is not None:
            return spliced
    if obj is None:
        obj = orjson.loads(kv.value)
    decorate(obj, parts.shard, parts.cluster, kv.mod_revision)
    return encode_object(obj, target.api_version, target.partial)


class Reader:
    """The read side of the registry over one :class:`~kcp_cache.storage.Storage`.

    ``too_large_rv_wait`` is how long a read from a revision the store has not reached
    waits for it before the 504 "Too large resource version".
    """

    def __init__(self, storage: Storage, keys: KeyScheme, *, too_large_rv_wait: float) -> None:
        self.storage = storage
        self.keys = keys
        self.too_large_rv_wait = too_large_rv_wait

    async def call(self, awaitable: Awaitable[_T]) -> _T:
        try:
            return await awaitable
        except FutureRevision as exc:
            raise ApiError.too_large_resource_version(exc.requested, exc.current) from None
        except Unavailable as exc:
            raise ApiError.unavailable(f"storage is unavailable: {exc}") from None

    async def wait_for_revision(self, revision: int) -> int:
        """Wait until the store reached *revision*; returns the current revision.

        Raises the 504 "Too large resource version" after ``too_large_rv_wait`` seconds.
        The store has no "revision reached" notification that works for every engine
        (etcd's revision moves with writes through other servers), so this polls, with a
        short first interval because the common case is a revision only milliseconds away.
        """
        current = await self.call(self.storage.current_revision())
        if current >= revision:
            return current
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.too_large_rv_wait
        interval = 0.005
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(interval, left))
            interval = min(interval * 2, 0.1)
            current = await self.call(self.storage.current_revision())
            if current >= revision:
                return current
        raise ApiError.too_large_resource_version(revision, current)

    def storage_error(self, exc: StorageError, info: ResourceInfo, name: str) -> ApiError:
        if isinstance(exc, NotFound):
            return ApiError.not_found(info, name)
        if isinstance(exc, AlreadyExists):
            return ApiError.already_exists(info, name)
        if isinstance(exc, Conflict):
            return ApiError.conflict(info, name)
        if isinstance(exc, Expired):
            return ApiError.expired(LIST_TOO_OLD)
        if isinstance(exc, FutureRevision):
            return ApiError.too_large_resource_version(exc.requested, exc.current)
        if isinstance(exc, Unavailable):
            return ApiError.unavailable(f"storage is unavailable: {exc}")
        if isinstance(exc, BadContinueToken):
            # The kube token's envelope decoded, but the storage position inside it is
            # forged or damaged: the client's error, worded as kube's bad tokens are.
            return bad_continue_start()
        if isinstance(exc, InvalidKey) and name:
            # A name no key can hold (e.g. ".." in a URL): no such object can exist.
            return ApiError.not_found(info, name)
        return ApiError.internal(str(exc))

    def list_scope(self, target: Target) -> ListScope:
        return self.keys.list_scope(
            target.info, target.shard, target.cluster, target.namespace, target.identity
        )

    def check_namespace(self, target: Target) -> None:
        if target.info.namespaced and target.namespace:
            validate_namespace(target.info, target.namespace)

    def filter_render(
        self,
        kvs: list[KeyValue],
        target: Target,
        opts: ListOptions,
        scope: ListScope,
        max_items: int = 0,
    ) -> tuple[list[bytes], int]:
        """Matching objects rendered, and how many of ``kvs`` were looked at (all, unless
        ``max_items`` matches were found first)."""
        # The hot loop of LIST: keep per-item work to a key split and a byte splice.
        prefix = scope.resource_prefix
        plen = len(prefix)
        info = target.info
        segments = 4 if info.namespaced else 3
        fast = (
            None
            if target.partial
            else splicer(info.storage_api_version, info.kind, target.api_version)
        )
        check_scope = scope.filtered
        fields = None if opts.fields.empty else opts.fields
        labels = None if opts.labels.empty else opts.labels
        out: list[bytes] = []
        append = out.append
        for index, kv in enumerate(kvs):
            if max_items and len(out) >= max_items:
                return out, index
            rest = kv.key[plen:].split("/")
            if len(rest) != segments:
                if len(rest) == segments + 1 and not info.builtin:
                    rest = rest[1:]  # all-origins prefix: skip the origin segment
                else:
                    continue  # not an object key of this resource (defensive)
            if check_scope or fields is not None:
                parts = KeyParts(rest[0], rest[1], rest[2] if segments == 4 else None, rest[-1])
                if check_scope and not scope.matches(parts):
                    continue
                if fields is not None and not fields.matches(parts.name, parts.namespace):
                    continue
            obj = None
            if labels is not None:
                obj = orjson.loads(kv.value)
                if not labels.matches(labels_of(obj)):
                    continue
            if fast is not None:
                data = fast.render(kv.value, rest[0], rest[1], kv.mod_revision)
                if data is not None:
                    append(data)
                    continue
            parts = KeyParts(rest[0], rest[1], rest[2] if segments == 4 else None, rest[-1])
            append(render(kv, parts, target, obj))
        return out, len(kvs)

    async def read_page(
        self,
        target: Target,
        opts: ListOptions,
        *,
        first: bool,
        storage_token: str | None = None,
    ) -> tuple[Page, str | None]:
        """One response page (``limit``) or one internal page of an unlimited LIST.

        A filtered page stops at the ``limit``-th match, possibly in the middle of a
        storage page; its continue token then names that storage page and how many of
        its keys were consumed, so the next page resumes exactly after the last item
        returned (kube's token names the last key; the storage token is opaque).
        """
        info = target.info
        self.check_namespace(target)
        scope = self.list_scope(target)
        revision = 0
        skip = 0
        continuing = storage_token is not None
        client_token = first and bool(opts.continue_token)
        if client_token:
            token = decode_continue(opts.continue_token)
            storage_token = token.start or None
            revision, skip = token.revision, token.skip
            continuing = True
        elif first and opts.revision:
            await self.wait_for_revision(opts.revision)
            exact = opts.resource_version_match == EXACT or (
                opts.resource_version_match == "" and opts.limit > 0
            )
            if exact:
                revision = opts.revision
        paged = opts.limit > 0
        prefix = _narrowed_prefix(target, scope, opts)
        filtering = scope.filtered or opts.filtered
        items: list[bytes] = []
        remaining: int | None = None
        next_token: str | None = None  # the kube token for the page after this one
        chunk = opts.limit
        while True:
            want = opts.limit - len(items) if paged else PAGE
            # Unfiltered pages end exactly where the storage page ends. Filtered ones read
            # ahead, doubling while matches are sparse (as kube does), and may stop early.
            fetch = skip + (max(want, chunk) if paged and filtering else want)
            chunk = min(chunk * 2, max(opts.limit, PAGE))
            try:
                result = await self.storage.range(
                    prefix, limit=fetch, continue_token=storage_token, revision=revision
                )
            except Expired:
                raise ApiError.expired(_CONTINUE_TOO_OLD if continuing else LIST_TOO_OLD) from None
            except FutureRevision:
                if client_token:  # no token this server issued names a future revision
                    raise bad_continue_start() from None
                raise
            except StorageError as exc:
                raise self.storage_error(exc, info, "") from None
            revision = result.revision
            continuing = True
            found, consumed = self.filter_render(
                result.kvs[skip:], target, opts, scope, want if paged else 0
            )
            items.extend(found)
            consumed += skip
            skip = 0
            if paged and len(items) >= opts.limit and consumed < len(result.kvs):
                # Stopped mid-page: resume this same storage page past what we consumed.
                next_token = encode_continue(revision, storage_token, consumed)
                if not filtering and result.remaining is not None:
                    remaining = result.remaining + len(result.kvs) - consumed
                return Page(items, revision, next_token, remaining), None
            storage_token = result.continue_token
            remaining = None if filtering else result.remaining
            if not paged or storage_token is None or len(items) >= opts.limit:
                break
        if paged and storage_token is not None:
            next_token = encode_continue(revision, storage_token)
        return Page(items, revision, next_token, remaining), storage_token


def _narrowed_prefix(target: Target, scope: ListScope, opts: ListOptions) -> str:
    """The range prefix, narrowed to one name when a field selector pins it.

    ``metadata.name=x`` on a concrete shard/cluster (and namespace, if namespaced) is how
    informers watch a single object; ranging over ``…/x`` instead of the whole cluster
    makes it a point read (the field selector still drops ``…/x2`` and the like).
    """
    name = opts.fields.exact("metadata.name")
    if not name or scope.filtered or WILDCARD in (target.shard, target.cluster):
        return scope.prefix
    if target.info.namespaced and not target.namespace:
        return scope.prefix
    if "/" in name or name in (".", "..") or "\x00" in name:
        return scope.prefix
    return scope.prefix + name
