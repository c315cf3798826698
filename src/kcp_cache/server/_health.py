"""``/healthz``, ``/livez`` and ``/readyz`` in kube-apiserver's format.

A check is a named callable that returns when healthy and raises with the reason when
not. ``?verbose`` lists every check as ``[+]name ok`` / ``[-]name failed: reason``;
without it a healthy server answers ``ok`` and a failing one lists the checks with the
reasons withheld (they are logged instead), as kube does. ``?exclude=name`` skips checks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from kcp_cache.meta import check_line, excluded_line, health_report
from kcp_cache.registry import ApiError
from kcp_cache.server._respond import send_bytes, status_body
from kcp_cache.server.types import Send
from kcp_cache.storage import Storage

__all__ = ["HealthCheck", "HealthEndpoints", "ReadinessChecks", "ReadinessFlag"]

log = logging.getLogger("kcp_cache.server.health")

#: ``check()`` returns (or awaits) normally when healthy, raises when not.
HealthCheck = Callable[[], Awaitable[None] | None]

_TEXT = b"text/plain; charset=utf-8"
#: A probe reads; any other method on a health path is a client's mistake. (kube itself
#: answers every method here; refusing the others is deliberate, see docs/bad-input.md.)
_PROBE_METHODS = frozenset({"GET", "HEAD"})


class ReadinessFlag:
    """A readiness check that some start-up task flips, e.g. ``bootstrap-cache-server``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready = False
        self._reason = "not finished"

    @property
    def ready(self) -> bool:
        return self._ready

    def set_ready(self) -> None:
        self._ready = True

    def set_not_ready(self, reason: str) -> None:
        self._ready = False
        self._reason = reason

    def __call__(self) -> None:
        if not self._ready:
            raise RuntimeError(self._reason)


class ReadinessChecks:
    """The registry of ``/readyz`` checks beyond ``ping`` and the storage check.

    The API layer registers its start-up work here (``add_flag("poststarthook/…")``) so the
    server only turns ready once, say, the bootstrap CRDs exist.
    """

    def __init__(self) -> None:
        self._checks: dict[str, HealthCheck] = {}

    def register(self, name: str, check: HealthCheck) -> None:
        """Add a named check; names must be unique."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is already registered")
        self._checks[name] = check

    def add_flag(self, name: str) -> ReadinessFlag:
        """Register and return a :class:`ReadinessFlag`, not ready until ``set_ready()``."""
        flag = ReadinessFlag(name)
        self.register(name, flag)
        return flag

    def items(self) -> list[tuple[str, HealthCheck]]:
        return list(self._checks.items())


@dataclass(frozen=True, slots=True)
class _Result:
    name: str
    error: str | None


#: A check that does not answer within this many seconds fails (kube's etcd check: 2 s).
CHECK_TIMEOUT = 5.0


async def _run(name: str, check: HealthCheck) -> _Result:
    try:
        outcome = check()
        if inspect.isawaitable(outcome):
            async with asyncio.timeout(CHECK_TIMEOUT):
                await outcome
    except TimeoutError:
        return _Result(name, f"no answer within {CHECK_TIMEOUT:g}s")
    except Exception as exc:
        return _Result(name, str(exc) or type(exc).__name__)
    return _Result(name, None)


class HealthEndpoints:
    """Answers the three health paths from the ping, storage and registered checks."""

    def __init__(self, storage: Storage | None, readiness: ReadinessChecks) -> None:
        self._storage = storage
        self._readiness = readiness
        self._shutting_down = False

    def start_shutdown(self) -> None:
        """Make ``/readyz`` fail so load balancers stop sending traffic."""
        self._shutting_down = True

    def _storage_check(self) -> HealthCheck:
        storage = self._storage
        assert storage is not None
        return storage.check_health

    def _shutdown_check(self) -> None:
        if self._shutting_down:
            raise RuntimeError("the server is shutting down")

    def _checks(self, path: str) -> list[tuple[str, HealthCheck]]:
        checks: list[tuple[str, HealthCheck]] = [("ping", lambda: None)]
        if path == "/livez":
            return checks
        if self._storage is not None:
            checks.append(("storage", self._storage_check()))
        if path == "/readyz":
            checks.append(("shutdown", self._shutdown_check))
        checks.extend(self._readiness.items())
        return checks

    async def handle(self, path: str, query_string: bytes, send: Send, method: str = "GET") -> None:
        """Answer one health request; only GET and HEAD are health probes (405 otherwise)."""
        if method not in _PROBE_METHODS:
            error = ApiError.method_not_allowed(
                f"{method} is not allowed on {path}: health endpoints answer GET and HEAD only"
            )
            await send_bytes(send, 405, status_body(error), headers=[(b"allow", b"GET, HEAD")])
            return
        query = (
            parse_qs(query_string.decode("latin-1"), keep_blank_values=True) if query_string else {}
        )
        verbose = "verbose" in query
        excluded = set(query.get("exclude", ()))
        checks = [(n, c) for n, c in self._checks(path) if n not in excluded]
        results = [await _run(name, check) for name, check in checks]
        failed = [r for r in results if r.error is not None]
        name = path.lstrip("/")
        if not failed and not verbose:
            await send_bytes(send, 200, b"ok", content_type=_TEXT)
            return
        lines = [
            check_line(
                result.name,
                ok=result.error is None,
                reason=result.error if verbose else "reason withheld",
            )
            for result in results
        ]
        lines.extend(excluded_line(excluded_name) for excluded_name in sorted(excluded))
        for result in failed:
            log.info("%s check %s failed: %s", name, result.name, result.error)
        body = health_report(name, lines, failed=bool(failed))
        await send_bytes(send, 500 if failed else 200, body, content_type=_TEXT)
