"""Kubernetes semantics of the cache server: resources, keys, kcp strategies, watch fan-out.

The registry knows Kubernetes objects, not HTTP. Entry points:

* :class:`ResourceCatalog` — the served resources (the bootstrapped CRDs of spec §4 and the two
  kcp added since, kept as data files, plus ``apiextensions.k8s.io/v1 customresourcedefinitions``).
* :class:`Registry` — get/list/create/update/patch/delete/deletecollection/watch on a
  :class:`~kcp_cache.storage.Storage`, returning encoded bytes and raising
  :class:`ApiError` (a ``metav1.Status`` in waiting).
* :class:`Bootstrapper` — writes the CRD objects at start-up and exposes ``ready``.
"""

from kcp_cache.registry._admission import AnnotationOnlyChange as AnnotationOnlyChange
from kcp_cache.registry._admission import NameCheck as NameCheck
from kcp_cache.registry._admission import OriginCheck as OriginCheck
from kcp_cache.registry._admission import WriteAdmission as WriteAdmission
from kcp_cache.registry._admission import admission_chain as admission_chain
from kcp_cache.registry._apply import apply_configuration as apply_configuration
from kcp_cache.registry._apply import field_set as field_set
from kcp_cache.registry._apply import fields_v1 as fields_v1
from kcp_cache.registry._apply import parse_fields_v1 as parse_fields_v1
from kcp_cache.registry._bootstrap import SYSTEM_CRDS_CLUSTER as SYSTEM_CRDS_CLUSTER
from kcp_cache.registry._bootstrap import SYSTEM_SHARD as SYSTEM_SHARD
from kcp_cache.registry._bootstrap import Bootstrapper as Bootstrapper
from kcp_cache.registry._catalog import CRD_GROUP as CRD_GROUP
from kcp_cache.registry._catalog import CRD_RESOURCE as CRD_RESOURCE
from kcp_cache.registry._catalog import CRD_RESOURCE_INFO as CRD_RESOURCE_INFO
from kcp_cache.registry._catalog import ResourceCatalog as ResourceCatalog
from kcp_cache.registry._catalog import ResourceInfo as ResourceInfo
from kcp_cache.registry._catalog import ServedVersion as ServedVersion
from kcp_cache.registry._catalog import group_versions as group_versions
from kcp_cache.registry._catalog import load_bootstrap_crds as load_bootstrap_crds
from kcp_cache.registry._columns import CRD_COLUMNS as CRD_COLUMNS
from kcp_cache.registry._columns import DEFAULT_COLUMNS as DEFAULT_COLUMNS
from kcp_cache.registry._columns import PrinterColumn as PrinterColumn
from kcp_cache.registry._continue import decode_continue as decode_continue
from kcp_cache.registry._continue import encode_continue as encode_continue
from kcp_cache.registry._dryrun import DRY_RUN_ALL as DRY_RUN_ALL
from kcp_cache.registry._dryrun import DryRunWrites as DryRunWrites
from kcp_cache.registry._dryrun import parse_dry_run as parse_dry_run
from kcp_cache.registry._errors import ApiError as ApiError
from kcp_cache.registry._feed import DEFAULT_PROGRESS_INTERVAL as DEFAULT_PROGRESS_INTERVAL
from kcp_cache.registry._feed import FeedEvent as FeedEvent
from kcp_cache.registry._feed import FeedFilter as FeedFilter
from kcp_cache.registry._feed import FeedSource as FeedSource
from kcp_cache.registry._freshness import FreshnessState as FreshnessState
from kcp_cache.registry._freshness import ShardFreshness as ShardFreshness
from kcp_cache.registry._freshness import freshness_report as freshness_report
from kcp_cache.registry._freshness import marker_converged as marker_converged
from kcp_cache.registry._goparse import GoNumberError as GoNumberError
from kcp_cache.registry._goparse import go_quote as go_quote
from kcp_cache.registry._goparse import parse_duration_seconds as parse_duration_seconds
from kcp_cache.registry._goparse import parse_int64 as parse_int64
from kcp_cache.registry._goparse import parse_query_bool as parse_query_bool
from kcp_cache.registry._home import LOCAL_ONLY as LOCAL_ONLY
from kcp_cache.registry._home import HomeMap as HomeMap
from kcp_cache.registry._issuer import RevisionIssuer as RevisionIssuer
from kcp_cache.registry._keys import KeyParts as KeyParts
from kcp_cache.registry._keys import KeyScheme as KeyScheme
from kcp_cache.registry._keys import ListScope as ListScope

