"""What a streaming handler may know and do about its connection beyond ASGI's ``send``.

ASGI hides the transport, but a watch stream to a client that stopped reading needs two
things it cannot get from ``send()``: how many bytes are still waiting in the
connection's outgoing buffers (part of the unsent data that cuts a slow watcher off),
and a way to drop the connection when ``send()`` is stuck behind a client that will
never read again (``timeoutSeconds`` reached, watcher cut off). The TLS layer puts a
:class:`ConnectionControl` into the TLS scope extension under
:data:`CONNECTION_CONTROL_KEY`; other hosts may leave it out, and handlers then do
without. Where one connection carries many requests (HTTP/2), each request's own
control — its stream — is in ``scope["extensions"]`` under the same key, and it comes
first: dropping the connection would end every other stream on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from kcp_cache.server.types import Scope

__all__ = ["CONNECTION_CONTROL_KEY", "ConnectionControl", "connection_control"]

#: Key in ``scope["extensions"]`` (per request) or ``scope["extensions"]["tls"]``.
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

    def on_disconnect(self, callback: Callable[[], None]) -> bool:
        """Have ``callback`` called once when the client goes away; ``False`` if this
        host cannot (the handler then waits on ``receive()`` for ``http.disconnect``).

        A callback costs a watch one function; a task waiting on ``receive()`` costs it
        a task, a coroutine and a future (~1 KiB).
        """
        return False

    #: The host can carry a response without its handler's coroutine
    #: (:mod:`~kcp_cache.server._detached`): :meth:`write_now` and :meth:`on_writable`
    #: work, and the host's request cycle lets :class:`~kcp_cache.server._detached.Detached`
    #: through.
    detachable = False

    def write_now(self, data: memoryview, *, end: bool = False) -> memoryview | None:
        """Write as much of ``data`` as the connection takes now, without waiting
        (``end``: and end the response once all of it is written).

        Returns the rest (empty once all of it is written), ``None`` if the response
        can no longer be written (the stream or connection is gone). Only where
        :attr:`detachable`.
        """
        raise NotImplementedError

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Have ``callback`` called (once) when :meth:`write_now` may take more; only
        where :attr:`detachable`."""
        raise NotImplementedError


def connection_control(scope: Scope) -> ConnectionControl | None:
    """The request's :class:`ConnectionControl` (its HTTP/2 stream, or its connection),
    if the host provides one."""
    extensions = scope.get("extensions")
    if not isinstance(extensions, dict):
        return None
    control = extensions.get(CONNECTION_CONTROL_KEY)
    if control is None:
        tls = extensions.get("tls")
        control = tls.get(CONNECTION_CONTROL_KEY) if isinstance(tls, dict) else None
    return control if isinstance(control, ConnectionControl) else None
