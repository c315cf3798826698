"""An acknowledged write survives SIGKILL of the process (SQLite engine)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

import kcp_cache
from kcp_cache.storage import NotFound, SQLiteStorage

CHILD = Path(__file__).with_name("durability_child.py")
SRC = Path(kcp_cache.__file__).resolve().parent.parent


async def run_and_kill(db: Path, synchronous: str, acks_before_kill: int) -> list[str]:
    """Start the child, SIGKILL it once it printed enough acknowledgements, return them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(db),
        synchronous,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            assert (await child.stdout.readline()).decode().strip() == "READY"
            while len(lines) < acks_before_kill:
                line = await child.stdout.readline()
                assert line, "child exited early"
                lines.append(line.decode().rstrip("\n"))
    finally:
        child.send_signal(signal.SIGKILL)  # mid-burst: writes are in flight right now
    # Everything printed before the kill was acknowledged before the kill.
    rest = await child.stdout.read()
    await child.wait()
    assert child.returncode == -signal.SIGKILL
    lines.extend(line for line in rest.decode().split("\n") if line)
    return lines


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_acknowledged_writes_survive_sigkill(tmp_path: Path, synchronous: str) -> None:
    db = tmp_path / "cache.db"
    acks = await run_and_kill(db, synchronous, acks_before_kill=3000)
    creates: dict[str, tuple[int, bytes]] = {}
    counters: dict[str, int] = {}
    for line in acks:
        op, key, revision, value = line.split(" ", 3)
        if op == "C":
            creates[key] = (int(revision), value.encode())
        else:
            counters[key] = max(counters.get(key, 0), int(value))
    assert len(creates) > 1000

    async with SQLiteStorage(db) as storage:
        max_acked = max(rev for rev, _ in creates.values())
        assert await storage.current_revision() >= max_acked
        for key, (revision, value) in creates.items():
            if key.startswith("/cache/counter/"):
                continue
            try:
                kv = await storage.get(key)
            except NotFound:
                pytest.fail(f"acknowledged create of {key} (revision {revision}) was lost")
            assert (kv.mod_revision, kv.value) == (revision, value)
        for key, acked in counters.items():
            # A later, unacknowledged update may also have landed; never an older value.
            assert int((await storage.get(key)).value) >= acked
        # The history is intact too: a watch replays every acknowledged create in order.
        last_item = max(rev for key, (rev, _) in creates.items() if key.startswith("/cache/items/"))
        watch = storage.watch("/cache/items/", after_revision=0)
        replayed = {}
        async for event in watch:
            replayed[event.kv.key] = event.revision
            if event.revision >= last_item:
                break
        await watch.close()
        for key, (revision, _) in creates.items():
            if key.startswith("/cache/items/"):
                assert replayed.get(key) == revision
