"""kube-apiserver's max-in-flight filter: bounded concurrent requests, 429 beyond.

Mirrors ``k8s.io/apiserver/pkg/server/filters/maxinflight.go`` (``--max-requests-inflight``,
``--max-mutating-requests-inflight``):

* two independent budgets — read-only requests (verbs ``get``, ``list``, ``watch``) and
  mutating ones (everything else); a limit of 0 means unlimited;
* long-running requests (watches) are not counted: they would hold a slot for up to an
  hour each, and kube's ``longRunningRequestCheck`` skips them too;
* a request beyond its budget gets ``429 TooManyRequests`` with ``Retry-After: 1`` and is
  counted in ``apiserver_dropped_requests_total{request_kind}``;
* members of ``system:masters`` are never turned away (kube: "a system:master is so
  powerful that they should always get an answer");
* the health endpoints (``/healthz``, ``/livez``, ``/readyz``) are exempt as well: kube's
  priority-and-fairness puts probes in its ``exempt`` level, and a probe that fails
  because the server is busy gets a busy server restarted, which makes overload worse.

The server runs on one event loop, so the counters are plain integers.
"""

from __future__ import annotations

from typing import Final

from kcp_cache.meta import SYSTEM_MASTERS
from kcp_cache.registry import ApiError
from kcp_cache.server._metrics import ServerMetrics
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import User

__all__ = [
    "DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT",
    "DEFAULT_MAX_REQUESTS_INFLIGHT",
    "MUTATING",
    "READ_ONLY",
    "InFlightLimiter",
]

DEFAULT_MAX_REQUESTS_INFLIGHT: Final = 400
DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT: Final = 200
#: The ``request_kind`` label values kube uses.
READ_ONLY: Final = "readOnly"
MUTATING: Final = "mutating"
#: Seconds a turned-away client should wait (kube's constant).
RETRY_AFTER_SECONDS: Final = 1

_NON_MUTATING_VERBS: Final = frozenset({"get", "list", "watch"})
_LONG_RUNNING_VERBS: Final = frozenset({"watch"})
_EXEMPT_PATHS: Final = frozenset({"/healthz", "/livez", "/readyz"})


class InFlightLimiter:
    """Admits a request into its budget (:meth:`admit`) until :meth:`release`.

    ``admit`` returns the budget it took (``None`` when the request is not counted) or
    raises the 429 :class:`ApiError`; pass what it returned to ``release`` once the
    handler is done, however it ended.
    """

    __slots__ = ("_in_flight", "_limits", "_metrics")

    def __init__(self, max_read_only: int, max_mutating: int, metrics: ServerMetrics) -> None:
        if max_read_only < 0 or max_mutating < 0:
            raise ValueError("in-flight limits must not be negative (0 disables a limit)")
        self._limits = {READ_ONLY: max_read_only, MUTATING: max_mutating}
        self._in_flight = metrics.inflight_requests
        self._metrics = metrics
        self._in_flight.update({READ_ONLY: 0, MUTATING: 0})

    def admit(self, user: User, info: RequestInfo, path: str) -> str | None:
        """Take a slot for this request, or raise ``429 TooManyRequests``."""
        if info.verb in _LONG_RUNNING_VERBS and info.is_resource_request:
            return None
        if not info.is_resource_request and path in _EXEMPT_PATHS:
            return None
        kind = READ_ONLY if info.verb in _NON_MUTATING_VERBS else MUTATING
        limit = self._limits[kind]
        if limit == 0:
            return None
        current = self._in_flight[kind]
        if current >= limit:
            if SYSTEM_MASTERS in user.groups:
                return None  # served, but outside the budget (as kube does)
            self._metrics.count_dropped_request(kind)
            raise ApiError.too_many_requests(
                "Too many requests, please try again later.", RETRY_AFTER_SECONDS
            )
        self._in_flight[kind] = current + 1
        return kind

    def release(self, kind: str | None) -> None:
        """Give back the slot :meth:`admit` returned (``None``: nothing to give back)."""
        if kind is not None:
            self._in_flight[kind] -= 1
