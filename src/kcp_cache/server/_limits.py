"""Limits at the connection: deadlines, connection caps, and the accounting of every hit.

Anyone who can open a TCP connection to the cache server — anonymous included — must not
be able to hold it: what Go's ``http.Server`` and kube-apiserver give their operators is
rebuilt here for our TLS-under-uvicorn stack.

* :class:`ConnectionLimits` — the configured values (``kcp-cache-server`` flags).
* :class:`ConnectionTracker` — every accepted connection, in one of four phases
  (TLS handshake, reading request headers, running a request, keep-alive idle). One
  periodic sweep enforces the handshake and header deadlines: each phase keeps its
  connections in an insertion-ordered dict keyed by connection with the time the phase
  began, so the oldest is always first and a sweep looks only at expired entries — no
  timer per connection (thousands of idle watches are held). The same order picks the
  longest-waiting unauthenticated connection to close when a cap is reached.
* :class:`LimitEvents` — counts each limit hit for ``/metrics`` and logs it, at most once
  per interval per limit (a flood must not turn into a log flood).

Connections running a request (a watch stream, a LIST) are in no dict: they are the ones
the limits protect, and the in-flight request limits deal with them.
"""

from __future__ import annotations

import itertools
import logging
import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "ConnectionLimits",
    "ConnectionTracker",
    "LimitEvents",
    "TrackedConnection",
    "raise_descriptor_limit",
]

log = logging.getLogger("kcp_cache.server.limits")

#: Phases of a tracked connection (``TrackedConnection.limit_phase``).
GONE: Final = -1
HANDSHAKE: Final = 0
HEADERS: Final = 1
ACTIVE: Final = 2
IDLE: Final = 3

