"""kcp-cache: kcp's cache server, its shard-aware client and the replication controllers.

Layers (imports point down only, enforced by import-linter):

* :mod:`kcp_cache.storage` — a revisioned key-value store of bytes (SQLite, memory, etcd).
* :mod:`kcp_cache.audit` — the audit log and its writer process (imports nothing else of ours).
* :mod:`kcp_cache.registry` — Kubernetes objects: resources, keys, kcp strategies, watch fan-out.
* :mod:`kcp_cache.server` — the HTTP/ASGI surface: kcp's URL grammar, authn/z, verbs, watch streams.
* :mod:`kcp_cache.client` — shard-aware ``httpx2`` transports, REST helper, informers, work queues.
* :mod:`kcp_cache.replication` — the shard write controller and the read side.
* :mod:`kcp_cache.cli` — the ``kcp-cache-server`` and ``kcp-cache`` commands.
"""

__version__ = "0.1.0"
