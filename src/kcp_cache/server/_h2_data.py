"""DATA frames written beside ``h2``'s state machine, with its flow-control accounting.

``H2Connection.send_data`` costs ~7 µs per frame in pure Python (state-machine inputs,
a ``DataFrame`` object, its serialisation, debug-log calls), the largest part of the
server's CPU per delivered watch event over HTTP/2. A DATA frame that does not end its
stream changes nothing in either state machine (``OPEN``/``HALF_CLOSED_REMOTE`` +
``SEND_DATA`` stay where they are); all it changes is the two outbound windows. So
:func:`data_frame` does exactly that accounting on ``h2``'s own counters — the ones
``local_flow_control_window`` reads and ``WINDOW_UPDATE`` frames increase — and returns
the frame's 9-byte header (RFC 9113 §4.1, §6.1) for the caller to write before the
payload. Anything else (ending the stream, a stream or connection not open, a frame the
window or frame size does not allow) is left to ``send_data``, which raises as it should.

``tests/server/test_h2_data.py`` checks the bytes and the windows against ``send_data``
itself, so an ``h2`` release that changes this accounting fails the tests.
"""

from __future__ import annotations

import struct
from typing import Final

import h2.connection
import h2.stream

__all__ = ["data_frame"]

_PACK: Final = struct.Struct(">I").pack
_SERVER_OPEN: Final = h2.connection.ConnectionState.SERVER_OPEN
_SENDABLE: Final = frozenset({h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE})


def data_frame(conn: h2.connection.H2Connection, stream_id: int, size: int) -> bytes | None:
    """Account for a ``size``-byte DATA frame on ``stream_id`` (not ending it) and return
    its header; ``None`` if ``send_data`` must send this one (nothing was changed).

    The caller writes ``conn.data_to_send()`` first (frames ``h2`` queued come before
    this one), then the header, then the ``size`` bytes of payload.
    """
    if conn.state_machine.state is not _SERVER_OPEN or not 0 < size <= conn.max_outbound_frame_size:
        return None
    stream = conn.streams.get(stream_id)
    if stream is None or stream.state_machine.state not in _SENDABLE:
        return None
    if size > stream.outbound_flow_control_window or size > conn.outbound_flow_control_window:
        return None
    stream.outbound_flow_control_window -= size
    conn.outbound_flow_control_window -= size
    # length (24 bits), type DATA (0), no flags, stream id (31 bits).
    return _PACK(size)[1:] + b"\x00\x00" + _PACK(stream_id & 0x7FFFFFFF)
