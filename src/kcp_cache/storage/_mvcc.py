"""The committed state of an embedded engine: current key-values plus a bounded history.

Both embedded engines (memory, SQLite) keep their whole committed state here, in memory:
the current value of every key in a :class:`~sortedcontainers.SortedDict` (so a prefix
range is a slice) and every event since the compacted revision in a list indexed by
revision. Reads never touch the disk and never block the event loop; the SQLite engine
only *writes* through to its file and reloads this state at start-up.

Invariant: ``history[i].revision == compacted + 1 + i`` and
``len(history) == revision - compacted``, because every write is exactly one revision.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from sortedcontainers import SortedDict

from kcp_cache.storage._errors import Expired, FutureRevision
from kcp_cache.storage._keys import prefix_end
from kcp_cache.storage._types import Event, EventType, KeyValue

__all__ = [
    "CHANGE_CACHE_SIZE",
    "MVCCState",
    "Page",
    "PrefixChanges",
    "fold_changes",
    "range_current",
    "range_past",
    "remember_changes",
]

# How many "what changed under this prefix since revision R" maps to keep for paginated
# reads at a past revision. Each is extended incrementally as writes arrive.
CHANGE_CACHE_SIZE = 16


@dataclass(slots=True)
class Page:
    """One page of a range, before it is turned into a public ``RangeResult``."""

    kvs: list[KeyValue]
    revision: int
    more: bool
    remaining: int | None


@dataclass(slots=True)
class PrefixChanges:
    """Values at a revision of the keys under a prefix that changed after it.

    ``scanned`` is how far the owner's event history has been folded in (each owner counts
    in its own unit: a revision, or a position in its history).
    """

    scanned: int
    at_revision: dict[str, KeyValue | None] = field(default_factory=dict)
    sorted_keys: list[str] | None = None


def fold_changes(changes: PrefixChanges, events: Iterable[Event], prefix: str) -> None:
    """Record, for each key under *prefix* first changed by one of *events*, its value
    before (the ``prev_kv`` of the first such event)."""
    at_revision = changes.at_revision
    before = len(at_revision)
    for event in events:
        key = event.kv.key
        if key.startswith(prefix) and key not in at_revision:
            at_revision[key] = event.prev_kv
    if len(at_revision) != before:
        changes.sorted_keys = None


def remember_changes(
    cache: dict[tuple[int, str], PrefixChanges], key: tuple[int, str], changes: PrefixChanges
) -> None:
    """Put *changes* into the LRU *cache* as most recently used (bounded)."""
    cache.pop(key, None)
    cache[key] = changes
    while len(cache) > CHANGE_CACHE_SIZE:
        del cache[next(iter(cache))]


def range_current(
    current: SortedDict, prefix: str, start_after: str | None, limit: int, revision: int
) -> Page:
    """A page of the keys under *prefix* (after *start_after*) of the state *current*."""
    lo = current.bisect_left(prefix) if start_after is None else current.bisect_right(start_after)
    hi = current.bisect_left(prefix_end(prefix))
    stop = hi if limit <= 0 else min(hi, lo + limit)
    kvs: list[KeyValue] = current.values()[lo:stop] if stop > lo else []
    return Page(kvs=kvs, revision=revision, more=stop < hi, remaining=hi - stop)


def range_past(
    current: SortedDict,
    changes: PrefixChanges,
    prefix: str,
    start_after: str | None,
    limit: int,
    revision: int,
) -> Page:
    """A page as of *revision*: *current*, with the keys in *changes* as they were then."""
    if changes.sorted_keys is None:
        changes.sorted_keys = sorted(changes.at_revision)
    changed_keys = changes.sorted_keys
    at_revision = changes.at_revision
    end = prefix_end(prefix)
    if start_after is None:
        live: Iterator[str] = current.irange(prefix, end, inclusive=(True, False))
        first_changed = bisect.bisect_left(changed_keys, prefix)
    else:
        live = current.irange(start_after, end, inclusive=(False, False))
        first_changed = bisect.bisect_right(changed_keys, start_after)
    # Keys untouched since `revision` have their current value; changed ones the
    # value they had then (None: did not exist then).
    unchanged = (k for k in live if k not in at_revision)
    merged = heapq.merge(unchanged, itertools.islice(changed_keys, first_changed, None))
    kvs: list[KeyValue] = []
    for key in merged:
        kv = at_revision[key] if key in at_revision else current[key]
        if kv is None:
            continue
        if 0 < limit <= len(kvs):
            return Page(kvs=kvs, revision=revision, more=True, remaining=None)
        kvs.append(kv)
    return Page(kvs=kvs, revision=revision, more=False, remaining=0)


class MVCCState:
    """Committed key-values, the retained event history and the compaction mark."""

    def __init__(self) -> None:
        self.current: SortedDict = SortedDict()
        self.history: list[Event] = []
        self.revision = 0
        self.compacted = 0
        # (last revision of a committed batch, wall-clock time it was committed); used by
        # the time-based compaction policy. Coarse on purpose: one entry per batch.
        self.commit_times: deque[tuple[int, float]] = deque()
        self._changes: dict[tuple[int, str], PrefixChanges] = {}

    # -- loading and applying --------------------------------------------------------

    def load(
        self,
        current: Mapping[str, KeyValue],
        history: list[Event],
        *,
        revision: int,
        compacted: int,
        now: float,
    ) -> None:
        """Replace the state with one read back from disk (start-up).

        ``current`` maps each key to its value, in any order: SortedDict sorts the keys
        once (≈ 0.6 s of CPU for 1M keys), cheaper than sorting them beforehand and
        building a second, ordered dict (≈ 1.3 s).
        """
        self.current = SortedDict(current)
        self.history = history
        self.revision = revision
        self.compacted = compacted
        self.commit_times = deque([(revision, now)]) if revision > compacted else deque()
        self._changes.clear()
        if len(history) != revision - compacted or (
            history and history[0].revision != compacted + 1
        ):
            raise ValueError(
                f"history has a gap: {len(history)} events for revisions "
                f"{compacted + 1}..{revision}"
            )

    def apply(self, events: list[Event], now: float) -> None:
        """Make a persisted batch the committed state (events are in revision order)."""
        current = self.current
        for event in events:
            if event.type is EventType.PUT:
                current[event.kv.key] = event.kv
            else:
                del current[event.kv.key]
        self.history.extend(events)
        self.revision = events[-1].revision
        self.commit_times.append((self.revision, now))

    # -- reads -----------------------------------------------------------------------

    def check_revision(self, revision: int) -> None:
        """Raise unless the state as of ``revision`` can still be reconstructed."""
        if revision < self.compacted:
            raise Expired(revision, self.compacted)
        if revision > self.revision:
            raise FutureRevision(revision, self.revision)

    def range_page(
        self, prefix: str, *, start_after: str | None, limit: int, revision: int
    ) -> Page:
        """Keys under ``prefix`` (after ``start_after``) as of ``revision`` (0: current)."""
        if revision == 0 or revision == self.revision:
            return self._range_current(prefix, start_after, limit)
        self.check_revision(revision)
        return self._range_past(prefix, start_after, limit, revision)

    def _range_current(self, prefix: str, start_after: str | None, limit: int) -> Page:
        return range_current(self.current, prefix, start_after, limit, self.revision)

    def _range_past(self, prefix: str, start_after: str | None, limit: int, revision: int) -> Page:
        changes = self._changes_since(revision, prefix)
        return range_past(self.current, changes, prefix, start_after, limit, revision)

    def _changes_since(self, revision: int, prefix: str) -> PrefixChanges:
        # ``scanned`` counts revisions here.
        cache_key = (revision, prefix)
        changes = self._changes.get(cache_key) or PrefixChanges(scanned=revision)
        if changes.scanned < self.revision:
            fold_changes(changes, self.events_after(changes.scanned), prefix)
            changes.scanned = self.revision
        remember_changes(self._changes, cache_key, changes)
        return changes

    def events_after(self, revision: int) -> Iterator[Event]:
        """Retained events with a revision greater than ``revision`` (not below compacted)."""
        return itertools.islice(self.history, max(0, revision - self.compacted), None)

    def event_at(self, revision: int) -> Event:
        """The event of ``revision`` (compacted < revision <= current revision)."""
        return self.history[revision - self.compacted - 1]

    # -- compaction ------------------------------------------------------------------

    def compact(self, revision: int) -> list[Event]:
        """Drop history at or below ``revision`` (clamped to the current revision).

        Returns the dropped events (none if already compacted that far).
        """
        revision = min(revision, self.revision)
        if revision <= self.compacted:
            return []
        dropped = self.history[: revision - self.compacted]
        del self.history[: revision - self.compacted]
        self.compacted = revision
        while self.commit_times and self.commit_times[0][0] <= revision:
            self.commit_times.popleft()
        for cache_key in [k for k in self._changes if k[0] < revision]:
            del self._changes[cache_key]
        return dropped

    def compaction_target(self, *, now: float, retention: float, max_events: int) -> int:
        """The revision the automatic policy would compact to (``compacted`` if none).

        Keeps every event younger than ``retention`` seconds, and at most ``max_events``.
        """
        target = max(self.compacted, self.revision - max_events)
        cutoff = now - retention
        for last_revision, committed_at in self.commit_times:
            if committed_at > cutoff:
                break
            target = max(target, last_revision)
        return min(target, self.revision)
