"""The deepest object the server stores, and the cheap check that enforces it.

orjson, which encodes every object the server stores and serves, refuses to encode data
nested deeper than 254 arrays/objects ("Recursion limit reached") while its decoder takes
up to 1024. Without a check in between, a body nested 255-1024 levels deep parses and
then fails to encode: a 500 on the write, or (had it been stored) on every read that
wraps the object in an envelope (a list, a watch event, a Table row). kube's own JSON
limit is 10000 levels; ours is lower because of the encoder, and is enforced with the
400 kube answers beyond its own limit.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from kcp_cache.registry._errors import ApiError

__all__ = ["MAX_NESTING", "check_nesting"]

#: The deepest envelope an object is served in: a watch event of a Table whose row
#: carries the object (event → Table → rows → row → object) is 4 levels.
_ENVELOPE_LEVELS: Final = 4
#: Levels of arrays/objects a stored object may have (the top-level object is level 1).
#: orjson's encoder limit (254) less the deepest envelope, with a margin of 10.
MAX_NESTING: Final = 254 - _ENVELOPE_LEVELS - 10


def check_nesting(obj: Any, raw: bytes, what: str) -> None:
    """400 if ``obj`` (decoded from ``raw``) nests deeper than :data:`MAX_NESTING`.

    Fewer opening brackets in ``raw`` than the limit (a C-speed count) prove the object
    shallow; only bodies with many brackets pay for the real check, one orjson encoding
    of the object under as many wrapper levels as the limit leaves to spare.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return
    wrapped = obj
    for _ in range(254 - MAX_NESTING):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" not in str(exc):
            raise
        raise ApiError.bad_request(
            f"{what}: exceeded max depth of {MAX_NESTING} nested objects and arrays"
        ) from None
