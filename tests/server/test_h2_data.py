"""The DATA frames written beside ``h2`` are what ``h2.send_data`` would have written,
with the same flow-control accounting — checked against the installed ``h2`` itself."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings

from kcp_cache.server import data_frame

_REQUEST = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "h")]


def _open(window: int = 65535) -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    """A client and a server connection with stream 1 open and its response started."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
    )
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    client.initiate_connection()
    server.initiate_connection()
    client.send_headers(1, _REQUEST, end_stream=True)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the SETTINGS ACK
    server.send_headers(1, [(b":status", b"200")])
    client.receive_data(server.data_to_send())
    return client, server


def test_the_frame_and_the_windows_match_send_data() -> None:
    _, by_h2 = _open()
    client, ours = _open()
    for payload in (b"x" * 1000, b'{"type":"ADDED"}\n', b"y" * 16384):
        by_h2.send_data(1, payload)
        expected = by_h2.data_to_send()
        header = data_frame(ours, 1, len(payload))
        assert header is not None
        assert ours.data_to_send() + header + payload == expected
        assert ours.local_flow_control_window(1) == by_h2.local_flow_control_window(1)
        assert ours.outbound_flow_control_window == by_h2.outbound_flow_control_window
        events = client.receive_data(header + payload)
        (event,) = events
        assert isinstance(event, h2.events.DataReceived)
        assert event.data == payload
    # h2 goes on from the accounting: the window left is exactly what it lets through.
    left = ours.local_flow_control_window(1)
    assert left == 65535 - 1000 - 17 - 16384
    while left:
        size = min(left, ours.max_outbound_frame_size)
        assert data_frame(ours, 1, size) is not None
        left -= size
        assert ours.local_flow_control_window(1) == left
    assert data_frame(ours, 1, 1) is None  # the window is used up
    # A WINDOW_UPDATE from the peer reopens it as for frames h2 sent itself.
    client.increment_flow_control_window(5000, stream_id=1)
    client.increment_flow_control_window(5000)
    ours.receive_data(client.data_to_send())
    assert ours.local_flow_control_window(1) == 5000


def test_frames_h2_must_handle_are_left_to_it() -> None:
    client, server = _open()
    assert data_frame(server, 1, 0) is None  # empty: nothing to account
    assert data_frame(server, 1, server.max_outbound_frame_size + 1) is None
    assert data_frame(server, 3, 10) is None  # no such stream
    client.reset_stream(1)
    server.receive_data(client.data_to_send())
    before = server.outbound_flow_control_window
    assert data_frame(server, 1, 10) is None  # reset by the peer: send_data raises there
    assert server.outbound_flow_control_window == before  # nothing was charged
    server.close_connection()
    client.send_headers(3, _REQUEST, end_stream=True)
    assert data_frame(server, 3, 10) is None  # the connection is closed
