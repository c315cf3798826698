"""The real kubectl 1.37 against the real binary, with the server's own admin.kubeconfig.

Validation stays on (kubectl's default ``--validate=strict``): it must be satisfied by the
server's OpenAPI v3 documents, not switched off.

What kubectl asks for (read from its ``-v=7`` request log, see ``docs/kubectl.md``): which
discovery and OpenAPI requests kubectl makes for get/create/apply/delete and that it
parses every document we return — aggregated discovery (no fallback to the per-group-version
documents), OpenAPI v3 with ``fieldValidation`` (server-side validation, no ``/openapi/v2``
for ``create``), the protobuf v2 document ``apply`` asks for, Tables with our columns.

The round trip an operator makes (create from a file, Table output with the
Shard/Cluster columns of a wildcard context, label, apply, delete) runs on its own
in-memory server.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvicorn

from kcp_cache.server import Scope, User, create_app
from kcp_cache.storage import MemoryStorage
from kcp_cache.testing import CacheServer

from ._kubectl import (
    AGGREGATED_ACCEPT,
    KUBECTL,
    TABLE_ACCEPT,
    Kubectl,
    LineReader,
    assert_no_problems,
    logged_requests,
)


@pytest.fixture
def kubectl(server: CacheServer, tmp_path: Path) -> Kubectl:
    return Kubectl(server, tmp_path)


def manifest(name: str, value: str = "one") -> str:
    return (
        "apiVersion: apis.kcp.io/v1alpha2\nkind: APIExport\n"
        f"metadata:\n  name: {name}\n  labels:\n    team: e2e\nspec:\n  note: {value}\n"
    )


def test_create_get_yaml_apply_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "export.yaml"
    path.write_text(manifest("life"))
    assert kubectl("create", "-f", str(path)).strip() == "apiexport.apis.kcp.io/life created"

    table = kubectl("get", "apiexports").splitlines()
    assert table[0].split() == ["NAME", "AGE"]
    assert [line.split()[0] for line in table[1:]] == ["life"]
    assert table[1].split()[1].endswith("s")  # an age rendered by the server's Table

    shown = kubectl("get", "apiexport", "life", "-o", "yaml")
    assert "note: one" in shown
    assert "kcp.io/cluster: acme" in shown
    assert "kcp.io/shard: amber" in shown  # added on read (spec §3)

    # apply: first a new object (create), then a changed one (merge patch).
    path.write_text(manifest("applied"))
    assert "apiexport.apis.kcp.io/applied created" in kubectl("apply", "-f", str(path))
    path.write_text(manifest("applied", "two"))
    assert "apiexport.apis.kcp.io/applied configured" in kubectl("apply", "-f", str(path))
    assert "note: two" in kubectl("get", "apiexport", "applied", "-o", "yaml")
    # Applying the same file again changes nothing.
    assert "apiexport.apis.kcp.io/applied unchanged" in kubectl("apply", "-f", str(path))

    assert 'apiexport.apis.kcp.io "life" deleted' in kubectl("delete", "apiexport", "life")
    gone = kubectl.run("get", "apiexport", "life", ok=False)
    assert gone.returncode == 1
    assert 'apiexports.apis.kcp.io "life" not found' in gone.stderr
    names = [line.split()[0] for line in kubectl("get", "apiexports").splitlines()[1:]]
    assert names == ["applied"]


def test_wildcard_context_shows_shard_and_cluster(kubectl: Kubectl) -> None:
    kubectl("create", "-f", "-", stdin=manifest("twin"), shard="amber", cluster="wild-a")
    kubectl("create", "-f", "-", stdin=manifest("twin"), shard="beech", cluster="wild-b")
    # The admin kubeconfig's default context is all-shards (/shards/*/clusters/*).
    lines = kubectl("get", "apiexports", "-l", "team=e2e", shard=None, cluster=None)
    rows = [line.split()[:3] for line in lines.splitlines()]
    assert rows[0] == ["NAME", "SHARD", "CLUSTER"]
    assert ["twin", "amber", "wild-a"] in rows[1:]
    assert ["twin", "beech", "wild-b"] in rows[1:]
    # One shard, every cluster: the CLUSTER column only.
    beech = kubectl("get", "apiexports", shard="beech", cluster="*").splitlines()
    assert beech[0].split() == ["NAME", "CLUSTER", "AGE"]
    assert beech[1].split()[:2] == ["twin", "wild-b"]


def test_get_watch_prints_new_rows(kubectl: Kubectl) -> None:
    kubectl("create", "-f", "-", stdin=manifest("before"), cluster="watched")
    log = kubectl.home / "watch.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            kubectl.argv("-v=7", "get", "apiexports", "--watch", cluster="watched"),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=kubectl.env(),
        )
    reader = LineReader(process)
    try:
        # The initial list (with the header), then kubectl is watching.
        lines = reader.until(lambda seen: any(s.startswith("before") for s in seen))
        assert lines[0].split() == ["NAME", "AGE"]
        kubectl("create", "-f", "-", stdin=manifest("during"), cluster="watched")
        kubectl("delete", "apiexport", "before", cluster="watched")
        lines = reader.until(lambda seen: any(s.startswith("during") for s in seen))
        rows = [line.split()[0] for line in lines[1:]]
        assert rows[:2] == ["before", "during"]
        assert lines.count(lines[0]) == 1  # column headers once, as kube sends them
    finally:
        reader.stop()
    trace = log.read_text()
    assert_no_problems(trace)
    watch = next(r for r in logged_requests(trace) if "watch=true" in r.query)
    assert watch.path == "/apis/apis.kcp.io/v1alpha2/apiexports"
    assert watch.accept.startswith(TABLE_ACCEPT)  # the events are Table rows too


def test_discovery_through_the_binary(kubectl: Kubectl) -> None:
    resources = kubectl("api-resources")
    assert "apiexports" in resources
    assert "customresourcedefinitions" in resources
    assert "crd,crds" in resources
    assert "rbac.authorization.k8s.io/v1" in resources
    versions = kubectl("api-versions").split()
    assert "apis.kcp.io/v1alpha2" in versions
    assert "apis.kcp.io/v1alpha1" in versions
    explained = kubectl("explain", "apiexports")
    assert "KIND:       APIExport" in explained
    assert "VERSION:    v1alpha2" in explained  # the preferred (highest priority) version
    assert "Server Version: v1.37.0+kcp-cache" in kubectl("version")


def test_wildcard_watch_rows_carry_shard_and_cluster(kubectl: Kubectl) -> None:
    def labelled(name: str) -> str:
        return manifest(name).replace("team: e2e", "team: wildwatch")

    kubectl("create", "-f", "-", stdin=labelled("settler"), shard="amber", cluster="near")
    argv = kubectl.argv(
        "get", "apiexports", "-l", "team=wildwatch", "--watch", shard=None, cluster=None
    )
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kubectl.env()
    )
    reader = LineReader(process)
    try:
        # The listed row first: from then on kubectl watches from the list's revision.
        lines = reader.until(lambda seen: any(s.startswith("settler") for s in seen))
        assert lines[0].split()[:3] == ["NAME", "SHARD", "CLUSTER"]
        assert lines[1].split()[:3] == ["settler", "amber", "near"]
        kubectl("create", "-f", "-", stdin=labelled("roamer"), shard="beech", cluster="far")
        lines = reader.until(lambda seen: any(s.startswith("roamer") for s in seen))
        row = next(line for line in lines if line.startswith("roamer"))
        assert row.split()[:3] == ["roamer", "beech", "far"]  # a watch event's Table row
    finally:
        reader.stop()


def test_cache_shards_through_kubectl(kubectl: Kubectl, tmp_path: Path) -> None:
    """The lifecycle types are served like the others: kubectl creates, patches and
    prints them with their printer columns (the server fills the status)."""
    where = {"shard": "system:cache:server", "cluster": "system:cache"}
    path = tmp_path / "cacheshard.yaml"
    path.write_text(
        "apiVersion: cacheserver.kcp.io/v1alpha1\nkind: CacheShard\n"
        "metadata:\n  name: kubectl-gamma\nspec:\n  registered: true\n"
    )
    created = kubectl.run("create", "-f", str(path), **where).stdout
    assert created.strip() == "cacheshard.cacheserver.kcp.io/kubectl-gamma created"

    def row() -> list[str]:
        table = kubectl.run("get", "cacheshards", **where).stdout.splitlines()
        assert table[0].split() == ["NAME", "PHASE", "EPOCH", "HEARTBEAT", "OBJECTS", "AGE"]
        return next(line.split() for line in table[1:] if line.startswith("kubectl-gamma"))

    deadline = time.monotonic() + 10
    while row()[1:3] != ["Active", "1"]:
        assert time.monotonic() < deadline, row()
        time.sleep(0.1)
    patched = kubectl.run(
        "patch", "cacheshard", "kubectl-gamma", "--type", "merge",
        "-p", '{"spec":{"decommission":true}}', **where,
    ).stdout  # fmt: skip
    assert "cacheshard.cacheserver.kcp.io/kubectl-gamma patched" in patched
    while row()[1] != "Purged":
        assert time.monotonic() < deadline + 10, row()
        time.sleep(0.1)
    assert "shardtombstones" in kubectl.run("api-resources", **where).stdout


EXPORT = """\
apiVersion: apis.kcp.io/v1alpha1
kind: APIExport
metadata:
  name: from-kubectl
