"""``kcp-cache-server``: run kcp's cache server (spec §1.1).

With no flag but ``--root-directory`` it keeps its data in SQLite under the root
directory, generates a serving certificate, a development client CA, an admin client
certificate and ``admin.kubeconfig``, and serves HTTPS on 127.0.0.1:6443.

Start-up problems (a busy port, an unreadable certificate, an unusable root directory, a
store that cannot be opened, a file that cannot be written because the disk is full) end
the process with exit code 1 and one line on stderr naming the path and the cause — no
traceback. SIGTERM and SIGINT shut down gracefully: stop accepting, fail ``/readyz``,
end watch streams, finish in-flight requests, close the store; exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from OpenSSL import SSL

from kcp_cache import __version__
from kcp_cache.audit import AuditLog, AuditOptions
from kcp_cache.cli._durations import parse_duration
from kcp_cache.cli._hierarchy import Hierarchy, add_hierarchy_flags, store_identity, with_epoch
from kcp_cache.cli._lifecycle_flags import add_lifecycle_flags, lifecycle_options
from kcp_cache.cli._logging import setup_logging
from kcp_cache.cli._numbers import boolean, integer_at_least
from kcp_cache.cli._placement import add_placement_flags
from kcp_cache.cli._workers import (
    LEADER_SOCKET_NAME,
    WorkerGroup,
    WorkerRole,
    add_worker_flags,
    watch_parent,
)
from kcp_cache.meta import DEFAULT_SERVING_HOSTS
from kcp_cache.registry import RevisionIssuer
from kcp_cache.server import (
    AUTHORIZATION_MODES,
    DEFAULT_ALWAYS_ALLOW_PATHS,
    DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
    DEFAULT_MAX_REQUESTS_INFLIGHT,
    DEFAULT_MIN_REQUEST_TIMEOUT,
    DEFAULT_SHARD_ANNOTATION_ALLOWLIST,
    DEFAULT_WATCH_MAX_UNSENT_BYTES,
    ConnectionLimits,
    H2Settings,
    HTTPSServer,
    ReadinessChecks,
    ServerMetrics,
    SharedPort,
    TLSConfigError,
    bind_socket,
    build_server_context,
    create_app,
    ensure_dev_credentials,
    ensure_serving_certificate,
    raise_descriptor_limit,
)
from kcp_cache.server.api import DEFAULT_COMPRESSION_THRESHOLD, Compression
from kcp_cache.storage import (
    SQLITE_FILE_NAME,
    EpochStorage,
    FollowerStorage,
    LeaderLink,
    SQLiteStorage,
    Storage,
    StorageError,
    open_storage,
)

__all__ = ["PORT_FILE_NAME", "build_parser", "main"]

log = logging.getLogger("kcp_cache.cli")

#: File in the root directory holding the port actually listened on (for ``--secure-port 0``).
PORT_FILE_NAME = "secure-port"

#: Seconds between two attempts to bootstrap the system CRDs (each of which already
#: retries for a while): a store that failed at start-up (a full disk) may recover.
BOOTSTRAP_RETRY_INTERVAL = 1.0


class StartupError(Exception):
    """A problem an operator must fix; reported as one line, exit code 1."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: …)`` only for flags that have a default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcp-cache-server",
        description=(
            "kcp's cache server: a Kubernetes-style API server where kcp shards publish "
            "their objects and read each other's, addressed as "
            "/services/cache/shards/<shard>/clusters/<cluster>/apis/…"
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--root-directory",
        metavar="DIR",
        default=".kcp-cache",
        help="directory for the data (SQLite), generated certificates, admin.kubeconfig "
        "and the secure-port file; created if missing",
    )
    serving = parser.add_argument_group("secure serving")
    serving.add_argument(
        "--secure-port",
        metavar="PORT",
        type=int,
        default=6443,
        help="HTTPS port; 0 picks a free port (logged and written to <root>/secure-port)",
    )
    serving.add_argument(
        "--bind-address",
        metavar="IP",
        default="127.0.0.1",
        help="IP address to listen on (0.0.0.0: all)",
    )
    serving.add_argument(
        "--tls-cert-file",
        metavar="FILE",
        help="serving certificate (PEM, chain allowed); default: a self-signed certificate "
        "for localhost, 127.0.0.1 and ::1 generated into <root>/apiserver.crt",
    )
    serving.add_argument(
        "--tls-private-key-file", metavar="FILE", help="private key of --tls-cert-file (PEM)"
    )
    auth = parser.add_argument_group("authentication and authorization")
    auth.add_argument(
        "--client-ca-file",
        metavar="FILE",
        help="CA bundle verifying client certificates (CN = user, O = groups); default: a "
        "development CA generated into <root>/client-ca.crt with an admin certificate "
        "(O=system:masters) and <root>/admin.kubeconfig",
    )
    auth.add_argument(
        "--authorization-always-allow-paths",
        metavar="PATHS",
        default=",".join(DEFAULT_ALWAYS_ALLOW_PATHS),
        help="comma-separated non-resource paths anyone may GET (a trailing * matches a prefix)",
    )
    auth.add_argument(
        "--authorization-mode",
        choices=AUTHORIZATION_MODES,
        default="scoped",
        help="scoped: shard S (CN system:kcp:shard:S, O system:kcp:shards) writes only "
        "/shards/S/…, readers (O system:kcp:cache-readers) and caches read, system:masters "
        "does anything; kcp: only system:masters, exactly as kcp's cache server "
        "(default: scoped)",
    )
    auth.add_argument(
        "--shard-annotation-allowlist",
        metavar="ANNOTATIONS",
        default=",".join(DEFAULT_SHARD_ANNOTATION_ALLOWLIST),
        help="comma-separated annotations a shard may change on another shard's "
        "shards.core.kcp.io copy in scoped mode (kcp's cordon); empty: none",
    )
    storage = parser.add_argument_group("storage")
    storage.add_argument(
        "--storage",
        choices=("sqlite", "memory", "etcd"),
        help="storage engine; default sqlite in <root>, or etcd when --etcd-servers is set. "
        "memory keeps nothing across restarts",
    )
    storage.add_argument(
        "--etcd-servers",
        metavar="URLS",
        help="comma-separated etcd v3 endpoints (http(s)://host:port); selects the etcd engine",
    )
    storage.add_argument(
        "--etcd-prefix",
        metavar="PREFIX",
        default="/cache",
        help="key prefix of every stored object (/registry is rewritten to /cache, as kcp does)",
    )
    storage.add_argument(
        "--etcd-cafile", metavar="FILE", help="CA bundle verifying the etcd servers"
    )
    storage.add_argument("--etcd-certfile", metavar="FILE", help="client certificate for etcd")
    storage.add_argument("--etcd-keyfile", metavar="FILE", help="client key for etcd")
    storage.add_argument(
        "--watch-cache",
        metavar="BOOL",
        type=boolean,
        default=True,
        help="etcd engine: serve GET and LIST from an in-memory copy kept by one etcd "
        "watch, with consistent reads (default true; false reads etcd every time)",
    )
    storage.add_argument(
        "--etcd-revision-gateway",
        metavar="BOOL",
        type=boolean,
        default=True,
        help="etcd engine: ask etcd's JSON gateway (POST /v3/kv/range) for the current "
        "revision of consistent reads, a quarter of gRPC's CPU; gRPC when it cannot "
        "answer (default true)",
    )
    storage.add_argument(
        "--compaction-retention",
        metavar="DURATION",
        type=parse_duration,
        help="how long watch history is kept before compaction (e.g. 5m); default: the "
        "engine's (5m)",
    )
    storage.add_argument(
        "--compaction-interval",
        metavar="DURATION",
        type=parse_duration,
        help="how often compaction runs (e.g. 10s); default: the engine's",
    )
    audit = parser.add_argument_group("audit log")
    audit.add_argument(
        "--audit-log-path",
        metavar="FILE",
        help="write one audit.k8s.io/v1 Event JSON line per request (Metadata level) to "
        "FILE; - for standard output (default: no audit log)",
    )
    audit.add_argument(
        "--audit-log-maxsize",
        metavar="MiB",
        type=int,
        default=0,
        help="rotate the audit log when it would grow past this size (0: never)",
    )
    audit.add_argument(
        "--audit-log-maxbackup",
        metavar="N",
        type=int,
        default=0,
        help="keep at most N rotated audit log files (0: all)",
    )
    audit.add_argument(
        "--audit-log-maxage",
        metavar="DAYS",
        type=int,
        default=0,
        help="delete rotated audit log files older than DAYS (0: never)",
    )
    audit.add_argument(
        "--audit-log-buffer-size",
        metavar="EVENTS",
        type=int,
        default=10_000,
        help="events buffered for the writer; when full, events are dropped (counted in "
        "/metrics and logged) rather than slowing requests down",
    )
    responses = parser.add_argument_group("responses")
    responses.add_argument(
        "--response-compression",
        choices=("on", "off"),
        default="on",
        help="gzip large GET and LIST responses for clients that accept it, as kube's "
        "APIResponseCompression (default: on)",
    )
    responses.add_argument(
        "--response-compression-threshold",
        metavar="BYTES",
        type=int,
        default=DEFAULT_COMPRESSION_THRESHOLD,
        help=f"smallest response body that is gzipped (default: {DEFAULT_COMPRESSION_THRESHOLD},"
        " kube's 128 KiB)",
    )
    _add_connection_limit_flags(parser)
    _add_http2_flags(parser)
    watch = parser.add_argument_group("watch")
    watch.add_argument(
        "--watch-bookmark-interval",
        metavar="DURATION",
        type=parse_duration,
        default=60.0,
        help="how often watchers that allow bookmarks get one (e.g. 1s); a bookmark "
        "never passes an event not yet sent (default: 1m, as kube-apiserver)",
    )
    _add_limit_flags(parser)
    add_lifecycle_flags(parser)
    add_worker_flags(parser)
    add_hierarchy_flags(parser)
    add_placement_flags(parser)
    misc = parser.add_argument_group("testing and logging")
    misc.add_argument(
        "--synthetic-delay",
        metavar="DURATION",
        type=parse_duration,
        default=0.0,
        help="sleep this long before serving every request (a testing aid, e.g. 100ms)",
    )
    misc.add_argument(
        "--honor-finalizers",
        action="store_true",
        help="a DELETE of an object with finalizers marks it (deletionTimestamp) and it goes "
        "when the last finalizer is removed, as on a Kubernetes API server; for a server "
        "standing in for a shard's API in tests (kcp's cache server deletes at once, the "
        "default)",
    )
    misc.add_argument(
        "-v",
        "--verbosity",
        metavar="N",
        type=int,
        default=0,
        help="log verbosity like kube's -v: 2 debug logs of the server, 3 also one line per "
        "request, 4 debug logs of the libraries too",
    )
    misc.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    return parser


