"""Black-box: the real kcp-cache-server binary, real TLS, the API verbs end to end.

One server serves all checks of a test (each test runs on SQLite and on etcd), as kcp's own e2e
suite runs its scenarios in parallel on one server.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest

from kcp_cache.testing import CacheServer

BASE = "/services/cache/shards/{shard}/clusters/{cluster}/apis/apis.kcp.io/v1alpha1/apiexports"
EXPORTS = BASE.format(shard="amber", cluster="acme")


def _export(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name, "annotations": {}, **meta},
    }


def _strip(obj: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k not in fields}}


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def server(
    cache_server: Callable[..., CacheServer],
    storage_flags: tuple[str, ...],
    request: pytest.FixtureRequest,
) -> CacheServer:
    """The embedded default, and (``[etcd]``) the same checks on an etcd-backed server;
    each also as ``--workers 2`` (a follower beside the leader; two servers on etcd)."""
    workers: int = request.param
    server = cache_server(*storage_flags, "--workers", str(workers))
    if workers > 1:
        server.wait_workers(workers)
    return server


@pytest.fixture
def client(server: CacheServer) -> Iterator[httpx2.Client]:
    with server.client() as c:
        yield c


def test_cache_server_all_scenarios(client: httpx2.Client) -> None:
    """spec §8.1, all seven, over HTTPS with the admin client certificate."""
    ignored = (
        "uid",
        "generation",
        "resourceVersion",
        "creationTimestamp",
        "annotations",
        "managedFields",
    )
    # 1. TestSchemaIsNotEnforced
    r = client.post(
        EXPORTS, json={"metadata": {"annotations": {}}, "spec": "TheSun", "size": 40000}
    )
    assert r.status_code == 400
    assert r.json()["message"].startswith("Object 'Kind' is missing in")
    r = client.post(EXPORTS, json={"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport"})
    assert r.status_code == 422
    earth = {**_export("earth"), "spec": "TheSun", "size": 40000}
    r = client.post(EXPORTS, json=earth)
    assert r.status_code == 201
    assert _strip(r.json(), ignored) == _strip(earth, ignored)
    assert _strip(client.get(f"{EXPORTS}/earth").json(), ignored) == _strip(earth, ignored)
    # 2. TestShardClusterNamesAssigned
    r = client.post(EXPORTS, json=_export("comicdb"))
    for obj in (r.json(), client.get(f"{EXPORTS}/comicdb").json()):
        assert obj["metadata"]["annotations"] == {"kcp.io/shard": "amber", "kcp.io/cluster": "acme"}
    # 3. TestUIDGenerationCreationTimeOverwrite
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mango = _export("mangodb", uid="3", generation=11, creationTimestamp=now)
    mango["metadata"]["annotations"] = {"kcp.io/shard": "amber"}
    r = client.post(EXPORTS, json=mango)
    expected = _strip(mango, ("resourceVersion", "managedFields"))
    expected["metadata"]["annotations"] = {"kcp.io/shard": "amber", "kcp.io/cluster": "acme"}
    for obj in (r.json(), client.get(f"{EXPORTS}/mangodb").json()):
        assert _strip(obj, ("resourceVersion", "managedFields")) == expected
    # 4. TestUIDGenerationCreationTimeNegativeOverwriteNegative
    neg = _export(
        "mangodbnegative", uid="3", generation=8, creationTimestamp="2001-01-01T00:00:00Z"
    )
    r = client.post(EXPORTS, json=neg)
    for obj in (r.json(), client.get(f"{EXPORTS}/mangodbnegative").json()):
        assert obj["metadata"]["uid"] != "3"
        assert obj["metadata"]["generation"] != 8
        assert obj["metadata"]["creationTimestamp"] != "2001-01-01T00:00:00Z"
        assert _strip(obj, ignored) == _strip(neg, ignored)
    # 5. TestGenerationOnSpecChanges
    obj = client.post(EXPORTS, json=_export("cinnamondb")).json()
    generation = obj["metadata"]["generation"]
    obj["spec"] = {"size": 5}
    assert (
        client.put(f"{EXPORTS}/cinnamondb", json=obj).json()["metadata"]["generation"] == generation
    )
    assert client.get(f"{EXPORTS}/cinnamondb").json()["metadata"]["generation"] == generation
    # 6. TestDeletionWithFinalizers
    assert (
        client.post(EXPORTS, json=_export("ghostdb", finalizers=["doNotRemove"])).status_code == 201
    )
    assert client.delete(f"{EXPORTS}/ghostdb").status_code == 200
    assert client.get(f"{EXPORTS}/ghostdb").status_code == 404
    # 7. TestUpdatingSpecStatusSimultaneously
    obj = client.post(EXPORTS, json=_export("cucumberdb")).json()
    obj["status"] = {"condition": "run out"}
    obj["spec"] = {"size": 1111}
    r = client.put(f"{EXPORTS}/cucumberdb", json=obj)
    assert (r.json()["status"], r.json()["spec"]) == ({"condition": "run out"}, {"size": 1111})


def test_wildcard_watch_and_bad_input_over_tls(server: CacheServer, client: httpx2.Client) -> None:
    wildcard = BASE.format(shard="*", cluster="*")
    rv = client.get(wildcard).json()["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    got_two = threading.Event()

    def watch() -> None:
        with (
            server.client() as watcher,
            watcher.stream(
                "GET",
                wildcard,
                params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "30"},
            ) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                events.append(json.loads(line))
                if len(events) == 2:
                    got_two.set()
                    return  # hang up: the server must notice and free the watcher

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    # Bad input first: every answer is a Status, nothing is stored.
    assert (
        client.post(
            EXPORTS, content=b"{nope", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    big = b'{"pad":"' + b"x" * (3 * 1024 * 1024 + 10) + b'"}'
    assert (
        client.post(EXPORTS, content=big, headers={"content-type": "application/json"}).status_code
        == 413
    )
    r = client.post(
        EXPORTS, content=b"x", headers={"content-type": "application/vnd.kubernetes.protobuf"}
    )
    assert r.status_code == 415
    assert r.json()["kind"] == "Status"
    assert client.get(EXPORTS.replace("apiexports", "widgets")).status_code == 404
    r = client.post(wildcard, json=_export("nope"))
    assert r.status_code == 405
    # Then two real writes on two shards and two clusters reach the wildcard watch.
    for shard, cluster in (("amber", "acme"), ("beryl", "zeta")):
        path = BASE.format(shard=shard, cluster=cluster)
        assert client.post(path, json=_export("w")).status_code == 201
    assert got_two.wait(15)
    thread.join(15)
    assert [
        (
            e["type"],
            e["object"]["metadata"]["annotations"]["kcp.io/shard"],
            e["object"]["metadata"]["annotations"]["kcp.io/cluster"],
        )
        for e in events
    ] == [("ADDED", "amber", "acme"), ("ADDED", "beryl", "zeta")]
    listed = client.get(wildcard).json()["items"]
    assert sorted(i["metadata"]["name"] for i in listed) == ["w", "w"]
    # The watcher that hung up is gone from the open-watches gauge (of every worker:
    # new connections land on any of them; the one that served the watch has the gauge).
    workers = int(server.extra_args[server.extra_args.index("--workers") + 1])
    gauges: dict[str, list[str]] = {}
    for _ in range(200):
        with server.client() as fresh:
            metrics = fresh.get("/metrics").text
        worker = re.search(r'worker="(\d+)"', metrics)
        gauges[worker.group(1) if worker else ""] = [
            line for line in metrics.splitlines() if line.startswith("kcp_cache_open_watches{")
        ]
        lines = [line for found in gauges.values() for line in found]
        if len(gauges) == workers and lines and all(line.endswith(" 0.0") for line in lines):
            break
        threading.Event().wait(0.05)
    assert len(gauges) == workers
    lines = [line for found in gauges.values() for line in found]
    assert lines
    assert all(line.rstrip().endswith(" 0.0") for line in lines), gauges
