"""Key and prefix validation shared by every engine."""

from __future__ import annotations

from kcp_cache.storage._errors import InvalidKey

__all__ = ["prefix_end", "validate_key", "validate_prefix", "validate_root_prefix"]


def validate_root_prefix(prefix: str) -> str:
    """Normalise an engine's root prefix (``/cache`` → ``/cache/``) and check it."""
    if not prefix.startswith("/") or prefix == "/":
        raise InvalidKey(f"storage prefix must be an absolute path such as /cache, got {prefix!r}")
    if not prefix.endswith("/"):
        prefix += "/"
    _check_segments(prefix[1:-1], prefix, what="storage prefix")
    return prefix


def validate_key(root: str, key: str) -> None:
    """Reject empty keys, keys outside ``root``, and ``..``/``.``/empty segments."""
    if not key:
        raise InvalidKey("key must not be empty")
    if not key.startswith(root):
        raise InvalidKey(f"key {key!r} is not under the storage prefix {root!r}")
    rest = key[len(root) :]
    if not rest or rest.endswith("/"):
        raise InvalidKey(f"key {key!r} must name an entry below {root!r}, not a directory")
    _check_segments(rest, key, what="key")


def validate_prefix(root: str, prefix: str) -> None:
    """Like :func:`validate_key`, for a range prefix (which may end with ``/``)."""
    if not prefix.startswith(root):
        raise InvalidKey(f"prefix {prefix!r} is not under the storage prefix {root!r}")
    rest = prefix[len(root) :]
    if rest:
        _check_segments(rest[:-1] if rest.endswith("/") else rest, prefix, what="prefix")


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _check_segments(path: str, whole: str, *, what: str) -> None:
    if "\x00" in path:
        raise InvalidKey(f"{what} {whole!r} contains a NUL character")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"{what} {whole!r} has an empty, '.' or '..' segment")
