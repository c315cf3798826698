"""The ASGI types every piece of the server is written against (Starlette's ``types.py``).

Every part of the server is an ASGI application ``(scope, receive, send)``: the filters,
the API, discovery, health; so is what :func:`kcp_cache.server.create_app` returns. These
aliases are public so that an embedding host, a test driver or another filter can be typed
the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
