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

    @abc.abstractmethod
    async def compact(self, revision: int, previous: int, dropped: list[Event]) -> None:
        """Forget persisted history at or below ``revision``.

        ``dropped`` are the events the in-memory history just dropped (those in
        ``(previous, revision]``); the committed state is the one after them.
        """
