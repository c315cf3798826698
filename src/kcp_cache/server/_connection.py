"""What a streaming handler may know and do about its connection beyond ASGI's ``send``.

ASGI hides the transport, but a watch stream to a client that stopped reading needs two
things it cannot get from ``send()``: how many bytes are still waiting in the
connection's outgoing buffers (part of the unsent data that cuts a slow watcher off),
and a way to drop the connection when ``send()`` is stuck behind a client that will
never read again (``timeoutSeconds`` reached, watcher cut off). The TLS layer puts a
:class:`ConnectionControl` into the TLS scope extension under
:data:`CONNECTION_CONTROL_KEY`; other hosts may leave it out, and handlers then do
without.
"""

from __future__ import annotations

from typing import Final

from kcp_cache.server.types import Scope

__all__ = ["CONNECTION_CONTROL_KEY", "ConnectionControl", "connection_control"]

#: Key in ``scope["extensions"]["tls"]``.
CONNECTION_CONTROL_KEY: Final = "kcp_connection_control"


class ConnectionControl:
    """What the connection offers a handler; the TLS layer subclasses it."""

    __slots__ = ()

    def unsent_bytes(self) -> int:
        """Bytes written to the connection but not yet handed to the kernel."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection now, discarding :meth:`unsent_bytes`."""
        raise NotImplementedError


def connection_control(scope: Scope) -> ConnectionControl | None:
    """The connection's :class:`ConnectionControl`, if the host provides one."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if isinstance(extensions, dict) else None
    control = tls.get(CONNECTION_CONTROL_KEY) if isinstance(tls, dict) else None
    return control if isinstance(control, ConnectionControl) else None
