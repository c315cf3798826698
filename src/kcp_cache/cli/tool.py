"""``kcp-cache``: tools around the cache server; ``replicate`` runs a shard's write controller.

``kcp-cache replicate --shard-name amber --local-kubeconfig shard.kubeconfig
--cache-kubeconfig cache.kubeconfig`` runs kcp's replication controller for shard
``amber`` as a process: it watches the shard's own API and the cache and keeps the cache's
``amber`` space equal to the shard (spec §6.1). With ``--metrics-port`` it serves
``/healthz``, ``/livez``, ``/readyz`` (ready once every informer has synced) and
Prometheus ``/metrics``. When the shard's API serves ``clustercachedresources`` (or with
``--cached-resources=true``) it also runs the ClusterCachedResource controller and the
APIExport reference controller (beyond-kcp §3.4). SIGTERM/SIGINT stop it cleanly (exit
code 0); bad flags or unreadable kubeconfigs end it with one line on stderr and exit code 1
(2 for usage errors).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kcp_cache import __version__
from kcp_cache.cli._durations import parse_duration
from kcp_cache.cli._logging import setup_logging
from kcp_cache.cli._shard_tool import add_shard_parser, run_shard
from kcp_cache.cli._store_tool import add_store_parser, run_store
from kcp_cache.client import AsyncClient, TransportError
from kcp_cache.meta import SYSTEM_MASTERS
from kcp_cache.replication import (
    CCR_RESOURCE,
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_INTERVAL,
    DEFAULT_RESET_CHECK_PERIOD,
    DEFAULT_RESOURCES,
    APIExportReferenceController,
    CachedResourceController,
    HealthServer,
    ShardLeaseRenewer,
    WriteController,
    cache_client,
    local_client,
    parse_resources,
)
from kcp_cache.server import (
    READERS_GROUP,
    CertificateFiles,
    User,
    cache_user,
    issue_certificate,
    load_certificate,
    load_private_key,
    shard_user,
    write_kubeconfig,
    write_pair,
)

__all__ = ["build_parser", "issue_principal_certificate", "main"]

log = logging.getLogger("kcp_cache.cli.replicate")

#: File written with the metrics port actually bound (for ``--metrics-port 0``).
METRICS_PORT_FILE_HELP = "write the bound metrics port to this file (useful with port 0)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcp-cache",
        description="Tools for kcp's cache server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    replicate = commands.add_parser(
        "replicate",
        help="run a shard's write controller (replicate the shard's objects into the cache)",
        description=(
            "Replicate one shard's objects into the cache server (kcp's "
            "kcp-replication-controller): a local and a cache informer per resource, two "
            "workers, writes into /services/cache/shards/<shard-name>/…"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    replicate.add_argument("--shard-name", required=True, help="this shard's name (e.g. root)")
    local = replicate.add_argument_group("the shard's own API")
    local.add_argument(
        "--local-kubeconfig", required=True, type=Path, help="kubeconfig for the shard's API"
    )
    local.add_argument(
        "--local-server-url",
        help="override the kubeconfig's server: the base URL under which /clusters/{cluster}/… "
        "is served (e.g. https://host:port/services/cache/shards/amber)",
    )
    local.add_argument("--local-context", help="kubeconfig context (default: current)")
    cache = replicate.add_argument_group("the cache server")
    cache.add_argument(
        "--cache-kubeconfig", required=True, type=Path, help="kubeconfig for the cache server"
    )
    cache.add_argument(
        "--cache-context",
        help="kubeconfig context (default: current); its server is the cache's base URL, "
        "with or without /services/cache",
    )
    replicate.add_argument(
        "--resources",
        default="all",
        help="comma-separated resources to replicate (resource or resource.group); all = "
        + ", ".join(r.name for r in DEFAULT_RESOURCES),
    )
    replicate.add_argument("--workers", type=int, default=2, help="concurrent reconciles")
    replicate.add_argument(
        "--reset-check-period",
        type=parse_duration,
        default=DEFAULT_RESET_CHECK_PERIOD,
        help="how often to check whether the cache or the shard lost its data (resourceVersion "
        "went back) and relist; 0 turns the check off (e.g. 30s, 1m)",
    )
    cached = replicate.add_argument_group("ClusterCachedResources")
    cached.add_argument(
        "--cached-resources",
        choices=["auto", "true", "false"],
        default="auto",
        help="replicate what ClusterCachedResources select, and keep APIExport references' "
        "CCRs; auto = when the shard's API serves clustercachedresources",
    )
    cached.add_argument(
        "--cached-resource-status-interval",
        type=parse_duration,
        default=1.0,
        help="at most one status write per ClusterCachedResource this often (e.g. 1s)",
    )
    cached.add_argument(
        "--require-replicate-permission",
        action="store_true",
        help="replicate a ClusterCachedResource only if its creator (annotation "
        "cache.kcp.io/requested-by[-groups]) may list the resource and replicate it, as the "
        "shard's SubjectAccessReviews say (kcp#4320)",
    )
    serving = replicate.add_argument_group("health and metrics")
    serving.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /healthz, /livez, /readyz and /metrics on this port (0: a free one); "
        "default: not served",
    )
    serving.add_argument("--metrics-bind-address", default="127.0.0.1", help="listen address")
    serving.add_argument("--metrics-port-file", type=Path, help=METRICS_PORT_FILE_HELP)
    logging_group = replicate.add_argument_group("logging")
    logging_group.add_argument("-v", "--verbosity", type=int, default=0, help="log verbosity")
    logging_group.add_argument("--log-format", choices=["text", "json"], default="text")
    lease = replicate.add_argument_group("the shard's lease (liveness and sync markers)")
    lease.add_argument(
        "--lease-renew-interval",
        type=parse_duration,
        default=DEFAULT_RENEW_INTERVAL,
        help="how often the shard's ShardLease is renewed with its sync markers; 0: no lease",
    )
    lease.add_argument(
        "--lease-duration",
        type=parse_duration,
        default=DEFAULT_LEASE_DURATION,
        help="the leaseDurationSeconds the cache judges liveness by",
    )
    _add_certs_command(commands)
    add_store_parser(commands)
    add_shard_parser(commands)
    return parser


def _add_certs_command(commands: Any) -> None:
    certs = commands.add_parser(
        "certs",
        help="issue client certificates for the cache server's principals",
        description="Client certificates for scoped authorization: a shard (CN "
        "system:kcp:shard:<name>, O system:kcp:shards) writes only its own space; a cache "
        "(system:kcp:cache:<name>, O system:kcp:caches) and a reader (O "
        "system:kcp:cache-readers) read; an admin (O system:masters) does anything.",
    )
    certs.set_defaults(verbosity=0, log_format="text")
    actions = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    issue = actions.add_parser(
        "issue",
        help="issue one certificate (and a kubeconfig with --server)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    who = issue.add_mutually_exclusive_group(required=True)
    who.add_argument("--shard", metavar="NAME", help="a shard's certificate")
    who.add_argument("--cache", metavar="NAME", help="a cache's certificate")
    who.add_argument("--reader", metavar="NAME", help="a read-only certificate for user NAME")
    who.add_argument("--admin", metavar="NAME", help="an admin certificate for user NAME")
    issue.add_argument(
        "--root-directory",
        type=Path,
        help="a server's root directory: use its development client CA "
        "(client-ca.crt/.key), its serving CA and URL for the kubeconfig",
    )
    issue.add_argument("--ca-cert", type=Path, help="the client CA certificate (PEM)")
    issue.add_argument("--ca-key", type=Path, help="the client CA key (PEM)")
    issue.add_argument("--out-dir", type=Path, default=Path(), help="where to write the files")
    issue.add_argument("--server", help="the server's URL, to write a kubeconfig too")
    issue.add_argument("--server-ca", type=Path, help="CA bundle of the server's certificate")


async def _replicate(args: argparse.Namespace) -> int:
    resources = parse_resources(args.resources)
    local_http = local_client(
        args.local_kubeconfig, server_url=args.local_server_url, context=args.local_context
    )
    cache_http = cache_client(args.cache_kubeconfig, context=args.cache_context)
    controller = WriteController(
        args.shard_name,
        local_http,
        cache_http,
        resources=resources,
        workers=args.workers,
        reset_check_period=args.reset_check_period or None,
    )
    extras: list[CachedResourceController | APIExportReferenceController] = []
    if await _wants_cached_resources(args.cached_resources, local_http):
        extras.append(
            CachedResourceController(
                args.shard_name,
                local_http,
                cache_http,
                status_interval=args.cached_resource_status_interval,
                require_replicate_permission=args.require_replicate_permission,
            )
        )
        extras.append(APIExportReferenceController(local_http))

    def readiness() -> dict[str, bool]:
        checks = controller.health()
        for extra in extras:
            if isinstance(extra, CachedResourceController):
                checks.update(extra.health())
        return checks

    health: HealthServer | None = None
    lease: ShardLeaseRenewer | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if args.metrics_port is not None:
            health = HealthServer(
                readiness=readiness,
                metrics=controller.metrics.exposition,
                host=args.metrics_bind_address,
                port=args.metrics_port,
            )
            port = await health.start()
            if args.metrics_port_file:
                args.metrics_port_file.write_text(f"{port}\n")
            log.info("health and metrics on http://%s:%d", args.metrics_bind_address, port)
        log.info("replicating shard %s: %s", controller.shard, ", ".join(r.name for r in resources))
        await controller.start()
        if args.lease_renew_interval > 0:
            lease = ShardLeaseRenewer(
                controller, interval=args.lease_renew_interval, duration=args.lease_duration
            )
            await lease.start()
        for extra in extras:
            await extra.start()
        if extras:
            log.info("replicating ClusterCachedResources and APIExport references")
        await stop.wait()
        log.info("shutting down")
    finally:
        if lease is not None:
            await lease.stop()
        for extra in extras:
            await extra.stop()
        await controller.stop()
        if health is not None:
            await health.stop()
        await local_http.aclose()
        await cache_http.aclose()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0


def issue_principal_certificate(args: argparse.Namespace) -> list[Path]:
    """``kcp-cache certs issue``: write ``<stem>.crt``/``.key`` (and ``.kubeconfig``)."""
    if args.shard:
        user, stem = shard_user(args.shard), f"shard-{args.shard}"
    elif args.cache:
        user, stem = cache_user(args.cache), f"cache-{args.cache}"
    elif args.reader:
        user, stem = User(args.reader, (READERS_GROUP,)), f"reader-{args.reader}"
    else:
        user, stem = User(args.admin, (SYSTEM_MASTERS,)), f"admin-{args.admin}"
    root: Path | None = args.root_directory
    ca_cert = args.ca_cert or (root / "client-ca.crt" if root else None)
    ca_key = args.ca_key or (root / "client-ca.key" if root else None)
    if ca_cert is None or ca_key is None:
        raise ValueError("give --ca-cert and --ca-key, or --root-directory of a dev server")
    server_url, server_ca = args.server, args.server_ca
    if root is not None and server_url is None and (root / "secure-port").exists():
        server_url = f"https://127.0.0.1:{(root / 'secure-port').read_text().strip()}"
    if root is not None and server_ca is None:
        server_ca = root / "apiserver.crt"
    cert, key = issue_certificate(
        load_certificate(ca_cert), load_private_key(ca_key), user.name,
        organizations=list(user.groups),
    )  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    files = CertificateFiles(args.out_dir / f"{stem}.crt", args.out_dir / f"{stem}.key")
    write_pair(files, [cert], key)
    written = [files.cert, files.key]
    if server_url:
        if server_ca is None:
            raise ValueError("--server needs --server-ca (the server certificate's CA)")
        written.append(
            write_kubeconfig(
                args.out_dir / f"{stem}.kubeconfig",
                server_url=server_url,
                ca_file=server_ca,
                cert_file=files.cert,
                key_file=files.key,
                user_name=stem,
            )
        )
    return written


async def _wants_cached_resources(mode: str, local_http: AsyncClient) -> bool:
    """``--cached-resources``: ``auto`` asks the shard's discovery whether it serves
    ``clustercachedresources`` (an unreachable shard counts as no: say ``true`` to insist)."""
    if mode != "auto":
        return mode == "true"
    try:
        response = await local_http.get(f"/clusters/root{CCR_RESOURCE.api_path}")
    except TransportError as err:
        log.warning("cannot ask the shard whether it serves ClusterCachedResources: %s", err)
        return False
    if response.status_code != 200:
        return False
    try:
        resources = response.json().get("resources") or []
    except ValueError:
        return False
    return any(r.get("name") == CCR_RESOURCE.resource for r in resources)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kcp-cache`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "store":
        return run_store(args)
    if args.command == "shard":
        return run_shard(args)
    setup_logging(args.verbosity, args.log_format)
    # One INFO line per HTTP request from httpx2 drowns the controller's own logs.
    logging.getLogger("httpx2").setLevel(logging.DEBUG if args.verbosity >= 4 else logging.WARNING)
    if args.command == "certs":
        try:
            for path in issue_principal_certificate(args):
                print(path)
        except (OSError, ValueError) as err:
            print(f"kcp-cache certs issue: {err}", file=sys.stderr)
            return 1
        return 0
    if args.command == "replicate":
        try:
            parse_resources(args.resources)
        except ValueError as err:
            print(f"kcp-cache replicate: {err}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(_replicate(args))
        except (OSError, ValueError) as err:
            print(f"kcp-cache replicate: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
