"""The storage-side references of the server benchmark, as a child process.

Run pinned to the server's core by ``server_bench.py``; it reads one JSON command per line
on stdin and answers one JSON line on stdout:

* ``{"op": "create", "writers": 64, "duration": 5, "value_file": F}`` — our SQLite engine
  (the one the server writes through, ``open_storage("sqlite")``, fresh database) with
  ``writers`` tasks calling ``create`` in a closed loop; answers ``{"rate": creates/s}``;
* ``{"op": "load", "items_file": F}`` — stores the items of a LIST response (each item's
  JSON bytes under its own key) in a fresh engine and in a plain SQLite table;
* ``{"op": "range", "repeat": 7}`` — median ms of ``range(prefix)`` over the loaded items
  (``engine_ms``) and of a raw ``SELECT`` of the same rows from the SQLite file
  (``sqlite_ms``, the on-disk scan).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from kcp_cache.storage import Storage, open_storage

PREFIX = "/cache/apis.kcp.io/apiexports/amber/list10k/"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


class References:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0
        self.loaded: Storage | None = None
        self.sqlite: sqlite3.Connection | None = None

    def fresh_dir(self) -> Path:
        self.count += 1
        path = self.workdir / f"store-{self.count}"
        path.mkdir()
        return path

    async def create(self, writers: int, duration: float, value_file: str) -> dict[str, Any]:
        value = Path(value_file).read_bytes()  # noqa: ASYNC240 - before timing
        storage = open_storage("sqlite", root_directory=self.fresh_dir())
        await storage.start()
        done = 0
        stop_at = time.perf_counter() + duration

        async def writer(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop_at:
                await storage.create(f"/cache/apis.kcp.io/apiexports/amber/acme/w{w}-{i}", value)
                i += 1
                done += 1

        started, cpu = time.perf_counter(), _cpu()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
        await storage.close()
        return {"rate": done / elapsed, "creates": done, "cpu_us": cpu / done * 1e6}

    async def load(self, items_file: str) -> dict[str, Any]:
        items = orjson.loads(Path(items_file).read_bytes())["items"]  # noqa: ASYNC240
        storage = open_storage("sqlite", root_directory=self.fresh_dir())
        await storage.start()
        values = [(PREFIX + item["metadata"]["name"], orjson.dumps(item)) for item in items]
        for start in range(0, len(values), 256):
            await asyncio.gather(*(storage.create(k, v) for k, v in values[start : start + 256]))
        self.loaded = storage
        db = sqlite3.connect(self.fresh_dir() / "plain.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES (?, ?)", values)
        db.execute("COMMIT")
        self.sqlite = db
        return {"items": len(values), "bytes": sum(len(v) for _, v in values)}

    async def range(self, repeat: int) -> dict[str, Any]:
        assert self.loaded is not None
        assert self.sqlite is not None
        engine: list[float] = []
        raw: list[float] = []
        end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
        for _ in range(repeat):
            t = time.perf_counter()
            result = await self.loaded.range(PREFIX)
            engine.append((time.perf_counter() - t) * 1000)
            assert len(result.kvs) > 0
            t = time.perf_counter()
            rows = self.sqlite.execute(
                "SELECT key, value FROM kv WHERE key >= ? AND key < ?", (PREFIX, end)
            ).fetchall()
            raw.append((time.perf_counter() - t) * 1000)
            assert len(rows) == len(result.kvs)
        return {"engine_ms": statistics.median(engine), "sqlite_ms": statistics.median(raw)}


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="storage-ref-", dir=sys.argv[1]) as workdir:
        refs = References(Path(workdir))
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            op = command.pop("op")
            answer = await getattr(refs, op)(**command)
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
        if refs.loaded is not None:
            await refs.loaded.close()


if __name__ == "__main__":
    uvloop.run(main())
