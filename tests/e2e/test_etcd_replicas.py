"""Several ``kcp-cache-server`` replicas over one three-member etcd cluster (issue 6): what
one replica writes, the others list and watch at once; optimistic concurrency holds
across replicas; losing an etcd member or SIGKILLing a replica loses no acknowledged
write and stops no watch; replicas that start together bootstrap the CRDs once.

The last test is the operator story of DESIGN.md on its own etcd: a write
through one replica is read and watched through the other.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kcp_cache.registry import Bootstrapper, ResourceCatalog
from kcp_cache.storage.etcd import EtcdStorage
from kcp_cache.testing import CacheServer, EtcdCluster, TestCA, running_etcd

from ..etcd_backend import etcd_get_prefix, unique_prefix
from ._etcd import RetryableStatus, Watch, export, exports_path, shard_cluster_name

pytestmark = pytest.mark.etcd

CRDS = "/apiextensions.k8s.io/customresourcedefinitions/system:cache:server/system:system-crds/"


def _flags(etcd: EtcdCluster, prefix: str) -> tuple[str, ...]:
    return ("--etcd-servers", ",".join(etcd.endpoints), "--etcd-prefix", prefix)


def _start_together(servers: list[CacheServer]) -> list[CacheServer]:
    """Start every process first, then wait for each: their start-ups overlap."""
    for server in servers:
        server.start(wait=False)
    for server in servers:
        server.wait_ready()
    return servers


@pytest.fixture(scope="module")
def replicas(
    etcd3: EtcdCluster, ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[CacheServer]]:
    """Three replicas on one prefix of the three-member cluster."""
    flags = _flags(etcd3, unique_prefix())
    servers = [
        CacheServer(tmp_path_factory.mktemp(f"replica{i}") / "cache", flags, ca) for i in range(3)
    ]
    try:
        yield _start_together(servers)
    finally:
        for server in servers:
            server.stop()


async def _create_acknowledged(
    client: httpx2.AsyncClient, path: str, name: str, within: float = 10.0
) -> bool:
    """POST like a controller does: retry while the store is briefly unavailable.

    ``True`` once acknowledged (201, or 409 AlreadyExists after a retry: an attempt that
    failed in flight may have been applied — docs/etcd.md), ``False`` if the replica
    went away before answering.
    """
    deadline = time.monotonic() + within
    retried = False
    while True:
        try:
            response = await client.post(path, json=export(name))
        except httpx2.TransportError:
            return False
        if response.status_code == 201 or (retried and response.status_code == 409):
            return True
        assert response.status_code in RetryableStatus, response.text
        assert time.monotonic() < deadline, f"creating {name}: still {response.status_code}"
        retried = True
        await asyncio.sleep(0.1)


def test_replicas_started_together_bootstrap_the_crds_once(
    etcd3: EtcdCluster, ca: TestCA, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    servers = [
        CacheServer(tmp_path / f"r{i}" / "cache", _flags(etcd3, prefix), ca) for i in range(3)
    ]
    try:
        _start_together(servers)
        crds = etcd_get_prefix(etcd3.endpoints, prefix + CRDS)
        assert len(crds) == 26
        # Each CRD was created by exactly one replica; the others found it in place.
        assert {kv.version for kv in crds} == {1}
        for server in servers:
            assert "Traceback" not in server.logs()
            assert "bootstrapping CRDs failed" not in server.logs()
        # Restarting them together writes nothing at all.
        for server in servers:
            server.stop()
        _start_together(servers)
        assert etcd_get_prefix(etcd3.endpoints, prefix + CRDS) == crds
    finally:
        for server in servers:
            server.stop()


async def test_concurrent_bootstraps_create_and_upgrade_each_crd_once(
    etcd3: EtcdCluster,
) -> None:
    """Processes rarely overlap for the ~50 ms a bootstrap takes, so this also runs four
    replicas' bootstraps at exactly the same time (engines of their own, one etcd)."""
    prefix = unique_prefix()
    engines = [EtcdStorage(etcd3.endpoints, prefix=prefix, compaction_interval=0) for _ in range(4)]
    for engine in engines:
        await engine.start()
    try:
        catalog = ResourceCatalog()
        await asyncio.gather(*(Bootstrapper(e, catalog).run() for e in engines))
        crds = etcd_get_prefix(etcd3.endpoints, prefix + CRDS)
        assert len(crds) == 26
        assert {kv.version for kv in crds} == {1}  # AlreadyExists → re-read, no overwrite

        # A new release with changed CRDs, rolled out to every replica at once.
        changed = copy.deepcopy(catalog.crds)
        for crd in changed:
            crd["spec"]["names"]["categories"] = ["kcp-cache-upgraded"]
        upgraded = ResourceCatalog(changed)
        await asyncio.gather(*(Bootstrapper(e, upgraded).run() for e in engines))
        after = etcd_get_prefix(etcd3.endpoints, prefix + CRDS)
        assert {kv.version for kv in after} == {2}  # Conflict → re-read, found up to date
        for kv in after:
            crd = kv.json()
            assert crd["spec"]["names"]["categories"] == ["kcp-cache-upgraded"]
            assert crd["metadata"]["generation"] == 2
    finally:
        for engine in engines:
            await engine.close()


