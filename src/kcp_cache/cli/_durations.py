"""Go-style durations for flags: ``100ms``, ``1.5s``, ``2m30s``, ``1h`` (or plain seconds)."""

from __future__ import annotations

import argparse

from kcp_cache.registry import parse_duration_seconds

__all__ = ["parse_duration"]


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ``argparse.ArgumentTypeError`` (for argparse ``type=``)."""
    try:
        return parse_duration_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
