"""Reading and decoding request bodies: size limit, media types, JSON/YAML."""

from __future__ import annotations

from typing import Any

import orjson

from kcp_cache.registry import ApiError, check_nesting
from kcp_cache.server._respond import ClientGone
from kcp_cache.server.api._yaml import load_yaml_as_json
from kcp_cache.server.types import Receive, Scope

__all__ = ["YAML_TYPES", "decode_body", "decode_json", "media_type", "read_body"]

MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit for a write request
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def media_type(scope: Scope) -> str:
    """The Content-Type without parameters, lower-cased ("" if absent).

    A header that names no type at all (``;;;``) is returned as sent, so it matches no
    accepted type: kube answers 415 when ``mime.ParseMediaType`` fails.
    """
    value = _header(scope, b"content-type") or ""
    media = value.split(";", 1)[0].strip().lower()
    return media if media or not value.strip() else value


def _too_large(limit: int) -> ApiError:
    return ApiError.request_entity_too_large(f"limit is {limit}")


async def read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, or 413 as soon as it exceeds ``limit`` (without reading the rest)."""
    length = _header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def decode_body(raw: bytes, media: str) -> Any:
    """JSON (or YAML) → Python; 400 with kube's wording when it does not parse, or when it
    nests deeper than the server stores (``MAX_NESTING``)."""
    if media in YAML_TYPES:
        return load_yaml_as_json(raw)
    return decode_json(raw, "couldn't get version/kind; json parse error")


def decode_json(raw: bytes, what: str) -> Any:
    """A JSON document, or a 400 whose message starts with ``what``."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError.bad_request(f"{what}: {exc}") from None
    check_nesting(obj, raw, what)
    return obj
