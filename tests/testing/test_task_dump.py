"""The hang diagnostics of ``tests/task_dump.py``: a waiting task's whole await chain."""

from __future__ import annotations

import asyncio

import pytest

from ..task_dump import _dump


async def _inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def _outer(gate: asyncio.Event) -> None:
    await _inner(gate)


async def test_the_dump_shows_where_each_task_waits(capsys: pytest.CaptureFixture[str]) -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(_outer(gate), name="the-waiter")
    await asyncio.sleep(0)  # the task is now parked in gate.wait()
    try:
        _dump("this-test")
    finally:
        gate.set()
        await task
    err = capsys.readouterr().err
    assert "this-test: the asyncio tasks" in err
    section = err[err.index("the-waiter") :]
    assert section.index("in _outer") < section.index("in _inner") < section.index("in wait")
    assert "waiting for <Future pending" in section