# -- connection limits (one group, so that it merges alone) ---------------------------


def _add_http2_flags(parser: argparse.ArgumentParser) -> None:
    defaults = H2Settings()
    group = parser.add_argument_group(
        "HTTP/2",
        "HTTP/2 is offered by ALPN (h2) beside HTTP/1.1 on the same listener; floods "
        "(rapid reset, PING, SETTINGS) end the connection with GOAWAY ENHANCE_YOUR_CALM "
        'and count in kcp_cache_connection_limit_hits_total{limit=~"h2-.*"}',
    )
    group.add_argument(
        "--disable-http2-serving",
        action="store_true",
        help="serve HTTP/1.1 only (ALPN never chooses h2)",
    )
    group.add_argument(
        "--http2-max-streams-per-connection",
        metavar="N",
        type=_non_negative_int,
        default=defaults.max_concurrent_streams,
        help="SETTINGS_MAX_CONCURRENT_STREAMS: streams (watches included) one HTTP/2 "
        f"connection may have open (default: {defaults.max_concurrent_streams}, "
        "as kube-apiserver)",
    )


def _http2_settings(args: argparse.Namespace) -> H2Settings:
    return H2Settings(
        enabled=not args.disable_http2_serving,
        max_concurrent_streams=args.http2_max_streams_per_connection or 1,
    )


