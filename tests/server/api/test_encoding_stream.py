"""The gzip/plain decision of streamed and complete bodies, in-process (no HTTP)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kcp_cache.server.api import (
    BrokenStream,
    Compression,
    accepts_gzip,
    json_to_yaml,
    send_body,
    send_chunks,
)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def chunks(*parts: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for n, part in enumerate(parts):
        if fail_after is not None and n == fail_after:
            raise RuntimeError("page failed")
        yield part


SMALL = Compression(threshold=10)


@pytest.mark.parametrize(
    ("parts", "gzipped"),
    [
        ((b"123", b"456"), False),  # ends below the threshold
        ((b"12345", b"67890"), True),  # reaches it exactly
        ((b"1234567890123", b"x", b"y"), True),  # crosses it in the first chunk
        ((), False),
    ],
)
async def test_a_stream_is_gzipped_once_it_reaches_the_threshold(
    parts: tuple[bytes, ...], gzipped: bool
) -> None:
    send = Recorder()
    answer = await send_chunks(
        send, 200, chunks(*parts), content_type=b"t", gzip_ok=True, compression=SMALL
    )
    assert answer is gzipped
    assert (send.headers.get(b"content-encoding") == b"gzip") is gzipped
    body = gzip.decompress(send.body) if gzipped else send.body
    assert body == b"".join(parts)
    if not gzipped:
        assert send.headers[b"content-length"] == str(len(body)).encode()
    assert send.messages[-1].get("more_body", False) is False


async def test_without_gzip_or_when_disabled_the_stream_is_plain_and_chunked() -> None:
    for gzip_ok, compression in ((False, SMALL), (True, Compression(enabled=False))):
        send = Recorder()
        parts = (b"x" * 50, b"y" * 50)
        assert not await send_chunks(
            send, 200, chunks(*parts), content_type=b"t", gzip_ok=gzip_ok, compression=compression
        )
        assert b"content-encoding" not in send.headers
        assert b"content-length" not in send.headers
        assert send.body == b"".join(parts)


async def test_a_failure_before_the_response_starts_propagates_as_it_is() -> None:
    send = Recorder()
    with pytest.raises(RuntimeError, match="page failed"):
        await send_chunks(
            send,
            200,
            chunks(b"12", b"34", fail_after=1),
            content_type=b"t",
            gzip_ok=True,
            compression=SMALL,
        )
    assert send.messages == []  # the caller can still answer with a Status


@pytest.mark.parametrize("gzip_ok", [True, False])
async def test_a_failure_after_the_start_is_a_broken_stream(gzip_ok: bool) -> None:
    send = Recorder()
    with pytest.raises(BrokenStream) as broken:
        await send_chunks(
            send,
            200,
            chunks(b"x" * 20, b"y", fail_after=1),
            content_type=b"t",
            gzip_ok=gzip_ok,
            compression=SMALL,
        )
    assert isinstance(broken.value.__cause__, RuntimeError)
    assert send.messages[0]["type"] == "http.response.start"
    assert all(m.get("more_body", False) for m in send.messages[1:])  # left unfinished


async def test_a_complete_body_at_the_threshold_is_gzipped() -> None:
    for body, gzipped in ((b"x" * 9, False), (b"x" * 10, True)):
        send = Recorder()
        assert (
            await send_body(send, 200, body, content_type=b"t", gzip_ok=True, compression=SMALL)
            is gzipped
        )
        assert (gzip.decompress(send.body) if gzipped else send.body) == body
        assert send.headers[b"content-length"] == str(len(send.body)).encode()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (b"gzip", True),
        (b"gzip, deflate, br", True),
        (b"deflate, GZIP;q=0.5", True),
        (b"x-gzip", True),
        (b"*", True),
        (b"gzip;q=0", False),
        (b"gzip;q=0.0, identity", False),
        (b"gzip;q=bad", False),
        (b"identity", False),
        (b"br, zstd", False),
        (b"", False),
    ],
)
def test_accept_encoding(header: bytes, ok: bool) -> None:
    assert accepts_gzip({"headers": [(b"accept-encoding", header)]}) is ok


def test_no_accept_encoding_header_means_no_gzip() -> None:
    assert accepts_gzip({"headers": [(b"accept", b"application/json")]}) is False


def test_yaml_is_block_style_with_sorted_keys_and_exact_values() -> None:
    body = (
        b'{"metadata":{"name":"x","annotations":{"b":"2","a":"1"}},"apiVersion":"v1",'
        b'"spec":{"long":"' + b"y" * 300 + b'","n":1.5,"none":null,"list":[1,"two"]}}'
    )
    text = json_to_yaml(body).decode()
    assert text.splitlines()[0] == "apiVersion: v1"
    assert "  annotations:\n    a: '1'\n    b: '2'\n" in text
    assert "long: " + "y" * 300 + "\n" in text  # never folded
    assert "none: null" in text
