"""Go-style durations for flags: ``100ms``, ``1.5s``, ``2m30s``, ``1h`` (or plain seconds)."""

from __future__ import annotations

import argparse
import re
from typing import Final

__all__ = ["parse_duration"]

_UNITS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ``argparse.ArgumentTypeError`` (for argparse ``type=``)."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must not be negative")
        return seconds
    if value == "" or _PART.sub("", value) != "":
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number of seconds or units like 100ms, 5s, 1m30s"
        )
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(value))