def _add_connection_limit_flags(parser: argparse.ArgumentParser) -> None:
    defaults = ConnectionLimits()
    group = parser.add_argument_group(
        "connection limits",
        "what one client may hold: every hit is counted in /metrics "
        "(kcp_cache_connection_limit_hits_total{limit}) and logged, rate-limited",
    )
    group.add_argument(
        "--tls-handshake-timeout",
        metavar="DURATION",
        type=parse_duration,
        default=defaults.handshake_timeout,
        help="close a connection whose TLS handshake is not complete within this time",
    )
    group.add_argument(
        "--request-header-timeout",
        metavar="DURATION",
        type=parse_duration,
        default=defaults.request_header_timeout,
        help="close a connection whose request headers are not complete this long after "
        "the handshake or the request's first byte (kube: 32s)",
    )
    group.add_argument(
        "--idle-connection-timeout",
        metavar="DURATION",
        type=parse_duration,
        default=defaults.idle_timeout,
        help="close a keep-alive connection that sends no next request for this long (kube: 90s)",
    )
    group.add_argument(
        "--max-request-header-bytes",
        metavar="BYTES",
        type=_non_negative_int,
        default=defaults.max_header_bytes,
        help="request line plus headers beyond this are answered 431 and the connection "
        "closed (kube: 1 MiB)",
    )
    group.add_argument(
        "--max-request-headers",
        metavar="N",
        type=_non_negative_int,
        default=defaults.max_header_count,
        help="more header lines than this are answered 431",
    )
    group.add_argument(
        "--max-request-line-bytes",
        metavar="BYTES",
        type=_non_negative_int,
        default=defaults.max_request_line,
        help="a longer request target (URL) is answered 414",
    )
    group.add_argument(
        "--max-connections",
        metavar="N",
        type=_non_negative_int,
        default=0,
        help="cap on open connections; 0: the open-file limit (its soft limit is raised "
        "to the hard limit at start) minus --reserved-file-descriptors. At the cap the "
        "longest-waiting unauthenticated connection is closed to make room",
    )
    group.add_argument(
        "--max-unauthenticated-connections",
        metavar="N",
        type=_non_negative_int,
        default=0,
        help="cap on connections without a verified client certificate (including those "
        "still in the TLS handshake); 0: half of --max-connections",
    )
    group.add_argument(
        "--reserved-file-descriptors",
        metavar="N",
        type=_non_negative_int,
        default=128,
        help="descriptors kept out of the connection cap for the store, logs and "
        "certificates, so the server itself never runs out",
    )


