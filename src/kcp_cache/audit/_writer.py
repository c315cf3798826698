"""The audit log's writer process: frames of events in, JSON lines out to the file.

Started by :class:`~kcp_cache.audit.AuditLog` as
``python -m kcp_cache.audit._writer FD OPTIONS`` with one end of a socket pair as *FD*:
it reads a frame of events (:mod:`._wire`), encodes each as its ``Event`` line, appends
the batch to the :class:`~._file.AuditFile`, and answers ``(written, lost, error)`` — so
the server counts and logs what happened, and this process never logs. It ends when the
pipe closes: the server closed the log, or died. It runs in a process group of its own
(a terminal's Ctrl-C is the server's to handle) and ignores SIGINT and SIGTERM, which a
service manager may send to every process of the service: the server decides when the
log ends, and the events of its last moments still get written.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
from typing import Any

import orjson

from kcp_cache.audit._event import FactsEncoder
from kcp_cache.audit._file import AuditFile
from kcp_cache.audit._options import AuditOptions
from kcp_cache.audit._wire import read_frame, send_frame


def serve(sock: socket.socket, file: AuditFile) -> None:
    """Answer frames on *sock* until it closes."""
    encode = FactsEncoder()
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    while True:
        try:
            events: list[Any] = read_frame(sock)
        except EOFError:
            return
        # One growing bytearray, each line freed as soon as it is copied in: a list of a
        # thousand ~1 KiB lines kept until a join costs twice the encoding (page faults).
        data = bytearray()
        for item in events:
            data += encode(item) if type(item) is tuple else dumps(item, option=newline)
        try:
            file.write(data)
        except OSError as exc:
            send_frame(sock, (0, len(events), exc.strerror or str(exc)))
        else:
            send_frame(sock, (len(events), 0, None))


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    fd, options = int(argv[1]), AuditOptions(**json.loads(argv[2]))
    file = AuditFile(options)
    with contextlib.suppress(OSError):  # reported with the first batch it fails
        file.open()
    sock = socket.socket(fileno=fd)
    try:
        serve(sock, file)
    except OSError:  # the server went away mid-answer
        pass
    finally:
        file.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
