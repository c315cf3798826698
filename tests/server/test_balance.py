"""The ``--workers`` connection balancing (``ConnectionBalancer``) with real sockets.

Two balancers of one group live in this process (as two workers would, each with its
own datagram socket and slot in the shared counts file); a real TCP listener gives the
connections, and what a worker "serves" is a list it keeps. The group as processes is
in ``tests/e2e/test_workers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kcp_cache.server import ConnectionBalancer


class Worker:
    """One worker's balancer and the connections it serves."""

    def __init__(self, directory: Path, index: int, count: int = 2) -> None:
        self.served: list[socket.socket] = []
        self.balancer = ConnectionBalancer(str(directory), index, count, lambda: len(self.served))

    def start(self) -> None:
        self.balancer.start(asyncio.get_running_loop(), self.served.append)

    def accept(self, conn: socket.socket) -> None:
        """What the acceptor does: offer it to the balancer, else serve it here."""
        if not self.balancer.place(conn):
            self.served.append(conn)

    def close(self) -> None:
        self.balancer.close()
        for conn in self.served:
            conn.close()


class Listener:
    """A real TCP listener; the client sockets it opened are closed at teardown."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.clients: list[socket.socket] = []

    def connect(self, count: int) -> tuple[list[socket.socket], list[socket.socket]]:
        """``count`` client sockets and their accepted server sides, in order."""
        clients, accepted = [], []
        for _ in range(count):
            clients.append(socket.create_connection(self.sock.getsockname()))
            accepted.append(self.sock.accept()[0])
        self.clients += clients
        return clients, accepted

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    opened = Listener()
    yield opened
    opened.close()


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[tuple[Worker, Worker]]:
    first, second = Worker(tmp_path, 0), Worker(tmp_path, 1)
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        first.close()
        second.close()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0.005)


async def test_connections_accepted_by_one_worker_end_up_split_evenly(
    group: tuple[Worker, Worker], listener: Listener
) -> None:
    first, second = group
    clients, accepted = listener.connect(20)
    for conn in accepted:
        first.accept(conn)  # the kernel's hash gave them all to worker 0
        await settle()
    assert (len(first.served), len(second.served)) == (10, 10)
    assert (first.balancer.sent, second.balancer.received) == (10, 10)
    registry = CollectorRegistry()
    registry.register(first.balancer.collector())
    text = generate_latest(registry).decode()
    assert 'kcp_cache_connections_passed_total{direction="sent"} 10.0' in text
    assert 'kcp_cache_connections_passed_total{direction="send-failed"} 0.0' in text
    # A passed socket is the same connection: what its client sends arrives there.
    for client in clients:
        client.sendall(b"ping %d" % client.getsockname()[1])
    got = set()
    for conn in first.served + second.served:
        conn.settimeout(5)
        got.add(conn.recv(64))
    assert got == {b"ping %d" % c.getsockname()[1] for c in clients}


async def test_a_batch_of_accepts_is_spread_before_the_sibling_republishes(
    group: tuple[Worker, Worker], listener: Listener
) -> None:
    """Accepted in one go (no loop turn between, so the sibling has not yet counted
    what it received): the sender counts them for it and does not send it them all."""
    first, second = group
    _, accepted = listener.connect(10)
    for conn in accepted:
        first.accept(conn)
    await settle()
    assert (len(first.served), len(second.served)) == (5, 5)


async def test_a_worker_that_holds_fewer_keeps_its_connections(
    group: tuple[Worker, Worker], listener: Listener
) -> None:
    first, second = group
    _, accepted = listener.connect(6)
    second.served.extend(accepted[:4])  # worker 1 already holds four
    await asyncio.sleep(0.4)  # ... and has republished its count since
    for conn in accepted[4:]:
        first.accept(conn)
    assert len(first.served) == 2
    assert first.balancer.sent == 0


async def test_no_connection_is_lost_when_the_sibling_is_gone(
    group: tuple[Worker, Worker], listener: Listener
) -> None:
    first, second = group
    second.balancer.stop()  # its socket is gone; it publishes that it takes nothing
    _, accepted = listener.connect(5)
    for conn in accepted:
        first.accept(conn)
    assert len(first.served) == 5
    assert first.balancer.sent == 0


_SIBLING = """
import asyncio, sys
from kcp_cache.server import ConnectionBalancer

async def main():
    balancer = ConnectionBalancer(sys.argv[1], 1, 2, lambda: 0)
    balancer.start(asyncio.get_running_loop(), lambda conn: None)
    print("started", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_sibling_that_has_not_started_is_not_tried(
    tmp_path: Path, listener: Listener
) -> None:
    first = Worker(tmp_path, 0)  # the first of the group: it creates the counts file
    first.start()
    try:
        _, accepted = listener.connect(4)
        for conn in accepted:
            first.accept(conn)
        assert len(first.served) == 4
        assert (first.balancer.sent, first.balancer.send_failures) == (0, 0)
    finally:
        first.close()


async def test_a_sibling_that_was_killed_is_rested_after_one_failed_send(
    tmp_path: Path, listener: Listener
) -> None:
    first = Worker(tmp_path, 0)
    first.start()
    sibling = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SIBLING, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert sibling.stdout is not None
        assert await sibling.stdout.readline() == b"started\n"
        assert first.balancer.counts()[1] == 0  # it published: it takes connections
        sibling.kill()  # its socket file stays; nobody receives on it
        await sibling.wait()
        clients, accepted = listener.connect(6)
        for conn in accepted:
            first.accept(conn)
        assert len(first.served) == 6  # every connection kept and served
        assert first.balancer.send_failures == 1  # then rested, not tried each time
        for client, conn in zip(clients, first.served, strict=True):
            client.sendall(b"x")
            conn.settimeout(5)
            assert conn.recv(1) == b"x"
    finally:
        if sibling.returncode is None:
            sibling.kill()
            await sibling.wait()
        first.close()


async def test_counts_are_shared_through_the_file_and_republished(
    tmp_path: Path, listener: Listener
) -> None:
    """A worker's count reaches its siblings through the file (as between processes),
    and connections that closed are republished without a new accept."""
    first, second = Worker(tmp_path, 0), Worker(tmp_path, 1)
    first.start()
    second.start()
    reader = ConnectionBalancer(str(tmp_path), 0, 2, lambda: 0)  # a third view of it
    try:
        _, accepted = listener.connect(3)
        second.served.extend(accepted)
        await asyncio.sleep(0.4)  # one refresh
        assert reader.counts()[1] == 3
        for conn in second.served:
            conn.close()
        second.served.clear()
        await asyncio.sleep(0.4)
        assert reader.counts()[1] == 0
    finally:
        with contextlib.suppress(Exception):
            reader.close()
        first.close()
        second.close()


def test_an_index_outside_the_group_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"worker index 2 is not in 0\.\.1"):
        ConnectionBalancer(str(tmp_path), 2, 2, lambda: 0)
