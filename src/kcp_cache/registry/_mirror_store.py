"""Applying a parent's feed to this cache's store: the storage side of the mirror.

Mirrored entries are written at storage level: the value bytes arrive and are stored as
they are, only the revision (hence the resourceVersion) is this cache's. So one cache
has one revision space for its home and its mirrored data, and a LIST or WATCH of ``*``
is consistent at any single cache.

What is mirrored is *marked* by where it lives: keys of shards homed elsewhere, which
HTTP writes here are refused for (:mod:`._home`). Keys homed at this cache and keys
that never leave a cache are skipped, so nothing loops back down. ``policy``
(``Cache.spec.import``) says which of the rest are mirrored: an object it does not
want is removed here (so one that loses a selected label upstream goes), and
:meth:`MirrorStore.sweep_unimported` removes what a narrowed policy no longer wants.
The cache-owned objects (``system:cache:server``) always flow: every cache's home map
is made of them.

The cursor — the parent revision up to which everything was applied — is kept under an
internal key (``<prefix>_hierarchy/mirror``, outside every resource's prefix), written
at most once per :data:`CURSOR_SAVE_INTERVAL`, so a restart resumes from it; re-applying
a few events after a crash is harmless because a PUT of the bytes already stored is
skipped and a DELETE of a missing key is a no-op.

``CacheShard`` objects come down like the root's data, except that a copy changed here
and not yet forwarded is kept against the parent version it was made on
(:func:`~._shard_sync.mirror_takes`), and the home map takes each one in as soon as it
is stored — in the parent's order, so a shard's new home switches exactly after the
data that preceded the switch. Data of a decommissioned shard is not stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from kcp_cache.meta import CACHE_OWNED_SHARD, ResourcePolicy
from kcp_cache.registry._home import CACHE_SHARD_KEYS, LOCAL_ONLY, HomeMap, key_shard
from kcp_cache.registry._shard_sync import changed_here, mirror_value
from kcp_cache.registry._upsert import upsert
from kcp_cache.storage import Conflict, KeyValue, NotFound, Storage

__all__ = ["CURSOR_SAVE_INTERVAL", "MirrorStore"]

CURSOR_SAVE_INTERVAL: Final = 1.0
_ATTEMPTS: Final = 5


class MirrorStore:
    """The sink of :class:`kcp_cache.replication.Mirror`: applies feed events here."""

    def __init__(
        self,
        storage: Storage,
        home: HomeMap,
        parent_url: str,
        policy: ResourcePolicy | None = None,
    ) -> None:
        self.storage = storage
        self.policy = policy or ResourcePolicy()
        self.home = home
        self.parent_url = parent_url
        self.cursor_key = f"{storage.prefix}_hierarchy/mirror"
        self._state: dict[str, Any] = {"revision": 0, "resyncs": 0}
        self._saved_at = 0.0
        self._saved_revision = -1
        self._snapshot_keys: set[str] | None = None
        self.applied = 0

    # -- cursor ------------------------------------------------------------------------

    async def load_cursor(self) -> int:
        """The persisted cursor (0: never synced, or synced from another parent)."""
        try:
            kv = await self.storage.get(self.cursor_key)
        except NotFound:
            return 0
        state = orjson.loads(kv.value)
        if state.get("parent") != self.parent_url:
            state["revision"] = 0  # another parent's revisions mean nothing here
        self._state = state
        return int(state.get("revision", 0))

    @property
    def resyncs(self) -> int:
        return int(self._state.get("resyncs", 0))

    async def save_cursor(self, revision: int, *, force: bool = False) -> None:
        """Remember *revision* (throttled unless *force*)."""
        self._state["revision"] = revision
        self._state["parent"] = self.parent_url
        now = time.monotonic()
        if not force and (
            now - self._saved_at < CURSOR_SAVE_INTERVAL or revision == self._saved_revision
        ):
            return
        self._saved_at, self._saved_revision = now, revision
        await self._put(self.cursor_key, orjson.dumps(self._state))

    # -- events ------------------------------------------------------------------------

    def _mirrors(self, relative_key: str) -> bool:
        owner = self.home.home_of_key(relative_key)
        return owner != LOCAL_ONLY and not self.home.in_subtree(owner, self.home.name)

    async def begin_snapshot(self, *, resync: bool) -> None:
        """A snapshot starts; *resync* when it replaces a cursor the parent compacted."""
        self._snapshot_keys = set()
        if resync:
            self._state["resyncs"] = self.resyncs + 1

    def imports(self, relative_key: str, value: bytes | None) -> bool:
        """Whether the import policy wants the stored object *value* of the key
        (``None``: whether it wants any object of the key's type)."""
        policy = self.policy
        if policy.everything or key_shard(relative_key) == CACHE_OWNED_SHARD:
            return True
        group, resource = relative_key.split("/", 2)[:2]
        if not policy.covers(group, resource):
            return False
        if value is None:
            return True
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            return False
        return isinstance(obj, dict) and policy.wants(group, resource, obj)

    async def put(self, relative_key: str, value: bytes) -> None:
        if not self._mirrors(relative_key):
            return
        if not self.imports(relative_key, value):
            # Not imported. An object of an imported type that stopped matching its
            # rule's selector goes; in a snapshot the sweep at its end does that.
            if self._snapshot_keys is None and self.imports(relative_key, None):
                await self.delete(relative_key)
            return
        if self._snapshot_keys is not None:
            self._snapshot_keys.add(relative_key)
        if relative_key.startswith(CACHE_SHARD_KEYS):
            await self._put_cache_shard(relative_key, value)
            return
        if self.home.is_fenced(key_shard(relative_key)):
            return  # decommissioned: what still arrives of it is late
        await self._put(self.storage.prefix + relative_key, value)
        self.applied += 1

    async def _put_cache_shard(self, relative_key: str, value: bytes) -> None:
        def value_for(current: KeyValue | None) -> bytes:
            return mirror_value(current.value if current is not None else None, value)

        await upsert(self.storage, self.storage.prefix + relative_key, value_for,
                     attempts=_ATTEMPTS)  # fmt: skip
        self.applied += 1
        kv = await self.storage.get(self.storage.prefix + relative_key)
        self.home.observe_cache_shard(relative_key.rsplit("/", 1)[-1], kv.value)

    async def delete(self, relative_key: str) -> None:
        if not self._mirrors(relative_key):
            return
        try:
            await self.storage.delete(self.storage.prefix + relative_key)
            self.applied += 1
        except NotFound:
            pass
        if relative_key.startswith(CACHE_SHARD_KEYS):
            self.home.observe_cache_shard(relative_key.rsplit("/", 1)[-1], None)

    async def end_snapshot(self, revision: int) -> int:
        """Sweep: delete mirrored keys the snapshot did not have. Returns how many."""
        keys, self._snapshot_keys = self._snapshot_keys or set(), None

        def unsent(relative: str, value: bytes) -> bool:
            # A CacheShard changed here waits for the root's answer, not for a snapshot.
            return relative not in keys and not (
                relative.startswith(CACHE_SHARD_KEYS) and changed_here(value)
            )

        swept = await self._sweep(unsent)
        await self.save_cursor(revision, force=True)
        return swept

    async def sweep_unimported(self) -> int:
        """Delete the mirrored keys the import policy no longer wants; returns how many."""
        return await self._sweep(lambda relative, value: not self.imports(relative, value))

    async def _sweep(self, doomed: Callable[[str, bytes], bool]) -> int:
        """Delete every mirrored key for which *doomed* (relative key, value) holds, each
        only if unchanged since it was read; returns how many went."""
        prefix = self.storage.prefix
        swept = 0
        token: str | None = None
        while True:
            page = await self.storage.range(prefix, limit=500, continue_token=token)
            for kv in page.kvs:
                relative = kv.key[len(prefix) :]
                if self._mirrors(relative) and doomed(relative, kv.value):
                    try:
                        await self.storage.delete(kv.key, expected_mod_revision=kv.mod_revision)
                        swept += 1
                    except (NotFound, Conflict):
                        pass
            token = page.continue_token
            if token is None:
                return swept

    async def _put(self, key: str, value: bytes) -> None:
        await upsert(self.storage, key, lambda _current: value, attempts=_ATTEMPTS)
