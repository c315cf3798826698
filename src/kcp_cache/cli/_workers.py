"""``kcp-cache-server --workers N``: N processes on one port, so that reads use every core.

Python runs one request at a time per process; a second core needs a second process.
The process the operator starts is worker 0. Once it is ready it starts workers
1..N-1 — the same command line plus ``--worker-index`` — and each of them listens on
the same port with ``SO_REUSEPORT``, so the kernel spreads new connections across them.

* **SQLite** (the default): worker 0 is the *leader*, which owns the store; the others
  are *followers* (:class:`~kcp_cache.storage.FollowerStorage`) that serve reads and
  watches from a copy of it and hand writes to the leader over a Unix socket
  (:class:`~kcp_cache.storage.LeaderLink`) in a private temporary directory.
* **etcd**: every worker is an independent server with its own watch cache, as several
  replicas would be — etcd is already the one place writes go to.
* **memory**: refused; there is nothing a second process could share.

Supervision: worker 0 restarts a worker that exits (with a back-off), and stops all of
them on SIGTERM before it stops itself. The group does not outlive worker 0: a follower
that loses its leader shuts down, and every worker shuts down when its parent is gone.
A supervisor above (systemd, Kubernetes) restarts the group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kcp_cache.cli._numbers import boolean, integer_at_least

__all__ = [
    "LEADER_SOCKET_NAME",
    "WorkerGroup",
    "WorkerRole",
    "add_worker_flags",
    "private_socket_directory",
    "watch_parent",
]

log = logging.getLogger("kcp_cache.cli.workers")

LEADER_SOCKET_NAME = "leader.sock"

#: Back-off between restarts of a worker that keeps dying (seconds, doubling).
RESTART_BACKOFF_MIN = 0.2
RESTART_BACKOFF_MAX = 10.0
#: A worker that ran this long before it died is restarted at once (back-off reset).
STABLE_AFTER = 30.0


def add_worker_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "workers", "several processes on one port (see docs/workers.md)"
    )
    group.add_argument(
        "--workers",
        metavar="N",
        type=integer_at_least(1),
        default=1,
        help="processes serving the port (SO_REUSEPORT): with sqlite one leader that "
        "writes and N-1 followers serving reads and watches from a copy; with etcd N "
        "independent servers; not with memory",
    )
    group.add_argument(
        "--balance-connections",
        type=boolean,
        default=True,
        metavar="BOOL",
        help="pass a newly accepted connection to the worker holding the fewest, so that "
        "long-lived watch connections are split evenly (the kernel's SO_REUSEPORT hash is "
        "even only on average); default true",
    )
    # Set by worker 0 on the command lines of the workers it starts.
    group.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    group.add_argument("--worker-directory", help=argparse.SUPPRESS)
    group.add_argument("--leader-socket", help=argparse.SUPPRESS)


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Which process of the group this is."""

    index: int
    count: int
    leader_socket: str | None
    #: The group's private directory (the leader's socket, the connection balancing's
    #: sockets and counts); worker 0 creates it (:meth:`with_directory`).
    directory: str | None = None

    @property
    def grouped(self) -> bool:
        return self.count > 1

    @property
    def follower(self) -> bool:
        return self.index > 0 and self.leader_socket is not None

    @property
    def label(self) -> str | None:
        """The ``worker`` label of this process's metrics (none when alone)."""
        return str(self.index) if self.grouped else None

    def own_file(self, path: str) -> str:
        """Worker ``i``'s own copy of a file every process writes (the audit log):
        ``audit.log`` → ``audit-worker1.log``; worker 0 and ``-`` keep the name."""
        if self.index == 0 or path == "-":
            return path
        name = Path(path)
        return str(name.with_name(f"{name.stem}-worker{self.index}{name.suffix}"))

    def with_directory(self) -> WorkerRole:
        """Worker 0 of a group: the role with a new private directory."""
        return dataclasses.replace(self, directory=private_socket_directory())

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WorkerRole:
        return cls(args.worker_index, args.workers, args.leader_socket, args.worker_directory)


def private_socket_directory() -> str:
    """A new directory (mode 0700) for the group's sockets; short enough for a Unix
    socket path wherever the root directory is."""
    return tempfile.mkdtemp(prefix="kcp-cache-workers-")


class WorkerGroup:
    """Workers 1..count-1 of worker 0: started, restarted when they die, stopped."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        count: int,
        port: int,
        directory: str,
        leader_socket: str | None,
    ) -> None:
        self._argv = list(argv)
        self._count = count
        self._port = port
        self._directory = directory
        self._leader_socket = leader_socket
        self._stopping = False
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: Restarts so far (by worker index), for the logs and the tests.
        self.restarts: dict[int, int] = {}

    def command(self, index: int) -> list[str]:
        """The command line of worker ``index``: this one's, with its place in the group."""
        extra = ["--secure-port", str(self._port), "--worker-index", str(index)]
        extra += ["--worker-directory", self._directory]
        if self._leader_socket is not None:
            extra += ["--leader-socket", self._leader_socket]
        return [sys.executable, "-m", "kcp_cache", *self._argv, *extra]

    def pids(self) -> dict[int, int]:
        """The running workers' process ids by index."""
        return {i: p.pid for i, p in self._procs.items() if p.returncode is None}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(1, self._count):
            self._tasks.append(loop.create_task(self._supervise(index), name=f"worker {index}"))

    async def _supervise(self, index: int) -> None:
        backoff = RESTART_BACKOFF_MIN
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            # A session of its own: a terminal's Ctrl-C reaches worker 0 only, which stops
            # the others itself (they would otherwise stop at once and be restarted).
            proc = await asyncio.create_subprocess_exec(
                *self.command(index), start_new_session=True
            )
            self._procs[index] = proc
            log.info("started worker %d (pid %d)", index, proc.pid)
            code = await proc.wait()
            if self._stopping:
                return
            log.error("worker %d (pid %d) exited with %s; restarting it", index, proc.pid, code)
            self.restarts[index] = self.restarts.get(index, 0) + 1
            if loop.time() - started >= STABLE_AFTER:
                backoff = RESTART_BACKOFF_MIN
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every worker (they shut down gracefully), SIGKILL after ``grace`` s."""
        self._stopping = True
        procs = [p for p in self._procs.values() if p.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if procs:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in procs], timeout=grace
            )
            for proc in procs:
                if proc.returncode is None:
                    log.error("worker pid %d did not stop in %gs; killing it", proc.pid, grace)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            for waiting in pending:
                await waiting
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        shutil.rmtree(self._directory, ignore_errors=True)


def watch_parent(on_gone: Callable[[], None], interval: float = 0.5) -> asyncio.Task[None]:
    """Call ``on_gone`` once this process's parent (worker 0) has exited."""
    parent = os.getppid()

    async def poll() -> None:
        # No event tells a process that its parent exited (short of prctl's signal,
        # which Linux sends when the parent *thread* exits): poll, cheaply.
        while os.getppid() == parent:  # noqa: ASYNC110
            await asyncio.sleep(interval)
        log.error("worker 0 (pid %d) is gone; this worker stops", parent)
        on_gone()

    return asyncio.get_running_loop().create_task(poll(), name="parent watch")