async def test_a_write_through_one_replica_is_listed_and_watched_on_the_others(
    replicas: list[CacheServer],
) -> None:
    first, second, third = replicas
    path = exports_path("amber", "acme")
    wildcard = exports_path("*", "*")
    async with first.async_client() as c1, second.async_client() as c2, third.async_client() as c3:
        rv = (await c2.get(wildcard)).json()["metadata"]["resourceVersion"]
        async with Watch(second, wildcard, rv) as w2, Watch(third, path, rv) as w3:
            started = time.monotonic()
            created = await c1.post(path, json=export("shared", spec={"v": 1}))
            assert created.status_code == 201
            # Reads on the other replicas are linearizable: visible at once, no polling.
            got = await c2.get(f"{path}/shared")
            assert got.status_code == 200
            assert (
                got.json()["metadata"]["resourceVersion"]
                == (created.json()["metadata"]["resourceVersion"])
            )
            listed = (await c3.get(wildcard)).json()["items"]
            assert [shard_cluster_name(i) for i in listed] == [("amber", "acme", "shared")]
            await w2.wait_for(lambda: w2.names() == ["shared"], within=5)
            await w3.wait_for(lambda: w3.names() == ["shared"], within=5)
            latency = time.monotonic() - started
            assert latency < 2.0, f"the other replicas' watches lagged {latency:.2f}s"

            updated = await c2.put(f"{path}/shared", json={**got.json(), "spec": {"v": 2}})
            assert updated.status_code == 200
            assert (await c3.delete(f"{path}/shared")).status_code == 200
            await w2.wait_for(lambda: len(w2.events) == 3)
            assert [e["type"] for e in w2.events] == ["ADDED", "MODIFIED", "DELETED"]
            assert w2.events[1]["object"]["spec"] == {"v": 2}
            assert (await c1.get(f"{path}/shared")).status_code == 404


async def test_optimistic_concurrency_holds_across_replicas(
    replicas: list[CacheServer],
) -> None:
    first, second, _ = replicas
    path = exports_path("beryl", "zeta")
    async with first.async_client() as c1, second.async_client() as c2:
        assert (await c1.post(path, json=export("contended"))).status_code == 201
        for round_ in range(15):
            current = (await c2.get(f"{path}/contended")).json()
            # Both replicas get an update based on the same resourceVersion.
            r1, r2 = await asyncio.gather(
                c1.put(f"{path}/contended", json={**current, "spec": {"by": "r1", "n": round_}}),
                c2.put(f"{path}/contended", json={**current, "spec": {"by": "r2", "n": round_}}),
            )
            assert sorted((r1.status_code, r2.status_code)) == [200, 409], (r1.text, r2.text)
            winner, loser = (r1, r2) if r1.status_code == 200 else (r2, r1)
            assert loser.json()["reason"] == "Conflict"
            stored = (await c1.get(f"{path}/contended")).json()
            assert stored["spec"] == winner.json()["spec"]
            assert (
                stored["metadata"]["resourceVersion"]
                == (winner.json()["metadata"]["resourceVersion"])
            )


async def test_losing_an_etcd_member_keeps_every_replica_working(
    replicas: list[CacheServer], etcd3: EtcdCluster
) -> None:
    path = exports_path("cobalt", "c1")
    clients = [server.async_client() for server in replicas]
    try:
        rv = (await clients[0].get(path)).json()["metadata"]["resourceVersion"]
        async with (
            Watch(replicas[1], path, rv, resume=True) as w1,
            Watch(replicas[2], exports_path("*", "*"), rv, resume=True) as w2,
        ):
            acknowledged: list[str] = []
            # Member 0 (every replica's first endpoint), then whichever member leads.
            victims = [0]
            for victim in victims:
                etcd3.kill(victim)
                try:
                    for i, client in enumerate(clients):
                        name = f"m{victim}-r{i}"
                        assert await _create_acknowledged(client, path, name)
                        acknowledged.append(name)
                        assert (await client.get(f"{path}/{name}")).status_code == 200
                    for watch in (w1, w2):
                        await watch.wait_for(
                            lambda w=watch: set(acknowledged) <= set(w.names()),  # type: ignore[misc]
                            within=10,
                        )
                finally:
                    await etcd3.restart(victim)
                if len(victims) == 1:
                    leader = await etcd3.leader_index()
                    if leader != 0:
                        victims.append(leader)
            for watch in (w1, w2):
                # Every event once, in order, whether or not the stream had to resume.
                assert watch.names() == acknowledged
            listed = (await clients[2].get(path)).json()["items"]
            assert [i["metadata"]["name"] for i in listed] == sorted(acknowledged)
    finally:
        for client in clients:
            await client.aclose()


