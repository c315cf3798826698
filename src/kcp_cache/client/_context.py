"""The shard a request is addressed to, carried in a context variable.

This mirrors kcp's ``WithShardInContext`` / ``ShardFromContext``: code sets the shard
once for a block and every request sent inside it is routed to that shard by
:class:`~kcp_cache.client.ShardTransport`. A :class:`contextvars.ContextVar` is used
(not a global or a thread-local) because it follows the code that runs: each asyncio task
gets a copy of the context at creation, and ``asyncio.to_thread`` runs the function in a
copy of the caller's context — so concurrent tasks and threads never see each other's
shard.

>>> from kcp_cache.client import shard, shard_from_context
>>> shard_from_context()
''
>>> with shard("amber"):
...     shard_from_context()
'amber'
>>> shard_from_context()
''
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from kcp_cache.meta import WILDCARD

__all__ = [
    "SHARD_EXTENSION",
    "shard",
    "shard_from_context",
    "shard_of_request",
    "shard_path",
    "validate_shard_name",
]

#: The ``httpx2`` request extension that overrides the context for one request, and
#: through which transports pass the shard to the transports they wrap (Go does this
#: with the request's context).
SHARD_EXTENSION = "kcp_shard"

_SHARD_NAME = re.compile(r"^[a-z0-9-:]{0,61}$")

_current_shard: ContextVar[str] = ContextVar("kcp_cache_shard", default="")


def validate_shard_name(name: str) -> str:
    """Return *name* if the cache server would accept it as a shard, else raise ValueError.

    >>> validate_shard_name("system:cache:server")
    'system:cache:server'
    >>> validate_shard_name("Amber")
    Traceback (most recent call last):
    ...
    ValueError: invalid shard name 'Amber': must match ^[a-z0-9-:]{0,61}$ or be '*'
    """
    if name != WILDCARD and not _SHARD_NAME.match(name):
        raise ValueError(
            f"invalid shard name {name!r}: must match {_SHARD_NAME.pattern} or be {WILDCARD!r}"
        )
    return name


@contextmanager
def shard(name: str) -> Iterator[str]:
    """Route the requests sent inside the block to shard *name*.

    Nesting works as expected; the previous shard comes back on exit, also on error.
    An empty name clears the shard for the block (the default shard applies again).
    """
    validate_shard_name(name)
    token = _current_shard.set(name)
    try:
        yield name
    finally:
        _current_shard.reset(token)


def shard_from_context() -> str:
    """The shard set by the innermost :func:`shard` block, or ``""`` if none."""
    return _current_shard.get()


def shard_of_request(extensions: Mapping[str, Any]) -> str:
    """The shard for one request: its ``kcp_shard`` extension first, then the context."""
    value = extensions.get(SHARD_EXTENSION)
    if value:
        return str(value)
    return _current_shard.get()


def shard_path(name: str) -> str:
    """kcp's ``shard.Name.Path()``: ``/shards/<name>`` (``/shards`` for an empty name).

    >>> shard_path("amber"), shard_path("*"), shard_path("")
    ('/shards/amber', '/shards/*', '/shards')
    """
    return f"/shards/{name}" if name else "/shards"
