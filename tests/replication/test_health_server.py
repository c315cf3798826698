"""The replicator's health and metrics endpoint."""

from __future__ import annotations

import asyncio

import httpx2

from kcp_cache.replication import HealthServer, ReplicationMetrics


async def test_health_endpoints_follow_the_checks() -> None:
    checks = {"informers-synced": False, "workers-running": True}
    metrics = ReplicationMetrics("amber")
    metrics.reconciled("apiexports.apis.kcp.io", "create", "success")
    server = HealthServer(readiness=lambda: checks, metrics=metrics.exposition)
    port = await server.start()
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert "[-]informers-synced failed" in not_ready.text
            assert "[+]workers-running ok" in not_ready.text
            checks["informers-synced"] = True
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/livez")).status_code == 200
            scraped = await http.get("/metrics")
            assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert (
                'kcp_replication_reconcile_total{action="create",'
                'resource="apiexports.apis.kcp.io",result="success",shard="amber"} 1.0'
            ) in scraped.text
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/readyz")).status_code == 405
    finally:
        await server.stop()


async def test_a_silent_client_does_not_block_the_endpoint() -> None:
    server = HealthServer(readiness=dict, metrics=bytes)
    port = await server.start()
    try:
        _, idle_writer = await asyncio.open_connection("127.0.0.1", port)  # sends nothing
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/readyz")).status_code == 200
        idle_writer.close()
        await idle_writer.wait_closed()
    finally:
        await server.stop()
