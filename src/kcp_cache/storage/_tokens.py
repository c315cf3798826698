"""Continue tokens for paginated ranges.

A token carries the revision the first page was read at and the last key returned, so
the next page resumes *after* that key *at that revision*. It is opaque to callers
(urlsafe base64 of a small JSON object) but not secret: it only names a position in a
read they were already allowed to make.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from kcp_cache.storage._errors import BadContinueToken

__all__ = ["ContinuePosition", "decode_continue_token", "encode_continue_token"]


@dataclass(frozen=True, slots=True)
class ContinuePosition:
    """Where a paginated range resumes: after ``start_after`` at ``revision``."""

    revision: int
    start_after: str


def encode_continue_token(revision: int, last_key: str) -> str:
    raw = json.dumps({"rev": revision, "start": last_key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def decode_continue_token(token: str, prefix: str) -> ContinuePosition:
    """Parse ``token``; raise :class:`BadContinueToken` unless it fits a range of ``prefix``."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (UnicodeError, binascii.Error, ValueError) as exc:
        raise BadContinueToken(f"malformed continue token: {exc}") from None
    if not isinstance(data, dict):
        raise BadContinueToken("malformed continue token: not an object")
    revision = data.get("rev")
    start = data.get("start")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise BadContinueToken("malformed continue token: bad revision")
    if not isinstance(start, str) or not start.startswith(prefix):
        raise BadContinueToken(f"continue token does not belong to a range of {prefix!r}")
    return ContinuePosition(revision=revision, start_after=start)