def _connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    """The limits the flags ask for, with the caps sized below the open-file limit."""
    for flag in ("tls_handshake_timeout", "request_header_timeout", "idle_connection_timeout"):
        if getattr(args, flag) <= 0:
            raise StartupError(f"--{flag.replace('_', '-')} must be positive")
    for flag in ("max_request_header_bytes", "max_request_headers", "max_request_line_bytes"):
        if getattr(args, flag) <= 0:
            raise StartupError(f"--{flag.replace('_', '-')} must be positive")
    descriptors, _hard = raise_descriptor_limit()
    available = descriptors - args.reserved_file_descriptors
    if available < 2:
        raise StartupError(
            f"the open-file limit ({descriptors}) leaves no room for connections after "
            f"--reserved-file-descriptors {args.reserved_file_descriptors}"
        )
    max_connections = args.max_connections or available
    if max_connections > available:
        log.warning(
            "--max-connections %d is above the open-file limit %d minus %d reserved; using %d",
            max_connections,
            descriptors,
            args.reserved_file_descriptors,
            available,
        )
        max_connections = available
    max_unauthenticated = args.max_unauthenticated_connections or max(1, max_connections // 2)
    limits = ConnectionLimits(
        handshake_timeout=args.tls_handshake_timeout,
        request_header_timeout=args.request_header_timeout,
        idle_timeout=args.idle_connection_timeout,
        max_header_bytes=args.max_request_header_bytes,
        max_header_count=args.max_request_headers,
        max_request_line=args.max_request_line_bytes,
        max_connections=max_connections,
        max_unauthenticated_connections=min(max_unauthenticated, max_connections),
    )
    log.info(
        "connection caps: %d connections, %d unauthenticated (open-file limit %d)",
        limits.max_connections,
        limits.max_unauthenticated_connections,
        descriptors,
    )
    return limits


# -- overload protection: in-flight requests and watch streams (kube's flags) ----------


_non_negative_int = integer_at_least(0)


_BYTE_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}