# Underscore names below are internals re-exported for the white-box tests, not in __all__.
from kcp_cache.registry._labels import _VALID_ANNOTATION_KEY as _VALID_ANNOTATION_KEY
from kcp_cache.registry._labels import _VALID_KEY as _VALID_KEY
from kcp_cache.registry._labels import _VALID_VALUE as _VALID_VALUE
from kcp_cache.registry._labels import _fast_valid as _fast_valid
from kcp_cache.registry._labels import _key_errors as _key_errors
from kcp_cache.registry._labels import _value_errors as _value_errors
from kcp_cache.registry._labels import (
    validate_labels_and_annotations as validate_labels_and_annotations,
)
from kcp_cache.registry._lifecycle import LifecycleOptions as LifecycleOptions
from kcp_cache.registry._lifecycle import ShardLifecycle as ShardLifecycle
from kcp_cache.registry._lifecycle_names import CACHE_SHARDS as CACHE_SHARDS
from kcp_cache.registry._lifecycle_names import LIFECYCLE_GROUP as LIFECYCLE_GROUP
from kcp_cache.registry._lifecycle_names import LIFECYCLE_VERSION as LIFECYCLE_VERSION
from kcp_cache.registry._lifecycle_names import PHASES as PHASES
from kcp_cache.registry._lifecycle_names import SHARD_LEASES as SHARD_LEASES
from kcp_cache.registry._lifecycle_names import SHARD_TOMBSTONES as SHARD_TOMBSTONES
from kcp_cache.registry._lifecycle_names import SYSTEM_CACHE_CLUSTER as SYSTEM_CACHE_CLUSTER
from kcp_cache.registry._lifecycle_names import Phase as Phase
from kcp_cache.registry._mirror_store import MirrorStore as MirrorStore
from kcp_cache.registry._nesting import MAX_NESTING as MAX_NESTING
from kcp_cache.registry._nesting import check_nesting as check_nesting
from kcp_cache.registry._options import ListOptions as ListOptions
from kcp_cache.registry._options import Target as Target
from kcp_cache.registry._options import check_resource_version as check_resource_version
from kcp_cache.registry._own_cache import OwnCache as OwnCache
from kcp_cache.registry._patch import PatchError as PatchError
from kcp_cache.registry._patch import apply_json_patch as apply_json_patch
from kcp_cache.registry._patch import apply_merge_patch as apply_merge_patch
from kcp_cache.registry._registry import APPLY_PATCH as APPLY_PATCH
from kcp_cache.registry._registry import JSON_PATCH as JSON_PATCH
from kcp_cache.registry._registry import MERGE_PATCH as MERGE_PATCH
from kcp_cache.registry._registry import ListResponse as ListResponse
from kcp_cache.registry._registry import Registry as Registry
from kcp_cache.registry._registry import WatchSession as WatchSession
from kcp_cache.registry._render import decorate as decorate
from kcp_cache.registry._render import encode_object as encode_object
from kcp_cache.registry._render import splicer as splicer
from kcp_cache.registry._runtime_crds import RuntimeCRDWatcher as RuntimeCRDWatcher
from kcp_cache.registry._selectors import FieldSelector as FieldSelector
from kcp_cache.registry._selectors import LabelSelector as LabelSelector
from kcp_cache.registry._selectors import SelectorError as SelectorError
from kcp_cache.registry._selectors import parse_field_selector as parse_field_selector
from kcp_cache.registry._selectors import parse_label_selector as parse_label_selector
from kcp_cache.registry._strategy import new_uid as new_uid
from kcp_cache.registry._strategy import now_timestamp as now_timestamp
from kcp_cache.registry._strategy import prepare_create as prepare_create
from kcp_cache.registry._strategy import validate_name as validate_name
from kcp_cache.registry._watchcache import CHUNK_BYTES as CHUNK_BYTES
from kcp_cache.registry._watchcache import REPLAY_WINDOW as REPLAY_WINDOW
from kcp_cache.registry._watchcache import WatchCache as WatchCache
from kcp_cache.registry._watchcache import Watcher as Watcher
from kcp_cache.registry._watchcache import error_line as error_line

__all__ = [
    "APPLY_PATCH",
    "CACHE_SHARDS",
    "CHUNK_BYTES",
    "CRD_COLUMNS",
    "CRD_GROUP",
    "CRD_RESOURCE",
    "CRD_RESOURCE_INFO",
    "DEFAULT_COLUMNS",
    "DEFAULT_PROGRESS_INTERVAL",
    "DRY_RUN_ALL",
    "JSON_PATCH",
    "LIFECYCLE_GROUP",
    "LIFECYCLE_VERSION",
    "LOCAL_ONLY",
    "MAX_NESTING",
    "MERGE_PATCH",
    "PHASES",
    "REPLAY_WINDOW",
    "SHARD_LEASES",
    "SHARD_TOMBSTONES",
    "SYSTEM_CACHE_CLUSTER",
    "SYSTEM_CRDS_CLUSTER",
    "SYSTEM_SHARD",
    "AnnotationOnlyChange",
    "ApiError",
    "Bootstrapper",
    "DryRunWrites",
    "FeedEvent",
    "FeedFilter",
    "FeedSource",
    "FieldSelector",
    "FreshnessState",
    "GoNumberError",
    "HomeMap",
    "KeyParts",
    "KeyScheme",
    "LabelSelector",
    "LifecycleOptions",
    "ListOptions",
    "ListResponse",
    "ListScope",
    "MirrorStore",
    "NameCheck",
    "OriginCheck",
    "OwnCache",
    "PatchError",
    "Phase",
    "PrinterColumn",
    "Registry",
    "ResourceCatalog",
    "ResourceInfo",
    "RevisionIssuer",
    "RuntimeCRDWatcher",
    "SelectorError",
    "ServedVersion",
    "ShardFreshness",
    "ShardLifecycle",
    "Target",
    "WatchCache",
    "WatchSession",
    "Watcher",
    "WriteAdmission",
    "admission_chain",
    "apply_configuration",
    "apply_json_patch",
    "apply_merge_patch",
    "check_nesting",
    "check_resource_version",
    "decode_continue",
    "decorate",
    "encode_continue",
    "encode_object",
    "error_line",
    "field_set",
    "fields_v1",
    "freshness_report",
    "go_quote",
    "group_versions",
    "load_bootstrap_crds",
    "marker_converged",
    "new_uid",
    "now_timestamp",
    "parse_dry_run",
    "parse_duration_seconds",
    "parse_field_selector",
    "parse_fields_v1",
    "parse_int64",
    "parse_label_selector",
    "parse_query_bool",
    "prepare_create",
    "splicer",
    "validate_labels_and_annotations",
    "validate_name",
]
