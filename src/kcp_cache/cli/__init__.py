"""cli layer (see DESIGN.md)."""

from kcp_cache.cli._durations import parse_duration as parse_duration
