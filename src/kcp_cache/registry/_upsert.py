"""Write a key's value computed from its current one, unless it is already stored.

The hierarchy's storage-level writers (the mirror, the ``Cache`` object) all follow one
loop: read, work out the value, skip the write when the bytes are already there (so a
replayed change makes no new revision and no watch event), write guarded by the mod
revision read, and start over if someone wrote in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kcp_cache.storage import AlreadyExists, Conflict, KeyValue, NotFound, Storage, Unavailable

__all__ = ["upsert"]


async def upsert(
    storage: Storage,
    key: str,
    value_for: Callable[[KeyValue | None], bytes],
    *,
    attempts: int = 10,
) -> bool:
    """Store ``value_for(current)`` at *key*; returns whether anything was written.

    Raises ``Unavailable`` if the key kept changing for *attempts* rounds."""
    for _ in range(attempts):
        try:
            current: KeyValue | None = await storage.get(key)
        except NotFound:
            current = None
        value = value_for(current)
        if current is not None and current.value == value:
            return False
        try:
            if current is None:
                await storage.create(key, value)
            else:
                await storage.update(key, value, expected_mod_revision=current.mod_revision)
            return True
        except (AlreadyExists, Conflict, NotFound):
            # Yield before reading again: the write we ran into may still be committing.
            await asyncio.sleep(0.01)
            continue
    raise Unavailable(f"{key} kept changing while it was written")
