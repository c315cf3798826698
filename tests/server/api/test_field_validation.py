"""``fieldValidation`` on create, update, merge patch and apply: Ignore, Warn, Strict.

As kube-apiserver decodes a custom resource: a key given twice is a ``duplicate field``,
a ``metadata`` field ``ObjectMeta`` does not have is an ``unknown field`` (the server
serves every type with a preserve-unknown-fields schema, so nothing else is unknown);
Strict refuses with 400 ``strict decoding error: …``, Warn (the default) answers with a
``Warning: 299 - "…"`` header per problem, Ignore with neither.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ...kube_status import failure_status
from ._asgi import EXPORTS, Client, Response

DUPLICATED = (
    b'{"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",'
    b' "metadata": {"name": "dup", "labels": {"a": "1", "a": "2"}},'
    b' "spec": {"x": 1, "list": [{"k": 1, "k": 2}], "x": 2}}'
)


def _export(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": {"name": name, **metadata},
        "spec": {"note": "time: 12:00, url: https://x:1/"},  # colons inside strings
    }


def warnings(response: Response) -> list[str]:
    start = response.messages[0]
    return [v.decode() for k, v in start["headers"] if k == b"warning"]


async def test_strict_refuses_an_unknown_metadata_field(client: Client) -> None:
    body = _export("strict-unknown", foo="bar")
    r = await client.post(EXPORTS, body, query={"fieldValidation": "Strict"})
    assert r.status == 400
    message = 'strict decoding error: unknown field "metadata.foo"'
    assert r.json() == failure_status(400, "BadRequest", message)
    assert (await client.get(f"{EXPORTS}/strict-unknown")).status == 404


async def test_strict_refuses_duplicate_fields_with_their_paths(client: Client) -> None:
    r = await client.request("POST", EXPORTS, body=DUPLICATED, query={"fieldValidation": "Strict"})
    assert r.status == 400
    assert r.json()["message"] == (
        'strict decoding error: duplicate field "metadata.labels.a", '
        'duplicate field "spec.list[0].k", duplicate field "spec.x"'
    )


async def test_warn_is_the_default_and_stores_what_ignore_stores(client: Client) -> None:
    r = await client.post(EXPORTS, _export("warned", foo="bar", bar=1))
    assert r.status == 201
    assert warnings(r) == [
        '299 - "unknown field \\"metadata.foo\\""',
        '299 - "unknown field \\"metadata.bar\\""',
    ]
    assert "foo" not in r.json()["metadata"]  # dropped, as kube's ObjectMeta decoding does
    r = await client.request("POST", EXPORTS, body=DUPLICATED, query={"fieldValidation": "Warn"})
    assert r.status == 201
    assert len(warnings(r)) == 3
    assert r.json()["spec"]["x"] == 2  # the last one wins, as in Go
    ignored = await client.post(
        EXPORTS, _export("ignored", foo="bar"), query={"fieldValidation": "Ignore"}
    )
    assert ignored.status == 201
    assert warnings(ignored) == []


async def test_a_clean_body_passes_strict_without_warnings(client: Client) -> None:
    r = await client.post(
        EXPORTS, _export("clean", labels={"a": "b"}), query={"fieldValidation": "Strict"}
    )
    assert r.status == 201
    assert warnings(r) == []


async def test_update_merge_patch_and_apply_are_checked(client: Client) -> None:
    created = await client.post(EXPORTS, _export("later"))
    assert created.status == 201
    obj = created.json()
    obj["metadata"]["foo"] = "bar"
    strict = {"fieldValidation": "Strict"}
    r = await client.put(f"{EXPORTS}/later", obj, query=strict)
    assert (r.status, r.json()["message"]) == (
        400,
        'strict decoding error: unknown field "metadata.foo"',
    )
    patch = b'{"spec": {"y": 1, "y": 2}}'
    r = await client.request(
        "PATCH", f"{EXPORTS}/later", body=patch,
        content_type="application/merge-patch+json", query=strict,
    )  # fmt: skip
    assert (r.status, r.json()["message"]) == (
        400,
        'strict decoding error: duplicate field "spec.y"',
    )
    r = await client.request(
        "PATCH", f"{EXPORTS}/later", body=patch, content_type="application/merge-patch+json"
    )
    assert (r.status, warnings(r)) == (200, ['299 - "duplicate field \\"spec.y\\""'])
    applied = b"apiVersion: apis.kcp.io/v1alpha1\nkind: APIExport\nmetadata:\n  name: later\n" \
        b"spec:\n  z: 1\n  z: 2\n"  # fmt: skip
    r = await client.request(
        "PATCH", f"{EXPORTS}/later", body=applied, content_type="application/apply-patch+yaml",
        query={"fieldValidation": "Strict", "fieldManager": "me"},
    )  # fmt: skip
    assert (r.status, r.json()["message"]) == (
        400,
        'strict decoding error: duplicate field "spec.z"',
    )


async def test_yaml_bodies_report_duplicates_too(client: Client) -> None:
    body = (
        b"apiVersion: apis.kcp.io/v1alpha1\nkind: APIExport\n"
        b"metadata:\n  name: yaml-dup\n  name: yaml-dup\n  extra: 1\n"
    )
    r = await client.request(
        "POST", EXPORTS, body=body, content_type="application/yaml",
        query={"fieldValidation": "Strict"},
    )  # fmt: skip
    assert r.status == 400
    assert r.json()["message"] == (
        'strict decoding error: duplicate field "metadata.name", unknown field "metadata.extra"'
    )


@pytest.mark.parametrize("value", ["strict", "Unknown"])
async def test_an_unknown_mode_is_still_refused_as_invalid(client: Client, value: str) -> None:
    r = await client.post(EXPORTS, _export("x"), query={"fieldValidation": value})
    assert r.status == 422
    assert orjson.loads(r.body)["details"]["causes"][0]["field"] == "fieldValidation"
