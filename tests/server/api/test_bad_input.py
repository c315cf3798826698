"""Bad input: each answer is a metav1.Status; afterwards the server serves, data intact."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kcp_cache.server import KcpRequest
from kcp_cache.testing import ASGIClient

from ._asgi import EXPORTS, Client, Response

GOOD = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "keep"}}


def _status(r: Response, code: int, reason: str) -> dict[str, Any]:
    assert r.status == code, r.body
    body = r.json()
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert body["reason"] == reason
    return body


Case = Callable[[Client], Awaitable[Response]]

CASES: list[tuple[str, Case, int, str]] = [
    (
        "malformed json",
        lambda c: c.request("POST", EXPORTS, body=b'{"kind": "APIExport",'),
        400,
        "BadRequest",
    ),
    (
        "body over 3 MiB",
        lambda c: c.request("POST", EXPORTS, body=b'{"pad":"' + b"x" * (3 * 1024 * 1024) + b'"}'),
        413,
        "RequestEntityTooLarge",
    ),
    (
        "missing kind",
        lambda c: c.post(
            EXPORTS, {"apiVersion": "apis.kcp.io/v1alpha1", "metadata": {"name": "a"}}
        ),
        400,
        "BadRequest",
    ),
    (
        "missing apiVersion",
        lambda c: c.post(EXPORTS, {"kind": "APIExport", "metadata": {"name": "a"}}),
        400,
        "BadRequest",
    ),
    (
        "wrong group",
        lambda c: c.post(EXPORTS, {**GOOD, "apiVersion": "core.kcp.io/v1alpha1"}),
        400,
        "BadRequest",
    ),
    (
        "wrong kind",
        lambda c: c.post(EXPORTS, {**GOOD, "kind": "Shard"}),
        422,
        "Invalid",
    ),
    (
        "body is not an object",
        lambda c: c.post(EXPORTS, [1, 2, 3]),
        400,
        "BadRequest",
    ),
    (
        "unknown resource",
        lambda c: c.post("/apis/apis.kcp.io/v1alpha1/widgets", GOOD),
        404,
        "NotFound",
    ),
    (
        "core api",
        lambda c: c.get("/api/v1/namespaces/default/configmaps"),
        404,
        "NotFound",
    ),
    (
        "subresource",
        lambda c: c.get(f"{EXPORTS}/keep/status"),
        404,
        "NotFound",
    ),
    (
        "unsupported media type",
        lambda c: c.request(
            "POST", EXPORTS, body=b"\x0a\x0b", content_type="application/vnd.kubernetes.protobuf"
        ),
        415,
        "UnsupportedMediaType",
    ),
    (
        "unsupported method",
        lambda c: c.request("OPTIONS", EXPORTS),
        405,
        "MethodNotAllowed",
    ),
    (
        "post to a name",
        lambda c: c.post(f"{EXPORTS}/keep", GOOD),
        405,
        "MethodNotAllowed",
    ),
    (
        "put to the collection",
        lambda c: c.put(EXPORTS, GOOD),
        405,
        "MethodNotAllowed",
    ),
    (
        "malformed merge patch",
        lambda c: c.request(
            "PATCH", f"{EXPORTS}/keep", body=b"{nope", content_type="application/merge-patch+json"
        ),
        400,
        "BadRequest",
    ),
    (
        "patch changing kind",
        lambda c: c.request(
            "PATCH",
            f"{EXPORTS}/keep",
            json={"kind": "Other"},
            content_type="application/merge-patch+json",
        ),
        422,
        "Invalid",
    ),
    (
        "bad limit",
        lambda c: c.get(EXPORTS, query={"limit": "many"}),
        400,
        "BadRequest",
    ),
    (
        "bad resourceVersion",
        lambda c: c.get(EXPORTS, query={"resourceVersion": "abc"}),
        400,
        "BadRequest",
    ),
    (
        "unknown dry run value",
        lambda c: c.post(EXPORTS, {**GOOD, "metadata": {"name": "dry"}}, query={"dryRun": "Yes"}),
        422,
        "Invalid",
    ),
    (
        "bad namespace",
        lambda c: c.get("/apis/rbac.authorization.k8s.io/v1/namespaces/Bad_NS/roles"),
        422,
        "Invalid",
    ),
    (
        "malformed delete options",
        lambda c: c.request("DELETE", f"{EXPORTS}/keep", body=b"{{"),
        400,
        "BadRequest",
    ),
    (
        # Before, the body was read and ignored: a malformed one deleted everything.
        "malformed deletecollection options",
        lambda c: c.request("DELETE", EXPORTS, body=b"{{"),
        400,
        "BadRequest",
    ),
    (
        "json patch that is not an array",
        lambda c: c.request(
            "PATCH",
            f"{EXPORTS}/keep",
            body=b'{"op":"remove","path":"/metadata"}',
            content_type="application/json-patch+json",
        ),
        400,
        "BadRequest",
    ),
    (
        "body nested deeper than the server stores",
        lambda c: c.request(
            "POST",
            EXPORTS,
            body=b'{"apiVersion":"apis.kcp.io/v1alpha1","kind":"APIExport","metadata":'
            b'{"name":"deep"},"spec":' + b"[" * 300 + b"]" * 300 + b"}",
        ),
        400,
        "BadRequest",
    ),
    (
        "yaml integer of thousands of digits",
        lambda c: c.request(
            "POST",
            EXPORTS,
            body=b"apiVersion: apis.kcp.io/v1alpha1\nkind: APIExport\nmetadata: {name: big}\n"
            b"spec: " + b"7" * 5000,
            content_type="application/yaml",
        ),
        400,
        "BadRequest",
    ),
    (
        "forged continue token",
        lambda c: c.get(
            EXPORTS,
            query={"continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MSwic3RhcnQiOiJ4In0"},
        ),
        400,
        "BadRequest",
    ),
    (
        "resourceVersion python would parse",
        lambda c: c.get(EXPORTS, query={"resourceVersion": "1_0"}),
        400,
        "BadRequest",
    ),
    (
        "invalid label",
        lambda c: c.post(EXPORTS, {**GOOD, "metadata": {"name": "l", "labels": {"a b": "c"}}}),
        422,
        "Invalid",
    ),
]


@pytest.mark.parametrize(("what", "case", "code", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_leaves_server_and_data_intact(
    client: Client, what: str, case: Case, code: int, reason: str
) -> None:
    before = await client.post(EXPORTS, GOOD)
    assert before.status == 201
    _status(await case(client), code, reason)
    after = await client.get(f"{EXPORTS}/keep")
    assert after.status == 200
    assert after.json() == before.json()
    listed = (await client.get(EXPORTS)).json()["items"]
    assert [i["metadata"]["name"] for i in listed] == ["keep"]


async def test_missing_shard_or_cluster(client: Client) -> None:
    async def call(kcp: KcpRequest | None) -> Response:
        scope = {"kcp": kcp} if kcp is not None else {}
        return await ASGIClient(client.app).request("GET", EXPORTS, **scope)

    _status(await call(None), 400, "BadRequest")
    _status(await call(KcpRequest(shard="amber")), 400, "BadRequest")


@pytest.mark.parametrize(
    "meta",
    [
        {"name": "t", "labels": {"a": 1}},
        {"name": "t", "annotations": ["x"]},
        {"name": 5},
        {"name": "t", "generation": "one"},
        {"name": "t", "finalizers": "x"},
        {"name": "t", "finalizers": [1]},
        {"name": "t", "ownerReferences": ["x"]},
        {"name": "t", "managedFields": [None]},
        {"name": "t", "deletionGracePeriodSeconds": "30"},
        {"name": "t", "creationTimestamp": "yesterday"},
        {"name": "t", "creationTimestamp": "2026-12-01"},
        # a replica keeps its timestamp as sent: one Go cannot parse breaks Go clients
        {
            "name": "t",
            "annotations": {"kcp.io/shard": "other"},
            "uid": "u",
            "creationTimestamp": "2026-12-01 10:00:00",
        },
    ],
)
async def test_wrongly_typed_metadata_is_a_400(client: Client, meta: dict[str, Any]) -> None:
    r = await client.post(EXPORTS, {**GOOD, "metadata": meta})
    _status(r, 400, "BadRequest")
    assert (await client.get(f"{EXPORTS}/t")).status == 404


async def test_storage_unavailable_is_a_503_and_recovers(
    client: Client, storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kcp_cache.storage import Unavailable

    assert (await client.post(EXPORTS, GOOD)).status == 201

    async def broken(key: str) -> Any:
        raise Unavailable("disk on fire")

    monkeypatch.setattr(storage, "get", broken)
    body = _status(await client.get(f"{EXPORTS}/keep"), 503, "ServiceUnavailable")
    assert "disk on fire" in body["message"]
    monkeypatch.undo()
    assert (await client.get(f"{EXPORTS}/keep")).status == 200


async def test_names_no_key_can_hold_are_not_found(client: Client) -> None:
    _status(await client.get(f"{EXPORTS}/.."), 404, "NotFound")
    _status(await client.delete(f"{EXPORTS}/."), 404, "NotFound")


async def test_yaml_bodies(client: Client) -> None:
    yaml_body = b"apiVersion: apis.kcp.io/v1alpha1\nkind: APIExport\nmetadata:\n  name: from-yaml\n"
    r = await client.request("POST", EXPORTS, body=yaml_body, content_type="application/yaml")
    assert r.status == 201
    laughs = b"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nkind: APIExport\n"
    r = await client.request("POST", EXPORTS, body=laughs, content_type="application/yaml")
    _status(r, 400, "BadRequest")
    r = await client.request("POST", EXPORTS, body=b"a: [", content_type="application/yaml")
    _status(r, 400, "BadRequest")
