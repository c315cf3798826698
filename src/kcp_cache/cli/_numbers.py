"""Flag types: argparse ``type=`` callables (integers, booleans) with kube-style error
messages."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["boolean", "integer_at_least"]


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """A flag type accepting integers ``>= minimum`` (0: "must not be negative")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            problem = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
            raise argparse.ArgumentTypeError(f"{problem}: {value}")
        return value

    return parse


def boolean(text: str) -> bool:
    """``true``/``false`` (as kube's boolean flags; also 1/0, yes/no, on/off)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: use true or false")