async def test_sigkilling_a_replica_loses_no_acknowledged_write(
    replicas: list[CacheServer],
) -> None:
    first, second, third = replicas
    path = exports_path("amber", "kill")
    acknowledged: list[str] = []
    async with (
        first.async_client() as c1,
        second.async_client() as c2,
        third.async_client() as c3,
    ):
        rv = (await c2.get(path)).json()["metadata"]["resourceVersion"]
        async with Watch(second, path, rv) as watch, Watch(first, path, rv) as on_killed:
            enough = asyncio.Event()

            async def writer(index: int) -> None:
                for n in range(1000):
                    name = f"w{index}-{n:04d}"
                    try:
                        response = await c1.post(path, json=export(name))
                    except httpx2.TransportError:
                        return  # the replica is gone: this one was not acknowledged
                    assert response.status_code == 201, response.text
                    acknowledged.append(name)
                    if len(acknowledged) == 40:
                        enough.set()

            writers = [asyncio.create_task(writer(i)) for i in range(4)]
            await asyncio.wait_for(enough.wait(), 15)
            first.kill()  # SIGKILL while four writes are in flight
            await asyncio.wait_for(asyncio.gather(*writers), 15)

            stored = {i["metadata"]["name"] for i in (await c3.get(path)).json()["items"]}
            assert set(acknowledged) <= stored
            # The watch on another replica kept flowing through the kill...
            await watch.wait_for(lambda: set(acknowledged) <= set(watch.names()))
            after = await c3.post(path, json=export("after-the-kill"))
            assert after.status_code == 201
            await watch.wait_for(lambda: "after-the-kill" in watch.names())
            assert watch.ends == 0
            assert len(watch.names()) == len(set(watch.names()))
            # ... and a watcher of the killed replica resumes on another one from the last
            # resourceVersion it saw (revisions are etcd's, the same on every replica).
            await on_killed.wait_for(lambda: on_killed.ends == 1)
            async with Watch(third, path, on_killed.resource_version) as moved:
                await moved.wait_for(lambda: "after-the-kill" in moved.names())
            assert on_killed.names() + moved.names() == watch.names()

    first.start()  # same root directory and port
    async with first.async_client() as client:
        listed = (await client.get(path)).json()["items"]
        assert set(acknowledged) | {"after-the-kill"} <= {i["metadata"]["name"] for i in listed}


