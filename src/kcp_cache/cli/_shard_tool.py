"""``kcp-cache shard list`` and ``kcp-cache shard decommission S`` (beyond-kcp §3.3).

Both talk to the cache server over its API with an admin kubeconfig: ``list`` prints
every CacheShard with its phase, epoch, lease age and object count; ``decommission``
merge-patches ``spec.decommission: true`` (and ``--register`` sets
``spec.registered: true, spec.decommission: false`` to let a purged shard back in).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kcp_cache import meta
from kcp_cache.client import ApiError, AsyncRESTClient, Resource
from kcp_cache.replication import cache_client

__all__ = ["add_shard_parser", "run_shard"]

CACHE_SHARDS = Resource(meta.LIFECYCLE_GROUP, meta.LIFECYCLE_VERSION, meta.CACHE_SHARDS)
SHARD_LEASES = Resource(meta.LIFECYCLE_GROUP, meta.LIFECYCLE_VERSION, meta.SHARD_LEASES)
CLUSTER = meta.CACHE_OWNED_CLUSTER
SHARD = meta.CACHE_OWNED_SHARD


def add_shard_parser(commands: Any) -> None:
    shard = commands.add_parser(
        "shard",
        help="list the cache's shards, decommission one",
        description="The shards writing into a cache and their lifecycle (CacheShard "
        "objects at shard system:cache:server, cluster system:cache).",
    )
    shard.set_defaults(verbosity=0, log_format="text")
    actions = shard.add_subparsers(dest="shard_command", metavar="ACTION", required=True)
    for name, text in (
        ("list", "print every shard: phase, epoch, lease age, objects"),
        ("decommission", "fence a shard and purge its data from the cache"),
        ("register", "let a decommissioned shard write again (a new epoch)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--kubeconfig", type=Path, required=True, help="an admin kubeconfig")
        action.add_argument("--context", help="kubeconfig context (default: current)")
        if name != "list":
            action.add_argument("name", help="the shard's name")


def _age(text: Any) -> str:
    if not isinstance(text, str):
        return "-"
    try:
        then = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    return f"{max(0.0, (datetime.now(UTC) - then).total_seconds()):.1f}s"


async def _list(rest: AsyncRESTClient) -> int:
    shards = await rest.list(CACHE_SHARDS, cluster=CLUSTER, shard=SHARD)
    leases = {
        (lease.get("metadata") or {}).get("name"): lease
        for lease in (await rest.list(SHARD_LEASES, cluster=CLUSTER, shard=SHARD)).items
    }
    rows = [("NAME", "PHASE", "EPOCH", "LEASE AGE", "OBJECTS", "DELETED")]
    for item in shards.items:
        name = (item.get("metadata") or {}).get("name", "")
        status = item.get("status") or {}
        lease = leases.get(name) or {}
        rows.append(
            (
                name,
                str(status.get("phase", "-")),
                str(status.get("epoch", "-")),
                _age((lease.get("status") or {}).get("receivedTime")),
                str(status.get("objectCount", "-")),
                str(status.get("deletedObjects", "-")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


async def _patch_spec(rest: AsyncRESTClient, name: str, spec: dict[str, Any]) -> int:
    body = {"spec": spec}
    try:
        await rest.patch(CACHE_SHARDS, name, body, cluster=CLUSTER, shard=SHARD)
    except ApiError as err:
        if err.code != 404:
            raise
        created = {
            "apiVersion": f"{meta.LIFECYCLE_GROUP}/{meta.LIFECYCLE_VERSION}",
            "kind": "CacheShard",
            "metadata": {"name": name},
            "spec": spec,
        }
        await rest.create(CACHE_SHARDS, created, cluster=CLUSTER, shard=SHARD)
    print(f"cacheshard.cacheserver.kcp.io/{name} patched")
    return 0


async def _run(args: argparse.Namespace) -> int:
    http = cache_client(args.kubeconfig, context=args.context)
    rest = AsyncRESTClient(http)
    try:
        if args.shard_command == "list":
            return await _list(rest)
        if args.shard_command == "decommission":
            return await _patch_spec(rest, args.name, {"decommission": True})
        return await _patch_spec(rest, args.name, {"decommission": False, "registered": True})
    finally:
        await http.aclose()


def run_shard(args: argparse.Namespace) -> int:
    """``kcp-cache shard …``; 1 with one line on stderr on failure."""
    try:
        return asyncio.run(_run(args))
    except (ApiError, OSError, ValueError) as err:
        print(f"kcp-cache shard {args.shard_command}: {err}", file=sys.stderr)
        return 1
