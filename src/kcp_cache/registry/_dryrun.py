"""Server-side dry run (``?dryRun=All``): every check of a write, none of its effects.

kube-apiserver runs a dry-run request through the whole stack and swaps only the last
step: its ``DryRunnableStorage`` answers each write from a read — a create fails with
AlreadyExists if the key is there, an update with Conflict if the revision moved, a
delete with NotFound — and returns the object the write *would* have stored, without
writing, emitting a watch event or moving any resourceVersion.

:class:`DryRunWrites` is that swap for the registry: the same write calls as a
:class:`~kcp_cache.storage.Storage`, answered from reads of the real one. The registry's
write paths take their store from :meth:`Registry._writes`, so a dry run goes through
exactly the code of the real write, checks and all, and cannot reach a write by mistake:
this class has no reference to a write method of the storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from kcp_cache.storage import (
    AlreadyExists,
    Conflict,
    DeleteResult,
    KeyValue,
    NotFound,
    RangeResult,
)

from ._errors import ApiError

__all__ = ["DRY_RUN_ALL", "DryRunWrites", "WriteStore", "parse_dry_run"]

#: The one value kube accepts for ``dryRun`` (``metav1.DryRunAll``).
DRY_RUN_ALL: Final = "All"


class _Reads(Protocol):
    async def get(self, key: str) -> KeyValue: ...

    async def range(
        self, prefix: str, *, limit: int = 0, continue_token: str | None = None, revision: int = 0
    ) -> RangeResult: ...

    async def current_revision(self) -> int: ...


class WriteStore(_Reads, Protocol):
    """The storage calls the registry's write paths make (a real or a dry-run store)."""

    async def create(self, key: str, value: bytes) -> KeyValue: ...

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue: ...

    async def delete(
        self, key: str, *, expected_mod_revision: int | None = None
    ) -> DeleteResult: ...

    async def delete_prefix(self, prefix: str) -> list[DeleteResult]: ...


class DryRunWrites:
    """Answers writes from reads of *storage*; see the module docstring.

    A would-be created value has revision 0 (it has none: the registry renders it without
    a resourceVersion); a would-be update keeps the current revision, so the answer shows
    the resourceVersion the object still has.
    """

    _PAGE: Final = 1000

    def __init__(self, storage: _Reads) -> None:
        self._storage = storage

    async def get(self, key: str) -> KeyValue:
        return await self._storage.get(key)

    async def range(
        self, prefix: str, *, limit: int = 0, continue_token: str | None = None, revision: int = 0
    ) -> RangeResult:
        return await self._storage.range(
            prefix, limit=limit, continue_token=continue_token, revision=revision
        )

    async def current_revision(self) -> int:
        return await self._storage.current_revision()

    async def create(self, key: str, value: bytes) -> KeyValue:
        try:
            await self._storage.get(key)
        except NotFound:
            return KeyValue(key, value, 0, 0)
        raise AlreadyExists(key)

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        kv = await self._storage.get(key)
        if kv.mod_revision != expected_mod_revision:
            raise Conflict(key, expected_mod_revision, kv.mod_revision)
        return KeyValue(key, value, kv.create_revision, kv.mod_revision)

    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> DeleteResult:
        kv = await self._storage.get(key)
        if expected_mod_revision is not None and kv.mod_revision != expected_mod_revision:
            raise Conflict(key, expected_mod_revision, kv.mod_revision)
        return DeleteResult(kv, kv.mod_revision)

    async def delete_prefix(self, prefix: str) -> list[DeleteResult]:
        results: list[DeleteResult] = []
        token: str | None = None
        revision = 0
        while True:
            page = await self._storage.range(
                prefix, limit=self._PAGE, continue_token=token, revision=revision
            )
            revision = page.revision
            results.extend(DeleteResult(kv, revision) for kv in page.kvs)
            token = page.continue_token
            if token is None:
                return results


def parse_dry_run(values: Sequence[str], options_kind: str) -> bool:
    """Whether ``dryRun`` *values* ask for a dry run; kube's 422 for anything but ``All``.

    *options_kind* names the options object kube validates (``CreateOptions``,
    ``UpdateOptions``, ``PatchOptions``, ``DeleteOptions``); it appears in the message.
    """
    for value in values:
        if value != DRY_RUN_ALL:
            unsupported = f'Unsupported value: "{value}": supported values: "{DRY_RUN_ALL}"'
            raise ApiError.invalid_options(
                options_kind, [("FieldValueNotSupported", "dryRun", unsupported)]
            )
    return bool(values)
