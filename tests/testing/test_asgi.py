"""The in-process ASGI client streams: lines arrive before the response ends, a hang-up
reaches the app as ``http.disconnect``, and the request body arrives in chunks."""

from __future__ import annotations

import asyncio
from typing import Any

from kcp_cache.testing import ASGIClient


async def _lines_until_disconnect(scope: Any, receive: Any, send: Any) -> None:
    """Echoes the request body back as lines, then one line a tick until the client leaves."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-path", b"p")]})
    await send({"type": "http.response.body", "body": body + b"\n", "more_body": True})
    gone = asyncio.ensure_future(receive())
    n = 0
    while not gone.done():
        await send({"type": "http.response.body", "body": b'{"n": %d}\n' % n, "more_body": True})
        n += 1
        await asyncio.sleep(0.01)
    assert gone.result() == {"type": "http.disconnect"}
    await send({"type": "http.response.body", "body": b"bye"})


async def test_a_stream_yields_lines_while_the_app_runs_and_ends_on_disconnect() -> None:
    stream = ASGIClient(_lines_until_disconnect).stream("POST", "/", body=b"a" * 10, chunk_size=3)
    assert await stream.next_line() == b"a" * 10
    assert await stream.next_json() == {"n": 0}
    assert await stream.next_json() == {"n": 1}
    assert not stream.ended.is_set()
    await stream.aclose()
    assert stream.ended.is_set()
    assert stream.body_done
    assert stream.status == 200
    assert stream.headers == {"x-path": "p"}
    assert stream.pending == b"bye"
    bodies = [m for m in stream.messages if m["type"] == "http.response.body"]
    assert bodies[-1] == {"type": "http.response.body", "body": b"bye"}


async def test_hang_up_disconnects_as_soon_as_the_request_is_sent() -> None:
    response = await ASGIClient(_lines_until_disconnect).request("GET", "/", hang_up=True)
    assert response.status == 200
    assert response.body.endswith(b"bye")


async def test_scope_headers_and_query_reach_the_app() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = ASGIClient(app, scope={"kcp": "k"}, headers={"X-One": "1"})
    response = await client.request("GET", "/p", query={"watch": "true"}, headers=[("b", "2")])
    assert response.status == 204
    assert seen[0]["kcp"] == "k"
    assert seen[0]["query_string"] == b"watch=true"
    assert seen[0]["headers"] == [(b"x-one", b"1"), (b"b", b"2")]