def _byte_size(text: str) -> int:
    """``8388608``, ``8Mi``, ``512Ki`` … (Kubernetes quantity suffixes), at least 1 KiB."""
    number, factor = text.strip(), 1
    for suffix, unit in _BYTE_UNITS.items():
        if number.endswith(suffix):
            number, factor = number[: -len(suffix)], unit
            break
    try:
        value = int(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r} (e.g. 8Mi)") from None
    if value < 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1Ki: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return seconds


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group(
        "overload protection",
        "kube-apiserver's limits on concurrent requests and on watch streams "
        "(see docs/watch-limits.md)",
    )
    limits.add_argument(
        "--max-requests-inflight",
        metavar="N",
        type=_non_negative_int,
        default=DEFAULT_MAX_REQUESTS_INFLIGHT,
        help="most read-only requests (get, list) served at once; beyond it 429 "
        "TooManyRequests with Retry-After. Watches, health probes and system:masters "
        "are not limited; 0: no limit",
    )
    limits.add_argument(
        "--max-mutating-requests-inflight",
        metavar="N",
        type=_non_negative_int,
        default=DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
        help="most mutating requests (create, update, patch, delete) served at once; "
        "beyond it 429 as above; 0: no limit",
    )
    limits.add_argument(
        "--request-timeout",
        metavar="DURATION",
        type=parse_duration,
        default=60.0,
        help="a request counted by the limits above (not a watch) still running after "
        "this long has its connection dropped, e.g. a response its client stopped "
        "reading; 0: never",
    )
    limits.add_argument(
        "--min-request-timeout",
        metavar="DURATION",
        type=_positive_seconds,
        default=DEFAULT_MIN_REQUEST_TIMEOUT,
        help="a watch without timeoutSeconds ends after a random time in [min, 2·min); "
        "a longer timeoutSeconds is capped to 2·min (e.g. 30m, or seconds)",
    )
    limits.add_argument(
        "--watch-max-unsent-bytes",
        metavar="BYTES",
        type=_byte_size,
        default=DEFAULT_WATCH_MAX_UNSENT_BYTES,
        help="a watch whose unsent data (queued events plus the connection's buffers) "
        "grows beyond this is ended, and its client resumes (e.g. 8Mi)",
    )


def _prepare_root(text: str) -> Path:
    root = Path(text).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StartupError(f"root directory {root} exists and is not a directory") from None
    except OSError as exc:
        raise StartupError(f"cannot create root directory {root}: {exc.strerror}") from None
    if not root.is_dir():
        raise StartupError(f"root directory {root} is not a directory")
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        read_only = os.statvfs(root).f_flag & os.ST_RDONLY
        reason = "read-only file system" if read_only else "permission denied"
        raise StartupError(f"root directory {root} is not writable: {reason}")
    return root.resolve()


def _url_host(bind_address: str) -> str:
    host = bind_address
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]" if ":" in host else host


def _storage_kind(args: argparse.Namespace) -> str:
    kind: str = args.storage or ("etcd" if args.etcd_servers else "sqlite")
    return kind


def _storage_from_args(args: argparse.Namespace, root: Path, role: WorkerRole) -> Storage:
    kind = _storage_kind(args)
    if args.etcd_servers and kind != "etcd":
        raise StartupError(f"--etcd-servers cannot be combined with --storage {kind}")
    if role.follower:
        return FollowerStorage(
            root / SQLITE_FILE_NAME, leader_socket=role.leader_socket or "", prefix=_prefix(args)
        )
    options: dict[str, object] = {}
    if kind == "sqlite" and role.grouped:
        options["shared_readers"] = True  # the followers read the file
    if args.compaction_retention is not None:
        options["history_retention"] = args.compaction_retention
    if args.compaction_interval is not None:
        if args.compaction_interval <= 0:
            raise StartupError("--compaction-interval must be positive")
        options["compaction_interval"] = args.compaction_interval
    if kind == "etcd":
        if not args.etcd_servers:
            raise StartupError("--storage etcd needs --etcd-servers")
        options["endpoints"] = [e.strip() for e in args.etcd_servers.split(",") if e.strip()]
        options["ca_file"] = args.etcd_cafile
        options["cert_file"] = args.etcd_certfile
        options["key_file"] = args.etcd_keyfile
        options["watch_cache"] = args.watch_cache
        options["revision_gateway"] = args.etcd_revision_gateway
    try:
        return open_storage(kind, root_directory=root, prefix=_prefix(args), **options)
    except ImportError as exc:
        raise StartupError(
            f"the {kind} storage is not available ({exc}); install kcp-cache[etcd]"
        ) from None
    except (ValueError, TypeError, StorageError) as exc:
        raise StartupError(f"cannot open {kind} storage: {exc}") from None


