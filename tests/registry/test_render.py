"""Byte splicing renders exactly what decoding, decorating and re-encoding would."""

from __future__ import annotations

import orjson

from kcp_cache.registry import ResourceInfo, decorate, encode_object, prepare_create, splicer


def test_splice_equals_decode_decorate_encode(exports: ResourceInfo) -> None:
    for notes in ({}, {"a": "1", "kcp.io/cluster": "x"}):
        body = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": "n", "labels": {"l": "v"}, "annotations": notes},
            "spec": {"s": ["é", 1.5, None]},
            "status": {},
        }
        stored = orjson.dumps(prepare_create(exports, body, None))
        spliced = splicer(exports.storage_api_version, exports.kind, "apis.kcp.io/v1alpha1").render(
            stored, "amber", "acme", 42
        )
        assert spliced is not None
        slow = encode_object(
            decorate(orjson.loads(stored), "amber", "acme", 42), "apis.kcp.io/v1alpha1", False
        )
        assert orjson.loads(spliced) == orjson.loads(slow)


def test_foreign_layout_falls_back(exports: ResourceInfo) -> None:
    foreign = orjson.dumps(
        {"kind": "APIExport", "apiVersion": "apis.kcp.io/v1alpha2", "metadata": {}}
    )
    render = splicer(exports.storage_api_version, exports.kind, "apis.kcp.io/v1alpha1").render
    assert render(foreign, "s", "c", 1) is None
