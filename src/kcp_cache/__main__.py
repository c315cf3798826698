"""``python -m kcp_cache`` runs the cache server, exactly like ``kcp-cache-server``."""

from kcp_cache.cli.server import main

if __name__ == "__main__":
    raise SystemExit(main())
