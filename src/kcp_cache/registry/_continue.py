"""Kube-style ``continue`` tokens wrapping the storage engine's own page token.

kube-apiserver's token is base64 of ``{"v":"meta.k8s.io/v1","rv":R,"start":KEY}``. Ours has
the same envelope; ``start`` holds the storage engine's opaque token (which already pins
the snapshot revision) so a paginated LIST stays one consistent snapshot whatever the
engine. Clients treat the token as opaque, as they must.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson

from kcp_cache.registry._errors import ApiError

__all__ = ["ContinueToken", "decode_continue", "encode_continue"]

_VERSION = "meta.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class ContinueToken:
    revision: int
    start: str


def encode_continue(revision: int, storage_token: str) -> str:
    raw = orjson.dumps({"v": _VERSION, "rv": revision, "start": storage_token})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> ContinueToken:
    """Parse a token; anything malformed is a 400 with kube's wording."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ApiError.bad_request(
            "continue key is not valid: illegal base64 data or JSON payload"
        ) from None
    if not isinstance(data, dict) or data.get("v") != _VERSION:
        raise ApiError.bad_request(
            "continue key is not valid: server does not recognize this encoding"
        )
    rv, start = data.get("rv"), data.get("start")
    if not isinstance(rv, int) or rv <= 0 or not isinstance(start, str) or not start:
        raise ApiError.bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion "
            "(version meta.k8s.io/v1)"
        )
    return ContinueToken(rv, start)
