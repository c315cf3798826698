"""The *overload protection* flags of ``kcp-cache-server``: help, parsing, bad values."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from kcp_cache.cli.server import _byte_size, build_parser


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kcp_cache", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_limits_with_their_defaults() -> None:
    result = _run("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "overload protection:" in text
    text = text[text.index("overload protection:") :]  # the group, not the usage line
    for flag, default in (
        ("--max-requests-inflight", "400"),
        ("--max-mutating-requests-inflight", "200"),
        ("--request-timeout", "60.0"),
        ("--min-request-timeout", "1800.0"),
        ("--watch-max-unsent-bytes", "8388608"),
    ):
        assert flag in text
        fragment = text[text.index(flag + " ") :]
        assert f"(default: {default})" in fragment[: fragment.index("--", 2)], flag


def test_defaults_and_values_parse() -> None:
    args = build_parser().parse_args([])
    assert (args.max_requests_inflight, args.max_mutating_requests_inflight) == (400, 200)
    assert args.min_request_timeout == 1800.0
    assert args.request_timeout == 60.0
    assert args.watch_max_unsent_bytes == 8 * 1024 * 1024
    args = build_parser().parse_args(
        ["--max-requests-inflight", "0", "--min-request-timeout", "30m"]
    )
    assert args.max_requests_inflight == 0
    assert args.min_request_timeout == 1800.0


@pytest.mark.parametrize(
    ("text", "size"), [("1024", 1024), ("512Ki", 512 * 1024), ("8Mi", 8 << 20), ("1G", 10**9)]
)
def test_byte_sizes(text: str, size: int) -> None:
    assert _byte_size(text) == size


@pytest.mark.parametrize("text", ["lots", "8MB", "-1Mi", "100"])
def test_bad_byte_sizes_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _byte_size(text)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-requests-inflight", "-1", "must not be negative: -1"),
        ("--max-mutating-requests-inflight", "many", "not an integer: 'many'"),
        ("--min-request-timeout", "0", "must be positive: '0'"),
        ("--watch-max-unsent-bytes", "8MB", "not a byte size: '8MB'"),
    ],
)
def test_bad_values_are_one_usage_line(tmp_path: Path, flag: str, value: str, message: str) -> None:
    result = _run("--root-directory", str(tmp_path), flag, value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert flag in line
    assert message in line
