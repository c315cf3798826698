"""Server-side apply end to end: the real kubectl and raw HTTP against the real binary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from kcp_cache.testing import CacheServer

from ._kubectl import Kubectl

API = "/services/cache/shards/amber/clusters/{cluster}/apis/apis.kcp.io/v1alpha2/apiexports"
APPLY = {"Content-Type": "application/apply-patch+yaml"}


@pytest.fixture
def kubectl(server: CacheServer, tmp_path: Path) -> Kubectl:
    return Kubectl(server, tmp_path)


@pytest.fixture
def admin(server: CacheServer) -> Iterator[httpx2.Client]:
    with server.client() as client:
        yield client


def config(name: str, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apis.kcp.io/v1alpha2",
            "kind": "APIExport",
            "metadata": {"name": name, "labels": {"team": "ssa"}},
            "spec": spec,
        }
    )


def managers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["manager"]: e for e in obj["metadata"].get("managedFields", [])}


def test_kubectl_server_side_apply_with_two_managers(
    kubectl: Kubectl, admin: httpx2.Client, tmp_path: Path
) -> None:
    cluster = "ssa-kubectl"
    path = tmp_path / "export.yaml"
    path.write_text(config("shared", owner="alice", size=1))
    out = kubectl("apply", "--server-side", "-f", str(path), cluster=cluster)
    assert out.strip() == "apiexport.apis.kcp.io/shared serverside-applied"
    stored = admin.get(API.format(cluster=cluster) + "/shared").json()
    entry = managers(stored)["kubectl"]
    assert entry["operation"] == "Apply"
    assert entry["fieldsV1"]["f:spec"] == {".": {}, "f:owner": {}, "f:size": {}}

    # A second manager changing a field the first owns: kube's conflict.
    path.write_text(config("shared", owner="bob"))
    conflict = kubectl.run(
        "apply", "--server-side", "--field-manager=bob", "-f", str(path),
        cluster=cluster, ok=False,
    )  # fmt: skip
    assert conflict.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.owner' in conflict.stderr
    assert admin.get(API.format(cluster=cluster) + "/shared").json()["spec"]["owner"] == "alice"

    # --force-conflicts takes the field over.
    kubectl(
        "apply", "--server-side", "--field-manager=bob", "--force-conflicts", "-f", str(path),
        cluster=cluster,
    )  # fmt: skip
    after = admin.get(API.format(cluster=cluster) + "/shared").json()
    assert after["spec"] == {"owner": "bob", "size": 1}
    owned = managers(after)
    assert "f:owner" in owned["bob"]["fieldsV1"]["f:spec"]
    assert "f:owner" not in owned["kubectl"]["fieldsV1"]["f:spec"]
    assert "f:size" in owned["kubectl"]["fieldsV1"]["f:spec"]


def test_apply_creates_updates_removes_and_shares(admin: httpx2.Client) -> None:
    url = API.format(cluster="ssa-http") + "/obj"
    params = {"fieldManager": "alpha"}
    created = admin.patch(url, params=params, headers=APPLY, content=config("obj", a=1, b=2))
    assert created.status_code == 201
    assert created.json()["spec"] == {"a": 1, "b": 2}
    assert created.json()["metadata"]["uid"]

    # Applying without b removes it: alpha owned it alone.
    updated = admin.patch(url, params=params, headers=APPLY, content=config("obj", a=1))
    assert updated.status_code == 200
    assert updated.json()["spec"] == {"a": 1}

    # Another manager applying the same value shares the field: no conflict.
    beta = {"fieldManager": "beta"}
    shared = admin.patch(url, params=beta, headers=APPLY, content=config("obj", a=1, c=3))
    assert shared.status_code == 200
    owners = managers(shared.json())
    assert "f:a" in owners["alpha"]["fieldsV1"]["f:spec"]
    assert "f:a" in owners["beta"]["fieldsV1"]["f:spec"]
    # alpha drops a: beta still owns it, so it stays.
    dropped = admin.patch(url, params=params, headers=APPLY, content=config("obj", z=0))
    assert dropped.json()["spec"] == {"a": 1, "c": 3, "z": 0}
    # Two conflicting fields at once: both listed, one cause each.
    clash = admin.patch(url, params=params, headers=APPLY, content=config("obj", a=9, c=9))
    assert clash.status_code == 409
    status = clash.json()
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 2 conflicts: conflicts with "beta":\n- .spec.a\n- .spec.c'
    )
    assert [c["field"] for c in status["details"]["causes"]] == [".spec.a", ".spec.c"]
    assert {c["reason"] for c in status["details"]["causes"]} == {"FieldManagerConflict"}
    assert admin.get(url).json()["spec"] == {"a": 1, "c": 3, "z": 0}  # nothing written


def test_apply_needs_a_field_manager_and_force_only_applies_to_apply(
    admin: httpx2.Client,
) -> None:
    url = API.format(cluster="ssa-bad") + "/obj"
    missing = admin.patch(url, headers=APPLY, content=config("obj", a=1))
    assert missing.status_code == 422
    assert missing.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
        "is required for apply patch"
    )
    merge = admin.patch(
        url,
        params={"force": "true"},
        headers={"Content-Type": "application/merge-patch+json"},
        content=b"{}",
    )
    assert merge.status_code == 422
    assert "force: Forbidden: may not be specified for non-apply patch" in merge.json()["message"]
    wrong_name = admin.patch(
        url, params={"fieldManager": "m"}, headers=APPLY, content=config("other", a=1)
    )
    assert wrong_name.status_code == 400
    assert admin.get(url).status_code == 404


@pytest.mark.parametrize(
    ("value", "code"), [("false", 409), ("0", 409), ("true", 200), ("maybe", 200), ("", 200)]
)
def test_force_is_read_as_kube_reads_query_booleans(
    admin: httpx2.Client, value: str, code: int
) -> None:
    url = API.format(cluster="ssa-force") + f"/obj-{code}-{value or 'empty'}"
    name = url.rsplit("/", 1)[1]
    alice = admin.patch(
        url, params={"fieldManager": "alice"}, headers=APPLY, content=config(name, a=1)
    )
    assert alice.status_code == 201
    bob = admin.patch(
        url, params={"fieldManager": "bob", "force": value}, headers=APPLY,
        content=config(name, a=2),
    )  # fmt: skip
    assert bob.status_code == code


def test_dry_run_apply_writes_nothing(admin: httpx2.Client) -> None:
    url = API.format(cluster="ssa-dry") + "/obj"
    params = {"fieldManager": "m", "dryRun": "All"}
    answer = admin.patch(url, params=params, headers=APPLY, content=config("obj", a=1))
    assert answer.status_code == 201
    assert managers(answer.json())["m"]["operation"] == "Apply"
    assert admin.get(url).status_code == 404


def test_non_apply_writes_keep_managed_fields_as_sent(admin: httpx2.Client) -> None:
    """What kcp's replication pushes is stored as it is: no Update entries are added."""
    url = API.format(cluster="ssa-replica")
    sent = [
        {
            "manager": "kcp-front",
            "operation": "Update",
            "apiVersion": "apis.kcp.io/v1alpha2",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:x": {}}},
        }
    ]
    body = {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": "obj", "managedFields": sent},
        "spec": {"x": 1},
    }
    created = admin.post(url, json=body).json()
    assert created["metadata"]["managedFields"] == sent
    created["spec"]["x"] = 2
    updated = admin.put(f"{url}/obj", json=created).json()
    assert updated["metadata"]["managedFields"] == sent
    patched = admin.patch(
        f"{url}/obj",
        headers={"Content-Type": "application/merge-patch+json"},
        content=b'{"spec":{"y":1}}',
    ).json()
    assert patched["metadata"]["managedFields"] == sent
