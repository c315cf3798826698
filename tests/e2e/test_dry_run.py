"""Server-side dry run end to end: the real kubectl and raw HTTP against the real binary.

A dry run answers exactly as the real write would — the would-be object, or the error
the write would have met — and must never write: after each one the store's revision,
the object and the watch stream are checked to be untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kcp_cache.testing import CacheServer

from ._kubectl import Kubectl

API = "/services/cache/shards/amber/clusters/{cluster}/apis/apis.kcp.io/v1alpha2/apiexports"


@pytest.fixture
def kubectl(server: CacheServer, tmp_path: Path) -> Kubectl:
    return Kubectl(server, tmp_path)


def manifest(name: str, note: str = "one") -> str:
    return (
        "apiVersion: apis.kcp.io/v1alpha2\nkind: APIExport\n"
        f"metadata:\n  name: {name}\nspec:\n  note: {note}\n"
    )


def export(name: str, note: str = "one", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": {"name": name, **meta},
        "spec": {"note": note},
    }


def revision(client: httpx2.Client, cluster: str) -> str:
    listed = client.get(API.format(cluster=cluster))
    assert listed.status_code == 200
    rv: str = listed.json()["metadata"]["resourceVersion"]
    return rv


def events_since(client: httpx2.Client, cluster: str, since: str) -> list[str]:
    """The types of every event after resourceVersion *since* (a watch replays history)."""
    params = {"watch": "1", "resourceVersion": since, "timeoutSeconds": "1"}
    with client.stream("GET", API.format(cluster=cluster), params=params) as response:
        assert response.status_code == 200
        return [json.loads(line)["type"] for line in response.iter_lines() if line]


@pytest.fixture
def admin(server: CacheServer) -> Iterator[httpx2.Client]:
    with server.client() as client:
        yield client


def test_kubectl_create_apply_diff_and_delete_with_server_dry_run(
    kubectl: Kubectl, server: CacheServer, admin: httpx2.Client, tmp_path: Path
) -> None:
    cluster = "dry-kubectl"
    path = tmp_path / "export.yaml"
    path.write_text(manifest("ghost"))
    before = revision(admin, cluster)

    out = kubectl("create", "-f", str(path), "--dry-run=server", "-o", "json", cluster=cluster)
    would_be = json.loads(out)
    assert would_be["metadata"]["name"] == "ghost"
    assert would_be["metadata"]["uid"]  # the whole create ran, uid and timestamp included
    assert "resourceVersion" not in would_be["metadata"]
    assert "(server dry run)" in kubectl(
        "apply", "-f", str(path), "--dry-run=server", cluster=cluster
    )
    assert admin.get(API.format(cluster=cluster) + "/ghost").status_code == 404
    assert revision(admin, cluster) == before

    # Now for real, then a dry-run apply and a diff of a change.
    kubectl("create", "--save-config", "-f", str(path), cluster=cluster)
    stored = admin.get(API.format(cluster=cluster) + "/ghost").json()
    path.write_text(manifest("ghost", "two"))
    assert "configured (server dry run)" in kubectl(
        "apply", "-f", str(path), "--dry-run=server", cluster=cluster
    )
    diff = kubectl.run("diff", "-f", str(path), cluster=cluster, ok=False)
    assert diff.returncode == 1, diff.stderr  # 1: differences found
    assert "-  note: one" in diff.stdout
    assert "+  note: two" in diff.stdout
    deleted = kubectl("delete", "apiexport", "ghost", "--dry-run=server", cluster=cluster)
    assert 'apiexport.apis.kcp.io "ghost" deleted (server dry run)' in deleted
    after = admin.get(API.format(cluster=cluster) + "/ghost").json()
    assert after == stored  # same note, same resourceVersion: nothing was written


def test_dry_runs_answer_as_the_write_would_and_write_nothing(admin: httpx2.Client) -> None:
    cluster = "dry-http"
    url = API.format(cluster=cluster)
    created = admin.post(url, json=export("real"))
    assert created.status_code == 201
    stored = created.json()
    rv = stored["metadata"]["resourceVersion"]
    before = revision(admin, cluster)
    dry = {"dryRun": "All"}
    # create: the would-be object, or the conflict the create would meet
    answer = admin.post(url, params=dry, json=export("fresh"))
    assert answer.status_code == 201
    assert "resourceVersion" not in answer.json()["metadata"]
    conflict = admin.post(url, params=dry, json=export("real"))
    assert (conflict.status_code, conflict.json()["reason"]) == (409, "AlreadyExists")

    # update: the would-be object keeps its resourceVersion; a stale one is a Conflict
    changed = {**stored, "spec": {"note": "changed"}}
    answer = admin.put(f"{url}/real", params=dry, json=changed)
    assert answer.status_code == 200
    assert answer.json()["spec"] == {"note": "changed"}
    assert answer.json()["metadata"]["resourceVersion"] == rv
    stale = {**changed, "metadata": {**stored["metadata"], "resourceVersion": "1"}}
    answer = admin.put(f"{url}/real", params=dry, json=stale)
    assert (answer.status_code, answer.json()["reason"]) == (409, "Conflict")
    missing = admin.put(f"{url}/nobody", params=dry, json=export("nobody", resourceVersion=rv))
    assert missing.status_code == 404

    # patch
    merge = {"Content-Type": "application/merge-patch+json"}
    answer = admin.patch(
        f"{url}/real", params=dry, content=b'{"spec":{"note":"patched"}}', headers=merge
    )
    assert answer.status_code == 200
    assert answer.json()["spec"] == {"note": "patched"}
    assert answer.json()["metadata"]["resourceVersion"] == rv
    answer = admin.patch(f"{url}/nobody", params=dry, content=b"{}", headers=merge)
    assert answer.status_code == 404

    # delete: in the query or in the DeleteOptions body, preconditions checked
    assert admin.delete(f"{url}/real", params=dry).json()["status"] == "Success"
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]}
    answer = admin.request("DELETE", f"{url}/real", json=options)
    assert answer.json()["status"] == "Success"
    wrong_uid = {**options, "preconditions": {"uid": "not-the-uid"}}
    answer = admin.request("DELETE", f"{url}/real", json=wrong_uid)
    assert (answer.status_code, answer.json()["reason"]) == (409, "Conflict")
    assert admin.delete(f"{url}/nobody", params=dry).status_code == 404

    # deletecollection: the list of what would go
    answer = admin.delete(url, params=dry)
    assert answer.status_code == 200
    assert [o["metadata"]["name"] for o in answer.json()["items"]] == ["real"]
    answer = admin.delete(url, params={**dry, "labelSelector": "team=none"})
    assert answer.json()["items"] == []

    # Nothing was written: same object, same revision, no watch event.
    assert admin.get(f"{url}/real").json() == stored
    assert admin.get(f"{url}/fresh").status_code == 404
    assert revision(admin, cluster) == before
    # A real write after all the dry runs is the first event a watch from before sees.
    admin.delete(f"{url}/real")
    assert events_since(admin, cluster, before) == ["DELETED"]


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("POST", "CreateOptions"),
        ("PUT", "UpdateOptions"),
        ("PATCH", "PatchOptions"),
        ("DELETE", "DeleteOptions"),
    ],
)
@pytest.mark.parametrize("value", ["all", "None", ""])
def test_an_unknown_dry_run_value_is_kubes_invalid(
    admin: httpx2.Client, method: str, kind: str, value: str
) -> None:
    url = API.format(cluster="dry-bad")
    name = f"{url}/x" if method != "POST" else url
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    answer = admin.request(
        method, name, params={"dryRun": value}, content=json.dumps(export("x")), headers=headers
    )
    assert answer.status_code == 422
    status = answer.json()
    assert status["reason"] == "Invalid"
    assert status["message"] == (
        f'{kind}.meta.k8s.io "" is invalid: dryRun: Unsupported value: "{value}": '
        'supported values: "All"'
    )
    assert admin.get(f"{url}/x").status_code == 404
