"""A hung async test says where its tasks wait: their stacks, shortly before pytest-timeout.

pytest-timeout dumps the threads' stacks when a test overruns; for an asyncio test that
is only the event loop idling in ``select``. This plugin, loaded by ``tests/conftest.py``,
starts a timer per test that fires ``LEAD`` seconds before the test's timeout and prints
every task of every running event loop with its whole await chain (coroutine by
coroutine, down to the future it waits for) to stderr.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

#: Seconds before the timeout the tasks are dumped (pytest-timeout then ends the run).
LEAD = 10.0

_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_run_forever = asyncio.BaseEventLoop.run_forever


def _recording_run_forever(self: asyncio.BaseEventLoop) -> None:
    _loops.add(self)
    _run_forever(self)


def _await_chain(task: asyncio.Task[Any]) -> Iterator[str]:
    awaitable: Any = task.get_coro()
    for _ in range(100):  # a chain, not a cycle; bounded all the same
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
        if frame is None:
            frame = getattr(awaitable, "gi_frame", None)
        if frame is None:  # the bottom: a future's iterator; say which future
            waiter = getattr(task, "_fut_waiter", None)
            yield f"    waiting for {waiter if waiter is not None else awaitable!r:.300}"
            return
        yield f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "ag_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
        )
        if awaitable is None:
            return


def _dump(nodeid: str) -> None:
    lines = [f"\n==== {nodeid}: the asyncio tasks, {LEAD:g} s before the timeout ===="]
    for loop in list(_loops):
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:  # the set changed meanwhile: the loop is not idle after all
            continue
        for task in tasks:
            lines.append(f"-- {task!r:.400}")
            lines.extend(_await_chain(task))
    print("\n".join(lines), file=sys.stderr, flush=True)


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    given = item.config.getoption("timeout", None)  # --timeout, else the ini's
    return float(given if given is not None else item.config.getini("timeout") or 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    timeout = _timeout_of(item)
    timer = None
    if timeout > 2 * LEAD:
        timer = threading.Timer(timeout - LEAD, _dump, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


asyncio.BaseEventLoop.run_forever = _recording_run_forever  # type: ignore[method-assign]
