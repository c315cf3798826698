"""Reading and decoding request bodies: size limit, media types, JSON/YAML."""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from kcp_cache.registry import ApiError
from kcp_cache.server._status import Receive, Scope

__all__ = ["ClientGone", "decode_body", "media_type", "read_body"]

MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit for a write request


class ClientGone(Exception):
    """The client disconnected while we were reading its request."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def media_type(scope: Scope) -> str:
    """The Content-Type without parameters, lower-cased ("" if absent)."""
    value = _header(scope, b"content-type") or ""
    return value.split(";", 1)[0].strip().lower()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


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
    """JSON (or YAML) → Python; 400 with kube's wording when it does not parse."""
    if media in ("application/yaml", "application/x-yaml", "text/yaml"):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            # Aliases are refused: a few bytes of "billion laughs" YAML would expand into
            # gigabytes once the object is encoded as JSON.
            for event in yaml.parse(raw, Loader=loader):
                if isinstance(event, yaml.AliasEvent):
                    raise ApiError.bad_request(
                        "error converting YAML to JSON: YAML aliases are not supported"
                    )
            return yaml.load(raw, Loader=loader)  # a safe loader (CSafeLoader/SafeLoader)
        except yaml.YAMLError as exc:
            raise ApiError.bad_request(f"error converting YAML to JSON: {exc}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError.bad_request(f"couldn't get version/kind; json parse error: {exc}") from None
