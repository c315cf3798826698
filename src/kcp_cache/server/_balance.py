"""Even out the open connections of the ``--workers`` processes that share one port.

``SO_REUSEPORT`` spreads new connections by a hash of their addresses, which is even
only on average: 100 watch connections opened at once landed 56/44 on two workers in
the workers bench, and as watches live for hours the split lasts. A watch event's fan-out
ends when the busier worker is done, so the uneven split was the fan-out's time.

Each worker publishes its open connections in a small shared file (one 8-byte slot per
worker, ``mmap``-ed) and binds a Unix datagram socket in the group's private directory.
When a worker accepts a connection while it holds more than the least loaded of its
siblings (counting the new one), it passes the socket — still before the TLS handshake —
to that sibling with ``SCM_RIGHTS`` and closes its own descriptor; the sibling serves it
as if it had accepted it. A received connection is never passed on again. A failed
send (the sibling restarting, its queue full) keeps the connection here and rests that
sibling for a second: the balancer only ever moves work, it never loses a connection.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import mmap
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ConnectionBalancer"]

log = logging.getLogger("kcp_cache.server")

#: The shared counts' file, and each worker's socket, in the group's directory.
COUNTS_FILE: Final = "connections"
SOCKET_NAME: Final = "balance-{index}.sock"
#: How often a worker republishes its count (connections also close while none opens).
_REFRESH: Final = 0.25
#: How long a sibling that could not be reached is left out.
_REST: Final = 1.0
#: What a stopped worker publishes: nobody sends it connections.
_GONE: Final = 1 << 62
#: Descriptors received per datagram (one is sent at a time).
_FDS_PER_MESSAGE: Final = 4


class ConnectionBalancer:
    """One worker's side of the group's connection balancing.

    :param directory: the group's private directory (mode 0700), the same for all.
    :param index: this worker's index, ``0 … count-1``.
    :param count: the number of workers.
    :param open_connections: this worker's open connections right now (accepted ones
        whose setup is still under way included).
    """

    def __init__(
        self,
        directory: str,
        index: int,
        count: int,
        open_connections: Callable[[], int],
    ) -> None:
        if not 0 <= index < count:
            raise ValueError(f"worker index {index} is not in 0..{count - 1}")
        self.index = index
        self.count = count
        self._open = open_connections
        self._paths = [os.path.join(directory, SOCKET_NAME.format(index=i)) for i in range(count)]
        self._slots, self._map = _shared_counts(os.path.join(directory, COUNTS_FILE), count)
        self._resting_until = [0.0] * count
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._adopt: Callable[[socket.socket], None] | None = None
        #: Connections passed to a sibling, received from one, and sends that failed.
        self.sent = 0
        self.received = 0
        self.send_failures = 0

    # -- life --------------------------------------------------------------------------

    def start(
        self, loop: asyncio.AbstractEventLoop, adopt: Callable[[socket.socket], None]
    ) -> None:
        """Receive siblings' connections (served with ``adopt``) and publish the count."""
        path = self._paths[self.index]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous life of this worker (killed) left it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        self._sock, self._loop, self._adopt = sock, loop, adopt
        loop.add_reader(sock.fileno(), self._receive)
        self._publish()

    def stop(self) -> None:
        """Receive no more (a connection already queued for this worker is closed)."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        self._slots[self.index] = _GONE
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            with contextlib.suppress(OSError):
                os.unlink(self._paths[self.index])
            sock.close()

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(BufferError):  # a view still held: the map goes with it
            self._slots.release()
            self._map.close()

    # -- placing -----------------------------------------------------------------------

    def place(self, conn: socket.socket) -> bool:
        """Pass ``conn`` to a sibling that holds fewer connections (``True``: passed and
        closed here), or leave it to this worker (``False``)."""
        own = self._open()
        target = self._least_loaded()
        if target is None or own + 1 - self._slots[target] <= 1:
            # Published with the new one at once: a sibling deciding meanwhile must not
            # see this worker one lighter than it is.
            self._slots[self.index] = own + 1
            return False
        self._slots[self.index] = own
        try:
            # sendmsg itself: socket.send_fds ignores its address argument (Python 3.11).
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))
            self._sock_for_sending().sendmsg([b"c"], [rights], 0, self._paths[target])
        except OSError as exc:
            self._slots[self.index] = own + 1  # kept after all
            self.send_failures += 1
            self._resting_until[target] = time.monotonic() + _REST
            log.debug("could not pass a connection to worker %d: %s", target, exc)
            return False
        # Counted for the target at once (it republishes when it adopts): a batch of
        # accepts must not all go to the same sibling.
        self._slots[target] += 1
        self.sent += 1
        conn.close()
        return True

    def counts(self) -> list[int]:
        """Every worker's open connections as last published, by index (a stopped
        worker's is a huge number: nobody sends it any)."""
        return list(self._slots)

    def _least_loaded(self) -> int | None:
        now = time.monotonic()
        best, least = None, _GONE
        for i in range(self.count):
            if i == self.index or self._resting_until[i] > now:
                continue
            if self._slots[i] < least:
                best, least = i, self._slots[i]
        return best

    def _sock_for_sending(self) -> socket.socket:
        if self._sock is None:
            raise OSError("the balancer is not started")
        return self._sock

    # -- receiving ---------------------------------------------------------------------

    def _receive(self) -> None:
        sock, adopt = self._sock, self._adopt
        assert sock is not None
        assert adopt is not None
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(sock, 16, _FDS_PER_MESSAGE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("receiving a connection from a sibling worker failed: %s", exc)
                break
            for fd in fds:
                self.received += 1
                adopt(socket.socket(fileno=fd))
        self._publish()

    def _publish(self) -> None:
        if self._sock is None or self._loop is None:
            return
        self._slots[self.index] = self._open()
        if self._refresh is not None:
            self._refresh.cancel()
        self._refresh = self._loop.call_later(_REFRESH, self._publish)

    # -- metrics -----------------------------------------------------------------------

    def collector(self) -> Collector:
        """``kcp_cache_connections_passed_total{direction}`` for ``/metrics``."""
        return _BalancerCollector(self)


def _shared_counts(path: str, count: int) -> tuple[memoryview, mmap.mmap]:
    """The group's slots (8-byte signed integers, one per worker), created if new.

    A new file says every worker takes none: a worker that has not started yet (a
    follower still loading its copy) is not sent connections it cannot serve; each
    publishes its count when it starts.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < count * 8:
            os.write(fd, array.array("q", [_GONE] * count).tobytes())
        mapped = mmap.mmap(fd, count * 8)
    finally:
        os.close(fd)
    return memoryview(mapped).cast("q"), mapped


class _BalancerCollector(Collector):
    def __init__(self, balancer: ConnectionBalancer) -> None:
        self._balancer = balancer

    def collect(self) -> Iterator[Metric]:
        passed = CounterMetricFamily(
            "kcp_cache_connections_passed",
            "Accepted connections passed between the --workers processes to even out "
            "their open connections: sent to a sibling, received from one, or kept "
            "because the send failed.",
            labels=("direction",),
        )
        balancer = self._balancer
        passed.add_metric(("sent",), balancer.sent)
        passed.add_metric(("received",), balancer.received)
        passed.add_metric(("send-failed",), balancer.send_failures)
        yield passed