spec:
  size: {size}
"""


def test_kubectl_round_trip(cache_server: Callable[..., CacheServer], tmp_path: Path) -> None:
    server = cache_server("--storage", "memory")

    def kubectl(*args: str, scoped: bool = True) -> str:
        cmd = [str(KUBECTL), "--kubeconfig", str(server.kubeconfig)]
        if scoped:  # the admin kubeconfig's default context is the */* wildcard
            cmd += ["--server", f"{server.base_url}/shards/amber/clusters/acme"]
        done = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    manifest = tmp_path / "export.yaml"
    manifest.write_text(EXPORT.format(size=1))
    assert "created" in kubectl("create", "-f", str(manifest))
    table = kubectl("get", "apiexports", scoped=False)
    header, row = table.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "SHARD", "CLUSTER"]
    assert row.split()[:3] == ["from-kubectl", "amber", "acme"]
    assert "labeled" in kubectl("label", "apiexport", "from-kubectl", "team=a")
    manifest.write_text(EXPORT.format(size=2))
    assert "configured" in kubectl("apply", "-f", str(manifest))
    spec = kubectl("get", "apiexport", "from-kubectl", "-o", "jsonpath={.spec.size}")
    assert spec == "2"
    assert "from-kubectl" in kubectl("get", "apiexports", "-l", "team=a", "-o", "name")
    assert "deleted" in kubectl("delete", "apiexport", "from-kubectl")
    assert kubectl("get", "apiexports", "-o", "name") == ""


def manifest_v2(name: str, value: str = "bar") -> str:
    return (
        "apiVersion: apis.kcp.io/v1alpha2\nkind: APIExport\n"
        f"metadata:\n  name: {name}\nspec:\n  foo: {value}\n"
    )


def test_get_uses_aggregated_discovery_and_tables(kubectl: Kubectl) -> None:
    out, sent = kubectl.trace("get", "apiexports", cluster="quiet")
    assert out == ""  # "No resources found" goes to stderr
    assert [str(r) for r in sent] == [
        "GET /api?timeout=32s",
        "GET /apis?timeout=32s",
        "GET /apis/apis.kcp.io/v1alpha2/apiexports?limit=500",
    ]
    assert sent[0].accept.startswith(AGGREGATED_ACCEPT)
    assert sent[1].accept.startswith(AGGREGATED_ACCEPT)
    assert sent[2].accept.startswith(TABLE_ACCEPT)


def test_create_validates_server_side(kubectl: Kubectl) -> None:
    out, sent = kubectl.trace("create", "-f", "-", stdin=manifest_v2("created"), cluster="valid")
    assert "apiexport.apis.kcp.io/created created" in out
    requests = [str(r) for r in sent]
    assert requests[0] == "GET /openapi/v3?timeout=32s"
    assert requests[1].startswith("GET /openapi/v3/apis/apis.kcp.io/v1alpha2?hash=")
    assert requests[2:] == [
        "GET /api?timeout=32s",  # discovery (REST mapping) after validation
        "GET /apis?timeout=32s",
        "POST /apis/apis.kcp.io/v1alpha2/apiexports"
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    ]
    assert not any("/openapi/v2" in r for r in requests)

    table = kubectl("get", "apiexports", cluster="valid").splitlines()
    assert table[0].split() == ["NAME", "AGE"]
    assert table[1].split()[0] == "created"
    assert table[1].split()[1].endswith("s")  # an age like "0s", rendered by the server
    older = kubectl("get", "apiexports.v1alpha1.apis.kcp.io", cluster="valid").splitlines()
    assert older[0].split() == ["NAME", "AGE", "READY"]  # the v1alpha1 printer columns


def test_apply_uses_merge_patch(kubectl: Kubectl) -> None:
    _, first = kubectl.trace("apply", "-f", "-", stdin=manifest_v2("applied"), cluster="patched")
    assert [str(r) for r in first[-2:]] == [
        "GET /apis/apis.kcp.io/v1alpha2/apiexports/applied",
        "POST /apis/apis.kcp.io/v1alpha2/apiexports"
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    ]
    out, second = kubectl.trace(
        "apply", "-f", "-", stdin=manifest_v2("applied", "baz"), cluster="patched"
    )
    assert "configured" in out
    v2 = next(r for r in second if str(r) == "GET /openapi/v2?timeout=32s")
    assert v2.accept == "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    patch = second[-1]
    assert (patch.method, patch.path) == ("PATCH", "/apis/apis.kcp.io/v1alpha2/apiexports/applied")
    assert patch.content_type == "application/merge-patch+json"
    shown = kubectl("get", "apiexport", "applied", "-o", "yaml", cluster="patched")
    assert "foo: baz" in shown
    assert "kcp.io/cluster: patched" in shown


def test_delete(kubectl: Kubectl) -> None:
    kubectl("create", "-f", "-", stdin=manifest_v2("doomed"), cluster="doomed")
    out, sent = kubectl.trace("delete", "apiexport", "doomed", cluster="doomed")
    assert 'apiexport.apis.kcp.io "doomed" deleted' in out
    assert "DELETE /apis/apis.kcp.io/v1alpha2/apiexports/doomed" in [str(r) for r in sent]


async def _loopback_admin(scope: Scope) -> User | None:
    """The host's authentication of the in-process app: loopback is the admin (kubectl
    sends no bearer token over plain HTTP, and this server listens on loopback only)."""
    client = scope.get("client")
    if client is not None and client[0] == "127.0.0.1":
        return User("admin", ("system:masters",))
    return None


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    """The real app (``create_app``) in this process, over plain HTTP on loopback, so a
    test can change what it serves."""
    storage = MemoryStorage()
    await storage.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(storage, authenticator=_loopback_admin)
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
        await storage.close()


async def test_without_field_validation_kubectl_reads_our_v2_protobuf(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app_url: str
) -> None:
    """The fallback path: a v3 document without ``fieldValidation`` sends kubectl to
    ``/openapi/v2`` as protobuf for client-side validation; it must parse ours."""
    monkeypatch.setattr(
        "kcp_cache.server.discovery._openapi._WRITE_PARAMS", ("dryRun", "fieldManager")
    )
    argv = [
        str(KUBECTL), f"--server={app_url}/services/cache/shards/amber/clusters/acme",
        f"--cache-dir={tmp_path / 'cache'}", "-v=7", "create", "-f", "-",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run,
        argv,
        input=manifest_v2("validated-locally"),
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "PATH": ""},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert_no_problems(result.stderr)
    assert "created" in result.stdout
    requests = [str(r) for r in logged_requests(result.stderr)]
    assert "GET /openapi/v2?timeout=32s" in requests
    assert requests[-1].startswith("POST /apis/apis.kcp.io/v1alpha2/apiexports?")
