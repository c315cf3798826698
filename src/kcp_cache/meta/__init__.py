"""The wire facts the server and the client share (``k8s.io/apimachinery``'s role).

Strings, tables and formats both stacks must agree on live here and nowhere else: the
kcp names (:data:`WILDCARD`, :data:`SHARD_ANNOTATION`, :data:`CLUSTER_ANNOTATION`,
:data:`SYSTEM_MASTERS`, :data:`CACHE_SERVICE_PREFIX`, :data:`DEFAULT_SERVING_HOSTS`), the
cache hierarchy's (:data:`FEED_PATH`, :data:`STORE_HEADER`, :data:`CACHE_OWNED_SHARD`),
the shard lifecycle's group, resources and bookmark annotation, kube's version priority,
the health-check text and the PartialObjectMetadata shape. This package sits below every
other one and imports nothing of ours (an import-linter contract keeps it so).
"""

from kcp_cache.meta._cache_policy import PolicyError as PolicyError
from kcp_cache.meta._cache_policy import ResourcePolicy as ResourcePolicy
from kcp_cache.meta._cache_policy import policy_from_flags as policy_from_flags
from kcp_cache.meta._health import check_line as check_line
from kcp_cache.meta._health import excluded_line as excluded_line
from kcp_cache.meta._health import health_report as health_report
from kcp_cache.meta._hierarchy import CACHE_OWNED_CLUSTER as CACHE_OWNED_CLUSTER
from kcp_cache.meta._hierarchy import CACHE_OWNED_SHARD as CACHE_OWNED_SHARD
from kcp_cache.meta._hierarchy import FEED_PATH as FEED_PATH
from kcp_cache.meta._hierarchy import STORE_HEADER as STORE_HEADER
from kcp_cache.meta._lifecycle import CACHE_SHARDS as CACHE_SHARDS
from kcp_cache.meta._lifecycle import LIFECYCLE_GROUP as LIFECYCLE_GROUP
from kcp_cache.meta._lifecycle import LIFECYCLE_VERSION as LIFECYCLE_VERSION
from kcp_cache.meta._lifecycle import SHARD_LEASES as SHARD_LEASES
from kcp_cache.meta._lifecycle import SHARD_TOMBSTONES as SHARD_TOMBSTONES
from kcp_cache.meta._lifecycle import WATERMARKS_ANNOTATION as WATERMARKS_ANNOTATION
from kcp_cache.meta._names import CACHE_SERVICE_PREFIX as CACHE_SERVICE_PREFIX
from kcp_cache.meta._names import CLUSTER_ANNOTATION as CLUSTER_ANNOTATION
from kcp_cache.meta._names import DEFAULT_SERVING_HOSTS as DEFAULT_SERVING_HOSTS
from kcp_cache.meta._names import SHARD_ANNOTATION as SHARD_ANNOTATION
from kcp_cache.meta._names import SYSTEM_MASTERS as SYSTEM_MASTERS
from kcp_cache.meta._names import WILDCARD as WILDCARD
from kcp_cache.meta._partial import META_GROUP as META_GROUP
from kcp_cache.meta._partial import PARTIAL_API_VERSION as PARTIAL_API_VERSION
from kcp_cache.meta._partial import partial_object_metadata as partial_object_metadata
from kcp_cache.meta._versions import sort_versions as sort_versions
from kcp_cache.meta._versions import version_priority_key as version_priority_key

__all__ = [
    "CACHE_OWNED_CLUSTER",
    "CACHE_OWNED_SHARD",
    "CACHE_SERVICE_PREFIX",
    "CACHE_SHARDS",
    "CLUSTER_ANNOTATION",
    "DEFAULT_SERVING_HOSTS",
    "FEED_PATH",
    "LIFECYCLE_GROUP",
    "LIFECYCLE_VERSION",
    "META_GROUP",
    "PARTIAL_API_VERSION",
    "SHARD_ANNOTATION",
    "SHARD_LEASES",
    "SHARD_TOMBSTONES",
    "STORE_HEADER",
    "SYSTEM_MASTERS",
    "WATERMARKS_ANNOTATION",
    "WILDCARD",
    "PolicyError",
    "ResourcePolicy",
    "check_line",
    "excluded_line",
    "health_report",
    "partial_object_metadata",
    "policy_from_flags",
    "sort_versions",
    "version_priority_key",
]
