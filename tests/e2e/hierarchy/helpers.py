"""Topologies of real cache servers for the hierarchy tests (beyond-kcp §3.1).

R is the root; E (``eu-1``) and E2 (``eu-2``) are regions. Each cache generates its own
development CA and admin certificate; a child's credentials at its parent are a
``system:kcp:cache:<name>`` certificate issued by the parent's CA
(``kcp-cache certs issue --cache``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx2

from kcp_cache.testing import CacheServer, start_cache_server

T = TypeVar("T")

FAST: Final = ("--feed-progress-interval", "0.2")
APIEXPORTS: Final = ("apis.kcp.io", "v1alpha1", "apiexports")


def cache_kubeconfig(parent: CacheServer, cache: str, out: Path) -> Path:
    """A ``system:kcp:cache:<cache>`` kubeconfig for *parent* (signed by its client CA)."""
    if parent.client_ca is not None:
        issuer = ["--ca-cert", str(parent.client_ca.cert_path),
                  "--ca-key", str(parent.client_ca.key_path),
                  "--server", parent.base_url, "--server-ca", str(parent.serving_cert)]  # fmt: skip
    else:
        issuer = ["--root-directory", str(parent.root)]
    result = subprocess.run(
        [sys.executable, "-m", "kcp_cache.cli.tool", "certs", "issue", "--cache", cache,
         *issuer, "--out-dir", str(out)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out / f"cache-{cache}.kubeconfig"


def start_root(directory: Path, *extra: str, **kwargs: Any) -> CacheServer:
    """The root cache ``root`` (*kwargs* as for ``start_cache_server``)."""
    return start_cache_server(directory / "root", "--cache-name", "root", *FAST, *extra, **kwargs)


def start_child(
    directory: Path, name: str, parent: CacheServer, *extra: str, **kwargs: Any
) -> CacheServer:
    """A cache *name* below *parent*."""
    kubeconfig = cache_kubeconfig(parent, name, directory / f"creds-{name}")
    return start_cache_server(
        directory / name,
        "--cache-name", name,
        "--parent-url", parent.base_url,
        "--parent-kubeconfig", str(kubeconfig),
        *FAST,
        *extra,
        **kwargs,
    )  # fmt: skip


def eventually(check: Callable[[], T | None], *, timeout: float = 10.0, what: str = "") -> T:
    """Poll *check* until it returns something truthy; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx2.TransportError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")
        time.sleep(0.05)


def path(
    server: CacheServer,
    shard: str,
    cluster: str,
    name: str = "",
    resource: tuple[str, str, str] = APIEXPORTS,
) -> str:
    group, version, plural = resource
    base = server.resource_path(shard, cluster, group, version, plural)
    return f"{base}/{name}" if name else base


def apiexport(name: str, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIExport",
        "metadata": meta,
        "spec": {"identity": {"secretRef": {"name": name}}},
    }


def get(server: CacheServer, url: str) -> httpx2.Response:
    with server.client() as client:
        return client.get(url)


def status_of(server: CacheServer, name: str) -> dict[str, Any]:
    """``status`` of cache *name*'s ``Cache`` object as *server* has it."""
    url = (
        f"{server.base_url}/services/cache/shards/system:cache:server/clusters/system:cache"
        f"/apis/core.kcp.io/v1alpha1/caches/{name}"
    )
    response = get(server, url)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json().get("status") or {}
    return status


SCHEMAS: Final = ("apis.kcp.io", "v1alpha1", "apiresourceschemas")


def cache_url(server: CacheServer, name: str) -> str:
    """Cache *name*'s ``Cache`` object at *server* (the cache-owned location)."""
    return (
        f"{server.base_url}/services/cache/shards/system:cache:server/clusters/system:cache"
        f"/apis/core.kcp.io/v1alpha1/caches/{name}"
    )


def merge_patch(server: CacheServer, url: str, body: dict[str, Any]) -> httpx2.Response:
    """A JSON merge patch as an admin of *server*."""
    with server.client() as client:
        return client.patch(
            url, json=body, headers={"content-type": "application/merge-patch+json"}
        )


def schema(name: str, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIResourceSchema",
            "metadata": meta, "spec": {"group": "g.io"}}  # fmt: skip


def names(server: CacheServer, url: str) -> set[str]:
    response = get(server, url)
    assert response.status_code == 200, response.text
    return {o["metadata"]["name"] for o in response.json()["items"]}
