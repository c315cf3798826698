"""The HTTP handlers of resource paths (get, list, watch, create, update, patch, delete).

:func:`create_api_app` builds an ASGI app that runs behind the filters, which
record shard, cluster, identity and user in ``scope["kcp"]`` and cut the path down to
``/apis/<g>/<v>/…``.
"""

from kcp_cache.server.api._app import ApiApp as ApiApp
from kcp_cache.server.api._app import create_api_app as create_api_app
from kcp_cache.server.api._body import MAX_BODY_BYTES as MAX_BODY_BYTES
from kcp_cache.server.api._encoding import (
    DEFAULT_COMPRESSION_THRESHOLD as DEFAULT_COMPRESSION_THRESHOLD,
)
from kcp_cache.server.api._encoding import Compression as Compression
from kcp_cache.server.api._request import ApiMetrics as ApiMetrics

__all__ = [
    "DEFAULT_COMPRESSION_THRESHOLD",
    "MAX_BODY_BYTES",
    "ApiApp",
    "ApiMetrics",
    "Compression",
    "create_api_app",
]
