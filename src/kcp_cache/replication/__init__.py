"""Replication: push this shard's objects into the cache, read everyone's back (spec §6).

Two halves, both built on :mod:`kcp_cache.client`:

* **Write side** — :class:`WriteController`, kcp's ``kcp-replication-controller``: a local
  and a global informer per replicated resource, one rate-limited work queue, two workers,
  and :func:`reconcile`, the pure decision function (create / update / delete / nothing)
  for one object. Also runs as a process: ``kcp-cache replicate``.
* **ClusterCachedResources** — :class:`CachedResourceController` replicates the objects
  each ClusterCachedResource selects under ``<resource>:<identityHash>`` (beyond-kcp §3.4).
  :class:`APIExportReferenceController` keeps one owned ClusterCachedResource per
  APIExport virtual-storage reference (kcp#4329).
* **Read side** — :class:`CacheReader`: wildcard informers over the cache, optionally next
  to local ones, with :class:`FallbackLister` s that look locally first and then in the
  cache. It becomes ready on local data even while the cache is unreachable.

Each has Prometheus metrics in a private registry (:class:`ReplicationMetrics`,
:class:`ReaderMetrics`) and :class:`HealthServer` serves them with health checks.
See ``docs/replication.md``.
"""

from kcp_cache.replication._ccr_model import CopyCreate as CopyCreate
from kcp_cache.replication._ccr_model import CopyDelete as CopyDelete
from kcp_cache.replication._ccr_model import CopyUpdate as CopyUpdate
from kcp_cache.replication._ccr_model import copy_body as copy_body
from kcp_cache.replication._ccr_model import secret_key as secret_key

from ._apiexport_refs import (
    APIEXPORT_REFERENCE_MANAGER,
    REFERENCED_BY_ANNOTATION,
    REFERENCED_KIND_ANNOTATION,
    APIExportReferenceController,
    reference_ccr_name,
)
from ._ccr_controller import CCR_RESOURCE, CachedResourceController, CachedResourceStats
from ._ccr_model import (
    CCR_FINALIZER,
    KIND_ANNOTATION,
    OWNER_ANNOTATION,
    SCOPE_ANNOTATION,
    Selection,
    converge,
    identity_hash,
)
from ._ccr_permission import (
    REQUESTED_BY_ANNOTATION,
    REQUESTED_BY_GROUPS_ANNOTATION,
    PermissionVerdict,
    check_replicate_permission,
)
from ._clients import cache_client, local_client
from ._export import Exporter
from ._export_guard import DEFAULT_DELETE_GUARD, ConvergedCheck, DeleteGuard
from ._health import HealthServer
from ._lease import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_INTERVAL,
    SHARD_LEASES,
    ShardLeaseRenewer,
    sync_markers,
)
from ._metrics import ReaderMetrics, ReplicationMetrics
from ._mirror import Mirror, MirrorSink
from ._mirror_auto import AutoMirror
from ._mirror_watch import WatchMirror
from ._queue_key import QueueKey, parse_queue_key, queue_key
from ._read import CacheReader, FallbackLister, ReaderHealth
from ._reconcile import (
    ORIGINAL_RESOURCE_UID_ANNOTATION,
    ORIGINAL_RESOURCE_VERSION_ANNOTATION,
    REPLICATION_ANNOTATIONS,
    Action,
    CreateInCache,
    DeleteFromCache,
    NoAction,
    RecreateInCache,
    UpdateInCache,
    UpdateLocal,
    comparable_metadata,
    reconcile,
)
from ._reset import DEFAULT_RESET_CHECK_PERIOD, ResetDetector
from ._resources import (
    DEFAULT_RESOURCES,
    MUTATING_ADMISSION_POLICY_RESOURCES,
    REPLICATE_ANNOTATION,
    REPLICATED_SYSTEM_CLUSTERS,
    UNSCHEDULABLE_ANNOTATION,
    ReplicatedResource,
    has_replicate_annotation,
    parse_resources,
    replicates_cluster,
)
from ._write import DEFAULT_RESYNC_PERIOD, WriteController

__all__ = [
    "APIEXPORT_REFERENCE_MANAGER",
    "CCR_FINALIZER",
    "CCR_RESOURCE",
    "DEFAULT_DELETE_GUARD",
    "DEFAULT_LEASE_DURATION",
    "DEFAULT_RENEW_INTERVAL",
    "DEFAULT_RESET_CHECK_PERIOD",
    "DEFAULT_RESOURCES",
    "DEFAULT_RESYNC_PERIOD",
    "KIND_ANNOTATION",
    "MUTATING_ADMISSION_POLICY_RESOURCES",
    "ORIGINAL_RESOURCE_UID_ANNOTATION",
    "ORIGINAL_RESOURCE_VERSION_ANNOTATION",
    "OWNER_ANNOTATION",
    "REFERENCED_BY_ANNOTATION",
    "REFERENCED_KIND_ANNOTATION",
    "REPLICATED_SYSTEM_CLUSTERS",
    "REPLICATE_ANNOTATION",
    "REPLICATION_ANNOTATIONS",
    "REQUESTED_BY_ANNOTATION",
    "REQUESTED_BY_GROUPS_ANNOTATION",
    "SCOPE_ANNOTATION",
    "SHARD_LEASES",
    "UNSCHEDULABLE_ANNOTATION",
    "APIExportReferenceController",
    "Action",
    "AutoMirror",
    "CacheReader",
    "CachedResourceController",
    "CachedResourceStats",
    "ConvergedCheck",
    "CopyCreate",
    "CopyDelete",
    "CopyUpdate",
    "CreateInCache",
    "DeleteFromCache",
    "DeleteGuard",
    "Exporter",
    "FallbackLister",
    "HealthServer",
    "Mirror",
    "MirrorSink",
    "NoAction",
    "PermissionVerdict",
    "QueueKey",
    "ReaderHealth",
    "ReaderMetrics",
    "RecreateInCache",
    "ReplicatedResource",
    "ReplicationMetrics",
    "ResetDetector",
    "Selection",
    "ShardLeaseRenewer",
    "UpdateInCache",
    "UpdateLocal",
    "WatchMirror",
    "WriteController",
    "cache_client",
    "check_replicate_permission",
    "comparable_metadata",
    "converge",
    "copy_body",
    "has_replicate_annotation",
    "identity_hash",
    "local_client",
    "parse_queue_key",
    "parse_resources",
    "queue_key",
    "reconcile",
    "reference_ccr_name",
    "replicates_cluster",
    "secret_key",
    "sync_markers",
]
