"""``kcp-cache-server``'s cache-hierarchy flags and the parts they start (beyond-kcp §3.1).

A cache named with ``--cache-name`` takes part in a tree of caches: it writes its
``Cache`` object, accepts writes only for the shards homed at it, serves the
replication feed to its children, and — with ``--parent-url`` — mirrors its parent
(down) and exports its home shards to it (up). Without ``--cache-name`` the server is
a lone kcp cache: the feed is still served, nothing is claimed or refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from kcp_cache.cli._placement import ShardPlacement
from kcp_cache.client import (
    AsyncClient,
    AsyncHTTPTransport,
    AsyncRESTClient,
    Timeout,
    async_cache_transport,
    load_kubeconfig,
)
from kcp_cache.registry import (
    DEFAULT_PROGRESS_INTERVAL,
    FeedFilter,
    FeedSource,
    HomeMap,
    MirrorStore,
)
from kcp_cache.replication import (
    DEFAULT_DELETE_GUARD,
    Exporter,
    Mirror,
    Selection,
    WatchMirror,
)
from kcp_cache.server import FEED_PATH, FeedEndpoint, HomeWrites, ServerMetrics, send_bytes
from kcp_cache.server.types import Receive, Scope, Send
from kcp_cache.storage import EpochStorage, NotFound, Storage, epoch_for

__all__ = ["Hierarchy", "add_hierarchy_flags", "store_identity", "with_epoch"]

log = logging.getLogger("kcp_cache.cli.hierarchy")

#: ``/readyz/parent`` below ``/services/cache``.
PARENT_READYZ_PATH = "/readyz/parent"
_STATUS_INTERVAL = 5.0


def add_hierarchy_flags(parser: argparse.ArgumentParser) -> None:
    """The ``cache hierarchy`` flag group."""
    group = parser.add_argument_group("cache hierarchy (beyond-kcp §3.1)")
    group.add_argument(
        "--cache-name",
        metavar="NAME",
        help="this cache's name in a hierarchy of caches (e.g. root, eu-1); unset: a lone "
        "cache that claims and refuses no shard",
    )
    group.add_argument("--parent-url", metavar="URL", help="the parent cache's base URL")
    group.add_argument(
        "--parent-kubeconfig",
        metavar="FILE",
        help="this cache's credentials at the parent (a system:kcp:cache:<name> certificate)",
    )
    group.add_argument(
        "--parent-mode",
        choices=("auto", "feed", "watch"),
        default="auto",
        help="how to mirror the parent: its replication feed, or wildcard watches per "
        "type for a parent without one (Go kcp's cache server); auto = feed",
    )
    group.add_argument(
        "--home-shards",
        default="",
        metavar="LIST",
        help="comma-separated shards homed at this cache from the start",
    )
    group.add_argument(
        "--auto-home",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="a write for a shard no cache claims claims it for this cache",
    )
    group.add_argument(
        "--export-resources",
        default="",
        metavar="LIST",
        help="group/resource names exported to the parent (empty: everything homed here)",
    )
    group.add_argument(
        "--export-label-selector",
        default="",
        metavar="K=V,…",
        help="only objects with these labels are exported (matchLabels); an object that "
        "loses one is deleted at the parent",
    )
    group.add_argument(
        "--export-delete-guard",
        type=_share,
        default=DEFAULT_DELETE_GUARD,
        metavar="PERCENT",
        help="after re-sending a snapshot, the exporter deletes a shard's stale copies of one "
        "type at the parent only if they are at most this share of them (e.g. 20%%); more "
        "looks like a lost store, not lost objects",
    )
    group.add_argument(
        "--import-resources",
        default="",
        metavar="LIST",
        help="group/resource names mirrored from the parent (empty: everything)",
    )
    group.add_argument(
        "--feed-progress-interval",
        type=float,
        default=DEFAULT_PROGRESS_INTERVAL,
        metavar="SECONDS",
        help="seconds between PROGRESS lines of the replication feed",
    )
    group.add_argument(
        "--resource-version-epoch",
        choices=("auto", "on", "off"),
        default="auto",
        help="resourceVersions carry this store's epoch (storeEpoch·2^43 + revision), so "
        "one issued by another cache is 410 Gone; auto = on for a named cache on its own "
        "embedded store, off on etcd (Go kcp reads etcd's raw revisions)",
    )
    group.add_argument(
        "--require-parent-for-readiness",
        type=_bool,
        default=False,
        metavar="BOOL",
        help="/readyz fails while the parent's feed is not connected and synced",
    )


def with_epoch(args: argparse.Namespace, storage: Storage) -> Storage:
    """*storage* wrapped per ``--resource-version-epoch``."""
    mode = args.resource_version_epoch
    store_id = getattr(storage, "store_id", None)
    if mode == "auto":
        mode = "on" if args.cache_name is not None and store_id is not None else "off"
    if mode == "off":
        return storage
    if store_id is None:
        raise ValueError(
            "--resource-version-epoch on needs an embedded store (sqlite or memory); on etcd "
            "revisions are etcd's own"
        )
    return EpochStorage(storage, lambda: epoch_for(int(getattr(storage, "store_id", 0))))


def store_identity(storage: Storage) -> str:
    """The store's UID as the ``X-Kcp-Cache-Store`` header shows it (hex)."""
    inner = storage
    while True:
        store_id = getattr(inner, "store_id", None)
        if store_id is not None:
            return f"{int(store_id):016x}"
        nested = getattr(inner, "inner", None) or getattr(inner, "_inner", None)
        if nested is None:
            return ""
        inner = nested


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def _share(text: str) -> float:
    value = text.strip()
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid share {text!r}: use e.g. 20%") from None
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"invalid share {text!r}: must be 0%..100%")
    return share


