"""The audit log: one ``audit.k8s.io/v1`` ``Event`` JSON line per request, as kube writes it.

``--audit-log-path FILE`` (``-`` for standard output) turns it on, at kube's ``Metadata``
level: who (user, groups, source IPs, user agent), what (verb, request URI, object
reference with the shard and cluster as annotations), the authorization decision and its
reason, and the response code — never a request or response body. Every response carries
the event's id as the ``Audit-ID`` header. Watches get a ``ResponseStarted`` event when
the stream opens and ``ResponseComplete`` when it ends.

**The request path never waits for the disk, nor encodes JSON.** A request appends its
:data:`~._event.AuditFacts` tuple to a bounded buffer (``--audit-log-buffer-size``
events, default 10,000). One sender thread takes the buffer every 50 ms (waking it per
event would cost a thread switch per request) and hands it, in frames of up to 1,024
events, to the **writer process** (:mod:`._writer`), which encodes the lines, writes and
rotates the file and answers how it went. Encoding and writing are ~70 % of what an event
costs; in a process of its own that work runs on another core instead of taking turns
with the event loop for the GIL.

When the buffer is full the event is *dropped*: counted
(``kcp_cache_audit_events_dropped_total``) and logged (at most once a second) — the same
choice as kube's batching backend, which also drops rather than block requests. A failed
write (a full disk) is counted (``kcp_cache_audit_write_failures_total``, and the lost
events as dropped) and logged; the next batch tries again, so the log resumes by itself
once the disk has room. A writer process that dies is logged, its batch counted as lost,
and a new one started (at most one a second).
"""

from __future__ import annotations

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
from kcp_cache.audit._wire import encode_frame, read_frame

__all__ = ["AuditLog"]

log = logging.getLogger("kcp_cache.server.audit")

_INTERVAL: Final = 0.05
_BATCH: Final = 1024
_RESTART_GAP: Final = 1.0
#: The directory that holds the ``kcp_cache`` package: the writer process imports it
#: from there even when the server found it through a path set at run time.
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[2])


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

    def open(self) -> None:
        """Open (create) the file, start the writer process and the sender thread;
        ``OSError`` if the file cannot be opened."""
        checked = AuditFile(self.options)
        checked.open()  # the error belongs to the caller, at start-up, not to a log line
        checked.close()
        self._start_writer()
        self._thread = threading.Thread(target=self._run, name="kcp-cache audit log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is buffered (waiting at most *timeout* seconds) and stop the writer."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        self._stop_writer(max(0.1, deadline - time.monotonic()))

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

    # -- the sender thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(_INTERVAL)
            buffer = self._buffer
            while buffer and self._writer_running():
                batch: list[AuditFacts | dict[str, Any]] = []
                with contextlib.suppress(IndexError):
                    while len(batch) < _BATCH:
                        batch.append(buffer.popleft())
                self._send(batch)
            if stopping:
                if buffer:  # the writer is down and cannot come back in time
                    self._lose(len(buffer))
                    log.error("closing the audit log: %d events lost", len(buffer))
                return

    def _send(self, batch: list[AuditFacts | dict[str, Any]]) -> None:
        sock = self._sock
        assert sock is not None
        try:
            frame = encode_frame(batch)
        except ValueError as exc:  # not an event of ours: a bug, but never the writer's
            self._lose(len(batch))
            log.error("cannot pass %d audit events to the writer: %s", len(batch), exc)
            return
        try:
            sock.sendall(frame)
            written, lost, error = read_frame(sock)
        except (OSError, EOFError) as exc:
            self._lose(len(batch))
            log.error(
                "the audit log writer (pid %s) stopped: %s; starting another",
                self.writer_pid,
                exc,
            )
            self._stop_writer(1.0)
            return
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

    def _lose(self, count: int, *, failed_write: bool = False) -> None:
        with self._counting:
            self.events_dropped += count
            self.write_failures += failed_write

    # -- the writer process -------------------------------------------------------------

    def _start_writer(self) -> None:
        ours, theirs = socket.socketpair()
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
