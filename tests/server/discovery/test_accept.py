from __future__ import annotations

import pytest

from kcp_cache.server.transforms import (
    LIST_TRANSFORMS,
    OBJECT_TRANSFORMS,
    Negotiated,
    negotiate,
    parse_accept,
    transform,
)

KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
METADATA_INFORMER_LIST = (
    "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)


def test_parse_orders_by_q_then_position() -> None:
    ranges = parse_accept("text/plain;q=0.5, application/json;as=Table;g=meta.k8s.io;v=v1, */*;q=0")
    assert [r.media_type for r in ranges] == ["application/json", "text/plain"]
    assert ranges[0].as_kind == "Table"
    assert parse_accept("")[0].media_type == "*/*"


@pytest.mark.parametrize(
    ("accept", "offers", "expected"),
    [
        (KUBECTL_GET, LIST_TRANSFORMS, Negotiated("Table", "meta.k8s.io", "v1")),
        (METADATA_INFORMER_LIST, LIST_TRANSFORMS,
         Negotiated("PartialObjectMetadataList", "meta.k8s.io", "v1")),
        ("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1", OBJECT_TRANSFORMS,
         Negotiated("PartialObjectMetadata", "meta.k8s.io", "v1")),
        # PartialObjectMetadata is not a list shape: fall through to plain JSON.
        ("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
         LIST_TRANSFORMS, Negotiated()),
        ("application/json;as=Table;v=v9;g=meta.k8s.io", LIST_TRANSFORMS, None),
        ("application/vnd.kubernetes.protobuf", LIST_TRANSFORMS, None),
        ("*/*", LIST_TRANSFORMS, Negotiated()),
        ("", OBJECT_TRANSFORMS, Negotiated()),
    ],
)  # fmt: skip
def test_negotiate(accept: str, offers: dict, expected: Negotiated | None) -> None:  # type: ignore[type-arg]
    assert negotiate(accept, offers) == expected


def test_content_type_echoes_the_parameters() -> None:
    chosen = negotiate(KUBECTL_GET, LIST_TRANSFORMS)
    assert chosen is not None
    assert chosen.content_type == b"application/json;g=meta.k8s.io;v=v1;as=Table"
    assert Negotiated().content_type == b"application/json"


def test_transform_shapes() -> None:
    lst = {
        "kind": "XList",
        "metadata": {"resourceVersion": "5"},
        "items": [{"kind": "X", "metadata": {"name": "a"}, "spec": {}}],
    }
    assert transform(lst, Negotiated()) is lst
    meta_list = transform(lst, Negotiated("PartialObjectMetadataList", "meta.k8s.io", "v1"))
    assert meta_list["items"][0] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "a"},
    }
    assert meta_list["metadata"] == {"resourceVersion": "5"}
    table = transform(lst, Negotiated("Table", "meta.k8s.io", "v1"))
    assert table["rows"][0]["cells"] == ["a"]
    one = transform(lst["items"][0], Negotiated("PartialObjectMetadata", "meta.k8s.io", "v1"))
    assert one["kind"] == "PartialObjectMetadata"
