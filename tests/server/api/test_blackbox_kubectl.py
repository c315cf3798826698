"""Black-box: the real kubectl against the real binary (TLS, admin.kubeconfig).

Exercises the API handlers the way an operator does: create from a file, Table output
with the Shard/Cluster columns of a wildcard context, label, apply (merge patch),
delete.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kcp_cache.testing import CacheServer

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
