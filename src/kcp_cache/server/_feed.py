"""``GET /services/cache/_replication/v1/feed``: the replication feed over HTTP.

One NDJSON line per :class:`~kcp_cache.registry.FeedEvent` (beyond-kcp §3.1)::

    {"type":"SNAPSHOT","rev":R}
    {"type":"PUT","rev":n,"key":"apis.kcp.io/apiexports/customresources/amber/acme/x","value":{…}}
    {"type":"DELETE","rev":n,"key":"…"}
    {"type":"PROGRESS","rev":n,"time":1733100000.5}
    {"type":"SNAPSHOT_END","rev":R}

Query: ``since`` (a revision of this cache; 0 or compacted ⇒ snapshot first),
``excludeHomeOf`` / ``homeOf`` (a cache name), ``resources`` (``group/resource,…``).
Only caches (``system:kcp:caches``) and admins may read it (the authorizer decides).

A ``PUT``'s value is the stored JSON spliced in as it is, never decoded. Like a watch,
the stream notices a vanished client through ``receive()`` and ends when the storage
watch does (the consumer resumes from its cursor); a ``send()`` stuck behind a client
that stopped reading holds at most one line while the storage watch's bounded buffer
fills and cuts the stream off.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final
from urllib.parse import parse_qs

import orjson

from kcp_cache.meta import FEED_PATH
from kcp_cache.registry import ApiError, FeedEvent, FeedFilter, FeedSource, parse_int64
from kcp_cache.server._connection import connection_control
from kcp_cache.server.types import Receive, Scope, Send
from kcp_cache.storage import StorageError

__all__ = ["FEED_PATH", "FeedEndpoint", "encode_feed_event"]

_HEADERS: Final = [(b"content-type", b"application/x-ndjson"), (b"cache-control", b"no-cache")]


def encode_feed_event(event: FeedEvent) -> bytes:
    """One NDJSON line; a PUT's stored value is spliced in without re-encoding."""
    if event.type == "PUT":
        head = b'{"type":"PUT","rev":%d,"key":%s,"value":' % (event.rev, orjson.dumps(event.key))
        return head + event.value + b"}\n"
    line: dict[str, object] = {"type": event.type, "rev": event.rev}
    if event.key:
        line["key"] = event.key
    if event.type == "PROGRESS":
        line["time"] = event.time
    return orjson.dumps(line) + b"\n"


class FeedEndpoint:
    """The ASGI handler of :data:`FEED_PATH` over one :class:`FeedSource`."""

    def __init__(self, source: FeedSource) -> None:
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            raise ApiError.method_not_allowed(f"{scope['method']} is not allowed on the feed")
        since, wanted = _parse_query(scope.get("query_string", b""))
        events = self.source.events(since, wanted)
        control = connection_control(scope)
        gone = asyncio.Event()

        async def wait_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]

        watcher = asyncio.get_running_loop().create_task(wait_for_disconnect())
        started = False
        try:
            async for event in events:
                if gone.is_set():
                    return
                if not started:
                    started = True
                    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
                await send(
                    {
                        "type": "http.response.body",
                        "body": encode_feed_event(event),
                        "more_body": True,
                    }
                )
        except StorageError as exc:
            if not started:
                raise ApiError.unavailable(f"the feed cannot continue: {exc}") from None
            if control is not None and not gone.is_set():
                # The consumer resumes from its cursor; end the stream it is reading.
                control.abort()
                return
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if started and not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _parse_query(query_string: bytes) -> tuple[int, FeedFilter]:
    query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    since_text = one("since") or "0"
    try:
        since = parse_int64(since_text)
    except ValueError:
        raise ApiError.bad_request(f'invalid since "{since_text}": not a revision') from None
    if since < 0:
        raise ApiError.bad_request(f'invalid since "{since_text}": must not be negative')
    resources = [r.strip() for r in (one("resources") or "").split(",") if r.strip()]
    for resource in resources:
        if resource.count("/") != 1:
            raise ApiError.bad_request(f'invalid resources entry "{resource}": use group/resource')
    wanted = FeedFilter(
        exclude_home_of=one("excludeHomeOf") or None,
        home_of=one("homeOf") or None,
        resources=frozenset(resources),
    )
    return since, wanted
