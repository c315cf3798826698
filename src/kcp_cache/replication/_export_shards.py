"""The exporter's part in the ``CacheShard`` objects: claims and changes go up.

The root's ``CacheShard`` copies are authoritative (``registry/_shard_sync.py``); what a
cache below it learns or decides reaches the root through its exporter, in the order
of everything else it exports:

* **claims** — before the first change of a shard this cache claimed by itself (no
  ``CacheShard`` names its home), the exporter creates the shard's ``CacheShard`` at
  the parent, ``spec.homeCache`` = the claimant. It is a create only: if the parent has
  one naming another cache, that claim came first and this one lost — the shard's data
  is not sent (the parent would refuse it anyway), and the mirror soon brings the
  winner's ``CacheShard`` down, which makes this cache refuse the shard's writes;
* **changes** — a copy changed here (an admin's spec edit, the home's status): the spec
  is written onto the parent's copy always (an admin's word); the status only while it
  stands (same epoch or newer, same active home, no move started since): if the root
  decided something since, the stale status is dropped and the home's lifecycle
  controller writes again from the new state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import orjson

from kcp_cache.client import AsyncClient, Response
from kcp_cache.meta import (
    CACHE_OWNED_CLUSTER,
    CACHE_OWNED_SHARD,
    CACHE_SERVICE_PREFIX,
    CACHE_SHARDS,
    CLAIM_ANNOTATION,
    LIFECYCLE_GROUP,
    LIFECYCLE_VERSION,
    SYNCED_ANNOTATION,
    cache_shard_changes,
)

__all__ = ["CACHE_SHARD_KEYS", "ShardForwarding"]

log = logging.getLogger("kcp_cache.replication.export")

#: The feed keys of the ``CacheShard`` objects.
CACHE_SHARD_KEYS: Final = f"{LIFECYCLE_GROUP}/{CACHE_SHARDS}/"
_COLLECTION: Final = (
    f"{CACHE_SERVICE_PREFIX}/shards/{CACHE_OWNED_SHARD}/clusters/{CACHE_OWNED_CLUSTER}"
    f"/apis/{LIFECYCLE_GROUP}/{LIFECYCLE_VERSION}/{CACHE_SHARDS}"
)
_ATTEMPTS: Final = 5


class ForwardFailed(RuntimeError):
    """The parent could not take a ``CacheShard`` change now (retried from the cursor)."""


def _annotations(obj: dict[str, Any]) -> dict[str, Any]:
    annotations = (obj.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def _home(obj: dict[str, Any]) -> str | None:
    status, spec = obj.get("status"), obj.get("spec")
    status = status if isinstance(status, dict) else {}
    spec = spec if isinstance(spec, dict) else {}
    home = status.get("activeHome") or spec.get("homeCache")
    return home if isinstance(home, str) and home else None


class ShardForwarding:
    """Claims and ``CacheShard`` changes towards the parent; see the module.

    *claim_of(shard)*: the cache to claim *shard* for (this one or one below it), or
    ``None`` when a ``CacheShard`` already places it. *on_lost(shard, winner)* is told
    when the parent keeps another cache's claim.
    """

    def __init__(
        self,
        http: AsyncClient,
        claim_of: Callable[[str], str | None],
        *,
        on_lost: Callable[[str, str], None] | None = None,
    ) -> None:
        self.http = http
        self.claim_of = claim_of
        self.on_lost = on_lost
        self._confirmed: set[str] = set()
        #: Changes the parent refused (stale status, not allowed); counted, not retried.
        self.dropped = 0

    # -- claims --------------------------------------------------------------------------

    async def ensure_claim(self, shard: str) -> bool:
        """Make sure the parent places *shard* where this cache thinks it is homed;
        ``False``: another cache's claim won, do not send the shard's data."""
        claimant = self.claim_of(shard)
        if claimant is None:
            return True
        if shard in self._confirmed:
            return True
        for _ in range(_ATTEMPTS):
            current = await self._get(shard)
            if current is None:
                claim = orjson.dumps(_claim(shard, claimant))
                response = await self.http.post(_COLLECTION, content=claim)
                if response.status_code == 409:
                    continue
                if response.status_code == 403:
                    log.warning("the parent refused the claim of shard %s: %s", shard,
                                response.text[:300])  # fmt: skip
                    return False
                _check(response, f"claim of {shard}")
                self._confirmed.add(shard)
                return True
            winner = _home(current)
            if winner is None or winner == claimant:
                self._confirmed.add(shard)
                return True
            log.warning("shard %s: the parent keeps the claim of cache %s, not %s",
                        shard, winner, claimant)  # fmt: skip
            if self.on_lost is not None:
                self.on_lost(shard, winner)
            return False
        raise ForwardFailed(f"the CacheShard {shard} kept changing at the parent")

    # -- changes -------------------------------------------------------------------------

    async def forward(self, value: bytes) -> None:
        """Send one copy changed here (see the module)."""
        obj = orjson.loads(value)
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            return
        spec_changed, status_changed = cache_shard_changes(obj)
        base = _annotations(obj).get(SYNCED_ANNOTATION)
        for _ in range(_ATTEMPTS):
            current = await self._get(name)
            if current is None:
                body = _for_parent(obj)
                response = await self.http.post(_COLLECTION, content=orjson.dumps(body))
                if response.status_code == 409:
                    continue
                if self._dropped(response, name):
                    return
                _check(response, f"create of CacheShard {name}")
                return
            if base is None:
                # Created here (a claim, or a lifecycle controller's first sight of a
                # shard) and the parent has one already: the first one stays.
                return
            new = dict(current)
            if spec_changed:
                new["spec"] = obj.get("spec")
            if status_changed and _status_stands(obj, current):
                new["status"] = obj.get("status")
            if new == current:
                return
            url = f"{_COLLECTION}/{name}"
            response = await self.http.put(url, content=orjson.dumps(new))
            if response.status_code == 409:
                continue
            if self._dropped(response, name):
                return
            _check(response, f"update of CacheShard {name}")
            return
        raise ForwardFailed(f"the CacheShard {name} kept changing at the parent")

    def _dropped(self, response: Response, name: str) -> bool:
        if response.status_code in (403, 422):
            self.dropped += 1
            log.warning("the parent refused a change of CacheShard %s: %s", name,
                        response.text[:300])  # fmt: skip
            return True
        return False

    async def _get(self, name: str) -> dict[str, Any] | None:
        response = await self.http.get(f"{_COLLECTION}/{name}")
        if response.status_code == 404:
            return None
        _check(response, f"get of CacheShard {name}")
        result: dict[str, Any] = response.json()
        return result


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _status_stands(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """The registry's ``status_stands`` (``registry/_shard_sync.py``), on this side of the
    layers: same epoch or newer, same active home, no move the root started since."""
    epochs = [_status(o).get("epoch") for o in (mine, theirs)]
    mine_epoch, their_epoch = (e if isinstance(e, int) else 0 for e in epochs)
    if mine_epoch < their_epoch:
        return False
    if _status(mine).get("activeHome") != _status(theirs).get("activeHome"):
        return False
    moving = _status(theirs).get("phase") == "Rehoming"
    return not moving or _status(mine).get("phase") == "Rehoming"


def _check(response: Response, what: str) -> None:
    if response.status_code >= 300:
        raise ForwardFailed(f"{what}: {response.status_code} {response.text[:300]}")


def _for_parent(obj: dict[str, Any]) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    meta.pop("resourceVersion", None)
    annotations = {k: v for k, v in _annotations(obj).items() if k != SYNCED_ANNOTATION}
    meta["annotations"] = annotations
    return {**obj, "metadata": meta}


def _claim(shard: str, claimant: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{LIFECYCLE_GROUP}/{LIFECYCLE_VERSION}",
        "kind": "CacheShard",
        "metadata": {"name": shard, "annotations": {CLAIM_ANNOTATION: claimant}},
        "spec": {"homeCache": claimant},
        "status": {"activeHome": claimant, "phase": "Active", "epoch": 1},
    }
