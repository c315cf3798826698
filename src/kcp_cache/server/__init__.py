"""The HTTP side of the cache server: TLS, kcp's URL grammar, authn/z, health, metrics.

* :func:`create_app` — the whole cache server as one ASGI app (kcp's filters in front of
  the registry, API, discovery, health and metrics; ASGI lifespan for bootstrap/shutdown).
  Mount it; :data:`Scope`, :data:`Receive`, :data:`Send`, :data:`ASGIApp` type a host.
* :class:`HTTPSServer` / :func:`bind_socket` — serve it over TLS with client certificates,
  under :class:`ConnectionLimits` (timeouts, header sizes, connection caps); one of a
  ``--workers`` group (:class:`SharedPort`) evens out the workers' connections with
  :class:`ConnectionBalancer`.
* :func:`build_server_context` — the pyOpenSSL context (``--tls-*``, ``--client-ca-file``).
* :mod:`certificates <kcp_cache.server._certs>` helpers — dev CA, serving and client certs.
* :class:`ServerMetrics`, :class:`ReadinessChecks` — pass them to share them with a host.

The API handlers live in :mod:`kcp_cache.server.api`.
"""

from kcp_cache.meta import SYSTEM_MASTERS as SYSTEM_MASTERS
from kcp_cache.meta import WILDCARD as WILDCARD
from kcp_cache.server._auth import DEFAULT_ALWAYS_ALLOW_PATHS as DEFAULT_ALWAYS_ALLOW_PATHS
from kcp_cache.server._auth import TLS_PEER_USER_KEY as TLS_PEER_USER_KEY
from kcp_cache.server._auth import Authenticator as Authenticator
from kcp_cache.server._auth import union_authenticator as union_authenticator
from kcp_cache.server._auth import x509_authenticator as x509_authenticator
from kcp_cache.server._authz import AUTHORIZATION_MODES as AUTHORIZATION_MODES
from kcp_cache.server._authz import (
    DEFAULT_SHARD_ANNOTATION_ALLOWLIST as DEFAULT_SHARD_ANNOTATION_ALLOWLIST,
)
from kcp_cache.server._authz import Decision as Decision
from kcp_cache.server._authz import KcpAuthorizer as Authorizer
from kcp_cache.server._authz import KcpAuthorizer as KcpAuthorizer
from kcp_cache.server._authz import RequestAuthorizer as RequestAuthorizer
from kcp_cache.server._authz import ScopedAuthorizer as ScopedAuthorizer
from kcp_cache.server._authz import authorizer_for_mode as authorizer_for_mode
from kcp_cache.server._balance import ConnectionBalancer as ConnectionBalancer
from kcp_cache.server._certs import CertificateFiles as CertificateFiles
from kcp_cache.server._certs import DevCredentials as DevCredentials
from kcp_cache.server._certs import ensure_dev_credentials as ensure_dev_credentials
from kcp_cache.server._certs import ensure_serving_certificate as ensure_serving_certificate
from kcp_cache.server._certs import issue_certificate as issue_certificate
from kcp_cache.server._certs import load_certificate as load_certificate
from kcp_cache.server._certs import load_private_key as load_private_key
from kcp_cache.server._certs import new_ca as new_ca
from kcp_cache.server._certs import write_kubeconfig as write_kubeconfig
from kcp_cache.server._certs import write_pair as write_pair
from kcp_cache.server._deadlines import Deadline as Deadline
from kcp_cache.server._deadlines import Deadlines as Deadlines
from kcp_cache.server._feed import FEED_PATH as FEED_PATH
from kcp_cache.server._feed import FeedEndpoint as FeedEndpoint
from kcp_cache.server._filters import CacheServerApp as CacheServerApp
from kcp_cache.server._filters import ShutdownHook as ShutdownHook
from kcp_cache.server._filters import StartupTask as StartupTask
from kcp_cache.server._grammar import check_cluster_invariant as check_cluster_invariant
from kcp_cache.server._grammar import is_partial_metadata_accept as is_partial_metadata_accept
from kcp_cache.server._grammar import is_shard_level_rejected as is_shard_level_rejected
from kcp_cache.server._grammar import parse_cluster as parse_cluster
from kcp_cache.server._grammar import parse_shard as parse_shard
from kcp_cache.server._grammar import split_identity as split_identity
from kcp_cache.server._grammar import strip_service_prefix as strip_service_prefix
from kcp_cache.server._h2 import H2Settings as H2Settings
from kcp_cache.server._h2 import response_headers as response_headers
from kcp_cache.server._h2_data import data_frame as data_frame

