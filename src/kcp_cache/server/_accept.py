"""Accepting connections ourselves, so that an accept error never stops the listener.

uvloop's server closes its listening handle on the first error libuv reports from
``accept`` (``EMFILE`` when the descriptors run out): the server then answers nothing,
``/readyz`` included, and logs nothing. Here the listening socket is watched with
``add_reader`` and accepted in batches; an error is counted and logged (rate-limited by
:class:`~kcp_cache.server._limits.LimitEvents`), accepting pauses briefly (the pending
connection stays in the backlog), and the listener carries on. Each accepted socket is
handed to the event loop with ``connect_accepted_socket`` — or, in a ``--workers``
group, possibly to a sibling worker first (:class:`~kcp_cache.server._balance.ConnectionBalancer`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Final

from kcp_cache.server._balance import ConnectionBalancer
from kcp_cache.server._limits import LimitEvents

__all__ = ["Acceptor"]

log = logging.getLogger("kcp_cache.server")

#: Connections accepted per readiness callback. Small: a connection closed to make room
#: at a cap gives its descriptor back only on the next loop iteration, so a batch can
#: hold this many descriptors beyond the cap (well inside the default reserve of 128).
_BATCH: Final = 16
#: Pause after an out-of-resources error: the descriptors held by connections must be
#: released first, and retrying at once would spin.
_RETRY_DELAY: Final = 0.1
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Accepts on ``sock`` and serves each connection with ``protocol_factory()``.

    ``balancer``: offered every accepted connection first; one it passes to a sibling
    worker is not served here.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        events: LimitEvents,
        loop: asyncio.AbstractEventLoop,
        balancer: ConnectionBalancer | None = None,
    ) -> None:
        self._sock = sock
        self._balancer = balancer
        self._factory = protocol_factory
        self._events = events
        self._loop = loop
        self._reading = False
        self._retry: asyncio.TimerHandle | None = None
        self._handoffs: set[asyncio.Task[object]] = set()

    def start(self) -> None:
        if not self._reading:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)
            self._reading = True

    def stop(self) -> None:
        """Stop accepting (the socket stays open; the caller closes it)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _accept_ready(self) -> None:
        for _ in range(_BATCH):
            try:
                conn, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                self._events.hit("accept-error", None, f"accept failed: {exc.strerror or exc}")
                if exc.errno in _RESOURCE_ERRORS:
                    self.stop()
                    self._retry = self._loop.call_later(_RETRY_DELAY, self._resume)
                return
            if self._balancer is not None and self._balancer.place(conn):
                continue
            self.serve(conn)

    @property
    def in_setup(self) -> int:
        """Accepted connections the event loop is still setting up (not yet counted
        by the connection tracker)."""
        return len(self._handoffs)

    def _resume(self) -> None:
        self._retry = None
        self.start()

    def serve(self, conn: socket.socket) -> None:
        """Serve an accepted connection (this acceptor's, or one a sibling passed)."""
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
        self._handoffs.add(task)
        task.add_done_callback(self._handed_off)

    def _handed_off(self, task: asyncio.Task[object]) -> None:
        self._handoffs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("setting up an accepted connection failed: %s", task.exception())
