"""The server when its etcd goes away: not ready (with the reason), fast 503s instead of
hanging requests, watches that end so clients resume, recovery without a restart — and a
clear one-line error when etcd cannot be reached at start-up."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from kcp_cache.testing import CacheServer, EtcdCluster, TestCA, running_etcd

from ._etcd import Watch, export, exports_path

pytestmark = pytest.mark.etcd

#: What "fail fast" means with every member down (refused at once) ...
FAST = 2.0
#: ... and with a hung member: the engine's request deadline (5 s) plus slack.
DEADLINE = 8.0


async def _status_within(
    client: httpx2.AsyncClient, seconds: float, method: str, path: str, **kwargs: object
) -> httpx2.Response:
    started = time.monotonic()
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"{method} {path} took {elapsed:.1f}s"
    return response


def _assert_unavailable(response: httpx2.Response) -> None:
    assert response.status_code in (503, 504), response.text
    status = response.json()
    assert (status["kind"], status["status"]) == ("Status", "Failure")
    assert status["reason"] in ("ServiceUnavailable", "Timeout")
    assert "etcd is unavailable" in status["message"]


async def _wait_ready(client: httpx2.AsyncClient, within: float = 15.0) -> float:
    started = time.monotonic()
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() - started < within, "the server did not turn ready again"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_etcd_down_fails_fast_and_the_server_recovers_by_itself(
    cache_server: Callable[..., CacheServer], ca: TestCA
) -> None:
    async with running_etcd() as etcd:
        server = cache_server("--etcd-servers", etcd.endpoints[0], client_ca=ca)
        assert server.process is not None
        pid = server.process.pid
        path = exports_path("amber", "acme")
        async with server.async_client() as client:
            before = await client.post(path, json=export("before"))
            assert before.status_code == 201
            rv = (await client.get(path)).json()["metadata"]["resourceVersion"]
            async with (
                Watch(server, path, rv) as plain,
                Watch(server, exports_path("*", "*"), rv, resume=True) as resuming,
            ):
                etcd.kill(0)

                # Open watches end (no hang): the client resumes from its last revision.
                await plain.wait_for(lambda: plain.ends == 1, within=FAST + 3)
                assert plain.errors == []

                ready = await client.get("/readyz", params={"verbose": ""})
                assert ready.status_code == 500
                lines = ready.text.splitlines()
                assert "[+]ping ok" in lines
                failed = [line for line in lines if line.startswith("[-]")]
                assert len(failed) == 1
                assert failed[0].startswith("[-]storage failed: etcd is not healthy: ")
                assert etcd.endpoints[0] in failed[0]
                assert "Connection refused" in failed[0]
                assert (await client.get("/readyz")).status_code == 500
                # Alive all the same: restarting the process would not bring etcd back.
                assert (await client.get("/livez")).status_code == 200

                obj = export("during")
                for method, url, kwargs in (
                    ("GET", f"{path}/before", {}),
                    ("GET", path, {}),
                    ("GET", exports_path("*", "*"), {"params": {"limit": "1"}}),
                    ("POST", path, {"json": obj}),
                    ("PUT", f"{path}/before", {"json": {**before.json(), "spec": {}}}),
                    ("DELETE", f"{path}/before", {}),
                    ("GET", path, {"params": {"watch": "true"}}),
                    ("GET", path, {"params": {"watch": "true", "resourceVersion": rv}}),
                    ("GET", exports_path("beryl", "*"), {"params": {"watch": "true"}}),
                ):
                    response = await _status_within(client, FAST, method, url, **kwargs)
                    _assert_unavailable(response)

                await etcd.restart(0)
                recovered_in = await _wait_ready(client)
                created = await client.post(path, json=export("after"))
                assert created.status_code == 201, created.text
                # The resuming watcher missed nothing and saw nothing twice.
                await resuming.wait_for(lambda: resuming.names() == ["after"], within=10)
                assert resuming.ends >= 1
                assert all(code in (200, 503) for code in resuming.statuses)
        assert server.process.pid == pid
        assert server.process.poll() is None
        assert "Traceback" not in server.logs()
        assert recovered_in < 10


async def test_a_hung_etcd_answers_within_the_deadline(
    cache_server: Callable[..., CacheServer], ca: TestCA
) -> None:
    async with running_etcd() as etcd:
        server = cache_server("--etcd-servers", etcd.endpoints[0], client_ca=ca)
        path = exports_path("amber", "acme")
        async with server.async_client() as client:
            etcd.members[0].pause()  # SIGSTOP: sockets stay open, nothing answers
            try:
                # A read already waiting on etcd when the next one comes: the later read
                # still answers within its own deadline, not the earlier one's rest
                # plus its own.
                earlier = asyncio.ensure_future(_status_within(client, DEADLINE, "GET", path))
                ready = await _status_within(client, DEADLINE, "GET", "/readyz?verbose")
                assert ready.status_code == 500
                assert "[-]storage failed: " in ready.text
                _assert_unavailable(await _status_within(client, DEADLINE, "GET", path))
                _assert_unavailable(await earlier)
            finally:
                etcd.members[0].resume()
            await _wait_ready(client)
            assert (await client.post(path, json=export("fine"))).status_code == 201
        assert "Traceback" not in server.logs()


# -- start-up ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def not_etcd() -> Iterator[str]:
    """An HTTP/1.1 server that is not etcd (say, a wrong port in the flag)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung machine)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def _run_server(tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kcp_cache",
            "--root-directory",
            str(tmp_path / "root"),
            "--secure-port",
            "0",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("refused", "cannot reach etcd: etcd is unavailable: http://127.0.0.1:"),
        ("not-etcd", "cannot reach etcd: etcd is unavailable: http://127.0.0.1:"),
        ("silent", "cannot reach etcd: etcd is unavailable: http://127.0.0.1:"),
        ("tls-to-plain", "cannot reach etcd: etcd is unavailable: https://127.0.0.1:"),
        ("bad-scheme", "etcd endpoint 'ftp://127.0.0.1:2379': scheme must be http or https"),
        ("no-endpoint", "at least one etcd endpoint is needed"),
        ("missing-ca", "cannot read the etcd CA file /nonexistent/ca.pem"),
        ("relative-prefix", "storage prefix must be an absolute path such as /cache, got 'cache'"),
    ],
    ids=lambda value: value if " " not in value else "",
)
async def test_unusable_etcd_servers_at_start_up_is_one_clear_line(
    case: str, expected: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The CLI's choice: exit 1 with one line at start-up (a supervisor restarts it)
    rather than a server that serves nothing; a later outage only makes it not ready."""
    flags: tuple[str, ...]
    if case == "refused":
        flags = ("--etcd-servers", f"http://127.0.0.1:{_free_port()}")
    elif case == "not-etcd":
        flags = ("--etcd-servers", request.getfixturevalue("not_etcd"))
    elif case == "silent":
        flags = ("--etcd-servers", request.getfixturevalue("silent"))
    elif case == "tls-to-plain":
        (tmp_path / "etcd").mkdir()
        etcd = EtcdCluster(1, base_dir=tmp_path / "etcd")
        await etcd.start()
        request.addfinalizer(etcd.stop)
        flags = ("--etcd-servers", etcd.endpoints[0].replace("http://", "https://"))
    elif case == "bad-scheme":
        flags = ("--etcd-servers", "ftp://127.0.0.1:2379")
    elif case == "no-endpoint":
        flags = ("--etcd-servers", " , ")
    elif case == "missing-ca":
        flags = ("--etcd-servers", "https://127.0.0.1:2379", "--etcd-cafile", "/nonexistent/ca.pem")
    else:
        flags = ("--etcd-servers", "http://127.0.0.1:2379", "--etcd-prefix", "cache")
    done, elapsed = _run_server(tmp_path, *flags)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    error_lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, done.stderr
    assert error_lines[0].startswith("kcp-cache-server: error: ")
    assert expected in error_lines[0]
    assert elapsed < 10  # the start-up probe has a 2 s deadline
    assert not (tmp_path / "root" / "secure-port").exists()  # never claimed to serve
