"""The one place that imports the HTTP library.

Everything else in :mod:`kcp_cache.client` imports these names from here, so moving
between ``httpx2`` and an API-compatible library (``httpx``) is a one-line change.
"""

from __future__ import annotations

from httpx2 import (
    URL,
    AsyncBaseTransport,
    AsyncClient,
    AsyncHTTPTransport,
    BaseTransport,
    ByteStream,
    Client,
    HTTPTransport,
    Limits,
    MockTransport,
    ReadTimeout,
    Request,
    RequestError,
    Response,
    Timeout,
    TimeoutException,
    TransportError,
)

from . import _h2_dispatch

# HTTP/2 is the default: fix httpcore2's stream dispatch before any connection exists.
_h2_dispatch.install()

__all__ = [
    "URL",
    "AsyncBaseTransport",
    "AsyncClient",
    "AsyncHTTPTransport",
    "BaseTransport",
    "ByteStream",
    "Client",
    "HTTPTransport",
    "Limits",
    "MockTransport",
    "ReadTimeout",
    "Request",
    "RequestError",
    "Response",
    "Timeout",
    "TimeoutException",
    "TransportError",
]
