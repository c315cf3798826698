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
from kcp_cache.server.api._encoding import BrokenStream as BrokenStream
from kcp_cache.server.api._encoding import Compression as Compression
from kcp_cache.server.api._encoding import accepts_gzip as accepts_gzip
from kcp_cache.server.api._encoding import json_to_yaml as json_to_yaml
from kcp_cache.server.api._encoding import send_body as send_body
from kcp_cache.server.api._encoding import send_chunks as send_chunks
from kcp_cache.server.api._request import ApiMetrics as ApiMetrics

# Re-exported for the white-box tests only (not in __all__).
from kcp_cache.server.api._watch import _WatchStream as _WatchStream

__all__ = [
    "DEFAULT_COMPRESSION_THRESHOLD",
    "MAX_BODY_BYTES",
    "ApiApp",
    "ApiMetrics",
    "BrokenStream",
    "Compression",
    "accepts_gzip",
    "create_api_app",
    "json_to_yaml",
    "send_body",
    "send_chunks",
]
