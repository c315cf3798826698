"""TLS termination for the cache server, along its ideas (hypercorn's protocol/server cut).

* :mod:`._context` — the OpenSSL context from certificate files (:func:`build_server_context`).
* :mod:`._io` — sans-I/O TLS over memory BIOs (:class:`~._io.TLSIO`, the fast cffi variant).
* :mod:`._protocol` — the asyncio protocol that drives it under uvicorn's HTTP/1.1 and our
  HTTP/2 protocols, and the transport adapter they write to.
* :mod:`._serve` — :class:`HTTPSServer` and :func:`bind_socket`: uvicorn on that protocol
  (:class:`SharedPort`: one of a ``--workers`` group).

x509 *authentication* (certificate → user) is not here: it is :mod:`kcp_cache.server._auth`.
"""

from kcp_cache.server.tls._context import TLSConfigError as TLSConfigError
from kcp_cache.server.tls._context import build_server_context as build_server_context

# Underscore names below are internals re-exported for the white-box tests, not in __all__.
from kcp_cache.server.tls._io import _BULK as _BULK
from kcp_cache.server.tls._io import _SHRINK_AT as _SHRINK_AT
from kcp_cache.server.tls._io import FastTLSIO as FastTLSIO
from kcp_cache.server.tls._io import make_tls_io as make_tls_io
from kcp_cache.server.tls._protocol import _PeerChainPEM as _PeerChainPEM
from kcp_cache.server.tls._serve import HTTPSServer as HTTPSServer
from kcp_cache.server.tls._serve import SharedPort as SharedPort
from kcp_cache.server.tls._serve import bind_socket as bind_socket

__all__ = ["HTTPSServer", "SharedPort", "TLSConfigError", "bind_socket", "build_server_context"]
