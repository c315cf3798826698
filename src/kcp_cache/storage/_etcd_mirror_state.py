"""The in-memory copy of an etcd prefix: current key-values and the recent history.

Like :class:`~kcp_cache.storage._mvcc.MVCCState`, but for a store whose revisions are
not ours: etcd's revision counts writes to every key of the cluster, so the events of
one prefix have gaps between their revisions (and one multi-key transaction gives
several events one revision). The state is therefore indexed by *event position*, with
a parallel list of revisions to bisect, and it knows two marks:

* ``revision``: the state is etcd's state under the prefix as of this revision (the
  watch feeding it has delivered every event at or below it);
* ``floor``: the oldest revision whose state can still be rebuilt from the retained
  history (the revision of the initial snapshot, or where old history was dropped).

A read at any revision in ``[floor, revision]`` is served from memory; others are not
this state's to answer (the caller asks etcd).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable

from sortedcontainers import SortedDict

from kcp_cache.storage._mvcc import (
    Page,
    PrefixChanges,
    fold_changes,
    range_current,
    range_past,
    remember_changes,
)
from kcp_cache.storage._types import Event, EventType, KeyValue

__all__ = ["MirrorState"]


class MirrorState:
    """Key-values under a prefix as of :attr:`revision`, with history back to :attr:`floor`."""

    def __init__(self, kvs: Iterable[KeyValue], *, revision: int) -> None:
        """Start from a snapshot: ``kvs`` are every key under the prefix at ``revision``."""
        self.current: SortedDict = SortedDict((kv.key, kv) for kv in kvs)
        self.revision = revision
        self.floor = revision
        self.history: list[Event] = []
        self._revisions: list[int] = []
        self._dropped = 0  # events dropped from the front (absolute position offset)
        self._changes: dict[tuple[int, str], PrefixChanges] = {}

    def __len__(self) -> int:
        return len(self.current)

    # -- feeding ---------------------------------------------------------------------

    def apply(self, event: Event) -> Event:
        """Apply one watched event (revision order); returns it with ``prev_kv`` filled.

        It does not move :attr:`revision`: one etcd revision may be several events, and
        only the watch knows when all of them arrived (:meth:`advance`).

        The watch feeding the mirror does not ask etcd for previous values: this state
        holds them already, and a DELETE takes its create revision from them.
        """
        key = event.kv.key
        prev = self.current.get(key)
        if event.type is EventType.PUT:
            kv = event.kv
            self.current[key] = kv
        else:
            if prev is None:  # not ours to know (cannot happen with a complete mirror)
                return event
            del self.current[key]
            kv = KeyValue(key, b"", prev.create_revision, event.kv.mod_revision)
        completed = Event(event.type, kv, prev)
        self.history.append(completed)
        self._revisions.append(kv.mod_revision)
        return completed

    def advance(self, revision: int) -> None:
        """Every event under the prefix up to ``revision`` has been applied."""
        self.revision = max(self.revision, revision)

    def trim(self, *, below: int, max_events: int) -> None:
        """Drop history at or below ``below``, and beyond the newest ``max_events``."""
        cut = bisect.bisect_right(self._revisions, below)
        if len(self.history) - cut > max_events:
            cut = len(self.history) - max_events
            # Never split one revision's events: the floor must be a whole state.
            cut = bisect.bisect_right(self._revisions, self._revisions[cut - 1]) if cut else 0
        if cut <= 0:
            if below > self.floor:
                self.floor = min(below, self.revision)
            return
        new_floor = self._revisions[cut - 1]
        del self.history[:cut]
        del self._revisions[:cut]
        self._dropped += cut
        self.floor = max(self.floor, new_floor, min(below, self.revision))
        for cache_key in [k for k in self._changes if k[0] < self.floor]:
            del self._changes[cache_key]

    # -- reads -----------------------------------------------------------------------

    def holds(self, revision: int) -> bool:
        """Whether the state as of ``revision`` can be read here."""
        return self.floor <= revision <= self.revision

    def events_after(self, revision: int, prefix: str) -> list[Event]:
        """Retained events under ``prefix`` with a revision above ``revision``."""
        start = self._first_after(revision)
        return [
            e for e in itertools.islice(self.history, start, None) if e.kv.key.startswith(prefix)
        ]

    def get(self, key: str) -> KeyValue | None:
        kv: KeyValue | None = self.current.get(key)
        return kv

    def range_page(
        self, prefix: str, *, start_after: str | None, limit: int, revision: int
    ) -> Page:
        """Keys under ``prefix`` after ``start_after`` as of ``revision`` (must be held)."""
        if revision == self.revision:
            return self._range_current(prefix, start_after, limit)
        assert self.holds(revision), (revision, self.floor, self.revision)
        if self._first_after(revision) == len(self.history):
            # No event since: the current state *is* the state at that revision.
            page = self._range_current(prefix, start_after, limit)
            page.revision = revision
            return page
        return self._range_past(prefix, start_after, limit, revision)

    def _range_current(self, prefix: str, start_after: str | None, limit: int) -> Page:
        return range_current(self.current, prefix, start_after, limit, self.revision)

    def _range_past(self, prefix: str, start_after: str | None, limit: int, revision: int) -> Page:
        changes = self._changes_since(revision, prefix)
        return range_past(self.current, changes, prefix, start_after, limit, revision)

    def _first_after(self, revision: int) -> int:
        """Position in ``history`` of the first event with a revision above ``revision``."""
        return bisect.bisect_right(self._revisions, revision)

    def _changes_since(self, revision: int, prefix: str) -> PrefixChanges:
        # ``scanned`` is an absolute event position here (exclusive): history is trimmed
        # from the front, ``_dropped`` events so far.
        cache_key = (revision, prefix)
        changes = self._changes.get(cache_key) or PrefixChanges(
            scanned=self._dropped + self._first_after(revision)
        )
        end = self._dropped + len(self.history)
        if changes.scanned < end:
            start = changes.scanned - self._dropped
            fold_changes(changes, itertools.islice(self.history, start, None), prefix)
            changes.scanned = end
        remember_changes(self._changes, cache_key, changes)
        return changes
