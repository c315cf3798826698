"""Small helpers shared by the client tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 5.0,  # noqa: ASYNC109
    what: str = "",
) -> None:
    """Await until *predicate()* is truthy (polling the event loop), or fail after *timeout*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.002)


class Recorder:
    """Event handlers that record what they were told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    @staticmethod
    def _id(obj: dict[str, Any]) -> str:
        return str(obj["metadata"]["name"])

    def on_add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", self._id(obj), obj["metadata"].get("resourceVersion", "")))

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", self._id(new), new["metadata"].get("resourceVersion", "")))

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", self._id(obj), obj["metadata"].get("resourceVersion", "")))

    def kinds(self) -> list[tuple[str, str]]:
        return [(kind, name) for kind, name, _ in self.events]

    def handlers(self) -> dict[str, Any]:
        return {"on_add": self.on_add, "on_update": self.on_update, "on_delete": self.on_delete}
