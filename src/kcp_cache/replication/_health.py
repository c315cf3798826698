"""A tiny HTTP endpoint for ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics``.

The replicator is a client process; it needs no TLS server or web framework for four
GET endpoints that a kubelet or Prometheus scrapes over loopback or a pod network, so this
is plain HTTP/1.1 on :func:`asyncio.start_server` (one request per connection).
``/readyz`` answers in the style of kube-apiserver: one ``[+]name ok`` / ``[-]name failed``
line per check, 200 only if all pass (``?verbose`` is implied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from kcp_cache.meta import check_line, health_report

__all__ = ["HealthServer"]

log = logging.getLogger("kcp_cache.replication.health")

Checks = Callable[[], Mapping[str, bool]]


class HealthServer:
    """Serves health checks and metrics until :meth:`stop`.

    *readiness* returns named checks (all must be true for 200); *liveness* likewise for
    ``/livez`` and ``/healthz``; *metrics* returns the Prometheus exposition.
    """

    def __init__(
        self,
        *,
        readiness: Checks,
        metrics: Callable[[], bytes],
        liveness: Checks | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.readiness = readiness
        self.liveness = liveness or (lambda: {"ping": True})
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the port (useful with ``port=0``)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            status, content_type, body = self._respond(method, target.split("?", 1)[0])
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("health endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", self.metrics()
        if path in ("/healthz", "/livez"):
            return self._checks(self.liveness(), path)
        if path == "/readyz":
            return self._checks(self.readiness(), path)
        return "404 Not Found", "text/plain", b"not found\n"

    @staticmethod
    def _checks(checks: Mapping[str, bool], path: str) -> tuple[str, str, bytes]:
        ok = all(checks.values())
        lines = [check_line(name, ok=passed) for name, passed in checks.items()]
        body = health_report(path.lstrip("/"), lines, failed=not ok)
        return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", body
