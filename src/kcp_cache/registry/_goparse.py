"""Query values parsed the way kube-apiserver's Go code parses them.

Python's ``int()`` is far more lenient than Go's ``strconv``: it accepts surrounding
spaces (``" 5"``), digit separators (``"1_0"``) and every Unicode digit (``"٣"``), none
of which kube accepts. Booleans are the other way round: kube's query conversion
(``runtime.Convert_Slice_string_To_bool``) treats everything but ``0`` and ``false``
as true. These helpers reproduce Go's rules and error texts, so a bad value gets the
400 kube gives and a good one means what it means to kube.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "GoNumberError",
    "go_quote",
    "parse_duration_seconds",
    "parse_int64",
    "parse_query_bool",
    "parse_uint64",
]

_INT: Final = re.compile(r"[+-]?[0-9]+", re.ASCII)
_UINT: Final = re.compile(r"[0-9]+", re.ASCII)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
#: Longer digit strings are out of range whatever they say (and never reach ``int()``,
#: whose cost grows with the length).
_MAX_DIGITS: Final = 24

_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(value: str) -> str:
    """``value`` quoted like Go's ``%q`` / ``strconv.Quote`` (as kube prints bad values)."""
    out = ['"']
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


class GoNumberError(ValueError):
    """A ``strconv.NumError``: its text is Go's (``strconv.ParseInt: parsing "x": …``)."""


def _number_error(func: str, value: str, why: str) -> GoNumberError:
    return GoNumberError(f"strconv.{func}: parsing {go_quote(value)}: {why}")


def parse_int64(value: str) -> int:
    """Go's ``strconv.ParseInt(value, 10, 64)``; raises :class:`GoNumberError`."""
    if _INT.fullmatch(value) is None:
        raise _number_error("ParseInt", value, "invalid syntax")
    if len(value.lstrip("+-").lstrip("0")) > _MAX_DIGITS:
        raise _number_error("ParseInt", value, "value out of range")
    number = int(value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise _number_error("ParseInt", value, "value out of range")
    return number


def parse_uint64(value: str) -> int:
    """Go's ``strconv.ParseUint(value, 10, 64)`` (no sign allowed); raises
    :class:`GoNumberError`."""
    if _UINT.fullmatch(value) is None:
        raise _number_error("ParseUint", value, "invalid syntax")
    if len(value.lstrip("0")) > _MAX_DIGITS:
        raise _number_error("ParseUint", value, "value out of range")
    number = int(value)
    if number > _UINT64_MAX:
        raise _number_error("ParseUint", value, "value out of range")
    return number


def parse_query_bool(value: str | None) -> bool:
    """A boolean query parameter as kube decodes ``ListOptions``: absent, ``0`` or
    ``false`` (any case) is false; anything else, even ``""`` or ``maybe``, is true."""
    if value is None:
        return False
    return not (value == "0" or value.lower() == "false")


_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration_seconds(text: str) -> float:
    """Seconds in a Go duration (``100ms``, ``1.5s``, ``2m30s``, ``1h``) or a plain number
    of seconds; ``ValueError`` with a message for anything else, or a negative value."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return seconds
    if value == "" or _DURATION_PART.sub("", value) != "":
        raise ValueError(
            f"invalid duration {text!r}: use a number of seconds or units like 100ms, 5s, 1m30s"
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value))
