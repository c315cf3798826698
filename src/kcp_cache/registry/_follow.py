"""Following one storage prefix: list it, then watch it from the list's revision.

The registry keeps two views of objects it needs at every request — the replicated
ClusterCachedResources (identity resources, spec §9) and the CRDs added at run time — in
memory, current with the store. Both are a client-go reflector in miniature: a paginated
list at one revision, a watch from that revision, and on a watch error (history
compacted, storage unavailable) a fresh list after a short pause. :class:`PrefixFollower`
is that loop; a subclass says what a listing and an event mean for its view.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from typing import Final

from kcp_cache.storage import Expired, KeyValue, Storage, StorageError

__all__ = ["PrefixFollower"]

log = logging.getLogger(__name__)

_RELIST_PAUSE: Final = 0.5
_PAGE: Final = 500


class PrefixFollower(abc.ABC):
    """Keeps a view of the keys under *prefix* current; see the module docstring.

    :meth:`start` returns once the first listing is loaded (:attr:`synced` is set);
    :meth:`close` stops following. *what* names the view in log lines.
    """

    def __init__(self, storage: Storage, prefix: str, *, what: str) -> None:
        self._storage = storage
        self._prefix = prefix
        self._what = what
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    @abc.abstractmethod
    def _replace(self, kvs: list[KeyValue]) -> None:
        """Make the view exactly *kvs* (a complete listing of the prefix)."""

    def _apply(self, key: str, value: bytes | None) -> None:
        """One watch event: *key* now holds *value* (``None``: deleted). Override this,
        or :meth:`_apply_event` for views that need the revision too."""
        raise NotImplementedError

    def _apply_event(self, kv: KeyValue) -> None:
        """One watch event with its revision (``kv.value`` empty: deleted); by default
        :meth:`_apply`, for views that need only the bytes."""
        self._apply(kv.key, kv.value if kv.value else None)

    async def start(self) -> None:
        """List, then watch in the background; returns once the first list is loaded."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        await self.synced.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                revision = await self._relist()
                self.synced.set()
                stream = self._storage.watch(self._prefix, after_revision=revision)
                try:
                    async for event in stream:
                        self._apply_event(event.kv)
                finally:
                    await stream.close()
            except asyncio.CancelledError:
                raise
            except (Expired, StorageError) as exc:
                log.warning("%s watch ended (%s); relisting", self._what, exc)
                await asyncio.sleep(_RELIST_PAUSE)

    async def _relist(self) -> int:
        kvs: list[KeyValue] = []
        token: str | None = None
        revision = 0
        while True:
            page = await self._storage.range(
                self._prefix, limit=_PAGE, continue_token=token, revision=revision
            )
            revision = page.revision
            kvs.extend(page.kvs)
            token = page.continue_token
            if token is None:
                break
        self._replace(kvs)
        return revision
