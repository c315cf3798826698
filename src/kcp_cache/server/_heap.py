"""Give freed heap memory back to the operating system after bursts of watch traffic.

A watch to a client that stopped reading, or a long replay, churns through buffers of
tens of KiB (event chunks, TLS records). When those streams end, glibc keeps the freed
memory in its heap for reuse instead of returning it, so the process's RSS stays at its
high-water mark although nothing uses it. ``malloc_trim(0)`` returns the free pages;
:class:`HeapTrimmer` runs it shortly after watches end, at most once per
``min_interval`` seconds (it walks the heap: about 1 ms for a 300 MB one here).
Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

__all__ = ["HeapTrimmer"]

log = logging.getLogger(__name__)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """``request()`` after memory was freed; the trim runs ``delay`` s later, debounced."""

    def __init__(self, *, delay: float = 1.0, min_interval: float = 10.0) -> None:
        self._trim = _find_malloc_trim()
        self._delay = delay
        self._min_interval = min_interval
        self._last = -min_interval
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0

    def request(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        wait = max(self._delay, self._last + self._min_interval - time.monotonic())
        self._pending = asyncio.get_running_loop().call_later(wait, self._run)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _run(self) -> None:
        self._pending = None
        assert self._trim is not None
        started = time.monotonic()
        self._trim(0)
        self._last = time.monotonic()
        self.trims += 1
        log.debug("malloc_trim took %.1f ms", (self._last - started) * 1000)
