"""The shard-aware client of the kcp cache server (and of kcp shards and Kubernetes).

It talks HTTP only (through ``httpx2``) and never imports the server side. The pieces:

* **Shard context** — :func:`shard` / :func:`shard_from_context` on a context variable;
  the ``kcp_shard`` request extension overrides it for one request.
* **Transports** — kcp's round-trippers as composable ``httpx2`` transports, sync and
  async: :class:`ShardTransport`, :class:`DefaultShardTransport`,
  :class:`CacheServiceTransport`, :class:`ShardFromObjectTransport`; the standard stack via
  :func:`cache_transport` or, from a kubeconfig, :func:`cache_client_from_kubeconfig`.
* **REST** — :class:`AsyncRESTClient` / :class:`RESTClient` for any resource, with typed
  errors (:class:`NotFound`, :class:`Conflict`, :class:`Expired`, …); the HTTP library's
  :class:`AsyncClient` / :class:`Client` and :class:`TransportError` (no answer at all)
  are re-exported, so code built on this package need not import the library.
* **Informers** — :class:`SharedInformer`, :class:`SharedInformerFactory`, :class:`Store`
  with indexers, :class:`Lister`.
* **Work queues** — :class:`WorkQueue` / :class:`RateLimitingQueue` with client-go's
  guarantees, and the rate limiters.

See ``docs/client.md`` for a guide.
"""

from kcp_cache.client._http import Request as Request
from kcp_cache.client._paths import split_base as split_base

# Underscore names below are internals re-exported for the white-box tests, not in __all__.
from kcp_cache.client._transports import _CacheService as _CacheService
from kcp_cache.client._transports import _plain_segment as _plain_segment
from kcp_cache.client._transports import _ShardPath as _ShardPath
from kcp_cache.meta import CACHE_SERVICE_PREFIX, CLUSTER_ANNOTATION, SHARD_ANNOTATION, WILDCARD

from ._aio import StartStop, cancel_and_wait, wait_all_synced, wait_or_timeout
from ._context import (
    SHARD_EXTENSION,
    shard,
    shard_from_context,
    shard_of_request,
    shard_path,
    validate_shard_name,
)
from ._errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    ResourceVersionTooLarge,
    ServerError,
    ServerTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from ._factory import SharedInformerFactory
from ._http import (
    AsyncBaseTransport,
    AsyncClient,
    AsyncHTTPTransport,
    Client,
    Response,
    Timeout,
    TransportError,
)
from ._informer import DEFAULT_INDEXERS, HandlerRegistration, SharedInformer
from ._kubeconfig import (
    KubeConfig,
    ServerAddress,
    async_cache_client_from_kubeconfig,
    async_cache_transport,
    async_client_from_kubeconfig,
    cache_client_from_kubeconfig,
    cache_transport,
    client_from_kubeconfig,
    load_kubeconfig,
)
from ._lister import ClusterLister, Lister
from ._paths import add_cache_service_prefix, generate_path
from ._ratelimit import (
    Backoff,
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from ._reflector import ListWatchOptions, Reflector, WatchInactive
from ._resource import Resource, resource_path
from ._rest import (
    DEFAULT_REQUEST_TIMEOUT,
    AsyncRESTClient,
    AsyncWatchStream,
    ObjectList,
    PatchType,
    RESTClient,
    WatchEvent,
    WatchStream,
)
from ._store import (
    INDEX_CLUSTER,
    INDEX_CLUSTER_NAME,
    INDEX_NAMESPACE,
    INDEX_SHARD_CLUSTER_NAME,
    IndexFunc,
    KeyFunc,
    Store,
    cluster_index,
    cluster_name_index,
    cluster_of,
    namespace_index,
    object_key,
    shard_cluster_name_index,
    shard_of,
)
from ._transports import (
    AsyncCacheServiceTransport,
    AsyncDefaultShardTransport,
    AsyncShardFromObjectTransport,
    AsyncShardTransport,
    CacheServiceTransport,
    DefaultShardTransport,
    ResourceResolver,
    ShardFromObjectTransport,
    ShardTransport,
    resolve_resource_and_verb,
)
from ._workqueue import RateLimitingQueue, ShutDown, WorkQueue

__all__ = [
    "CACHE_SERVICE_PREFIX",
    "CLUSTER_ANNOTATION",
    "DEFAULT_INDEXERS",
    "DEFAULT_REQUEST_TIMEOUT",
    "INDEX_CLUSTER",
    "INDEX_CLUSTER_NAME",
    "INDEX_NAMESPACE",
    "INDEX_SHARD_CLUSTER_NAME",
    "SHARD_ANNOTATION",
    "SHARD_EXTENSION",
    "WILDCARD",
    "AlreadyExists",
    "ApiError",
    "AsyncBaseTransport",
    "AsyncCacheServiceTransport",
    "AsyncClient",
    "AsyncDefaultShardTransport",
    "AsyncHTTPTransport",
    "AsyncRESTClient",
    "AsyncShardFromObjectTransport",
    "AsyncShardTransport",
    "AsyncWatchStream",
    "Backoff",
    "BadRequest",
    "BucketRateLimiter",
    "CacheServiceTransport",
    "Client",
    "ClusterLister",
    "Conflict",
    "DefaultShardTransport",
    "Expired",
    "Forbidden",
    "Gone",
    "HandlerRegistration",
    "IndexFunc",
    "Invalid",
    "ItemExponentialFailureRateLimiter",
    "KeyFunc",
    "KubeConfig",
    "ListWatchOptions",
    "Lister",
    "MaxOfRateLimiter",
    "MethodNotAllowed",
    "NotFound",
    "ObjectList",
    "PatchType",
    "RESTClient",
    "RateLimiter",
    "RateLimitingQueue",
    "Reflector",
    "Request",
    "Resource",
    "ResourceResolver",
    "ResourceVersionTooLarge",
    "Response",
    "ServerAddress",
    "ServerError",
    "ServerTimeout",
    "ServiceUnavailable",
    "ShardFromObjectTransport",
    "ShardTransport",
    "SharedInformer",
    "SharedInformerFactory",
    "ShutDown",
    "StartStop",
    "Store",
    "Timeout",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "WatchEvent",
    "WatchInactive",
    "WatchStream",
    "WorkQueue",
    "add_cache_service_prefix",
    "async_cache_client_from_kubeconfig",
    "async_cache_transport",
    "async_client_from_kubeconfig",
    "cache_client_from_kubeconfig",
    "cache_transport",
    "cancel_and_wait",
    "client_from_kubeconfig",
    "cluster_index",
    "cluster_name_index",
    "cluster_of",
    "default_controller_rate_limiter",
    "generate_path",
    "load_kubeconfig",
    "namespace_index",
    "object_key",
    "resolve_resource_and_verb",
    "resource_path",
    "shard",
    "shard_cluster_name_index",
    "shard_from_context",
    "shard_of",
    "shard_of_request",
    "shard_path",
    "split_base",
    "validate_shard_name",
    "wait_all_synced",
    "wait_or_timeout",
]
