"""Black-box: kube's max-in-flight limits on the real binary (``--max-requests-inflight``,
``--max-mutating-requests-inflight``).

Slots are held the way hostile clients hold them: a POST whose body never finishes
arriving (mutating) and a big LIST to a client that never reads (read-only). The
requests turned away are a non-privileged client's; ``system:masters``, health probes
and watches are never turned away.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable, Iterator

import httpx2

from kcp_cache.testing import CacheServer

from ._overload import EXPORTS, connect, drain, fill, metric, send_head, stalled_request, wait_for


def _in_flight(server: CacheServer, kind: str) -> float:
    return metric(server, "apiserver_current_inflight_requests", request_kind=kind)


@contextlib.contextmanager
def _unfinished_posts(server: CacheServer, count: int) -> Iterator[list[ssl.SSLSocket]]:
    """``count`` admin POSTs that announce a body and send only its first bytes."""
    socks = []
    try:
        for _ in range(count):
            sock = connect(server)
            send_head(
                sock,
                "POST",
                EXPORTS,
                {"Content-Type": "application/json", "Content-Length": "100000"},
            )
            sock.sendall(b'{"apiVersion": ')
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _assert_too_many_requests(response: httpx2.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    status = response.json()
    assert status["kind"] == "Status"
    assert status["reason"] == "TooManyRequests"
    assert status["code"] == 429
    assert status["details"]["retryAfterSeconds"] == 1


def test_mutating_limit_turns_away_with_429_and_serves_masters_and_probes(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server(
        "--storage",
        "memory",
        "--max-mutating-requests-inflight",
        "2",
        "--max-requests-inflight",
        "5",
    )
    export = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "a"}}
    with server.client(cert=None) as anonymous, server.client() as admin:
        # Below the limit an anonymous write reaches authorization (403).
        assert anonymous.post(EXPORTS, json=export).status_code == 403
        with _unfinished_posts(server, 2):
            wait_for(lambda: _in_flight(server, "mutating") == 2, 10, "two mutating slots held")
            _assert_too_many_requests(anonymous.post(EXPORTS, json=export))
            # The read-only budget is separate: reads still reach authorization.
            assert anonymous.get(EXPORTS).status_code == 403
            assert anonymous.get("/healthz").status_code == 200
            assert anonymous.get("/readyz").status_code == 200
            # system:masters always gets an answer (kube's rule), beyond the budget.
            assert admin.post(EXPORTS, json=export).status_code == 201
            assert metric(server, "apiserver_dropped_requests_total", request_kind="mutating") == 1
            assert metric(server, "apiserver_dropped_requests_total", request_kind="readOnly") == 0
        wait_for(lambda: _in_flight(server, "mutating") == 0, 10, "slots released")
        assert anonymous.post(EXPORTS, json=export).status_code == 403
        total = metric(
            server,
            "apiserver_request_total",
            verb="POST",
            group="apis.kcp.io",
            version="v1alpha1",
            resource="apiexports",
            code="429",
        )
        assert total == 1


def test_read_only_limit_counts_lists_not_watches(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server("--storage", "memory", "--max-requests-inflight", "1")
    fill(server, 100, 64 * 1024)  # a LIST of ~6.5 MB: more than the kernel buffers hold
    with server.client(cert=None) as anonymous, server.client() as admin:
        watches = [stalled_request(server, f"{EXPORTS}?watch=1") for _ in range(3)]
        try:
            wait_for(
                lambda: (
                    metric(server, "kcp_cache_open_watches", resource="apiexports.apis.kcp.io") == 3
                ),
                10,
                "three open watches",
            )
            # Three long-running watches and a budget of one: reads are still admitted.
            assert anonymous.get(EXPORTS).status_code == 403
            hog = stalled_request(server, EXPORTS)  # a LIST whose client never reads
            try:
                # (The read-only gauge counts the scrape reading it, so watch the effect.)
                wait_for(lambda: anonymous.get(EXPORTS).status_code == 429, 10, "the first 429")
                _assert_too_many_requests(anonymous.get(EXPORTS))
                _assert_too_many_requests(anonymous.get("/metrics"))  # non-resource too
                assert anonymous.get("/livez").status_code == 200
                response = admin.get(EXPORTS, params={"limit": "1"})
                assert response.status_code == 200
                assert len(response.json()["items"]) == 1
                dropped = metric(
                    server, "apiserver_dropped_requests_total", request_kind="readOnly"
                )
                assert dropped == 3
            finally:
                hog.close()
            wait_for(lambda: anonymous.get(EXPORTS).status_code == 403, 10, "the slot released")
        finally:
            for sock in watches:
                sock.close()


def test_limits_of_zero_disable_them(cache_server: Callable[..., CacheServer]) -> None:
    server = cache_server(
        "--storage",
        "memory",
        "--max-mutating-requests-inflight",
        "0",
        "--max-requests-inflight",
        "0",
    )
    export = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "a"}}
    with server.client(cert=None) as anonymous, _unfinished_posts(server, 3):
        assert anonymous.post(EXPORTS, json=export).status_code == 403
    assert metric(server, "apiserver_dropped_requests_total", request_kind="mutating") == 0


def test_request_timeout_takes_the_slot_back_from_a_client_that_stopped(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server(
        "--storage",
        "memory",
        "--max-requests-inflight",
        "1",
        "--max-mutating-requests-inflight",
        "1",
        "--request-timeout",
        "1s",
    )
    fill(server, 100, 64 * 1024)
    export = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "a"}}
    with server.client(cert=None) as anonymous, _unfinished_posts(server, 1) as (post,):
        hog = stalled_request(server, EXPORTS)  # a LIST whose client never reads
        try:
            wait_for(lambda: anonymous.get(EXPORTS).status_code == 429, 5, "the LIST's slot")
            wait_for(lambda: anonymous.post(EXPORTS, json=export).status_code == 429, 5, "POST")
            began = time.monotonic()
            # Neither hog does anything more, yet both slots come back within ~1 s.
            wait_for(lambda: anonymous.get(EXPORTS).status_code == 403, 10, "read slot back")
            wait_for(lambda: anonymous.post(EXPORTS, json=export).status_code == 403, 10, "write")
            assert time.monotonic() - began < 5
            _data, how = drain(hog)
            assert how != "end of response"  # dropped, not completed
            assert post.recv(1024) == b""  # the unfinished upload's connection is closed too
        finally:
            hog.close()
