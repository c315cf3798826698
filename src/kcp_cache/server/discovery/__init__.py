"""Discovery, OpenAPI, Table and PartialObjectMetadata for the cache server.

Everything real clients need besides CRUD: the discovery documents kubectl and the
Python ``DynamicClient`` read (legacy and aggregated ``apidiscovery.k8s.io/v2``), the
OpenAPI documents kubectl's validation and ``apply`` consult, and the response transforms
``kubectl get`` (``Table``) and kcp's metadata informers (``PartialObjectMetadata``)
ask for. The builders are pure functions of plain ``apiextensions.k8s.io/v1``
CustomResourceDefinition dicts; :func:`create_discovery_app` wraps them in an ASGI app.

Routing: mount :func:`create_discovery_app` behind the shard/cluster filters and send
it every path for which :func:`is_discovery_path` is true — :func:`route_discovery`
does exactly that in front of the API app. Resource paths (``/apis/{g}/{v}/{resource}…``)
go to the API handlers, which use :func:`negotiate` with :data:`LIST_TRANSFORMS` /
:data:`OBJECT_TRANSFORMS` and :func:`transform` (Table, PartialObjectMetadata(List)).
"""

from kcp_cache.meta import partial_object_metadata

from ._accept import MediaRange, Negotiated, negotiate, parse_accept
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
from ._jsonpath import JSONPath, compile_path
from ._openapi import (
    DEFAULT_PATCH_TYPES,
    openapi_v2,
    openapi_v3_document,
    openapi_v3_index,
    schema_name,
)
from ._partial import list_meta, partial_object_metadata_list
from ._resources import (
    CRD_KIND_RESOURCE,
    RESOURCE_VERBS,
    PrinterColumn,
    ServedResource,
    ServedVersion,
    group_versions,
    served_resources,
)
from ._table import (
    IncludeObject,
    TableColumns,
    format_age,
    to_table,
)
from ._transforms import LIST_TRANSFORMS, OBJECT_TRANSFORMS, table_columns_for, transform

__all__ = [
    "CRD_KIND_RESOURCE",
    "DEFAULT_PATCH_TYPES",
    "KUBE_VERSION",
    "LIST_TRANSFORMS",
    "OBJECT_TRANSFORMS",
    "RESOURCE_VERBS",
    "CatalogProvider",
    "DiscoveryApp",
    "IncludeObject",
    "JSONPath",
    "MediaRange",
    "Negotiated",
    "PrinterColumn",
    "ServedResource",
    "ServedVersion",
    "TableColumns",
    "aggregated_discovery",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "compile_path",
    "create_discovery_app",
    "format_age",
    "group_versions",
    "is_discovery_path",
    "list_meta",
    "negotiate",
    "openapi_v2",
    "openapi_v3_document",
    "openapi_v3_index",
    "parse_accept",
    "partial_object_metadata",
    "partial_object_metadata_list",
    "route_discovery",
    "schema_name",
    "served_resources",
    "table_columns_for",
    "to_table",
    "transform",
    "version_info",
]
