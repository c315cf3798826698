"""This cache's own ``Cache`` object, followed: the policies an admin sets at run time.

``Cache.spec.export`` and ``spec.import`` (:class:`kcp_cache.meta.ResourcePolicy`) say
what flows up and down. The flags write their defaults at start-up; an admin may change
either field later with any API write, and the exporter and the mirror follow without a
restart. :class:`OwnCache` keeps the object current from a storage watch and calls
*on_change* whenever one of the two policies changes. It also serves the followers of
``--workers``, which run no mirror of their own: the leader's ``status.upstream`` is
the answer their ``/readyz/parent`` gives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from kcp_cache.meta import PolicyError, ResourcePolicy
from kcp_cache.registry._follow import PrefixFollower
from kcp_cache.registry._upsert import upsert
from kcp_cache.storage import KeyValue, Storage

__all__ = ["OwnCache"]

log = logging.getLogger("kcp_cache.registry.own_cache")


class OwnCache(PrefixFollower):
    """The ``Cache`` object under *key*; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        on_change: Callable[[ResourcePolicy, ResourcePolicy], None] | None = None,
    ) -> None:
        super().__init__(storage, key, what=f"Cache object {key.rsplit('/', 1)[-1]}")
        self.storage = storage
        self.key = key
        self.on_change = on_change
        self.obj: dict[str, Any] = {}
        self.export_policy = ResourcePolicy()
        self.import_policy = ResourcePolicy()

    @property
    def upstream(self) -> dict[str, Any]:
        """``status.upstream`` as the object has it (the leader's mirror writes it)."""
        status = self.obj.get("status") or {}
        upstream = status.get("upstream") if isinstance(status, dict) else None
        return upstream if isinstance(upstream, dict) else {}

    def _replace(self, kvs: list[KeyValue]) -> None:
        own = [kv for kv in kvs if kv.key == self.key]
        self._observe(own[0].value if own else None)

    def _apply(self, key: str, value: bytes | None) -> None:
        if key == self.key:
            self._observe(value)

    def _observe(self, value: bytes | None) -> None:
        try:
            obj = orjson.loads(value) if value else {}
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        self.obj = obj
        raw_spec = obj.get("spec")
        spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
        try:
            export = ResourcePolicy.parse(spec.get("export"), "spec.export")
            imports = ResourcePolicy.parse(spec.get("import"), "spec.import")
        except PolicyError as exc:  # admission refuses these; a direct store write did not
            log.warning("ignoring the unreadable policy of %s: %s", self.key, exc)
            return
        if (export, imports) != (self.export_policy, self.import_policy):
            self.export_policy, self.import_policy = export, imports
            log.info("export policy: %s; import policy: %s", _describe(export), _describe(imports))
            if self.on_change is not None:
                self.on_change(export, imports)

    async def write_defaults(self, fields: dict[str, Any]) -> None:
        """Set ``spec`` *fields* (the flags' ``export`` / ``import``) at start-up."""
        if not fields:
            return

        def updated(current: KeyValue | None) -> bytes:
            obj: dict[str, Any] = orjson.loads(current.value) if current is not None else {}
            obj["spec"] = {**(obj.get("spec") or {}), **fields}
            return orjson.dumps(obj)

        await upsert(self.storage, self.key, updated)


def _describe(policy: ResourcePolicy) -> str:
    if policy.rules is None:
        return "everything"
    return ", ".join(f"{r.group}/{r.resource}" + (" (selected)" if not r.exact else "")
                     for r in policy.rules) or "nothing"  # fmt: skip
