"""The root's authority over the ``CacheShard`` copies (registry/_shard_sync.py) and its
re-home steps (registry/_rehome.py), as pure decisions: what the root stamps, what a
mirror keeps of a copy changed at its cache, when a move starts and completes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from kcp_cache.meta import SYNCED_ANNOTATION, cache_shard_changes, cache_shard_sequence
from kcp_cache.registry import HomeMap, ShardAuthority, mirror_value, stamped
from kcp_cache.storage import MemoryStorage

T0 = 1_800_000_000.0


def _shard(status: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "cacheserver.kcp.io/v1alpha1",
        "kind": "CacheShard",
        "metadata": {"name": "sapphire", "annotations": {}},
        "spec": spec if spec is not None else {"homeCache": "eu-1"},
        "status": status,
    }


ACTIVE = {"activeHome": "eu-1", "phase": "Active", "epoch": 1}


def test_a_stamp_grows_only_when_the_content_changed() -> None:
    first = stamped(_shard(ACTIVE))
    assert cache_shard_changes(first) == (False, False)
    assert cache_shard_sequence(first) == 1
    assert stamped(first) is first  # nothing changed: the same stamp, no new write
    changed = {**first, "status": {**ACTIVE, "objectCount": 3}}
    assert cache_shard_changes(changed) == (False, True)
    assert cache_shard_sequence(stamped(changed)) == 2


def test_the_mirror_takes_the_roots_copy_over_a_clean_one() -> None:
    local = stamped(_shard(ACTIVE))
    incoming = stamped({**local, "spec": {"homeCache": "eu-1", "decommission": True}})
    assert mirror_value(orjson.dumps(local), orjson.dumps(incoming)) == orjson.dumps(incoming)


def test_a_status_changed_here_stands_until_the_root_decides() -> None:
    base = stamped(_shard(ACTIVE))
    # The home counted a purge batch; the root meanwhile stamped an admin's spec edit.
    mine = {**base, "status": {**ACTIVE, "phase": "Decommissioning", "epoch": 2}}
    theirs = stamped({**base, "spec": {"homeCache": "eu-1", "decommission": True}})
    kept = orjson.loads(mirror_value(orjson.dumps(mine), orjson.dumps(theirs)))
    assert kept["status"] == mine["status"]  # the home's newer status stays
    assert kept["spec"] == theirs["spec"]  # the root's spec comes
    assert (
        kept["metadata"]["annotations"][SYNCED_ANNOTATION]
        == (theirs["metadata"]["annotations"][SYNCED_ANNOTATION])
    )
    assert cache_shard_changes(kept) == (False, True)  # still to forward
    # A new epoch, or another active home, is the root's decision: it wins.
    moved = stamped({**theirs, "status": {**ACTIVE, "phase": "Rehoming", "epoch": 3}})
    assert mirror_value(orjson.dumps(mine), orjson.dumps(moved)) == orjson.dumps(moved)
    rehomed = stamped({**theirs, "status": {**ACTIVE, "activeHome": "root", "epoch": 2}})
    assert mirror_value(orjson.dumps(mine), orjson.dumps(rehomed)) == orjson.dumps(rehomed)


def test_a_replayed_older_version_is_not_taken() -> None:
    older = stamped(_shard(ACTIVE))
    newer = stamped({**older, "status": {**ACTIVE, "objectCount": 5}})
    assert mirror_value(orjson.dumps(newer), orjson.dumps(older)) == orjson.dumps(newer)


@pytest.fixture
async def authority() -> Any:
    async with MemoryStorage() as storage:
        yield ShardAuthority(storage, HomeMap(storage, "root"), flush_timeout=30)


async def test_a_move_starts_waits_for_the_flush_and_completes(authority: ShardAuthority) -> None:
    placed = authority.desired(_shard({}, {"homeCache": "eu-1"}), T0)
    assert placed["status"] == {"activeHome": "eu-1", "phase": "Active", "epoch": 1}
    asked = {**placed, "spec": {"homeCache": "root"}}
    moving = authority.desired(asked, T0)
    assert moving["status"]["phase"] == "Rehoming"
    assert moving["status"]["epoch"] == 2
    assert moving["status"]["rehome"]["from"] == "eu-1"
    assert moving["status"]["activeHome"] == "eu-1"  # not before the old home flushed
    assert authority.desired(moving, T0 + 5) == moving
    mark = {**moving["status"]["rehome"], "flushed": True}
    flushed = {**moving, "status": {**moving["status"], "rehome": mark}}
    done = authority.desired(flushed, T0 + 5)["status"]
    assert (done["activeHome"], done["phase"], done["epoch"]) == ("root", "Active", 2)
    assert done["lastRehome"]["flushed"] is True
    assert "rehome" not in done


async def test_a_move_without_the_old_home_completes_after_the_timeout(
    authority: ShardAuthority,
) -> None:
    moving = authority.desired({**_shard(ACTIVE), "spec": {"homeCache": "root"}}, T0)
    assert authority.desired(moving, T0 + 29)["status"]["phase"] == "Rehoming"
    done = authority.desired(moving, T0 + 31)["status"]
    assert done["activeHome"] == "root"
    assert done["lastRehome"]["flushed"] is False


async def test_a_move_from_the_root_needs_no_flush(authority: ShardAuthority) -> None:
    at_root = _shard({"activeHome": "root", "phase": "Active", "epoch": 4}, {"homeCache": "eu-1"})
    moving = authority.desired(at_root, T0)
    assert moving["status"]["epoch"] == 5
    assert authority.desired(moving, T0)["status"]["activeHome"] == "eu-1"


async def test_a_fenced_shard_does_not_move(authority: ShardAuthority) -> None:
    purged = _shard({**ACTIVE, "phase": "Purged"}, {"homeCache": "root"})
    assert authority.desired(purged, T0) == purged
