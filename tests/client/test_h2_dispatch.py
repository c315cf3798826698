"""The client's HTTP/2 fixes (``client/_h2_dispatch.py``) against a real server.

* Responses closed before their end: their streams are reset, and what still arrives for
  them gives the connection's window back (else 16 MiB of them stall the connection).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from h2.stream import StreamClosedBy

from kcp_cache.client import AsyncClient
from kcp_cache.testing import CacheServer, running_cache_server

EXPORTS = CacheServer.resource_path("amber", "acme", "apis.kcp.io", "v1alpha1", "apiexports")
#: Four times the server's per-stream receive window (256 KiB): the body waits for it.
BODY = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    with running_cache_server(tmp_path_factory.mktemp("h2"), "--storage", "memory") as running:
        yield running


def _connection(client: AsyncClient) -> Any:
    (pooled,) = client._transport._pool.connections  # type: ignore[attr-defined]
    return pooled._connection


async def test_responses_closed_early_are_reset_and_give_the_window_back(
    server: CacheServer,
) -> None:
    path = EXPORTS.replace("acme", "big")
    with server.client() as admin:
        for i in range(40):  # a LIST of ~4.8 MiB, random: gzip does not shrink it
            pad = {"pad": secrets.token_hex(60_000)}
            body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport",
                    "metadata": {"name": f"big-{i}", "annotations": pad}}  # fmt: skip
            assert admin.post(path, json=body).status_code == 201
    async with AsyncClient(
        base_url=server.base_url, verify=server.ssl_context(), http2=True, timeout=30
    ) as client:
        await client.get(path, params={"limit": "1"})
        connection = _connection(client)
        abandoned = []
        async with asyncio.timeout(20):
            for _ in range(5):  # five of them: past the 16 MiB connection window
                async with client.stream("GET", path) as response:
                    abandoned.append(response.extensions["stream_id"])
                    async for _chunk in response.aiter_bytes():
                        break  # the first chunk only
            answer = await client.get(path, params={"limit": "1"})
        assert answer.status_code == 200
        # The window is topped up once below half of its 16 MiB; without the fix what
        # the abandoned LISTs still sent stays taken (2.4 MiB were left here, and the
        # next LIST would have had to wait for good).
        assert connection._h2_state.inbound_flow_control_window > 2**23
        closed = connection._h2_state._closed_streams
        assert [closed.get(i) for i in abandoned] == [StreamClosedBy.SEND_RST_STREAM] * 5
