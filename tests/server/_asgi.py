"""The filters' tests call the app in-process as a user named by a test header."""

from __future__ import annotations

from typing import Any

from kcp_cache.server import ANONYMOUS, KcpRequest, User, kcp_request, request_info, send_json
from kcp_cache.server.types import Receive, Scope, Send
from kcp_cache.testing import ASGIClient, ASGIResponse

ADMIN = User("admin", ("system:masters",))
USER_HEADER = b"x-test-user"


async def header_authenticator(scope: Scope) -> User | None:
    """Test authenticator: ``x-test-user: name;group1,group2``."""
    for name, value in scope["headers"]:
        if name == USER_HEADER:
            user, _, groups = value.decode().partition(";")
            return User(user, tuple(g for g in groups.split(",") if g))
    return None


def user_header(user: User) -> tuple[bytes, bytes]:
    return USER_HEADER, f"{user.name};{','.join(user.groups)}".encode()


async def echo_api(scope: Scope, receive: Receive, send: Send) -> None:
    """Placeholder API app: answers with what the filters recorded."""
    kcp = kcp_request(scope)
    info = request_info(kcp)
    await send_json(
        send,
        200,
        {
            "path": scope["path"],
            "shard": kcp.shard,
            "cluster": kcp.cluster,
            "identity": kcp.identity,
            "user": kcp.user.name,
            "groups": list(kcp.user.groups),
            "accept": kcp.accept,
            "partial": kcp.partial_metadata,
            "verb": info.verb if info else None,
            "resource": info.resource if info else None,
        },
    )


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    user: User | None = ADMIN,
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    kcp: KcpRequest | None = None,
    body: bytes = b"",
) -> ASGIResponse:
    """One request to *app* as *user* (by the ``x-test-user`` header), by a client that
    hangs up once the request is sent (so a watch ends with what it sent at once)."""
    all_headers = list(headers or [])
    if user is not None and user != ANONYMOUS:
        all_headers.append(user_header(user))
    scope = {"kcp": kcp} if kcp is not None else {}
    return await ASGIClient(app).request(
        method, path, query=query, headers=all_headers, body=body, hang_up=True, **scope
    )
