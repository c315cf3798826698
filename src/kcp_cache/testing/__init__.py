"""Test helpers for code built on kcp-cache — part of the package's public interface.

Everything here runs the real thing: the ``kcp-cache-server`` binary as a child process
with real TLS (:func:`start_cache_server`, :class:`CacheServer`), a client CA that issues
certificates for any user and groups (:class:`TestCA`), real etcd members
(:func:`running_etcd`, :class:`EtcdCluster`), and an ASGI app called in-process without
sockets (:class:`ASGIClient`, which streams, so it can drive a watch). This project's own
tests, benchmarks and examples use exactly these; nothing else in the package imports
this module.

General layout: ``_server`` runs the binary, ``_etcd`` runs etcd, ``_asgi`` calls an
ASGI app.
"""

from kcp_cache.testing._asgi import ASGIClient as ASGIClient
from kcp_cache.testing._asgi import ASGIResponse as ASGIResponse
from kcp_cache.testing._asgi import ASGIStream as ASGIStream
from kcp_cache.testing._asgi import HeaderList as HeaderList
from kcp_cache.testing._asgi import http_scope as http_scope
from kcp_cache.testing._etcd import EtcdCluster as EtcdCluster
from kcp_cache.testing._etcd import EtcdMember as EtcdMember
from kcp_cache.testing._etcd import EtcdTLS as EtcdTLS
from kcp_cache.testing._etcd import etcd_binary as etcd_binary
from kcp_cache.testing._etcd import running_etcd as running_etcd
from kcp_cache.testing._server import ADMIN as ADMIN
from kcp_cache.testing._server import CacheServer as CacheServer
from kcp_cache.testing._server import ClientCert as ClientCert
from kcp_cache.testing._server import ServerStartError as ServerStartError
from kcp_cache.testing._server import TestCA as TestCA
from kcp_cache.testing._server import running_cache_server as running_cache_server
from kcp_cache.testing._server import start_cache_server as start_cache_server

__all__ = [
    "ADMIN",
    "ASGIClient",
    "ASGIResponse",
    "ASGIStream",
    "CacheServer",
    "ClientCert",
    "EtcdCluster",
    "EtcdMember",
    "EtcdTLS",
    "HeaderList",
    "ServerStartError",
    "TestCA",
    "etcd_binary",
    "http_scope",
    "running_cache_server",
    "running_etcd",
    "start_cache_server",
]