def _prefix(args: argparse.Namespace) -> str:
    prefix: str = args.etcd_prefix.rstrip("/") or "/"
    if prefix == "/registry":
        # kcp rewrites the generic apiserver default to /cache (kcp#4292); do the same so
        # a flag copied from a kube-apiserver command line still finds the cache's keys.
        log.info("--etcd-prefix /registry is the generic default; using /cache as kcp does")
        prefix = "/cache"
    return prefix


def _write_port_file(root: Path, port: int) -> None:
    path = root / PORT_FILE_NAME
    tmp = root / f".{PORT_FILE_NAME}.tmp"
    try:
        tmp.write_text(f"{port}\n")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StartupError(f"cannot write the port file {path}: {exc.strerror}") from None


def _tls_context(
    args: argparse.Namespace, root: Path, server_url: str, *, first_worker: bool = True
) -> SSL.Context:
    """The serving context; generates the certificates and kubeconfig that are missing.

    Only the first worker of ``--workers`` writes them; the others use its files.
    """
    try:
        if args.tls_cert_file:
            cert_file, key_file = Path(args.tls_cert_file), Path(args.tls_private_key_file)
        else:
            hosts = list(DEFAULT_SERVING_HOSTS)
            if args.bind_address not in ("", "0.0.0.0", "::", *hosts):
                hosts.append(args.bind_address)
            serving, created = ensure_serving_certificate(root, hosts)
            cert_file, key_file = serving.cert, serving.key
            if created:
                log.info("generated a self-signed serving certificate %s", cert_file)
        client_ca = args.client_ca_file
        if client_ca is None and not first_worker:
            client_ca = str(root / "client-ca.crt")
        if client_ca is None:
            creds = ensure_dev_credentials(root, server_url, cert_file)
            client_ca = str(creds.client_ca.cert)
            log.info(
                "no --client-ca-file: using the development client CA %s; admin "
                "credentials in %s (try: kubectl --kubeconfig %s get apiexports.apis.kcp.io)",
                client_ca,
                creds.kubeconfig,
                creds.kubeconfig,
            )
        return build_server_context(cert_file, key_file, client_ca)
    except TLSConfigError as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(f"cannot write {exc.filename or root}: {exc.strerror}") from None


def _listen(args: argparse.Namespace, role: WorkerRole) -> socket.socket:
    try:
        return bind_socket(args.bind_address, args.secure_port, reuse_port=role.grouped)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "address already in use"
        else:
            reason = exc.strerror or str(exc)
        raise StartupError(
            f"cannot listen on {args.bind_address}:{args.secure_port}: {reason}"
        ) from None


