"""Ports of kcp's TestCacheServerAllScenarios (spec §8.1), in-process against MemoryStorage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ._asgi import EXPORTS, Client

IGNORED_META = (
    "uid",
    "generation",
    "resourceVersion",
    "creationTimestamp",
    "annotations",
    "managedFields",
)


def _strip(obj: dict[str, Any], fields: tuple[str, ...] = IGNORED_META) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in fields}
    return out


def _export(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name, "annotations": {}, **meta},
    }


async def test_schema_is_not_enforced(client: Client) -> None:
    bare = {"metadata": {"annotations": {}}, "spec": "TheSun", "size": 40000}
    r = await client.post(EXPORTS, bare)
    assert r.status == 400
    assert r.json()["message"].startswith("Object 'Kind' is missing in '")

    nameless = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {}}
    r = await client.post(EXPORTS, nameless)
    assert r.status == 422
    assert r.json()["reason"] == "Invalid"

    sent = {**_export("earth"), "spec": "TheSun", "size": 40000}
    r = await client.post(EXPORTS, sent)
    assert r.status == 201, r.body
    assert _strip(r.json()) == _strip(sent)
    r = await client.get(f"{EXPORTS}/earth")
    assert r.status == 200
    assert _strip(r.json()) == _strip(sent)


async def test_shard_cluster_names_assigned(client: Client) -> None:
    r = await client.post(EXPORTS, _export("comicdb"))
    assert r.status == 201
    for obj in (r.json(), (await client.get(f"{EXPORTS}/comicdb")).json()):
        assert obj["metadata"]["annotations"] == {"kcp.io/shard": "amber", "kcp.io/cluster": "acme"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_uid_generation_creation_time_overwrite(client: Client) -> None:
    sent = _export("mangodb", uid="3", generation=11, creationTimestamp=_now())
    sent["metadata"]["annotations"] = {"kcp.io/shard": "amber"}
    r = await client.post(EXPORTS, sent)
    assert r.status == 201
    expected = _strip(sent, ("resourceVersion", "managedFields"))
    expected["metadata"]["annotations"] = {"kcp.io/shard": "amber", "kcp.io/cluster": "acme"}
    for obj in (r.json(), (await client.get(f"{EXPORTS}/mangodb")).json()):
        assert _strip(obj, ("resourceVersion", "managedFields")) == expected


async def test_uid_generation_creation_time_negative_overwrite(client: Client) -> None:
    created = _now()
    old = "2001-01-01T00:00:00Z"
    sent = _export("mangodbnegative", uid="3", generation=8, creationTimestamp=old)
    r = await client.post(EXPORTS, sent)
    assert r.status == 201
    for obj in (r.json(), (await client.get(f"{EXPORTS}/mangodbnegative")).json()):
        meta = obj["metadata"]
        assert meta["uid"] != "3"
        assert meta["generation"] != 8
        assert meta["creationTimestamp"] >= created
        assert meta["annotations"] == {"kcp.io/cluster": "acme", "kcp.io/shard": "amber"}
        assert _strip(obj) == _strip(sent)


async def test_generation_on_spec_changes(client: Client) -> None:
    r = await client.post(EXPORTS, _export("cinnamondb"))
    obj = r.json()
    generation = obj["metadata"]["generation"]
    obj["spec"] = {"size": 5}
    r = await client.put(f"{EXPORTS}/cinnamondb", obj)
    assert r.status == 200, r.body
    assert r.json()["metadata"]["generation"] == generation
    assert r.json()["spec"] == {"size": 5}
    r = await client.get(f"{EXPORTS}/cinnamondb")
    assert r.json()["metadata"]["generation"] == generation


async def test_deletion_with_finalizers(client: Client) -> None:
    r = await client.post(EXPORTS, _export("ghostdb", finalizers=["doNotRemove"]))
    assert r.status == 201
    r = await client.delete(f"{EXPORTS}/ghostdb")
    assert r.status == 200
    status = r.json()
    assert status["status"] == "Success"
    assert status["details"]["name"] == "ghostdb"
    r = await client.get(f"{EXPORTS}/ghostdb")
    assert r.status == 404
    assert r.json()["message"] == 'apiexports.apis.kcp.io "ghostdb" not found'


async def test_updating_spec_status_simultaneously(client: Client) -> None:
    obj = (await client.post(EXPORTS, _export("cucumberdb"))).json()
    obj["status"] = {"condition": "run out"}
    obj["spec"] = {"size": 1111}
    r = await client.put(f"{EXPORTS}/cucumberdb", obj)
    assert r.status == 200
    assert r.json()["status"] == {"condition": "run out"}
    assert r.json()["spec"] == {"size": 1111}
