"""Child process of the durability test: writes in a burst and reports each acknowledgement.

Usage: ``python durability_child.py DB_PATH SYNCHRONOUS``. Many concurrent tasks create
keys and CAS-update a per-task counter on an :class:`SQLiteStorage`; after each write is
acknowledged a line ``C <key> <mod_revision> <value>`` or ``U <key> <mod_revision>
<value>`` is printed and flushed. The parent SIGKILLs this process mid-burst and checks
that everything printed survived.
"""

from __future__ import annotations

import asyncio
import sys

from kcp_cache.storage import SQLiteStorage

TASKS = 48


async def writer(storage: SQLiteStorage, task: int) -> None:
    counter = await storage.create(f"/cache/counter/{task}", b"0")
    print(f"C {counter.key} {counter.mod_revision} 0", flush=True)
    i = 0
    while True:
        i += 1
        value = f"{task}-{i}-" + "x" * 1000
        kv = await storage.create(f"/cache/items/{task}/{i:07d}", value.encode())
        print(f"C {kv.key} {kv.mod_revision} {value}", flush=True)
        counter = await storage.update(
            counter.key, str(i).encode(), expected_mod_revision=counter.mod_revision
        )
        print(f"U {counter.key} {counter.mod_revision} {i}", flush=True)


async def main() -> None:
    storage = SQLiteStorage(sys.argv[1], synchronous=sys.argv[2])  # type: ignore[arg-type]
    await storage.start()
    print("READY", flush=True)
    await asyncio.gather(*(writer(storage, t) for t in range(TASKS)))


if __name__ == "__main__":
    asyncio.run(main())
