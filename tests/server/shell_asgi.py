"""A minimal in-process ASGI driver for the shell's tests (no sockets, no TLS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from kcp_cache.server import ANONYMOUS, KcpRequest, User, kcp_request, request_info
from kcp_cache.server._respond import send_json
from kcp_cache.server.types import Receive, Scope, Send

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


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[dict[str, Any]] = field(default_factory=list)

    def json(self) -> Any:
        return orjson.loads(self.body)


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
) -> Response:
    all_headers = list(headers or [])
    if user is not None and user != ANONYMOUS:
        all_headers.append(user_header(user))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": all_headers,
        "scheme": "https",
        "server": ("127.0.0.1", 6443),
        "client": ("127.0.0.1", 50000),
    }
    if kcp is not None:
        scope["kcp"] = kcp
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    response_body = b"".join(
        m.get("body", b"") for m in messages if m["type"] == "http.response.body"
    )
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Response(start["status"], response_headers, response_body, messages)