async def test_watch_cached_reads_stay_consistent_across_replicas(
    replicas: list[CacheServer],
) -> None:
    """Each replica serves GET and LIST from its etcd watch cache: a write through one is
    read at once through another, a paginated LIST continues on any replica at its first
    page's revision, and an exact resourceVersion reads the state of then."""
    first, second, third = replicas
    path = exports_path("dune", "cached")
    async with first.async_client() as c1, second.async_client() as c2, third.async_client() as c3:
        for i in range(12):
            assert (await c1.post(path, json=export(f"o{i:02d}", spec={"n": 0}))).status_code == 201
        current = (await c1.get(f"{path}/o00")).json()
        for n in range(1, 21):
            current["spec"] = {"n": n}
            written = await c1.put(f"{path}/o00", json=current)
            assert written.status_code == 200
            current = written.json()
            # No polling: the other replica's read waits for its cache to catch up.
            got = (await c2.get(f"{path}/o00")).json()
            assert got["spec"] == {"n": n}
            assert got["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
            listed = (await c3.get(path)).json()
            assert [i["spec"] for i in listed["items"] if i["metadata"]["name"] == "o00"] == [
                {"n": n}
            ]

        snapshot = (await c1.get(path)).json()
        names = [i["metadata"]["name"] for i in snapshot["items"]]
        seen: list[str] = []
        token = None
        clients = [c1, c2, c3]
        for turn in range(10):
            params = {"limit": "5", **({"continue": token} if token else {})}
            page = (await clients[turn % 3].get(path, params=params)).json()
            seen += [i["metadata"]["name"] for i in page["items"]]
            token = page["metadata"].get("continue")
            # Changes between pages are not part of the paginated snapshot.
            assert (await c2.post(path, json=export(f"late{turn}"))).status_code == 201
            if not token:
                break
        assert seen == names

        at = snapshot["metadata"]["resourceVersion"]
        exact = await c3.get(path, params={"resourceVersion": at, "resourceVersionMatch": "Exact"})
        assert exact.status_code == 200
        assert [i["metadata"]["name"] for i in exact.json()["items"]] == names


async def test_a_replica_without_watch_cache_agrees_with_one_with_it(
    etcd: EtcdCluster, ca: TestCA, tmp_path: Path
) -> None:
    """``--watch-cache=false`` reads etcd every time; both kinds share one etcd."""
    flags = _flags(etcd, unique_prefix())
    servers = _start_together(
        [
            CacheServer(tmp_path / "cached" / "cache", flags, ca),
            CacheServer(tmp_path / "direct" / "cache", (*flags, "--watch-cache=false"), ca),
        ]
    )
    try:
        path = exports_path("eon", "mixed")
        async with servers[0].async_client() as cached, servers[1].async_client() as direct:
            for i in range(5):
                writer, reader = (cached, direct) if i % 2 else (direct, cached)
                created = await writer.post(path, json=export(f"m{i}"))
                assert created.status_code == 201
                got = await reader.get(f"{path}/m{i}")
                assert got.status_code == 200
                assert got.json()["metadata"] == created.json()["metadata"]
            names = [
                [i["metadata"]["name"] for i in (await c.get(path)).json()["items"]]
                for c in (cached, direct)
            ]
            assert names == [[f"m{i}" for i in range(5)]] * 2
    finally:
        for server in servers:
            server.stop()


EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


@pytest.mark.etcd
async def test_two_replicas_share_one_etcd(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "ca")
    async with running_etcd() as etcd:
        flags = ("--etcd-servers", ",".join(etcd.endpoints), "--etcd-prefix", "/cache")
        first = cache_server(*flags, client_ca=ca)
        second = cache_server(*flags, client_ca=ca)

        events: list[dict[str, object]] = []
        opened = threading.Event()

        def watch() -> None:
            with (
                second.client() as client,
                client.stream("GET", EXPORTS, params={"watch": "true"}) as response,
            ):
                opened.set()
                for line in response.iter_lines():
                    events.append(json.loads(line))
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert opened.wait(10)
        body = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": "shared"},
        }
        with first.client() as client:
            assert client.post(EXPORTS, json=body).status_code == 201
        with second.client() as client:
            got = client.get(f"{EXPORTS}/shared")
        assert got.status_code == 200
        assert got.json()["metadata"]["annotations"]["kcp.io/shard"] == "amber"
        watcher.join(10)
        assert not watcher.is_alive()
        assert events[0]["type"] == "ADDED"
        first.stop()
        second.stop()


@pytest.mark.etcd
async def test_a_write_acknowledged_by_one_replica_is_read_at_once_through_the_other(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    """Consistent reads from the watch cache (on by default) under concurrent GETs: the
    GET right after the other replica acknowledged a write sees it, with no sleep in
    between, while four more clients keep the second replica's shared revision request
    in flight — a GET that arrives during a revision request must wait for the next
    one, or it could miss the write."""
    ca = TestCA(tmp_path / "ca")
    async with running_etcd() as etcd:
        flags = ("--etcd-servers", ",".join(etcd.endpoints), "--etcd-prefix", "/cache")
        first = cache_server(*flags, client_ca=ca)
        second = cache_server(*flags, client_ca=ca)
        path = f"{EXPORTS}/fresh"
        body: dict[str, Any] = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": "fresh", "labels": {"n": "0"}},
        }
        stop = threading.Event()
        background_errors: list[int] = []

        def keep_reading() -> None:  # concurrent GETs: revision requests always in flight
            with second.client() as client:
                while not stop.is_set():
                    code = client.get(path).status_code
                    if code not in (200, 404):
                        background_errors.append(code)

        readers = [threading.Thread(target=keep_reading) for _ in range(4)]
        for reader in readers:
            reader.start()
        try:
            with first.client() as writer, second.client() as reader_client:
                created = writer.post(EXPORTS, json=body)
                assert created.status_code == 201
                assert reader_client.get(path).json()["metadata"]["labels"] == {"n": "0"}
                body["metadata"]["resourceVersion"] = created.json()["metadata"]["resourceVersion"]
                for i in range(1, 40):
                    body["metadata"]["labels"] = {"n": str(i)}
                    written = writer.put(path, json=body)
                    assert written.status_code == 200
                    rv = body["metadata"]["resourceVersion"] = written.json()["metadata"][
                        "resourceVersion"
                    ]
                    got = reader_client.get(path).json()
                    assert got["metadata"]["labels"] == {"n": str(i)}
                    assert int(got["metadata"]["resourceVersion"]) >= int(rv)
                assert writer.delete(path).status_code == 200
                assert reader_client.get(path).status_code == 404
        finally:
            stop.set()
            for reader in readers:
                reader.join(10)
        assert background_errors == []
