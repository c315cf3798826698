"""The real kubectl 1.37 against the real binary, with the server's own admin.kubeconfig.

Validation stays on (kubectl's default ``--validate=strict``): it must be satisfied by the
server's OpenAPI v3 documents, not switched off.

The round trip an operator makes (create from a file, Table output with the
Shard/Cluster columns of a wildcard context, label, apply, delete) runs on its own
in-memory server.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kcp_cache.testing import CacheServer

from ._kubectl import Kubectl, LineReader


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
    process = subprocess.Popen(
        kubectl.argv("get", "apiexports", "--watch", cluster="watched"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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


def test_discovery_through_the_binary(kubectl: Kubectl) -> None:
    resources = kubectl("api-resources")
    assert "apiexports" in resources
    assert "customresourcedefinitions" in resources
    assert "apis.kcp.io/v1alpha2" in kubectl("api-versions").split()
    assert "KIND:       APIExport" in kubectl("explain", "apiexports")


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


KUBECTL = Path(sys.executable).parent / "kubectl"

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
