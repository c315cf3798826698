"""Response encodings end to end: gzip above the threshold, YAML on request.

Against the real binary with raw bodies (``httpx2``'s ``iter_raw`` gives the bytes as
sent, so the test sees the compression, not the client's decoding of it), plus kubectl,
which asks for gzip as client-go does.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from kcp_cache.testing import CacheServer

API = "/services/cache/shards/amber/clusters/{cluster}/apis/apis.kcp.io/v1alpha1/apiexports"
PAD = "x" * 1000  # ~1 KiB objects: 200 of them make a LIST above kube's 128 KiB threshold


def _fill(client: httpx2.Client, cluster: str, count: int) -> None:
    for n in range(count):
        body = {
            "apiVersion": "apis.kcp.io/v1alpha1",
            "kind": "APIExport",
            "metadata": {"name": f"e{n:04d}"},
            "spec": {"pad": PAD, "n": n},
        }
        assert client.post(API.format(cluster=cluster), json=body).status_code == 201


def _raw_get(
    client: httpx2.Client, path: str, headers: dict[str, str]
) -> tuple[httpx2.Headers, bytes]:
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        return response.headers, b"".join(response.iter_raw())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from kcp_cache.testing import start_cache_server

    with start_cache_server(tmp_path_factory.mktemp("encodings"), "--storage", "memory") as s:
        with s.client() as client:
            _fill(client, "big", 200)
            _fill(client, "small", 3)
        yield s


def test_a_large_list_is_gzipped_for_clients_that_accept_it(server: CacheServer) -> None:
    with server.client() as client:
        headers, raw = _raw_get(client, API.format(cluster="big"), {"Accept-Encoding": "gzip"})
        assert headers["content-encoding"] == "gzip"
        listed = json.loads(gzip.decompress(raw))
        assert len(listed["items"]) == 200
        assert len(raw) < len(gzip.decompress(raw)) / 5  # repeated keys compress well
        # The same list without gzip: plain, identical content.
        headers, plain = _raw_get(
            client, API.format(cluster="big"), {"Accept-Encoding": "identity"}
        )
        assert "content-encoding" not in headers
        assert json.loads(plain) == listed


@pytest.mark.parametrize(
    "accept_encoding", ["", "identity", "gzip;q=0", "br, zstd", "deflate;q=1.0"]
)
def test_no_gzip_unless_the_client_allows_it(server: CacheServer, accept_encoding: str) -> None:
    with server.client() as client:
        headers, raw = _raw_get(
            client, API.format(cluster="big"), {"Accept-Encoding": accept_encoding}
        )
    assert "content-encoding" not in headers
    assert len(json.loads(raw)["items"]) == 200


def test_a_small_list_is_sent_plain_with_a_length(server: CacheServer) -> None:
    with server.client() as client:
        headers, raw = _raw_get(client, API.format(cluster="small"), {"Accept-Encoding": "gzip"})
    assert "content-encoding" not in headers
    assert int(headers["content-length"]) == len(raw)
    assert len(json.loads(raw)["items"]) == 3


def test_watches_are_never_gzipped(server: CacheServer) -> None:
    with (
        server.client() as client,
        client.stream(
            "GET",
            API.format(cluster="big"),
            params={"watch": "1", "resourceVersion": "0", "timeoutSeconds": "1"},
            headers={"Accept-Encoding": "gzip"},
        ) as response,
    ):
        assert "content-encoding" not in response.headers
        lines = [line for line in b"".join(response.iter_raw()).split(b"\n") if line]
    assert len(lines) == 200  # the initial ADDED events, plain JSON lines
    assert json.loads(lines[0])["type"] == "ADDED"


def test_compression_can_be_turned_off_or_its_threshold_changed(
    cache_server: Callable[..., CacheServer],
) -> None:
    off = cache_server("--storage", "memory", "--response-compression", "off")
    low = cache_server("--storage", "memory", "--response-compression-threshold", "100")
    for server, expect_gzip in ((off, False), (low, True)):
        with server.client() as client:
            _fill(client, "some", 3)
            headers, raw = _raw_get(client, API.format(cluster="some"), {"Accept-Encoding": "gzip"})
            assert ("content-encoding" in headers) is expect_gzip
            body = gzip.decompress(raw) if expect_gzip else raw
            assert len(json.loads(body)["items"]) == 3
            # A single GET above the threshold is compressed too.
            headers, raw = _raw_get(
                client, API.format(cluster="some") + "/e0001", {"Accept-Encoding": "gzip"}
            )
            assert ("content-encoding" in headers) is expect_gzip


def test_a_negative_threshold_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kcp_cache",
            "--root-directory",
            str(tmp_path),
            "--response-compression-threshold",
            "-1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "--response-compression-threshold must not be negative" in result.stderr
    assert "Traceback" not in result.stderr


def test_yaml_on_get_and_list(server: CacheServer) -> None:
    with server.client() as client:
        path = API.format(cluster="small")
        as_json = client.get(f"{path}/e0001").json()
        response = client.get(f"{path}/e0001", headers={"Accept": "application/yaml"})
        assert response.headers["content-type"] == "application/yaml"
        assert response.text.startswith("apiVersion: apis.kcp.io/v1alpha1\n")
        assert yaml.safe_load(response.text) == as_json
        listed = client.get(path, headers={"Accept": "application/yaml, application/json"})
        assert listed.headers["content-type"] == "application/yaml"
        assert yaml.safe_load(listed.text) == client.get(path).json()
        # JSON is preferred when the client says so.
        either = client.get(path, headers={"Accept": "application/json, application/yaml"})
        assert either.headers["content-type"] == "application/json"


def test_yaml_watch_is_not_acceptable(server: CacheServer) -> None:
    with server.client() as client:
        response = client.get(
            API.format(cluster="small"),
            params={"watch": "1"},
            headers={"Accept": "application/yaml"},
        )
    assert response.status_code == 406
    assert response.json()["reason"] == "NotAcceptable"


def _compressed_count(client: httpx2.Client) -> float:
    metrics = client.get("/metrics").text
    for line in metrics.splitlines():
        if line.startswith(
            'kcp_cache_compressed_responses_total{resource="apiexports.apis.kcp.io"}'
        ):
            return float(line.split()[-1])
    return 0.0


def test_kubectl_reads_a_gzipped_list(server: CacheServer, tmp_path: Path) -> None:
    # client-go asks for gzip below its logging (Go's transport adds the header and
    # strips Content-Encoding after decoding), so the server's counter is the witness.
    kubectl = Path(sys.executable).parent / "kubectl"
    with server.client() as client:
        before = _compressed_count(client)
    result = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={server.kubeconfig}",
            f"--cache-dir={tmp_path / 'cache'}",
            f"--server={server.base_url}/services/cache/shards/amber/clusters/big",
            "get",
            "apiexports.v1alpha1.apis.kcp.io",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["items"]) == 200
    with server.client() as client:
        assert _compressed_count(client) == before + 1
