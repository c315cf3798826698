"""Response encodings of GET and LIST: gzip above a threshold, and YAML on request.

**gzip** follows kube-apiserver's ``APIResponseCompression``: a response body of at least
128 KiB is gzipped (level 1, kube's ``defaultGzipContentEncodingLevel``: large lists are
mostly repeated keys, so the fastest level already shrinks them several-fold) when the
request's ``Accept-Encoding`` allows gzip; smaller ones are not worth the CPU. client-go
asks for gzip on every request. Watches are never compressed (kube neither): a stream of
small events would be delayed by the compressor's buffer.

A LIST is streamed page by page, so its size is not known up front: the first chunks
are held until they reach the threshold — then the response starts gzipped and the rest
is compressed as it comes — or the list ends below it and goes out plain, with a
``Content-Length``.

**YAML** (``Accept: application/yaml``) is what kube's YAML serializer writes: the JSON
document as block YAML with keys in sorted order (``sigs.k8s.io/yaml`` goes through a
Go map). It is for people and scripts, so it is built from the whole document.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import orjson
import yaml

from kcp_cache.server.types import Scope, Send

__all__ = [
    "DEFAULT_COMPRESSION_THRESHOLD",
    "YAML_CONTENT_TYPE",
    "BrokenStream",
    "Compression",
    "accepts_gzip",
    "json_to_yaml",
    "send_body",
    "send_chunks",
]

#: kube's ``defaultGzipThresholdBytes``.
DEFAULT_COMPRESSION_THRESHOLD: Final = 128 * 1024
YAML_CONTENT_TYPE: Final = b"application/yaml"
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class BrokenStream(Exception):
    """A streamed body failed after its response had started (``__cause__`` says why)."""


@dataclass(frozen=True)
class Compression:
    """When to gzip a response: at ``threshold`` bytes or more; ``enabled=False``: never."""

    enabled: bool = True
    threshold: int = DEFAULT_COMPRESSION_THRESHOLD
    level: int = 1

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError("the compression threshold must not be negative")
        if not 0 <= self.level <= 9:
            raise ValueError("the gzip level must be between 0 and 9")


def accepts_gzip(scope: Scope) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip``, ``x-gzip`` or ``*``, q > 0)."""
    for name, value in scope.get("headers", ()):
        if name != b"accept-encoding":
            continue
        for clause in value.decode("latin-1").lower().split(","):
            coding, _, params = clause.partition(";")
            if coding.strip() not in ("gzip", "x-gzip", "*"):
                continue
            q = params.strip()
            if q.startswith("q="):
                try:
                    if float(q[2:]) <= 0:
                        continue
                except ValueError:
                    continue
            return True
    return False


def json_to_yaml(body: bytes) -> bytes:
    """A JSON document as kube's YAML serializer writes it."""
    text: str = yaml.dump(
        orjson.loads(body),
        Dumper=_Dumper,
        default_flow_style=False,
        sort_keys=True,
        allow_unicode=True,
        width=1 << 30,  # no folded lines: values come back exactly as they went in
    )
    return text.encode()


def _start(
    status: int, content_type: bytes, *, gzipped: bool, length: int | None
) -> dict[str, Any]:
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if gzipped:
        headers.append((b"content-encoding", b"gzip"))
    headers.append((b"vary", b"Accept-Encoding"))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes,
    gzip_ok: bool,
    compression: Compression,
) -> bool:
    """Send a complete body, gzipped if it is large enough and the client accepts it;
    True if it was gzipped."""
    gzipped = gzip_ok and compression.enabled and len(body) >= compression.threshold
    if gzipped:
        compressor = zlib.compressobj(compression.level, zlib.DEFLATED, _GZIP_WBITS)
        body = compressor.compress(body) + compressor.flush()
    await send(_start(status, content_type, gzipped=gzipped, length=len(body)))
    await send({"type": "http.response.body", "body": body})
    return gzipped


async def send_chunks(
    send: Send,
    status: int,
    chunks: AsyncIterator[bytes],
    *,
    content_type: bytes,
    gzip_ok: bool,
    compression: Compression,
) -> bool:
    """Stream *chunks*; see the module docstring for when the stream is gzipped (then
    the answer is True).

    An exception from *chunks* before the response started propagates as it is (the
    caller can still answer with a Status); after, it is raised as :class:`BrokenStream`
    and the caller leaves the response unfinished, so the client sees a broken body,
    never a short one that parses.
    """
    threshold = compression.threshold if gzip_ok and compression.enabled else None
    held: list[bytes] = []
    held_bytes = 0
    if threshold is None:
        await send(_start(status, content_type, gzipped=False, length=None))
    else:
        async for chunk in chunks:
            held.append(chunk)
            held_bytes += len(chunk)
            if held_bytes >= threshold:
                break
        else:  # the whole list is below the threshold: one plain body
            body = b"".join(held)
            await send(_start(status, content_type, gzipped=False, length=len(body)))
            await send({"type": "http.response.body", "body": body})
            return False
        compressor = zlib.compressobj(compression.level, zlib.DEFLATED, _GZIP_WBITS)
        await send(_start(status, content_type, gzipped=True, length=None))
        data = compressor.compress(b"".join(held))
        held.clear()
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        try:
            async for chunk in chunks:
                data = compressor.compress(chunk)
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
        except Exception as exc:
            raise BrokenStream from exc
        await send({"type": "http.response.body", "body": compressor.flush()})
        return True
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception as exc:
        raise BrokenStream from exc
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return False
