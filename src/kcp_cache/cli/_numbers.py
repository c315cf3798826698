"""Integer flag types: argparse ``type=`` callables with kube-style error messages."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["integer_at_least"]


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
