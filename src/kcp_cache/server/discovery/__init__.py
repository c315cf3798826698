"""Discovery and OpenAPI for the cache server.

What real clients read besides CRUD: the discovery documents kubectl and the Python
``DynamicClient`` read (legacy and aggregated ``apidiscovery.k8s.io/v2``) and the OpenAPI
documents kubectl's validation and ``apply`` consult. The builders are pure functions of
the served resources, the registry's :class:`~kcp_cache.registry.ResourceInfo` (one model
of a CRD for discovery, OpenAPI and Table); :func:`create_discovery_app` wraps them in an
ASGI app over a provider of them (the catalog's ``discovery_resources``). (The response transforms —
Table, PartialObjectMetadata, ``Accept`` negotiation — are :mod:`kcp_cache.server.transforms`.)

Routing: mount :func:`create_discovery_app` behind the shard/cluster filters and send
it every path for which :func:`is_discovery_path` is true — :func:`route_discovery`
does exactly that in front of the API app. Resource paths (``/apis/{g}/{v}/{resource}…``)
go to the API handlers.
"""

from kcp_cache.server.discovery._openapi_pb import openapi_v2_protobuf as openapi_v2_protobuf

from ._app import (
    CatalogProvider,
    DiscoveryApp,
    create_discovery_app,
    is_discovery_path,
    route_discovery,
)
from ._documents import (
    KUBE_VERSION,
    aggregated_discovery,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
    version_info,
)
from ._openapi import (
    DEFAULT_PATCH_TYPES,
    openapi_v2,
    openapi_v3_document,
    openapi_v3_index,
    schema_name,
)
from ._resources import RESOURCE_VERBS, storage_version_hash

__all__ = [
    "DEFAULT_PATCH_TYPES",
    "KUBE_VERSION",
    "RESOURCE_VERBS",
    "CatalogProvider",
    "DiscoveryApp",
    "aggregated_discovery",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "create_discovery_app",
    "is_discovery_path",
    "openapi_v2",
    "openapi_v2_protobuf",
    "openapi_v3_document",
    "openapi_v3_index",
    "route_discovery",
    "schema_name",
    "storage_version_hash",
    "version_info",
]