async def _run(args: argparse.Namespace) -> int:
    root = _prepare_root(args.root_directory)
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        raise StartupError("--tls-cert-file and --tls-private-key-file must be given together")
    if args.response_compression_threshold < 0:
        raise StartupError("--response-compression-threshold must not be negative")
    role = WorkerRole.from_args(args)
    if role.grouped and _storage_kind(args) == "memory":
        raise StartupError(
            f"--workers {args.workers} needs a store the processes share (sqlite or etcd); "
            "the memory engine's data lives in one process"
        )

    # A follower joins the port only once its copy of the store has caught up (that
    # is its readiness): connections the kernel gave it before would wait for the load.
    sock = None if role.follower else _listen(args, role)
    try:
        metrics = ServerMetrics(worker=role.label)
        readiness = ReadinessChecks()
        # The store first: it takes the root directory's lock, so a second server on the
        # same directory stops here before touching its certificates or kubeconfig.
        try:
            raw = _storage_from_args(args, root, role)
            engine = with_epoch(args, raw)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        storage = metrics.instrument_storage(engine)
        try:
            await storage.start()
        except (StorageError, OSError, ValueError) as exc:
            with contextlib.suppress(Exception):
                await storage.close()
            raise StartupError(f"cannot open storage: {exc}") from None
        link: LeaderLink | None = None
        try:
            if sock is None:
                sock = _listen(args, role)
            port: int = sock.getsockname()[1]
            server_url = f"https://{_url_host(args.bind_address)}:{port}"
            ssl_context = _tls_context(args, root, server_url, first_worker=role.index == 0)
            group = None
            if role.index == 0:
                _write_port_file(root, port)
            if role.index == 0 and role.grouped:
                role = role.with_directory()
                assert role.directory is not None
                socket_path = None
                if isinstance(raw, SQLiteStorage):
                    socket_path = os.path.join(role.directory, LEADER_SOCKET_NAME)
                    link = LeaderLink(raw, socket_path)
                    await link.start()
                group = WorkerGroup(
                    args.argv,
                    count=role.count,
                    port=port,
                    directory=role.directory,
                    leader_socket=socket_path,
                )
            code = await _serve(
                args, root, sock, port, storage, metrics, readiness, ssl_context, role, group
            )
        finally:
            if link is not None:
                await link.close()
            try:
                await storage.close()
            except Exception as exc:  # reported, but the process still ends
                log.error("closing the store failed: %s", exc)
                code = 1
            else:
                log.info("shut down cleanly")
        if isinstance(raw, FollowerStorage) and raw.leader_lost.is_set():
            code = 1  # stopped because the leader went away, not because it was asked to
        return code
    finally:
        if sock is not None:
            sock.close()


async def _serve(
    args: argparse.Namespace,
    root: Path,
    sock: socket.socket,
    port: int,
    storage: Storage,
    metrics: ServerMetrics,
    readiness: ReadinessChecks,
    ssl_context: SSL.Context,
    role: WorkerRole,
    group: WorkerGroup | None,
) -> int:
    try:
        hierarchy = Hierarchy(
            args,
            storage,
            metrics,
            base_url=f"https://{_url_host(args.bind_address)}:{port}",
            root=root,
            leader=role.index == 0,
            grouped=role.grouped,
        )
    except (ValueError, OSError) as exc:
        raise StartupError(f"cache hierarchy: {exc}") from None
    if args.require_parent_for_readiness:
        readiness.register("parent", hierarchy.ready)
    engine = getattr(storage, "inner", storage)
    epoch = engine.epoch if isinstance(engine, EpochStorage) else 0
    issuer = RevisionIssuer(lambda: epoch, hierarchy.home.cache_of_epoch) if epoch else None
    audit = _open_audit_log(args, role)
    if audit is not None:
        metrics.track_audit(audit)
    app = create_app(
        storage,
        audit=audit,
        always_allow_paths=[p for p in args.authorization_always_allow_paths.split(",") if p],
        synthetic_delay=args.synthetic_delay,
        metrics=metrics,
        readiness=readiness,
        authorization_mode=args.authorization_mode,
        shard_annotation_allowlist=[
            a.strip() for a in args.shard_annotation_allowlist.split(",") if a.strip()
        ],
        max_requests_inflight=args.max_requests_inflight,
        max_mutating_requests_inflight=args.max_mutating_requests_inflight,
        request_timeout=args.request_timeout,
        lifecycle=lifecycle_options(args),
        freshness_require_markers=args.freshness_require_markers,
        compression=Compression(
            enabled=args.response_compression == "on",
            threshold=args.response_compression_threshold,
        ),
        bookmark_interval=args.watch_bookmark_interval,
        min_request_timeout=args.min_request_timeout,
        watch_max_unsent_bytes=args.watch_max_unsent_bytes,
        honor_finalizers=args.honor_finalizers,
        bootstrap_retry_interval=BOOTSTRAP_RETRY_INTERVAL,
        on_bootstrapped=lambda: _after_bootstrap(group),
        home=hierarchy.home_writes,
        revision_issuer=issuer,
    )
    app.routes.update(hierarchy.routes)
    app.store_header = f"{hierarchy.name}/{store_identity(storage)}".encode()
    app.on_shutdown.append(hierarchy.stop)
    shared_port = None
    if role.directory is not None and args.balance_connections:
        shared_port = SharedPort(role.directory, role.index, role.count)
    server = HTTPSServer(
        app,
        sock=sock,
        ssl_context=ssl_context,
        limits=_connection_limits(args),
        http2=_http2_settings(args),
        shared_port=shared_port,
    )
    metrics.registry.register(server.tracker.collector())
    if server.balancer is not None:
        metrics.registry.register(server.balancer.collector())

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, server, signum)

    await app.startup()  # the CRD bootstrap; our server runs without ASGI lifespan
    try:
        await hierarchy.start(epoch=epoch)
    except StorageError as exc:
        raise StartupError(f"cache hierarchy: {exc}") from None
    stop_watches = _group_stop_watches(server, storage, role)
    log.info(
        "serving kcp's cache server on https://%s:%d (root directory %s)",
        _url_host(args.bind_address),
        port,
        root,
    )
    try:
        await server.serve(before_shutdown=app.shutdown)
    finally:
        await app.shutdown()  # (once: done already when the server shut down cleanly)
        for task in stop_watches:
            task.cancel()
        if group is not None:
            await group.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if audit is not None:
            await audit.aclose()
    log.info("stopped serving; closing the store")
    return 0


