"""Replication with per-shard certificates under scoped authorization.

The write controller of shard amber runs with a certificate issued by
``kcp-cache certs issue --shard amber``: it replicates into its own space and reads every
shard's, while the same certificate cannot write into another shard's space.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kcp_cache.client import AsyncRESTClient, Forbidden, NotFound
from kcp_cache.replication import WriteController, cache_client
from kcp_cache.testing import CacheServer

from .replication_helpers import (
    APIEXPORTS,
    FAST_BACKOFF,
    cache_rest,
    eventually,
    local_rest,
    new_object,
    unique,
)


def issue_shard_kubeconfig(cache_api: CacheServer, shard: str, out: Path) -> Path:
    """``kcp-cache certs issue --shard <shard>`` against the dev server's own CA."""
    result = subprocess.run(
        [sys.executable, "-m", "kcp_cache.cli.tool", "certs", "issue", "--shard", shard,
         "--root-directory", str(cache_api.root), "--out-dir", str(out)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    kubeconfig = out / f"shard-{shard}.kubeconfig"
    assert str(kubeconfig) in result.stdout.split()
    return kubeconfig


async def test_a_shard_certificate_replicates_its_own_space_only(
    cache_api: CacheServer, shards_api: CacheServer, tmp_path: Path
) -> None:
    kubeconfig = issue_shard_kubeconfig(cache_api, "amber", tmp_path)
    as_amber = AsyncRESTClient(cache_client(kubeconfig, context="base"))
    local, admin = local_rest(shards_api, "amber"), cache_rest(cache_api)
    cluster = unique("scoped")
    name = unique("export")
    controller = WriteController(
        "amber", local, as_amber, resources=(APIEXPORTS,), backoff=FAST_BACKOFF
    )
    try:
        async with controller:
            assert await controller.wait_synced(timeout=20)  # it lists and watches "*"
            await local.create(APIEXPORTS.resource, new_object(APIEXPORTS, name), cluster=cluster)

            async def replicated() -> bool:
                try:
                    await admin.get(APIEXPORTS.resource, name, cluster=cluster, shard="amber")
                except NotFound:
                    return False
                return True

            await eventually(replicated, what="amber's object in the cache")
        # The same certificate cannot write into sapphire's space.
        with pytest.raises(Forbidden, match='may write only into shard "amber"'):
            await as_amber.create(
                APIEXPORTS.resource, new_object(APIEXPORTS, name), cluster=cluster,
                shard="sapphire",
            )  # fmt: skip
        listed = await as_amber.list(APIEXPORTS.resource, cluster="*", shard="*")
        assert name in {o["metadata"]["name"] for o in listed.items}
    finally:
        await as_amber.http.aclose()
        await local.http.aclose()
        await admin.http.aclose()


def test_the_dev_set_up_writes_a_shard_kubeconfig(cache_api: CacheServer) -> None:
    kubeconfig = cache_api.root / "shard.kubeconfig"
    assert kubeconfig.exists()
    text = kubeconfig.read_text()
    assert "shard.crt" in text
    assert (cache_api.root / "admin.kubeconfig").exists()
