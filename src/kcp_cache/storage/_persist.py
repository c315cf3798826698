"""What an embedded engine needs from its durable backend (or from none at all)."""

from __future__ import annotations

import abc

from kcp_cache.storage._types import Event

__all__ = ["Persister"]


class Persister(abc.ABC):
    """Writes committed batches somewhere durable.

    A *synchronous* persister (the memory engine's, which writes nowhere) is applied
    inside the write call itself; an asynchronous one is awaited with at most one batch
    in flight, which is what makes concurrent writes group-commit.
    """

    synchronous: bool = False

    def write_batch_now(self, events: list[Event]) -> None:
        """Persist ``events`` at once (only called when :attr:`synchronous`)."""
        raise NotImplementedError

    async def write_batch(self, events: list[Event]) -> None:
        """Persist ``events`` (in revision order) atomically; raise on failure."""
        raise NotImplementedError

    async def probe(self) -> None:
        """Raise unless a write could be persisted now; after a failed batch, the group
        committer calls this until it returns, to know the store is writable again.

        The default is for a persister that cannot fail (the memory engine's).
        """
        return None

    @abc.abstractmethod
    async def compact(self, revision: int, previous: int, dropped: list[Event]) -> None:
        """Forget persisted history at or below ``revision``.

        ``dropped`` are the events the in-memory history just dropped (those in
        ``(previous, revision]``); the committed state is the one after them.
        """