def _after_bootstrap(group: WorkerGroup | None) -> None:
    _tune_garbage_collector()
    if group is not None:
        group.start()  # the other workers find the CRDs in place


def _group_stop_watches(
    server: HTTPSServer, storage: Storage, role: WorkerRole
) -> list[asyncio.Task[None]]:
    """A worker other than the first stops with the group: when worker 0 is gone, or
    (a follower) when its leader can no longer be reached."""
    if role.index == 0:
        return []
    tasks = [watch_parent(server.request_exit)]
    engine: object = storage
    while not isinstance(engine, FollowerStorage) and hasattr(engine, "inner"):
        engine = engine.inner  # the metrics and epoch wrappers
    if isinstance(engine, FollowerStorage):

        async def leader_lost() -> None:
            await engine.leader_lost.wait()
            server.request_exit()

        tasks.append(asyncio.get_running_loop().create_task(leader_lost()))
    return tasks


def _open_audit_log(args: argparse.Namespace, role: WorkerRole) -> AuditLog | None:
    if not args.audit_log_path:
        return None
    path = role.own_file(args.audit_log_path)  # each worker rotates its own file
    try:
        options = AuditOptions(
            path,
            max_size_mib=args.audit_log_maxsize,
            max_backups=args.audit_log_maxbackup,
            max_age_days=args.audit_log_maxage,
            buffer_events=args.audit_log_buffer_size,
        )
    except ValueError as exc:
        raise StartupError(f"audit log: {exc}") from None
    audit = AuditLog(options)
    try:
        audit.open(asyncio.get_running_loop())  # sent from the loop: no thread of its own
    except OSError as exc:
        raise StartupError(f"cannot open the audit log {path}: {exc.strerror or exc}") from None
    log.info("writing the audit log to %s", path)
    return audit


def _tune_garbage_collector() -> None:
    """Keep full garbage collections rare and cheap in a long-running server.

    With thousands of open watch connections a full collection walks every connection's
    objects and stalls every request for a third of a second (measured with 5,000 watches:
    every third fan-out took 0.45 s instead of 0.17 s). Objects alive after start-up
    (modules, the CRD catalog) are frozen out of collection, and the young generation is
    collected after 100,000 allocations instead of 700; reference counting still frees
    almost everything at once, the collector is only for cycles.
    """
    gc.freeze()
    gc.set_threshold(100_000, 10, 10)


def _on_signal(server: HTTPSServer, signum: int) -> None:
    log.info("received %s, shutting down", signal.Signals(signum).name)
    server.request_exit()  # a second signal skips the wait for in-flight requests


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.watch_bookmark_interval <= 0:
        parser.error("--watch-bookmark-interval must be positive")
    setup_logging(args.verbosity, args.log_format)
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is not available on Windows
            return asyncio.run(_run(args))
        return uvloop.run(_run(args))
    except StartupError as exc:
        print(f"kcp-cache-server: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
