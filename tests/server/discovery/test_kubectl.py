"""The real kubectl against a stub server that serves this package's documents.

Proves which discovery/OpenAPI requests kubectl 1.37 makes for get/create/apply/delete
and that it parses every document we return: aggregated discovery (no fallback to the
per-group-version documents), OpenAPI v3 with ``fieldValidation`` (server-side
validation, no ``/openapi/v2`` for ``create``), the protobuf v2 document ``apply`` asks
for, and Tables with our columns.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._crds import ALL
from ._stub import RunningStub, StubServer

KUBECTL = Path(sys.executable).parent / "kubectl"
AGGREGATED_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"
PROBLEMS = ("error", "couldn't", "unable", "failed", "warning")


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[StubServer, str]]:
    app = StubServer(ALL)
    with RunningStub(app) as running:
        yield app, running.url


class Kubectl:
    def __init__(self, stub: tuple[StubServer, str], home: Path) -> None:
        self.app, self.url = stub
        self.home = home
        self.app.log.clear()

    def __call__(
        self, *args: str, cluster: str = "acme", shard: str = "amber", stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        server = f"{self.url}/services/cache/shards/{shard}/clusters/{cluster}"
        result = subprocess.run(
            [str(KUBECTL), f"--server={server}", f"--cache-dir={self.home / 'cache'}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={"HOME": str(self.home), "PATH": os.environ.get("PATH", "")},
            check=False,
        )
        assert result.returncode == 0, result.stderr
        lowered = result.stderr.lower()
        assert not any(p in lowered for p in PROBLEMS), result.stderr
        return result

    def requests(self) -> list[str]:
        """``METHOD path?query`` of every request so far (and forget them)."""
        seen = [f"{r.method} {r.path}" + (f"?{r.query}" if r.query else "") for r in self.app.log]
        self.app.log.clear()
        return seen


@pytest.fixture
def kubectl(stub: tuple[StubServer, str], tmp_path: Path) -> Kubectl:
    return Kubectl(stub, tmp_path)


def _manifest(name: str, value: str = "bar") -> str:
    return (
        "apiVersion: apis.kcp.io/v1alpha2\nkind: APIExport\n"
        f"metadata:\n  name: {name}\nspec:\n  foo: {value}\n"
    )


def test_get_uses_aggregated_discovery_and_tables(kubectl: Kubectl) -> None:
    result = kubectl("get", "apiexports")
    assert "No resources found" in result.stderr
    log = list(kubectl.app.log)
    assert kubectl.requests() == [
        "GET /api?timeout=32s",
        "GET /apis?timeout=32s",
        "GET /apis/apis.kcp.io/v1alpha2/apiexports?limit=500",
    ]
    assert log[0].accept.startswith(AGGREGATED_ACCEPT)
    assert log[1].accept.startswith(AGGREGATED_ACCEPT)
    assert log[2].accept.startswith(TABLE_ACCEPT)


def test_create_validates_server_side(kubectl: Kubectl) -> None:
    result = kubectl("create", "-f", "-", stdin=_manifest("created"))
    assert "apiexport.apis.kcp.io/created created" in result.stdout
    requests = kubectl.requests()
    assert requests[0] == "GET /openapi/v3?timeout=32s"
    assert requests[1].startswith("GET /openapi/v3/apis/apis.kcp.io/v1alpha2?hash=")
    assert requests[2:] == [
        "GET /api?timeout=32s",  # discovery (REST mapping) after validation
        "GET /apis?timeout=32s",
        "POST /apis/apis.kcp.io/v1alpha2/apiexports"
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    ]
    assert not any("/openapi/v2" in r for r in requests)

    table = kubectl("get", "apiexports").stdout.splitlines()
    assert table[0].split() == ["NAME", "AGE"]
    assert table[1].split()[0] == "created"
    assert table[1].split()[1].endswith("s")  # an age like "0s", rendered by the server
    older = kubectl("get", "apiexports.v1alpha1.apis.kcp.io").stdout.splitlines()
    assert older[0].split() == ["NAME", "AGE", "READY"]


def test_apply_uses_merge_patch(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=_manifest("applied"))
    first = kubectl.requests()
    assert first[-2:] == [
        "GET /apis/apis.kcp.io/v1alpha2/apiexports/applied",
        "POST /apis/apis.kcp.io/v1alpha2/apiexports"
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    ]
    result = kubectl("apply", "-f", "-", stdin=_manifest("applied", "baz"))
    assert "configured" in result.stdout
    log = list(kubectl.app.log)
    second = kubectl.requests()
    assert "GET /openapi/v2?timeout=32s" in second
    v2 = log[second.index("GET /openapi/v2?timeout=32s")]
    assert v2.accept == "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    patch = log[-1]
    assert (patch.method, patch.path) == ("PATCH", "/apis/apis.kcp.io/v1alpha2/apiexports/applied")
    assert patch.content_type == "application/merge-patch+json"
    shown = kubectl("get", "apiexport", "applied", "-o", "yaml").stdout
    assert "foo: baz" in shown
    assert "kcp.io/cluster: acme" in shown


def test_delete(kubectl: Kubectl) -> None:
    kubectl("create", "-f", "-", stdin=_manifest("doomed"))
    kubectl.requests()
    result = kubectl("delete", "apiexport", "doomed")
    assert 'apiexport.apis.kcp.io "doomed" deleted' in result.stdout
    requests = kubectl.requests()
    assert "DELETE /apis/apis.kcp.io/v1alpha2/apiexports/doomed" in requests


def test_wildcard_listing_shows_shard_and_cluster(kubectl: Kubectl) -> None:
    kubectl("create", "-f", "-", stdin=_manifest("everywhere"))
    lines = kubectl("get", "apiexports", shard="*", cluster="*").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHARD", "CLUSTER", "AGE"]
    assert any(line.split()[:2] == ["everywhere", "amber"] for line in lines[1:])


def test_discovery_commands(kubectl: Kubectl) -> None:
    resources = kubectl("api-resources").stdout
    assert "customresourcedefinitions" in resources
    assert "crd,crds" in resources
    assert "rbac.authorization.k8s.io/v1" in resources
    versions = kubectl("api-versions").stdout.split()
    assert "apis.kcp.io/v1alpha2" in versions
    assert "apis.kcp.io/v1alpha1" in versions
    explained = kubectl("explain", "apiexports").stdout
    assert "KIND:       APIExport" in explained
    assert "VERSION:    v1alpha2" in explained
    assert "Server Version: v1.37.0+kcp-cache" in kubectl("version").stdout


def test_get_watch_prints_table_rows_from_events(kubectl: Kubectl) -> None:
    server = f"{kubectl.url}/services/cache/shards/amber/clusters/acme"
    watcher = subprocess.Popen(
        [str(KUBECTL), f"--server={server}", f"--cache-dir={kubectl.home / 'cache'}",
         "get", "apiexports", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"HOME": str(kubectl.home), "PATH": os.environ.get("PATH", "")},
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(watcher, lines), daemon=True)
    pump.start()
    try:
        deadline = time.monotonic() + 30
        while not any("watch=true" in r.query for r in kubectl.app.log):
            assert watcher.poll() is None, f"kubectl exited with {watcher.returncode}"
            assert time.monotonic() < deadline, "kubectl never started watching"
            time.sleep(0.05)
        watch = next(r for r in kubectl.app.log if "watch=true" in r.query)
        assert watch.accept.startswith(TABLE_ACCEPT)
        kubectl("create", "-f", "-", stdin=_manifest("watched"))
        kubectl("create", "-f", "-", stdin=_manifest("watched-2"))
        seen: list[str] = []
        while not {"watched", "watched-2"} <= {line.split()[0] for line in seen if line.strip()}:
            try:
                seen.append(lines.get(timeout=max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                raise AssertionError(f"no row for the new object; got {seen}") from None
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    pump.join(timeout=10)
    assert watcher.stderr is not None
    stderr = watcher.stderr.read()
    watcher.stderr.close()
    assert watcher.stdout is not None
    watcher.stdout.close()
    assert not any(p in stderr.lower() for p in PROBLEMS), stderr
    # Headers once: the list's Table, then events without column definitions.
    assert [line.split()[0] for line in seen if line.strip()].count("NAME") == 1


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)


def test_without_field_validation_kubectl_reads_our_v2_protobuf(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fallback path: a v3 document without ``fieldValidation`` sends kubectl to
    ``/openapi/v2`` as protobuf for client-side validation; it must parse ours."""
    monkeypatch.setattr(
        "kcp_cache.server.discovery._openapi._WRITE_PARAMS", ("dryRun", "fieldManager")
    )
    app = StubServer(ALL)
    with RunningStub(app) as running:
        kubectl = Kubectl((app, running.url), tmp_path)
        result = kubectl("create", "-f", "-", stdin=_manifest("validated-locally"))
        assert "created" in result.stdout
        requests = kubectl.requests()
    assert "GET /openapi/v2?timeout=32s" in requests
    assert requests[-1].startswith("POST /apis/apis.kcp.io/v1alpha2/apiexports?")