def _selection(text: str) -> Selection | None:
    labels: list[tuple[str, str]] = []
    for item in _names(text):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--export-label-selector: {item!r} is not key=value")
        labels.append((key.strip(), value.strip()))
    return Selection(tuple(sorted(labels))) if labels else None


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class Hierarchy:
    """What the hierarchy flags start: home map, feed, mirror, exporter."""

    def __init__(
        self,
        args: argparse.Namespace,
        storage: Storage,
        metrics: ServerMetrics,
        *,
        base_url: str,
        root: Path,
    ) -> None:
        if args.feed_progress_interval <= 0:
            raise ValueError("--feed-progress-interval must be positive")
        named = args.cache_name is not None
        if args.parent_url and not named:
            raise ValueError("--parent-url needs --cache-name")
        if args.parent_url and not args.parent_kubeconfig:
            raise ValueError("--parent-url needs --parent-kubeconfig")
        self.name = args.cache_name or "root"
        self.parent_url = (args.parent_url or "").rstrip("/")
        self.require_parent = args.require_parent_for_readiness
        self.home = HomeMap(
            storage,
            self.name,
            base_url=base_url,
            parent=self.parent_url,
            home_shards=_names(args.home_shards),
            auto_home=args.auto_home,
            enabled=named,
        )
        self.home_writes = HomeWrites(self.home)
        self.placement = ShardPlacement(storage, self.home, flush_timeout=args.rehome_flush_timeout)
        self.feed = FeedSource(storage, self.home, progress_interval=args.feed_progress_interval)
        self.routes: dict[str, Any] = {
            FEED_PATH: FeedEndpoint(self.feed),
            PARENT_READYZ_PATH: self._parent_readyz,
        }
        self.mirror: Mirror | WatchMirror | None = None
        self.exporter: Exporter | None = None
        self._http: AsyncClient | None = None
        self._watch_http: AsyncClient | None = None
        self._status_task: asyncio.Task[None] | None = None
        if self.parent_url:
            config = load_kubeconfig(args.parent_kubeconfig)
            read_timeout = max(5.0, 5 * args.feed_progress_interval)
            self._http = AsyncClient(
                base_url=self.parent_url,
                headers=config.headers,
                timeout=Timeout(10.0, read=read_timeout),
                transport=AsyncHTTPTransport(verify=config.ssl_context),
            )
            sink = MirrorStore(storage, self.home, self.parent_url)
            if args.parent_mode == "watch":
                self._watch_http = AsyncClient(
                    base_url=self.parent_url,
                    headers=config.headers,
                    timeout=Timeout(30.0, read=None),
                    transport=async_cache_transport(AsyncHTTPTransport(verify=config.ssl_context)),
                )
                self.mirror = WatchMirror(
                    AsyncRESTClient(self._watch_http), sink, resources=_names(args.import_resources)
                )
            else:
                self.mirror = Mirror(
                    self._http,
                    sink,
                    cache_name=self.name,
                    resources=_names(args.import_resources),
                    registry=metrics.registry,
                    on_change=self._publish_status,
                )
            self.home_writes.on_forced = self.mirror.refresh
            # A shard moved away (or a lost claim): a fresh snapshot sweeps what the new
            # home does not have; until the mirror caught up once, home writes wait.
            self.home.on_moved_away = self.mirror.refresh
            mirror = self.mirror
            self.home_writes.confirmed = lambda: getattr(mirror, "caught_up", True)
            wanted = FeedFilter(
                home_of=self.name,
                resources=frozenset(_names(args.export_resources)),
                forward_cache_shards=named,
            )
            self.exporter = Exporter(
                self._http,
                lambda since: self.feed.events(since, wanted),
                root / "export-cursor.json",
                on_change=self._publish_status,
                prelude=self._own_cache_object,
                selection=_selection(args.export_label_selector),
                delete_guard=args.export_delete_guard,
                shards=self.placement.forwarding(self._http) if named else None,
            )
        self.storage = storage

    async def _own_cache_object(self) -> tuple[str, bytes] | None:
        key = self.home.cache_key(self.name)
        try:
            kv = await self.storage.get(key)
        except NotFound:
            return None
        return key[len(self.storage.prefix) :], kv.value

    def ready(self) -> None:
        """``/readyz``'s ``parent`` check (registered with ``--require-parent-for-readiness``)."""
        problem = self.parent_problem()
        if problem:
            raise RuntimeError(problem)

    def parent_problem(self) -> str:
        mirror = self.mirror
        if mirror is None:
            return ""
        if not mirror.connected:
            return f"not connected to the parent {self.parent_url}: {mirror.last_error}"
        if not mirror.synced:
            return f"connected to the parent {self.parent_url}, not synced yet"
        return ""

    async def _parent_readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self.parent_problem()
        if problem:
            await send_bytes(send, 500, f"[-]parent failed: {problem}\n".encode())
            return
        text = "ok" if self.mirror is not None else "ok: no parent"
        await send_bytes(send, 200, text.encode())

    def _publish_status(self) -> None:
        if self.mirror is None or not self.home.enabled:
            return
        upstream = self.mirror.status()
        if self.exporter is not None:
            upstream["exportConnected"] = self.exporter.connected
            upstream["exportRevision"] = str(self.exporter.revision)
        self.home.set_status(upstream=upstream)

    async def start(self, *, epoch: int = 0) -> None:
        if epoch:
            self.home.set_status(storeEpoch=epoch)
        await self.home.start()
        self.placement.start()
        if self.mirror is not None:
            await self.mirror.start()
        if self.exporter is not None:
            await self.exporter.start()
        if self.mirror is not None and self.home.enabled:
            self._status_task = asyncio.create_task(self._status_loop(), name="cache-status")

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(_STATUS_INTERVAL)
            self._publish_status()

    async def stop(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        for part in (self.exporter, self.mirror):
            if part is not None:
                await part.stop()
        await self.placement.stop()
        await self.home.stop()
        for http in (self._http, self._watch_http):
            if http is not None:
                await http.aclose()
