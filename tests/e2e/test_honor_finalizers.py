"""Black-box: ``--honor-finalizers``, kube's finalizer semantics for a server that stands in
for a shard's API (kcp's cache server itself deletes at once: spec §3.1 and
``test_blackbox_api.py``'s TestDeletionWithFinalizers).

The real binary, real TLS, a watch to see which events the steps make, and kubectl
deleting and finalizing an object the way an operator would.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from kcp_cache.testing import CacheServer, start_cache_server

KUBECTL = Path(sys.executable).parent / "kubectl"
SCOPE = "/services/cache/shards/amber/clusters/acme"
EXPORTS = f"{SCOPE}/apis/apis.kcp.io/v1alpha1/apiexports"
MERGE = {"content-type": "application/merge-patch+json"}


def _export(name: str, finalizers: list[str] | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {"t": "f"}}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": meta}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    root = tmp_path_factory.mktemp("finalizers")
    with start_cache_server(root, "--storage", "memory", "--honor-finalizers") as running:
        yield running


@pytest.fixture
def client(server: CacheServer) -> Iterator[httpx2.Client]:
    with server.client() as c:
        yield c


class _Watch:
    """The events of one object, from a resourceVersion, on a background thread."""

    def __init__(self, server: CacheServer, name: str, rv: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.deleted = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, name, rv), daemon=True)
        self._thread.start()

    def _run(self, server: CacheServer, name: str, rv: str) -> None:
        params = {
            "watch": "true",
            "resourceVersion": rv,
            "fieldSelector": f"metadata.name={name}",
            "timeoutSeconds": "20",
        }
        with server.client() as http, http.stream("GET", EXPORTS, params=params) as response:
            for line in response.iter_lines():
                event = orjson.loads(line)
                self.events.append((event["type"], event["object"]))
                if event["type"] == "DELETED":
                    self.deleted.set()
                    return

    def join(self) -> list[tuple[str, dict[str, Any]]]:
        assert self.deleted.wait(15), self.events
        self._thread.join(5)
        return self.events


def test_delete_marks_and_the_last_finalizer_removal_deletes(
    server: CacheServer, client: httpx2.Client
) -> None:
    created = client.post(EXPORTS, json=_export("held", ["a.io/one", "b.io/two"]))
    assert created.status_code == 201, created.text
    watch = _Watch(server, "held", created.json()["metadata"]["resourceVersion"])

    # DELETE: 200 with the object, now being deleted; it stays.
    answer = client.delete(f"{EXPORTS}/held")
    assert answer.status_code == 200, answer.text
    marked = answer.json()
    assert marked["kind"] == "APIExport"
    assert marked["metadata"]["deletionTimestamp"].endswith("Z")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 0
    stored = client.get(f"{EXPORTS}/held").json()
    assert stored["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    rv = stored["metadata"]["resourceVersion"]

    # A second DELETE changes nothing (no write, same resourceVersion).
    again = client.delete(f"{EXPORTS}/held")
    assert again.status_code == 200
    assert again.json()["metadata"]["resourceVersion"] == rv

    # A write can neither clear the deletionTimestamp nor add a finalizer.
    body = {**stored, "metadata": {**stored["metadata"], "labels": {"t": "g"}}}
    del body["metadata"]["deletionTimestamp"]
    put = client.put(f"{EXPORTS}/held", json=body)
    assert put.status_code == 200, put.text
    assert put.json()["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    added = client.patch(
        f"{EXPORTS}/held",
        content=orjson.dumps({"metadata": {"finalizers": ["a.io/one", "b.io/two", "c.io/new"]}}),
        headers=MERGE,
    )
    assert added.status_code == 422, added.text
    assert "no new finalizers can be added if the object is being deleted" in added.text
    assert added.json()["details"]["causes"][0]["field"] == "metadata.finalizers"

    # Removing one finalizer keeps it; removing the last one deletes it (200, the object).
    one = client.patch(
        f"{EXPORTS}/held",
        content=orjson.dumps({"metadata": {"finalizers": ["b.io/two"]}}),
        headers=MERGE,
    )
    assert one.status_code == 200, one.text
    assert client.get(f"{EXPORTS}/held").json()["metadata"]["finalizers"] == ["b.io/two"]
    last = client.patch(
        f"{EXPORTS}/held", content=orjson.dumps({"metadata": {"finalizers": None}}), headers=MERGE
    )
    assert last.status_code == 200, last.text
    assert last.json()["metadata"]["name"] == "held"
    assert client.get(f"{EXPORTS}/held").status_code == 404

    # Watchers see the mark, the updates, then DELETED — never an object with no
    # finalizers left standing.
    events = watch.join()
    assert [t for t, _ in events] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    assert "deletionTimestamp" in events[0][1]["metadata"]
    assert events[-1][1]["metadata"]["finalizers"] == ["b.io/two"]


def test_objects_without_finalizers_go_at_once(client: httpx2.Client) -> None:
    assert client.post(EXPORTS, json=_export("plain")).status_code == 201
    assert client.post(EXPORTS, json=_export("emptied", [])).status_code == 201
    for name in ("plain", "emptied"):
        answer = client.delete(f"{EXPORTS}/{name}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["kind"] == "Status"
        assert client.get(f"{EXPORTS}/{name}").status_code == 404


def test_deletecollection_marks_what_finalizers_hold(client: httpx2.Client) -> None:
    assert client.post(EXPORTS, json=_export("c-held", ["x.io/keep"], batch="c")).status_code == 201
    assert client.post(EXPORTS, json=_export("c-free", batch="c")).status_code == 201
    answer = client.delete(EXPORTS, params={"labelSelector": "batch=c"})
    assert answer.status_code == 200, answer.text
    assert sorted(o["metadata"]["name"] for o in answer.json()["items"]) == ["c-free", "c-held"]
    assert client.get(f"{EXPORTS}/c-free").status_code == 404
    held = client.get(f"{EXPORTS}/c-held").json()
    assert held["metadata"]["deletionTimestamp"]
    # The unfiltered form (a whole prefix) honours them too.
    assert client.delete(EXPORTS).status_code == 200
    assert client.get(f"{EXPORTS}/c-held").status_code == 200


def test_kubectl_delete_then_finalize(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    server = cache_server("--storage", "memory", "--honor-finalizers")

    def kubectl(*args: str) -> str:
        cmd = [str(KUBECTL), "--kubeconfig", str(server.kubeconfig)]
        cmd += ["--server", f"{server.base_url}/shards/amber/clusters/acme", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    manifest = tmp_path / "export.yaml"
    manifest.write_text(orjson.dumps(_export("by-kubectl", ["example.io/cleanup"])).decode())
    kubectl("create", "-f", str(manifest))
    assert "deleted" in kubectl("delete", "apiexport", "by-kubectl", "--wait=false")
    stamp = kubectl(
        "get", "apiexport", "by-kubectl", "-o", "jsonpath={.metadata.deletionTimestamp}"
    )
    assert stamp.endswith("Z")
    kubectl("patch", "apiexport", "by-kubectl", "--type=json",
            "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')  # fmt: skip
    left = kubectl("get", "apiexports", "--ignore-not-found", "-o", "name")
    assert "by-kubectl" not in left


def test_a_dry_run_delete_marks_nothing(client: httpx2.Client) -> None:
    assert client.post(EXPORTS, json=_export("dry", ["x.io/keep"])).status_code == 201
    answer = client.delete(f"{EXPORTS}/dry", params={"dryRun": "All"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"]["deletionTimestamp"]  # what would be stored
    assert "deletionTimestamp" not in client.get(f"{EXPORTS}/dry").json()["metadata"]
