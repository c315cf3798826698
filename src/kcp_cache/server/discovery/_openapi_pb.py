"""``/openapi/v2`` as protobuf: a minimal gnostic ``openapi.v2.Document``.

client-go only ever fetches the v2 document as protobuf
(``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``). kubectl 1.37 asks for
it during ``kubectl apply`` (to look for strategic-merge-patch support) and — only when
the v3 document lacks ``fieldValidation`` — for client-side validation. Neither needs
anything from it here: custom resources are never strategic-merge patched and our v3
documents declare server-side validation. So we answer with a valid, deliberately
empty document (``swagger: "2.0"``, ``info``, no paths or definitions): kubectl parses it
without error and falls back to its defaults (JSON merge patch). The full v2 document is
served as JSON to clients that ask for JSON.

Field numbers are those of gnostic's ``openapiv2/OpenAPIv2.proto`` (Document: swagger=1,
info=2, paths=8; Info: title=1, version=2); the encoding is plain protobuf wire format
(length-delimited fields), too small to warrant a protobuf dependency.
"""

from __future__ import annotations

__all__ = ["OPENAPI_V2_PROTOBUF", "OPENAPI_V2_PROTOBUF_TYPES", "openapi_v2_protobuf"]

#: The response ``Content-Type``. Clients *ask* with ``…spec.v2@v1.0+protobuf``, but
#: ``@`` is not a token character: Go's ``mime.ParseMediaType`` rejects it, and
#: client-go would fail the response ("unexpected content after media subtype"). Like
#: kube-apiserver, answer with the dotted spelling.
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
#: Both spellings clients use in ``Accept`` for the v2 protobuf document.
OPENAPI_V2_PROTOBUF_TYPES = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    OPENAPI_V2_PROTOBUF,
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def openapi_v2_protobuf(title: str = "kcp cache server", version: str = "v0.1.0") -> bytes:
    """The encoded minimal ``openapi.v2.Document``."""
    info = _field(1, title.encode()) + _field(2, version.encode())
    return _field(1, b"2.0") + _field(2, info) + _field(8, b"")
