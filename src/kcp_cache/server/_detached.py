"""Responses that go on after their handler returned (a watch on an HTTP/2 stream).

An idle watch spends nearly all its life waiting for the next event. Kept as a suspended
handler it holds the whole request path alive for that time: nine nested coroutine
frames (the host's cycle, the filters, discovery, the API app, the watch loop), the
task that runs them, the scope and its request records — about 6 KiB per watch.
Where the host can carry a response without its handler's coroutine (its
:class:`~kcp_cache.server._connection.ConnectionControl` says so,
:meth:`~kcp_cache.server._connection.ConnectionControl.write_now`), the watch handler,
once its response has started, hands it to a small object driven by the watch fan-out
and raises :class:`Detached`. The exception unwinds the request path: each layer that
has work to do when the response ends (metrics, audit ``ResponseComplete``, the host's
end of the cycle) adds it to :attr:`Detached.response` instead of doing it in its
``finally``, and the handler's task ends.

:class:`Detached` is a ``BaseException`` so that the layers' ``except Exception`` error
boundaries let it through rather than answering it with a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["Detached", "DetachedResponse"]

log = logging.getLogger("kcp_cache.server")


class DetachedResponse:
    """The end of a detached response: what the request path would have done then.

    Callbacks run once, in the order they were added — innermost layer first, as the
    ``finally`` blocks they replace would have run.
    """

    __slots__ = ("_finishers",)

    def __init__(self) -> None:
        # (callback, *args) tuples: a partial and its own args tuple would cost a watch
        # ~80 bytes more per layer.
        self._finishers: list[tuple[Any, ...]] | None = []

    def on_finish(self, callback: Callable[..., None], *args: Any) -> None:
        """Have ``callback(*args)`` called when the response ends."""
        if self._finishers is None:
            raise RuntimeError("the detached response has finished already")
        self._finishers.append((callback, *args))

    @property
    def finished(self) -> bool:
        return self._finishers is None

    def finish(self) -> None:
        """The response ended: run the callbacks (each once; a failing one is logged)."""
        finishers, self._finishers = self._finishers, None
        for callback, *args in finishers or ():
            try:
                callback(*args)
            except Exception:
                log.exception("finishing a detached response failed in %r", callback)


class Detached(BaseException):
    """Raised by a handler whose response goes on without it; see the module doc."""

    def __init__(self, response: DetachedResponse) -> None:
        super().__init__()
        self.response = response
