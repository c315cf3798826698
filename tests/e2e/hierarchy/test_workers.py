"""A regional cache with ``--workers 2`` under a root, real processes.

Only the leader (worker 0) mirrors the parent and exports to it; the follower serves
the mirrored data from its copy of the leader's store, hands writes to the leader and
answers ``/readyz/parent`` with the leader's view. Every request goes over a new
connection, which the kernel gives to either worker (``SO_REUSEPORT``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from kcp_cache.testing import CacheServer

from .helpers import apiexport, eventually, get, names, path, start_child, start_root


@pytest.fixture
def topology(
    tmp_path: Path, storage_flags: tuple[str, ...]
) -> Iterator[tuple[CacheServer, CacheServer]]:
    """R, and below it E with ``--workers 2`` on SQLite (a leader and a follower) or on
    etcd (two servers of one store: worker 0 mirrors and exports)."""
    root = start_root(tmp_path, "--home-shards", "amber")
    try:
        region = start_child(
            tmp_path, "eu-1", root, "--home-shards", "sapphire", "--workers", "2",
            *storage_flags,
        )  # fmt: skip
        try:
            region.wait_workers(2)
            yield root, region
        finally:
            region.stop()
    finally:
        root.stop()


@contextlib.contextmanager
def _on_worker(server: CacheServer, index: str) -> Iterator[httpx2.Client]:
    """A client whose (one, kept-alive) connection the kernel gave to worker *index*."""
    for _ in range(100):
        client = server.client()
        if _worker_of(client) == index:
            try:
                yield client
            finally:
                client.close()
            return
        client.close()
    raise AssertionError(f"no connection landed on worker {index}")


def _worker_of(client: httpx2.Client) -> str:
    metrics = client.get("/metrics").text
    return "1" if 'worker="1"' in metrics[:20000] else "0"


def _workers_answering(server: CacheServer, url: str, rounds: int = 16) -> set[str]:
    """The workers (by their metrics label) seen while every answer to *url* is 200."""
    seen: set[str] = set()
    for _ in range(rounds):
        with server.client() as client:
            response = client.get(url)
            assert response.status_code == 200, response.text
            metrics = client.get("/metrics").text  # same connection: same worker
        seen.update(line.split('worker="', 1)[1].split('"', 1)[0]
                    for line in metrics.splitlines()[:400] if 'worker="' in line)  # fmt: skip
    return seen


def test_up_and_down_through_either_worker(topology: tuple[CacheServer, CacheServer]) -> None:
    root, region = topology
    # Down: the root's writes are readable through both workers.
    with root.client() as client:
        for n in range(3):
            assert client.post(path(root, "amber", "c"), json=apiexport(f"x{n}")).status_code == 201
    eventually(lambda: names(region, path(region, "amber", "c")) == {"x0", "x1", "x2"},
               what="amber's objects at E")  # fmt: skip
    assert _workers_answering(region, path(region, "amber", "c", "x2")) == {"0", "1"}
    for _ in range(8):
        assert names(region, path(region, "amber", "c")) == {"x0", "x1", "x2"}
    # Up: writes at E through either worker reach the root — for a shard homed there
    # from the start, and for shards whose first write claims them at the follower
    # (ruby) and at the leader (opal).
    for shard, first in (("sapphire", "0"), ("ruby", "1"), ("opal", "0")):
        with _on_worker(region, first) as client:
            created = client.post(path(region, shard, "c"), json=apiexport("first"))
            assert created.status_code == 201, created.text
            # Read-your-writes on the same worker, and the claim taken.
            assert client.get(path(region, shard, "c", "first")).status_code == 200
        for n in range(6):
            with region.client() as client:
                created = client.post(path(region, shard, "c"), json=apiexport(f"y{n}"))
            assert created.status_code == 201, created.text
        expected = {"first", *(f"y{n}" for n in range(6))}
        eventually(lambda shard=shard, expected=expected: names(root, path(root, shard, "c"))
                   == expected, what=f"{shard}'s objects at R")  # fmt: skip
    # Deletes at E go up too; the root's delete comes down to both workers.
    with region.client() as client:
        assert client.delete(path(region, "ruby", "c", "y0")).status_code == 200
    with root.client() as client:
        assert client.delete(path(root, "amber", "c", "x0")).status_code == 200
    eventually(lambda: "y0" not in names(root, path(root, "ruby", "c")), what="y0 gone at R")
    eventually(lambda: all("x0" not in names(region, path(region, "amber", "c"))
                           for _ in range(6)), what="x0 gone at E")  # fmt: skip
    # A write into the mirror is refused on either worker.
    for _ in range(6):
        with region.client() as client:
            refused = client.post(path(region, "amber", "c"), json=apiexport("no"))
        assert refused.status_code == 403, refused.text
    # /readyz/parent: the leader's view, on both workers.
    assert _workers_answering(region, "/services/cache/readyz/parent") == {"0", "1"}
    shards = get(region, "/services/cache/shards/system:cache:server/clusters/system:cache"
                 "/apis/core.kcp.io/v1alpha1/caches/eu-1").json()["spec"]["homeShards"]  # fmt: skip
    assert set(shards) == {"sapphire", "ruby", "opal"}


def test_a_follower_reports_the_leaders_lost_parent(
    topology: tuple[CacheServer, CacheServer],
) -> None:
    root, region = topology
    eventually(lambda: _workers_answering(region, "/services/cache/readyz/parent", 6),
               what="/readyz/parent ok")  # fmt: skip
    root.stop()

    def reports_it(worker: str) -> bool:
        with _on_worker(region, worker) as client:
            answer = client.get("/services/cache/readyz/parent")
        return answer.status_code == 500 and "not connected to the parent" in answer.text

    eventually(lambda: reports_it("0"), timeout=20, what="the leader reports the lost parent")
    eventually(lambda: reports_it("1"), timeout=20, what="the follower reports it")
    with _on_worker(region, "1") as client:
        assert "(the leader's view)" in client.get("/services/cache/readyz/parent").text
    # Reads go on through both workers while the parent is away.
    assert get(region, path(region, "sapphire", "c")).status_code == 200
