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

__all__ = ["ContinueToken", "bad_continue_start", "decode_continue", "encode_continue"]

_VERSION = "meta.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class ContinueToken:
    """Resume at storage page ``start`` (``""``: the first page) of the snapshot at
    ``revision``, skipping its first ``skip`` keys (a filtered page may end mid-page)."""

    revision: int
    start: str
    skip: int = 0


def encode_continue(revision: int, storage_token: str | None, skip: int = 0) -> str:
    payload: dict[str, object] = {"v": _VERSION, "rv": revision, "start": storage_token or ""}
    if skip:
        payload["skip"] = skip
    raw = orjson.dumps(payload)
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
    rv, start, skip = data.get("rv"), data.get("start"), data.get("skip", 0)
    if not (isinstance(rv, int) and isinstance(start, str) and isinstance(skip, int)):
        raise bad_continue_start()
    if isinstance(rv, bool) or isinstance(skip, bool):
        raise bad_continue_start()
    if rv <= 0 or skip < 0 or not (start or skip):
        raise bad_continue_start()
    return ContinueToken(rv, start, skip)


def bad_continue_start() -> ApiError:
    """kube's 400 for a token whose start position cannot be used."""
    return ApiError.bad_request(
        "continue key is not valid: incorrect encoded start resourceVersion "
        "(version meta.k8s.io/v1)"
    )
