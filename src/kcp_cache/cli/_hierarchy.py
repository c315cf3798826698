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

from kcp_cache.cli._numbers import boolean
from kcp_cache.cli._placement import ShardPlacement
from kcp_cache.client import (
    AsyncClient,
    AsyncHTTPTransport,
    AsyncRESTClient,
    Timeout,
    async_cache_transport,
    load_kubeconfig,
)
from kcp_cache.meta import ResourcePolicy, policy_from_flags
from kcp_cache.registry import (
    DEFAULT_PROGRESS_INTERVAL,
    FeedFilter,
    FeedSource,
    HomeMap,
    MirrorStore,
    OwnCache,
    ResourceCatalog,
    marker_converged,
)
from kcp_cache.replication import (
    DEFAULT_DELETE_GUARD,
    AutoMirror,
    DeleteGuard,
    Exporter,
    Mirror,
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
        "type for a parent without one (Go kcp's cache server); auto = the feed if the "
        "parent serves it (asked once at start-up), else watches",
    )
    group.add_argument(
        "--home-shards",
        default="",
        metavar="LIST",
        help="comma-separated shards homed at this cache from the start",
    )
    group.add_argument(
        "--auto-home",
        type=boolean,
        default=True,
        metavar="BOOL",
        help="a write for a shard no cache claims claims it for this cache",
    )
    group.add_argument(
        "--export-resources",
        default="",
        metavar="LIST",
        help="group/resource names exported to the parent (empty: everything homed here); "
        "written at start-up as this cache's Cache spec.export, which an admin may change "
        "at run time",
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
        help="group/resource names mirrored from the parent (empty: everything); written "
        "at start-up as this cache's Cache spec.import, which an admin may change at run time",
    )
    group.add_argument(
        "--feed-progress-interval",
        type=float,
        default=DEFAULT_PROGRESS_INTERVAL,
        metavar="SECONDS",
        help="seconds between PROGRESS lines of the replication feed",
    )
    group.add_argument(
        "--serve-replication-feed",
        type=boolean,
        default=True,
        metavar="BOOL",
        help="serve the replication feed to child caches (false: 404, as kcp's Go cache "
        "server; children then mirror through watches)",
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
        type=boolean,
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


def _share(text: str) -> float:
    value = text.strip()
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid share {text!r}: use e.g. 20%") from None
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"invalid share {text!r}: must be 0%..100%")
    return share


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in _names(text):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--export-label-selector: {item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def _policy_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """``spec.export`` / ``spec.import`` as the flags give them (only those given)."""
    fields: dict[str, Any] = {}
    try:
        if args.export_resources or args.export_label_selector:
            fields["export"] = policy_from_flags(
                _names(args.export_resources), _labels(args.export_label_selector)
            )
        if args.import_resources:
            fields["import"] = policy_from_flags(_names(args.import_resources), {})
        for name, value in fields.items():
            ResourcePolicy.parse(value, f"spec.{name}")
    except ValueError as exc:  # PolicyError included
        raise ValueError(f"export/import flags: {exc}") from None
    return fields


def _sweep_types() -> list[tuple[str, str]]:
    """``(api path, resource)`` of every bootstrapped type, for the exporter's sweep."""
    out = []
    for info in ResourceCatalog().discovery_resources():
        if info.served_versions:
            out.append((f"/apis/{info.group}/{info.served_versions[0]}", info.resource))
    return out


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class Hierarchy:
    """What the hierarchy flags start: home map, feed, mirror, exporter.

    With ``--workers`` only the leader (*leader*) mirrors the parent and exports to it;
    the followers serve the mirrored data from their copy of the leader's store and
    answer ``/readyz/parent`` with the leader's view (its ``Cache`` object's
    ``status.upstream``).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        storage: Storage,
        metrics: ServerMetrics,
        *,
        base_url: str,
        root: Path,
        leader: bool = True,
        grouped: bool = False,
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
        self.leader = leader
        self.home = HomeMap(
            storage,
            self.name,
            base_url=base_url,
            parent=self.parent_url,
            home_shards=_names(args.home_shards),
            auto_home=args.auto_home,
            enabled=named,
            grouped=grouped,
            owns_status=leader,
        )
        self.home_writes = HomeWrites(self.home)
        self.placement = ShardPlacement(storage, self.home, flush_timeout=args.rehome_flush_timeout)
        self.feed = FeedSource(storage, self.home, progress_interval=args.feed_progress_interval)
        self.routes: dict[str, Any] = {PARENT_READYZ_PATH: self._parent_readyz}
        if args.serve_replication_feed:
            self.routes[FEED_PATH] = FeedEndpoint(self.feed)
        self._defaults = _policy_defaults(args) if leader else {}
        self.own = OwnCache(storage, self.home.cache_key(self.name)) if named else None
        self.mirror: Mirror | WatchMirror | AutoMirror | None = None
        self.sink: MirrorStore | None = None
        self.exporter: Exporter | None = None
        self._http: AsyncClient | None = None
        self._watch_http: AsyncClient | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._pending_work: set[asyncio.Task[None]] = set()
        self._policy_lock = asyncio.Lock()
        self._metrics = metrics
        self._sweep_types: list[tuple[str, str]] = []
        if self.parent_url and leader:
            config = load_kubeconfig(args.parent_kubeconfig)
            read_timeout = max(5.0, 5 * args.feed_progress_interval)
            self._http = AsyncClient(
                base_url=self.parent_url,
                headers=config.headers,
                timeout=Timeout(10.0, read=read_timeout),
                transport=AsyncHTTPTransport(verify=config.ssl_context),
            )
            self._watch_http = AsyncClient(
                base_url=self.parent_url,
                headers=config.headers,
                timeout=Timeout(30.0, read=None),
                transport=async_cache_transport(AsyncHTTPTransport(verify=config.ssl_context)),
            )
            self.sink = MirrorStore(storage, self.home, self.parent_url)
            if args.parent_mode == "watch":
                self.mirror = self._watch_mirror()
            elif args.parent_mode == "feed":
                self.mirror = self._feed_mirror()
            else:
                self.mirror = AutoMirror(self._http, self._feed_mirror, self._watch_mirror)
            self.home_writes.on_forced = self.mirror.refresh
            # A shard moved away (or a lost claim): a fresh snapshot sweeps what the new
            # home does not have; until the mirror caught up once, home writes wait.
            self.home.on_moved_away = self.mirror.refresh
            mirror = self.mirror
            self.home_writes.confirmed = lambda: mirror.caught_up
            guard = DeleteGuard(
                args.export_delete_guard,
                converged=lambda shard, group, resource, revision: marker_converged(
                    storage, shard, group, resource, revision
                ),
                registry=metrics.registry,
            )
            # the export policy filters the rest
            wanted = FeedFilter(home_of=self.name, forward_cache_shards=named)
            self.exporter = Exporter(
                self._http,
                lambda since: self.feed.events(since, wanted),
                root / "export-cursor.json",
                on_change=self._publish_status,
                prelude=self._own_cache_object,
                guard=guard,
                sweep_scope=self._sweep_scope,
                shards=self.placement.forwarding(self._http) if named else None,
            )
            self._sweep_types = _sweep_types()
            if grouped:
                self.home.on_claims = self._claims_grew
        self.storage = storage

    # -- the parts ---------------------------------------------------------------------

    def _import_types(self) -> list[str]:
        """The ``resources`` filter the parent can apply for the import policy."""
        policy = self.sink.policy if self.sink is not None else ResourcePolicy()
        return policy.exact_types() or []

    def _feed_mirror(self) -> Mirror:
        assert self._http is not None
        assert self.sink is not None
        return Mirror(
            self._http,
            self.sink,
            cache_name=self.name,
            resources=self._import_types(),
            registry=self._metrics.registry,
            on_change=self._publish_status,
        )

    def _watch_mirror(self) -> WatchMirror:
        assert self._watch_http is not None
        assert self.sink is not None
        return WatchMirror(
            AsyncRESTClient(self._watch_http), self.sink, resources=self._import_types()
        )

    def _sweep_scope(self) -> list[str]:
        """Every (shard, type) this cache's subtree holds, as the parent's wildcard
        collections: the exporter sweeps them all after a re-sent snapshot."""
        return [
            f"/services/cache/shards/{shard}/clusters/*{api}/{resource}"
            for shard in sorted(self.home.shards_in_subtree())
            for api, resource in self._sweep_types
        ]

    def _claims_grew(self) -> None:
        exporter = self.exporter
        if exporter is not None:
            self._spawn(exporter.resend("this cache claimed a shard (--workers)"))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending_work.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending_work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("applying a change of this cache's Cache object failed",
                      exc_info=task.exception())  # fmt: skip

    # -- policies ----------------------------------------------------------------------

    def _policies_changed(self, export: ResourcePolicy, imports: ResourcePolicy) -> None:
        self._spawn(self._apply_policies(export, imports))

    async def _apply_policies(self, export: ResourcePolicy, imports: ResourcePolicy) -> None:
        async with self._policy_lock:
            if self.exporter is not None:
                await self.exporter.set_policy(export)
            sink = self.sink
            if sink is None or imports == sink.policy:
                return
            sink.policy = imports
            swept = await sink.sweep_unimported()
            log.info("import policy changed: %d mirrored objects swept", swept)
            mirror = self.mirror
            chosen = mirror.chosen if isinstance(mirror, AutoMirror) else mirror
            if isinstance(chosen, Mirror):
                chosen.resources = tuple(self._import_types())
            elif isinstance(chosen, WatchMirror):
                chosen.resources = frozenset(self._import_types())
            if mirror is not None:
                mirror.refresh()  # bring what the policy now wants

    async def _own_cache_object(self) -> tuple[str, bytes] | None:
        key = self.home.cache_key(self.name)
        try:
            kv = await self.storage.get(key)
        except NotFound:
            return None
        return key[len(self.storage.prefix) :], kv.value

    # -- readiness and status ----------------------------------------------------------

    def ready(self) -> None:
        """``/readyz``'s ``parent`` check (registered with ``--require-parent-for-readiness``)."""
        problem = self.parent_problem()
        if problem:
            raise RuntimeError(problem)

    def parent_problem(self) -> str:
        mirror = self.mirror
        if mirror is not None:
            connected, synced, error = mirror.connected, mirror.synced, mirror.last_error
            whose = ""
        elif self.parent_url and self.own is not None:
            upstream = self.own.upstream  # a follower: the leader's view
            connected = bool(upstream.get("connected"))
            synced = bool(upstream.get("synced"))
            error = str(upstream.get("lastError") or "")
            whose = " (the leader's view)"
        else:
            return ""
        if not connected:
            return f"not connected to the parent {self.parent_url}{whose}: {error}"
        if not synced:
            return f"connected to the parent {self.parent_url}, not synced yet{whose}"
        return ""

    async def _parent_readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self.parent_problem()
        if problem:
            await send_bytes(send, 500, f"[-]parent failed: {problem}\n".encode())
            return
        text = "ok" if self.parent_url else "ok: no parent"
        await send_bytes(send, 200, text.encode())

    def _publish_status(self) -> None:
        if self.mirror is None or not self.home.enabled:
            return
        upstream = self.mirror.status()
        if self.exporter is not None:
            upstream["exportConnected"] = self.exporter.connected
            upstream["exportRevision"] = str(self.exporter.revision)
        self.home.set_status(upstream=upstream)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, epoch: int = 0) -> None:
        if epoch and self.leader:
            self.home.set_status(storeEpoch=epoch)
        await self.home.start()
        if self.own is not None:
            if self.leader:
                await self.own.write_defaults(self._defaults)
            await self.own.start()
            if self.exporter is not None:
                self.exporter.policy = self.own.export_policy
            if self.sink is not None:
                self.sink.policy = self.own.import_policy
            self.own.on_change = self._policies_changed
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
        for task in list(self._pending_work):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for part in (self.exporter, self.mirror):
            if part is not None:
                await part.stop()
        await self.placement.stop()
        if self.own is not None:
            await self.own.close()
        await self.home.stop()
        for http in (self._http, self._watch_http):
            if http is not None:
                await http.aclose()
