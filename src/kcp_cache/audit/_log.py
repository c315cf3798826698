"""The audit log: one ``audit.k8s.io/v1`` ``Event`` JSON line per request, as kube writes it.

``--audit-log-path FILE`` (``-`` for standard output) turns it on, at kube's ``Metadata``
level: who (user, groups, source IPs, user agent), what (verb, request URI, object
reference with the shard and cluster as annotations), the authorization decision and its
reason, and the response code — never a request or response body. Every response carries
the event's id as the ``Audit-ID`` header. Watches get a ``ResponseStarted`` event when
the stream opens and ``ResponseComplete`` when it ends.

**The request path never waits for the disk, nor encodes JSON.** A request appends its
:data:`~._event.AuditFacts` tuple to a bounded buffer (``--audit-log-buffer-size``
events, default 10,000). The sender — a task on the server's event loop, or a thread for
a log opened without one — takes the buffer every 5 ms while events flow, backing off to
every 50 ms when idle (not per event: a wake-up per request would cost more than the
event; nor much less often: held events cost the request path, see :data:`_LINGER`) and
hands it, in frames of up to 1,024 events,
to the **writer process** (:mod:`._writer`), which encodes the lines, writes and rotates
the file and answers how it went. Encoding and writing were about half of what an event
cost the server; in a process of their own they run on another core instead of taking
turns with the event loop for the GIL.

When the buffer is full the event is *dropped*: counted
(``kcp_cache_audit_events_dropped_total``) and logged (at most once a second) — the same
choice as kube's batching backend, which also drops rather than block requests. A failed
write (a full disk) is counted (``kcp_cache_audit_write_failures_total``, and the lost
events as dropped) and logged; the next batch tries again, so the log resumes by itself
once the disk has room. A writer process that dies is logged, its batch counted as lost,
and a new one started (at most one a second).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from kcp_cache.audit._event import AuditFacts
from kcp_cache.audit._file import AuditFile
from kcp_cache.audit._options import AuditOptions
from kcp_cache.audit._wire import encode_frame, read_frame, read_frame_async

__all__ = ["AuditLog"]

log = logging.getLogger("kcp_cache.server.audit")

#: How long the sender lets events gather: a few milliseconds while they flow, backing
#: off (doubling) to 50 ms while there is nothing to send. Short while busy because an
#: event held longer costs the request path more than its share of a batch: 50 ms of
#: events (~350 at full load) no longer fit the CPU's caches by the time they are sent
#: and freed, and the writer's burst of work on them crowds the cores (measured: ~3 µs
#: of server CPU per GET at 50 ms, against 5 ms).
_LINGER: Final = 0.005
_IDLE_INTERVAL: Final = 0.05
_BATCH: Final = 1024
_RESTART_GAP: Final = 1.0
#: The directory that holds the ``kcp_cache`` package: the writer process imports it
#: from there even when the server found it through a path set at run time.
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[2])


def _next_wait(wait: float, had_events: bool) -> float:
    """The sender's next wait: :data:`_LINGER` after a wake-up that found events, else
    twice the last one, up to :data:`_IDLE_INTERVAL`."""
    return _LINGER if had_events else min(_IDLE_INTERVAL, wait * 2)


class _RateLimitedLog:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = 0.0

    def __call__(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.log(level, message, *args)


class AuditLog:
    """The buffered audit log and its writer process; see the module docstring."""

    def __init__(self, options: AuditOptions) -> None:
        self.options = options
        # A deque: append and popleft are atomic, so the request path takes no lock.
        self._buffer: collections.deque[AuditFacts | dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        #: Set on the way out of a log sent from a loop (``None``: a thread sends).
        self._stopping: asyncio.Event | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._started_at = -_RESTART_GAP
        self._warn = _RateLimitedLog()
        self._counting = threading.Lock()  # the loop and the sender both count drops
        #: Events written, dropped (buffer full, write failed, writer died), failed writes.
        self.events_written = 0
        self.events_dropped = 0
        self.write_failures = 0
        #: Writer processes started (1 after :meth:`open`; more if one died).
        self.writers_started = 0

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (``None`` before :meth:`open` or between writers)."""
        return self._process.pid if self._process is not None else None

    # -- lifecycle ----------------------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open (create) the file and start the writer process and the sender;
        ``OSError`` if the file cannot be opened.

        The sender is a thread of its own, or — given *loop*, as the server does — a task
        on that event loop with a non-blocking socket: then no second thread takes turns
        with the loop for the GIL (close it with :meth:`aclose`)."""
        checked = AuditFile(self.options)
        checked.open()  # the error belongs to the caller, at start-up, not to a log line
        checked.close()
        if loop is not None:
            self._stopping = asyncio.Event()
        self._start_writer()
        if loop is not None:
            self._task = loop.create_task(self._send_from_loop(), name="kcp-cache audit log")
            return
        self._thread = threading.Thread(target=self._run, name="kcp-cache audit log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is buffered (waiting at most *timeout* seconds) and stop the writer
        (for a log opened without a loop)."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        self._stop_writer(max(0.1, deadline - time.monotonic()))

    async def aclose(self, patience: float = 5.0) -> None:
        """:meth:`close`, from the event loop (either kind of sender)."""
        task = self._task
        if task is None:
            await asyncio.to_thread(self.close, patience)
            return
        self._task = None
        assert self._stopping is not None
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                await asyncio.shield(task)
        if not task.done():  # a writer stuck on its disk: what it holds is lost
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._stop_writer, 1.0)

    # -- the request path ---------------------------------------------------------------

    def record(self, event: AuditFacts | dict[str, Any]) -> None:
        """Queue one event — a request's :data:`~._event.AuditFacts` (the writer builds
        the ``Event``) or a finished ``Event`` dict; never blocks (a full buffer drops it,
        counted and logged)."""
        if len(self._buffer) < self.options.buffer_events:
            self._buffer.append(event)
        else:
            with self._counting:
                self.events_dropped += 1
            self._warn(
                logging.WARNING,
                "audit log buffer full (%d events): dropping events (%d dropped so far)",
                self.options.buffer_events,
                self.events_dropped,
            )

    # -- the sender: a thread, or a task on the server's loop --------------------------

    def _run(self) -> None:
        wait = _IDLE_INTERVAL
        while True:
            stopping = self._stop.wait(wait)
            wait = _next_wait(wait, bool(self._buffer))
            while self._buffer and self._writer_running():
                self._send(self._take_batch())
            if stopping:
                self._lose_the_rest()
                return

    async def _send_from_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._stopping is not None
        wait = _IDLE_INTERVAL
        while True:
            stopping = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    stopping = await self._stopping.wait()
            wait = _next_wait(wait, bool(self._buffer))
            while self._buffer and self._writer_running():
                batch = self._take_batch()
                frame = self._frame(batch)
                if frame is None:
                    continue
                sock = self._sock
                assert sock is not None
                try:
                    await loop.sock_sendall(sock, frame)
                    answer = await read_frame_async(loop, sock)
                except (OSError, EOFError) as exc:
                    self._writer_failed(len(batch), exc, patience=0.0)  # the loop waits not
                    continue
                self._answered(*answer)
            if stopping:
                self._lose_the_rest()
                return

    def _take_batch(self) -> list[AuditFacts | dict[str, Any]]:
        batch: list[AuditFacts | dict[str, Any]] = []
        buffer = self._buffer
        with contextlib.suppress(IndexError):
            while len(batch) < _BATCH:
                batch.append(buffer.popleft())
        return batch

    def _lose_the_rest(self) -> None:
        if self._buffer:  # the writer is down and cannot come back in time
            self._lose(len(self._buffer))
            log.error("closing the audit log: %d events lost", len(self._buffer))

    def _send(self, batch: list[AuditFacts | dict[str, Any]]) -> None:
        frame = self._frame(batch)
        if frame is None:
            return
        sock = self._sock
        assert sock is not None
        try:
            sock.sendall(frame)
            answer = read_frame(sock)
        except (OSError, EOFError) as exc:
            self._writer_failed(len(batch), exc, patience=1.0)
            return
        self._answered(*answer)

    def _frame(self, batch: list[AuditFacts | dict[str, Any]]) -> bytes | None:
        try:
            return encode_frame(batch)
        except ValueError as exc:  # not an event of ours: a bug, but never the writer's
            self._lose(len(batch))
            log.error("cannot pass %d audit events to the writer: %s", len(batch), exc)
            return None

    def _answered(self, written: int, lost: int, error: str | None) -> None:
        self.events_written += written
        if lost:
            self._lose(lost, failed_write=True)
            self._warn(
                logging.ERROR,
                "cannot write the audit log %s: %s (%d events lost so far)",
                self.options.path,
                error,
                self.events_dropped,
            )

    def _writer_failed(self, count: int, exc: BaseException, *, patience: float) -> None:
        self._lose(count)
        log.error(
            "the audit log writer (pid %s) stopped: %s; starting another", self.writer_pid, exc
        )
        self._stop_writer(patience)

    def _lose(self, count: int, *, failed_write: bool = False) -> None:
        with self._counting:
            self.events_dropped += count
            self.write_failures += failed_write

    # -- the writer process -------------------------------------------------------------

    def _start_writer(self) -> None:
        ours, theirs = socket.socketpair()
        # The loop's sock_* calls need a non-blocking socket.
        ours.setblocking(self._stopping is None)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, environment.get("PYTHONPATH")) if p
        )
        options = json.dumps(self.options.as_dict())
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "kcp_cache.audit._writer", str(theirs.fileno()), options],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=environment,
                # Its own process group: a terminal's Ctrl-C, sent to the server's group,
                # is the server's to handle (the writer also ignores it once started).
                process_group=0,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self._started_at = time.monotonic()
        self.writers_started += 1

    def _writer_running(self) -> bool:
        """Whether a writer is there to take a batch, starting one if it is needed (and
        the last start is long enough ago)."""
        process = self._process
        if process is not None and process.poll() is None:
            return True
        if process is not None:  # found dead between batches: nothing of it was lost
            log.error(
                "the audit log writer (pid %d) exited with code %s; starting another",
                process.pid,
                process.returncode,
            )
            self._stop_writer(0.0)
        return self._restart_writer()

    def _restart_writer(self) -> bool:
        """Start a writer if the last start is long enough ago; whether one runs."""
        if time.monotonic() - self._started_at < _RESTART_GAP:
            return False
        try:
            self._start_writer()
        except OSError as exc:
            self._started_at = time.monotonic()
            self._warn(logging.ERROR, "cannot start the audit log writer: %s", exc)
            return False
        return True

    def _stop_writer(self, timeout: float) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # the writer sees the end of its input and exits
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
