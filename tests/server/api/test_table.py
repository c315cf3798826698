"""kubectl's Table responses (the discovery package's transforms) on GET and LIST."""

from __future__ import annotations

from ._asgi import EXPORTS, Client

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


async def test_table_list_and_get(client: Client) -> None:
    body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "t"}}
    await client.post(EXPORTS, body)
    r = await client.get(EXPORTS, accept=TABLE)
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json;g=meta.k8s.io;v=v1;as=Table")
    table = r.json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age", "Ready"]
    assert table["rows"][0]["cells"][0] == "t"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    wild = (await client.at("*", "*").get(EXPORTS, accept=TABLE)).json()
    assert [c["name"] for c in wild["columnDefinitions"]][:3] == ["Name", "Shard", "Cluster"]
    assert wild["rows"][0]["cells"][:3] == ["t", "amber", "acme"]
    one = (await client.get(f"{EXPORTS}/t", accept=TABLE)).json()
    assert one["kind"] == "Table"
    assert len(one["rows"]) == 1
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    crd_table = (await client.at("*", "*").get(crds, accept=TABLE)).json()
    assert len(crd_table["rows"]) == 26


async def test_unacceptable_media_types(client: Client) -> None:
    r = await client.get(EXPORTS, accept="application/vnd.kubernetes.protobuf")
    assert r.status == 406
    assert r.json()["reason"] == "NotAcceptable"
    ok = await client.get(EXPORTS, accept="application/vnd.kubernetes.protobuf,application/json")
    assert ok.status == 200
    assert ok.json()["kind"] == "APIExportList"


async def test_table_watch(client: Client) -> None:
    rv = (await client.get(EXPORTS)).json()["metadata"]["resourceVersion"]
    stream = client.watch(EXPORTS, {"resourceVersion": rv}, accept=TABLE)
    body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "w"}}
    await client.post(EXPORTS, body)
    await client.delete(f"{EXPORTS}/w")
    added, deleted = await stream.take(2)
    assert added["type"] == "ADDED"
    assert added["object"]["kind"] == "Table"
    assert [c["name"] for c in added["object"]["columnDefinitions"]] == ["Name", "Age", "Ready"]
    assert added["object"]["rows"][0]["cells"][0] == "w"
    assert deleted["type"] == "DELETED"
    assert deleted["object"]["columnDefinitions"] is None  # headers only once
    await stream.close()
