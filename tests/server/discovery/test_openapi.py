from __future__ import annotations

from typing import Any

from kcp_cache.server.discovery import (
    openapi_v2,
    openapi_v2_protobuf,
    openapi_v3_document,
    openapi_v3_index,
)

from ._crds import ALL, served

RESOURCES = served(ALL)


def _patch_operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {path: item["patch"] for path, item in doc["paths"].items() if "patch" in item}


def test_every_gv_is_indexed_with_a_hash_under_openapi_v3() -> None:
    index = openapi_v3_index(RESOURCES)
    assert sorted(index["paths"]) == [
        "apis/apiextensions.k8s.io/v1",
        "apis/apis.kcp.io/v1alpha1",
        "apis/apis.kcp.io/v1alpha2",
        "apis/core.kcp.io/v1alpha1",
        "apis/rbac.authorization.k8s.io/v1",
    ]
    url = index["paths"]["apis/apis.kcp.io/v1alpha1"]["serverRelativeURL"]
    # Rooted at /openapi/v3 so client-go keeps its /shards/…/clusters/… prefix.
    assert url.startswith("/openapi/v3/apis/apis.kcp.io/v1alpha1?hash=")
    assert len(url.partition("hash=")[2]) == 128


def test_hash_follows_content() -> None:
    before = openapi_v3_index(RESOURCES)["paths"]["apis/apis.kcp.io/v1alpha1"]
    fewer = served([c for c in ALL if c["spec"]["names"]["kind"] != "APIResourceSchema"])
    after = openapi_v3_index(fewer)["paths"]["apis/apis.kcp.io/v1alpha1"]
    assert before != after
    unchanged = openapi_v3_index(fewer)["paths"]["apis/core.kcp.io/v1alpha1"]
    assert unchanged == openapi_v3_index(RESOURCES)["paths"]["apis/core.kcp.io/v1alpha1"]


def test_write_operations_declare_field_validation_per_gvk() -> None:
    """What kubectl's QueryParamVerifierV3 looks for before validating server-side."""
    doc = openapi_v3_document(RESOURCES, "apis.kcp.io", "v1alpha1")
    assert doc is not None
    patches = _patch_operations(doc)
    kinds = {op["x-kubernetes-group-version-kind"]["kind"] for op in patches.values()}
    assert kinds == {"APIExport", "APIResourceSchema"}
    for path, item in doc["paths"].items():
        for verb in ("post", "put", "patch"):
            if verb in item:
                names = {(p["name"], p["in"]) for p in item[verb]["parameters"]}
                assert ("fieldValidation", "query") in names, (path, verb)
                assert item[verb]["x-kubernetes-group-version-kind"]["version"] == "v1alpha1"


def test_patch_body_types_exclude_strategic_merge() -> None:
    """kubectl apply then computes a JSON merge patch, as it must for custom resources."""
    doc = openapi_v3_document(RESOURCES, "core.kcp.io", "v1alpha1")
    assert doc is not None
    (patch,) = _patch_operations(doc).values()
    content = patch["requestBody"]["content"]
    assert "application/merge-patch+json" in content
    assert "application/strategic-merge-patch+json" not in content


def test_kind_schema_is_schemaless_with_gvk() -> None:
    doc = openapi_v3_document(RESOURCES, "apis.kcp.io", "v1alpha2")
    assert doc is not None
    schemas = doc["components"]["schemas"]
    export = schemas["io.kcp.apis.v1alpha2.APIExport"]
    assert export["x-kubernetes-preserve-unknown-fields"] is True
    assert export["x-kubernetes-group-version-kind"] == [
        {"group": "apis.kcp.io", "version": "v1alpha2", "kind": "APIExport"}
    ]
    assert set(export["properties"]) == {"apiVersion", "kind", "metadata"}
    # Every $ref resolves.
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_namespaced_paths() -> None:
    doc = openapi_v3_document(RESOURCES, "rbac.authorization.k8s.io", "v1")
    assert doc is not None
    assert set(doc["paths"]) == {
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}",
        "/apis/rbac.authorization.k8s.io/v1/roles",
    }
    assert openapi_v3_document(RESOURCES, "rbac.authorization.k8s.io", "v2") is None


def test_v2_document_covers_every_served_version() -> None:
    doc = openapi_v2(RESOURCES)
    assert doc["swagger"] == "2.0"
    assert "/apis/apis.kcp.io/v1alpha1/apiexports/{name}" in doc["paths"]
    assert "/apis/apis.kcp.io/v1alpha2/apiexports/{name}" in doc["paths"]
    patch = doc["paths"]["/apis/apis.kcp.io/v1alpha2/apiexports/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch["consumes"]
    body = {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
    assert {"name": "body", "in": "body", "required": True, "schema": body} in patch["parameters"]
    for ref in _refs(doc):
        assert ref.removeprefix("#/definitions/") in doc["definitions"], ref


def _decode(data: bytes) -> list[tuple[int, bytes]]:
    """Protobuf wire format → (field number, payload) for length-delimited fields."""
    fields, pos = [], 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        assert tag & 7 == 2
        length, pos = _varint(data, pos)
        fields.append((tag >> 3, data[pos : pos + length]))
        pos += length
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def test_v2_protobuf_is_a_minimal_gnostic_document() -> None:
    fields = dict(_decode(openapi_v2_protobuf()))
    assert fields[1] == b"2.0"
    assert dict(_decode(fields[2])) == {1: b"kcp cache server", 2: b"v0.1.0"}
    assert fields[8] == b""
    long = openapi_v2_protobuf(title="t" * 300)
    assert dict(_decode(dict(_decode(long))[2]))[1] == b"t" * 300


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