#: Limits whose hits are routine (keep-alive clients that went quiet): counted, logged
#: at debug level only.
_ROUTINE: Final = frozenset({"idle-timeout"})
#: Unauthenticated connections looked at per eviction in a phase dict that also holds
#: authenticated ones (bounded, so a cap hit never walks thousands of entries).
_EVICTION_SCAN: Final = 256


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection limits; zero for a cap means no cap.

    The defaults are kube-apiserver's where it has one (32 s for request headers, 90 s
    keep-alive idle, 1 MiB of headers) and Go's TLS handshake timeout of 10 s.
    """

    handshake_timeout: float = 10.0
    #: From the end of the handshake (or the first byte of a later request) to the end
    #: of the request headers.
    request_header_timeout: float = 32.0
    #: Keep-alive: how long a connection may wait for its next request.
    idle_timeout: float = 90.0
    #: Request line plus all header lines; beyond it the answer is 431.
    max_header_bytes: int = 1 << 20
    max_header_count: int = 500
    #: The request target (the URL); beyond it the answer is 414.
    max_request_line: int = 64 * 1024
    max_connections: int = 0
    #: Connections without a verified client certificate (including those still in the
    #: TLS handshake, whose identity is not known yet).
    max_unauthenticated_connections: int = 0

    def sweep_interval(self) -> float:
        """How often deadlines are checked: a quarter of the shortest, 50 ms to 1 s."""
        shortest = min(self.handshake_timeout, self.request_header_timeout)
        return min(1.0, max(0.05, shortest / 4))


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise ``RLIMIT_NOFILE``'s soft limit to the hard limit; returns ``(soft, hard)``.

    Every held connection is a descriptor; the soft limit (often 1,024) would otherwise
    be the real connection cap, reached with resets and nothing logged.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard_value = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < hard_value:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard_value, hard))
            soft = hard_value
        except (ValueError, OSError) as exc:  # a container may refuse; keep the old one
            log.warning("cannot raise the open-file limit to %d: %s", hard_value, exc)
    soft_value = hard_value if soft == resource.RLIM_INFINITY else soft
    return soft_value, hard_value


class LimitEvents:
    """Counts of limit hits by limit name, and a log line per limit per interval."""

    def __init__(
        self, *, log_interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.counts: dict[str, int] = {}
        self._log_interval = log_interval
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def hit(self, limit: str, peer: Any, detail: str) -> None:
        """Count one hit of ``limit`` (e.g. ``"header-bytes"``) by ``peer``."""
        self.counts[limit] = self.counts.get(limit, 0) + 1
        if limit in _ROUTINE:
            log.debug("%s: %s (%s)", limit, detail, _peer_text(peer))
            return
        now = self._clock()
        last = self._last_logged.get(limit)
        if last is not None and now - last < self._log_interval:
            self._unlogged[limit] = self._unlogged.get(limit, 0) + 1
            return
        self._last_logged[limit] = now
        more = self._unlogged.pop(limit, 0)
        suffix = f" (and {more} more in the last {now - last:.0f}s)" if more and last else ""
        log.warning("connection limit %s: %s (%s)%s", limit, detail, _peer_text(peer), suffix)


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "unknown peer" if peer is None else str(peer)


class TrackedConnection(Protocol):
    """What the tracker needs of a connection (the TLS protocol implements it)."""

    limit_phase: int
    authenticated: bool

    def peer(self) -> Any:
        """The peer address (for logs)."""

    def close_for_limit(self) -> None:
        """Close now: a limit was hit (the tracker has already forgotten it)."""


class ConnectionTracker:
    """Every live connection of one listener, by phase; deadlines and caps.

    The protocol calls :meth:`admit` when a connection is accepted (``False``: close it),
    then :meth:`handshake_done`, :meth:`request_begun`, :meth:`headers_done`,
    :meth:`became_idle` as it moves on, and :meth:`forget` when it is gone.
    """

    def __init__(
        self, limits: ConnectionLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.events = LimitEvents()
        self._clock = clock
        self.total = 0
        self.unauthenticated = 0
        # phase → {connection: time the phase began}, oldest first.
        self.handshaking: dict[TrackedConnection, float] = {}
        self.reading_headers: dict[TrackedConnection, float] = {}
        self.idle: dict[TrackedConnection, float] = {}
        self._sweeper: Any = None
        #: Open connections by application protocol (``"http/1.1"``, ``"h2"``) and
        #: requests by HTTP version (``"1.1"``, ``"2"``), for ``/metrics``.
        self.protocols: dict[str, int] = {}
        self.requests_by_version: dict[str, int] = {}

    # -- protocol accounting ----------------------------------------------------------

    def protocol_opened(self, protocol: str) -> None:
        self.protocols[protocol] = self.protocols.get(protocol, 0) + 1

    def protocol_closed(self, protocol: str) -> None:
        self.protocols[protocol] = self.protocols.get(protocol, 1) - 1

    def count_request(self, http_version: str) -> None:
        self.requests_by_version[http_version] = self.requests_by_version.get(http_version, 0) + 1

    # -- phases ---------------------------------------------------------------------

    def admit(self, conn: TrackedConnection) -> bool:
        """Count a new connection (unauthenticated until its handshake says otherwise).

        At a cap, the longest-waiting unauthenticated connection is closed to make room;
        if there is none the new connection is refused (``False``).
        """
        cap = self._cap_reached()
        if cap is not None and not self._evict(cap, conn):
            return False
        self.total += 1
        self.unauthenticated += 1
        conn.authenticated = False
        conn.limit_phase = HANDSHAKE
        self.handshaking[conn] = self._clock()
        return True

    def _cap_reached(self) -> str | None:
        """The cap a new (so far unauthenticated) connection would exceed, if any."""
        limits = self.limits
        if limits.max_connections and self.total >= limits.max_connections:
            return "max-connections"
        unauthenticated_cap = limits.max_unauthenticated_connections
        if unauthenticated_cap and self.unauthenticated >= unauthenticated_cap:
            return "max-unauthenticated-connections"
        return None

    def handshake_done(self, conn: TrackedConnection, authenticated: bool) -> None:
        if conn.limit_phase != HANDSHAKE:
            return
        del self.handshaking[conn]
        if authenticated:
            conn.authenticated = True
            self.unauthenticated -= 1
        # The first request's header deadline runs from here: a client that connects
        # and says nothing is closed after the header timeout.
        conn.limit_phase = HEADERS
        self.reading_headers[conn] = self._clock()

    def request_begun(self, conn: TrackedConnection) -> None:
        """The first byte of a request arrived."""
        phase = conn.limit_phase
        if phase in (HEADERS, GONE):
            return  # the first request: its deadline started with the connection
        if phase == IDLE:
            del self.idle[conn]
        conn.limit_phase = HEADERS
        self.reading_headers[conn] = self._clock()

    def headers_done(self, conn: TrackedConnection) -> None:
        if conn.limit_phase == HEADERS:
            del self.reading_headers[conn]
            conn.limit_phase = ACTIVE

    def became_idle(self, conn: TrackedConnection) -> None:
        """The last response is complete and no next request has begun."""
        if conn.limit_phase == ACTIVE:
            conn.limit_phase = IDLE
            self.idle[conn] = self._clock()

    def forget(self, conn: TrackedConnection) -> None:
        """The connection is gone (idempotent)."""
        phase = conn.limit_phase
        if phase == GONE:
            return
        if phase == HANDSHAKE:
            del self.handshaking[conn]
        elif phase == HEADERS:
            del self.reading_headers[conn]
        elif phase == IDLE:
            del self.idle[conn]
        conn.limit_phase = GONE
        self.total -= 1
        if not conn.authenticated:
            self.unauthenticated -= 1

    # -- enforcement ----------------------------------------------------------------

    def close(self, conn: TrackedConnection, limit: str, detail: str) -> None:
        """Count ``limit``, forget ``conn`` and close it."""
        self.events.hit(limit, conn.peer(), detail)
        self.forget(conn)
        conn.close_for_limit()

    def sweep(self) -> None:
        """Close connections past their handshake or header deadline."""
        now = self._clock()
        limits = self.limits
        for phase, timeout, limit, what in (
            (self.handshaking, limits.handshake_timeout, "handshake-timeout", "TLS handshake"),
            (
                self.reading_headers,
                limits.request_header_timeout,
                "request-header-timeout",
                "request headers",
            ),
        ):
            expired_before = now - timeout
            while phase:
                conn, since = next(iter(phase.items()))
                if since > expired_before:
                    break  # ordered by start: the rest are younger
                self.close(conn, limit, f"{what} not complete after {timeout:g}s")

    def start(self, loop: Any) -> None:
        """Run :meth:`sweep` periodically on ``loop`` until :meth:`stop`."""
        interval = self.limits.sweep_interval()

        def tick() -> None:
            try:
                self.sweep()
            finally:
                self._sweeper = loop.call_later(interval, tick)

        self._sweeper = loop.call_later(interval, tick)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _evict(self, limit: str, newcomer: TrackedConnection) -> bool:
        victim = self._longest_waiting_unauthenticated()
        if victim is None:
            self.events.hit(
                limit, newcomer.peer(), "refused a new connection: no idle unauthenticated one"
            )
            return False
        self.close(victim, limit, "closed the longest-waiting unauthenticated connection")
        return True

    def _longest_waiting_unauthenticated(self) -> TrackedConnection | None:
        best: TrackedConnection | None = None
        best_since = math.inf
        # Everything in the handshake is unauthenticated; the other phases may mix.
        oldest_handshake = next(iter(self.handshaking.items()), (None, math.inf))
        for conn, since in (
            oldest_handshake,
            *(_first_unauthenticated(phase) for phase in (self.reading_headers, self.idle)),
        ):
            if conn is not None and since < best_since:
                best, best_since = conn, since
        return best

    # -- metrics --------------------------------------------------------------------

    def collector(self) -> Collector:
        """A prometheus collector for this tracker (register it on ``/metrics``)."""
        return _TrackerCollector(self)


def _first_unauthenticated(
    phase: dict[TrackedConnection, float],
) -> tuple[TrackedConnection | None, float]:
    for conn, since in itertools.islice(phase.items(), _EVICTION_SCAN):
        if not conn.authenticated:
            return conn, since
    return None, math.inf


class _TrackerCollector(Collector):
    def __init__(self, tracker: ConnectionTracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        tracker = self._tracker
        connections = GaugeMetricFamily(
            "kcp_cache_open_connections",
            "Open client connections, by whether a verified client certificate was "
            "presented (connections still in the TLS handshake count as false).",
            labels=("authenticated",),
        )
        connections.add_metric(("true",), tracker.total - tracker.unauthenticated)
        connections.add_metric(("false",), tracker.unauthenticated)
        yield connections
        hits = CounterMetricFamily(
            "kcp_cache_connection_limit_hits",
            "Connections closed or requests refused by a connection-level limit.",
            labels=("limit",),
        )
        for limit, count in sorted(tracker.events.counts.items()):
            hits.add_metric((limit,), count)
        yield hits
        protocols = GaugeMetricFamily(
            "kcp_cache_open_connections_by_protocol",
            "Open client connections past the TLS handshake, by the protocol ALPN chose.",
            labels=("protocol",),
        )
        for protocol, count in sorted(tracker.protocols.items()):
            protocols.add_metric((protocol,), count)
        yield protocols
        requests = CounterMetricFamily(
            "kcp_cache_http_requests",
            "HTTP requests received, by HTTP version (an HTTP/2 stream is one request).",
            labels=("http_version",),
        )
        for version, count in sorted(tracker.requests_by_version.items()):
            requests.add_metric((version,), count)
        yield requests
