"""Real etcd members for tests and benchmarks: free loopback ports, temporary data dirs.

Debian's ``etcd`` binary (package ``etcd-server``, installed by ``./scripts/test``) is
started as a child process. A single member or a cluster of several members can be
started, members can be SIGKILLed and restarted on the same ports and data directory
(to simulate an outage), and everything is stopped cleanly at the end.

This module never imports grpc: it only spawns processes and probes ``/health`` over
plain HTTP, so it is safe to use from a process that holds live gRPC channels (the
engine sets ``GRPC_ENABLE_FORK_SUPPORT=0`` for that, see ``docs/etcd.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EtcdCluster", "EtcdMember", "etcd_binary", "running_etcd"]

# Fast elections keep "kill a member" tests short; loopback latency is far below these.
_HEARTBEAT_MS = 50
_ELECTION_MS = 500


def etcd_binary() -> str:
    """The path of the etcd binary; fails with a clear message if it is not installed."""
    path = shutil.which("etcd")
    if path is None:
        raise RuntimeError(
            "the etcd binary is missing: install Debian's etcd-server package "
            "(./scripts/test does so)"
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EtcdMember:
    """One etcd process: its name, ports and data directory survive a restart."""

    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, initial_cluster: str, *, state: str) -> None:
        """Start the process (does not wait for it to be healthy)."""
        args = [
            etcd_binary(),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=kcp-cache-test",
            f"--heartbeat-interval={_HEARTBEAT_MS}",
            f"--election-timeout={_ELECTION_MS}",
            # Watches on etcd < 3.4.31 learn their progress only from these (docs/etcd.md).
            "--experimental-watch-progress-notify-interval=1s",
            "--logger=zap",
            "--log-level=warn",
        ]
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL the process: an abrupt outage, nothing flushed, sockets reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    async def wait_healthy(self, within: float = 20.0) -> None:
        """Wait until ``/health`` reports a member that has a leader."""
        deadline = time.monotonic() + within
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"etcd member {self.name} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            if await _healthy(self.client_port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"etcd member {self.name} not healthy after {within}s:\n" + self.log_tail()
                )
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def _healthy(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=1.0
        )
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=2.0)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _, _, body = response.partition(b"\r\n\r\n")
    try:
        return bool(json.loads(body).get("health") == "true")
    except ValueError:
        return False


async def _post_json(port: int, path: str, body: object) -> Any:
    """POST ``body`` as JSON to etcd's gateway; ``None`` if the member does not answer."""
    payload = json.dumps(body).encode()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=1.0
        )
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(
            f"POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=2.0)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _, _, data = response.partition(b"\r\n\r\n")
    try:
        return json.loads(data)
    except ValueError:
        return None


class EtcdCluster:
    """``size`` etcd members on loopback, each with its own ports and data directory."""

    def __init__(self, size: int = 1, base_dir: Path | None = None) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="kcp-etcd-")) if base_dir is None else base_dir
        self.members = [
            EtcdMember(
                name=f"m{i}",
                data_dir=self.base_dir / f"m{i}",
                client_port=_free_port(),
                peer_port=_free_port(),
            )
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every member (``http://127.0.0.1:PORT``)."""
        return [m.client_url for m in self.members]

    @property
    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    async def start(self) -> None:
        """Start every member (together: a new cluster needs a quorum to elect a leader)."""
        for member in self.members:
            member.spawn(self._initial_cluster, state="new")
        try:
            await asyncio.gather(*(m.wait_healthy() for m in self.members))
        except BaseException:
            self.stop()
            raise

    async def leader_index(self) -> int:
        """Index of the current leader (asked through etcd's JSON gateway)."""
        for member in self.members:
            if not member.running:
                continue
            status = await _post_json(member.client_port, "/v3/maintenance/status", {})
            if status is None or "leader" not in status:
                continue
            for index, other in enumerate(self.members):
                other_status = await _post_json(other.client_port, "/v3/maintenance/status", {})
                if other_status and other_status["header"]["member_id"] == status["leader"]:
                    return index
        raise RuntimeError("no etcd member reports a leader")

    def kill(self, index: int) -> None:
        """SIGKILL member ``index``."""
        self.members[index].kill()

    async def restart(self, index: int) -> None:
        """Start a killed member again on the same ports and data directory."""
        member = self.members[index]
        member.spawn(self._initial_cluster, state="existing")
        await member.wait_healthy()

    def stop(self) -> None:
        """Stop every member and remove the data directories this object created."""
        for member in self.members:
            member.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_etcd(size: int = 1) -> AsyncIterator[EtcdCluster]:
    """An :class:`EtcdCluster` that is started on entry and stopped on exit."""
    cluster = EtcdCluster(size)
    await cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# A process that spawns etcd may also hold live gRPC channels (the engine under test).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
