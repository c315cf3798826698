"""What a response may be turned into: ``Accept`` negotiation, Table, PartialObjectMetadata.

kube-apiserver's ``handlers/negotiation`` and ``registry/rest/table.go``, for both the API
handlers and discovery (which sits beside them and negotiates its own documents):

* :func:`negotiate` / :func:`parse_accept` pick the shape an ``Accept`` header asks for
  among a handler's offers (:data:`OBJECT_TRANSFORMS`, :data:`LIST_TRANSFORMS`);
* :func:`transform` applies it — a ``meta.k8s.io`` Table (:func:`to_table`, with the
  printer columns a :class:`~kcp_cache.registry.ResourceInfo` holds, via
  :func:`table_columns_for`, and JSONPath cells) or a
  PartialObjectMetadata(List).
"""

from kcp_cache.server.transforms._accept import DISCOVERY_GROUP as DISCOVERY_GROUP
from kcp_cache.server.transforms._accept import MediaRange as MediaRange
from kcp_cache.server.transforms._accept import Negotiated as Negotiated
from kcp_cache.server.transforms._accept import negotiate as negotiate
from kcp_cache.server.transforms._accept import parse_accept as parse_accept
from kcp_cache.server.transforms._jsonpath import JSONPath as JSONPath
from kcp_cache.server.transforms._jsonpath import compile_path as compile_path
from kcp_cache.server.transforms._partial import list_meta as list_meta
from kcp_cache.server.transforms._partial import (
    partial_object_metadata_list as partial_object_metadata_list,
)
from kcp_cache.server.transforms._table import IncludeObject as IncludeObject
from kcp_cache.server.transforms._table import TableColumns as TableColumns
from kcp_cache.server.transforms._table import format_age as format_age
from kcp_cache.server.transforms._table import to_table as to_table
from kcp_cache.server.transforms._transforms import LIST_TRANSFORMS as LIST_TRANSFORMS
from kcp_cache.server.transforms._transforms import OBJECT_TRANSFORMS as OBJECT_TRANSFORMS
from kcp_cache.server.transforms._transforms import table_columns_for as table_columns_for
from kcp_cache.server.transforms._transforms import transform as transform

__all__ = [
    "DISCOVERY_GROUP",
    "LIST_TRANSFORMS",
    "OBJECT_TRANSFORMS",
    "IncludeObject",
    "JSONPath",
    "MediaRange",
    "Negotiated",
    "TableColumns",
    "compile_path",
    "format_age",
    "list_meta",
    "negotiate",
    "parse_accept",
    "partial_object_metadata_list",
    "table_columns_for",
    "to_table",
    "transform",
]