# Underscore names below are internals re-exported for the white-box tests, not in __all__.
from kcp_cache.server._health import ReadinessChecks as ReadinessChecks
from kcp_cache.server._health import ReadinessFlag as ReadinessFlag
from kcp_cache.server._heap import HeapTrimmer as HeapTrimmer
from kcp_cache.server._home_writes import HomeWrites as HomeWrites
from kcp_cache.server._http import _lighten as _lighten
from kcp_cache.server._http import _Pipeline as _Pipeline
from kcp_cache.server._inflight import (
    DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT as DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
)
from kcp_cache.server._inflight import (
    DEFAULT_MAX_REQUESTS_INFLIGHT as DEFAULT_MAX_REQUESTS_INFLIGHT,
)
from kcp_cache.server._limits import ConnectionLimits as ConnectionLimits
from kcp_cache.server._limits import ConnectionTracker as ConnectionTracker
from kcp_cache.server._limits import raise_descriptor_limit as raise_descriptor_limit
from kcp_cache.server._metrics import InstrumentedStorage as InstrumentedStorage
from kcp_cache.server._metrics import ServerMetrics as ServerMetrics
from kcp_cache.server._principals import READERS_GROUP as READERS_GROUP
from kcp_cache.server._principals import Principal as Principal
from kcp_cache.server._principals import Role as Role
from kcp_cache.server._principals import cache_user as cache_user
from kcp_cache.server._principals import principal_of as principal_of
from kcp_cache.server._principals import shard_user as shard_user
from kcp_cache.server._request_info import REQUEST_INFO_KEY as REQUEST_INFO_KEY
from kcp_cache.server._request_info import RequestInfo as RequestInfo
from kcp_cache.server._request_info import parse_request_info as parse_request_info
from kcp_cache.server._request_info import request_info as request_info
from kcp_cache.server._respond import send_bytes as send_bytes
from kcp_cache.server._respond import send_json as send_json
from kcp_cache.server._respond import send_status as send_status
from kcp_cache.server._scope import ANONYMOUS as ANONYMOUS
from kcp_cache.server._scope import KcpRequest as KcpRequest
from kcp_cache.server._scope import User as User
from kcp_cache.server._scope import kcp_request as kcp_request
from kcp_cache.server._stack import BOOTSTRAP_CHECK as BOOTSTRAP_CHECK
from kcp_cache.server._stack import DEFAULT_MIN_REQUEST_TIMEOUT as DEFAULT_MIN_REQUEST_TIMEOUT
from kcp_cache.server._stack import DEFAULT_WATCH_MAX_UNSENT_BYTES as DEFAULT_WATCH_MAX_UNSENT_BYTES
from kcp_cache.server._stack import create_app as create_app
from kcp_cache.server.tls import HTTPSServer as HTTPSServer
from kcp_cache.server.tls import SharedPort as SharedPort
from kcp_cache.server.tls import TLSConfigError as TLSConfigError
from kcp_cache.server.tls import bind_socket as bind_socket
from kcp_cache.server.tls import build_server_context as build_server_context
from kcp_cache.server.types import ASGIApp as ASGIApp
from kcp_cache.server.types import Receive as Receive
from kcp_cache.server.types import Scope as Scope
from kcp_cache.server.types import Send as Send

__all__ = [
    "ANONYMOUS",
    "AUTHORIZATION_MODES",
    "BOOTSTRAP_CHECK",
    "DEFAULT_ALWAYS_ALLOW_PATHS",
    "DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT",
    "DEFAULT_MAX_REQUESTS_INFLIGHT",
    "DEFAULT_MIN_REQUEST_TIMEOUT",
    "DEFAULT_SHARD_ANNOTATION_ALLOWLIST",
    "DEFAULT_WATCH_MAX_UNSENT_BYTES",
    "FEED_PATH",
    "READERS_GROUP",
    "REQUEST_INFO_KEY",
    "SYSTEM_MASTERS",
    "TLS_PEER_USER_KEY",
    "WILDCARD",
    "ASGIApp",
    "Authenticator",
    "Authorizer",
    "CacheServerApp",
    "CertificateFiles",
    "ConnectionBalancer",
    "ConnectionLimits",
    "ConnectionTracker",
    "Deadline",
    "Deadlines",
    "Decision",
    "DevCredentials",
    "FeedEndpoint",
    "H2Settings",
    "HTTPSServer",
    "HeapTrimmer",
    "HomeWrites",
    "InstrumentedStorage",
    "KcpAuthorizer",
    "KcpRequest",
    "Principal",
    "ReadinessChecks",
    "ReadinessFlag",
    "Receive",
    "RequestAuthorizer",
    "RequestInfo",
    "Role",
    "Scope",
    "ScopedAuthorizer",
    "Send",
    "ServerMetrics",
    "SharedPort",
    "ShutdownHook",
    "StartupTask",
    "TLSConfigError",
    "User",
    "authorizer_for_mode",
    "bind_socket",
    "build_server_context",
    "cache_user",
    "check_cluster_invariant",
    "create_app",
    "ensure_dev_credentials",
    "ensure_serving_certificate",
    "is_partial_metadata_accept",
    "is_shard_level_rejected",
    "issue_certificate",
    "kcp_request",
    "load_certificate",
    "load_private_key",
    "new_ca",
    "parse_cluster",
    "parse_request_info",
    "parse_shard",
    "principal_of",
    "raise_descriptor_limit",
    "request_info",
    "send_bytes",
    "send_json",
    "send_status",
    "shard_user",
    "split_identity",
    "strip_service_prefix",
    "union_authenticator",
    "write_kubeconfig",
    "write_pair",
    "x509_authenticator",
]
