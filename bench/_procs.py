"""Processes of the server benchmark: the real server and the ceiling app, pinned to a
core, their memory, and autocannon as the load generator."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from kcp_cache.testing import CacheServer

BENCH = Path(__file__).resolve().parent
SERVER_CPU = 0
LOAD_CPU = 1
NODE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kcp-cache-bench/node"


def pin_self_to_load_cpu() -> None:
    """The bench process (and every load generator it starts) runs on the load core."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOAD_CPU})


def raise_open_files() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def _pin_prefix() -> tuple[str, ...]:
    """The command prefix that pins a process to the server core (none on one core)."""
    return ("taskset", "-c", str(SERVER_CPU)) if (os.cpu_count() or 1) > 1 else ()


@dataclass
class Proc:
    """A started process that writes its port into ``port_file``."""

    process: subprocess.Popen[bytes]
    port_file: Path
    log: Path
    port: int = 0

    def wait_port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists() or not self.port_file.read_text().strip():
            if self.process.poll() is not None:
                raise RuntimeError(f"exited {self.process.returncode}: {self.log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no port in time: {self.log.read_text()}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())
        return self.port

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        return _status_kib(self.pid, "VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all threads)."""
        return pid_cpu_seconds(self.pid)

    def children(self) -> list[int]:
        """The pids of the processes it started (the audit log's writer, followers)."""
        text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        return [int(pid) for pid in text.split()]

    def reset_peak(self) -> None:
        """Make VmHWM start over at the current RSS (Linux ``clear_refs`` 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak_kib(self) -> int:
        return _status_kib(self.pid, "VmHWM")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def start_server(
    root: Path,
    *extra: str,
    timeout: float = 60.0,
    src: Path | None = None,
    pinned: bool = True,
) -> Proc:
    """``kcp-cache-server`` (embedded SQLite) on a free port, pinned to the server core
    (unless not ``pinned``: ``--workers`` wants every core).

    Started by :class:`kcp_cache.testing.CacheServer` (ready once ``/livez`` and ``/readyz``
    answer 200); ``timeout`` bounds the start-up (a store of a million objects takes
    minutes to load). ``src``: run the package found there instead of the installed one
    (a baseline checkout's ``src/``, for A/B runs side by side).
    """
    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
    server = CacheServer(root, extra, None, env=env, command_prefix=_pin_prefix() if pinned else ())
    server.start(timeout=timeout)
    assert server.process is not None
    return Proc(server.process, root / "secure-port", server.log_path, server.port)


def start_ceiling(root: Path, body: Path, list_body: Path | None) -> Proc:
    """The ceiling app (``bench/apps/ceiling.py``) with ``root``'s certificates, pinned."""
    port_file = root.parent / "ceiling-port"
    port_file.unlink(missing_ok=True)
    log = root.parent / "ceiling.log"
    args = [sys.executable, str(BENCH / "apps" / "ceiling.py"), "--root", str(root)]
    args += ["--port-file", str(port_file), "--body", str(body)]
    if list_body is not None:
        args += ["--list-body", str(list_body)]
    with log.open("ab") as out:
        process = subprocess.Popen([*_pin_prefix(), *args], stdout=out, stderr=subprocess.STDOUT)
    proc = Proc(process, port_file, log)
    proc.wait_port()
    return proc


def _admin_tls(root: Path) -> Any:
    import ssl

    context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
    context.load_cert_chain(str(root / "admin.crt"), str(root / "admin.key"))
    return context


def client(root: Path, port: int, **kwargs: Any) -> httpx2.Client:
    """An admin client for a server (or ceiling) using ``root``'s certificates."""
    kwargs.setdefault("timeout", 60.0)
    return httpx2.Client(base_url=f"https://127.0.0.1:{port}", verify=_admin_tls(root), **kwargs)


def async_client(root: Path, port: int, **kwargs: Any) -> httpx2.AsyncClient:
    """:func:`client`'s asyncio twin."""
    kwargs.setdefault("timeout", 60.0)
    return httpx2.AsyncClient(
        base_url=f"https://127.0.0.1:{port}", verify=_admin_tls(root), **kwargs
    )


def ensure_autocannon() -> Path:
    """autocannon 9 from npm in a cache directory outside the tree (installed once)."""
    module = NODE_DIR / "node_modules" / "autocannon"
    if not module.exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(NODE_DIR), "autocannon@9"],
            check=True,
            capture_output=True,
        )
    return NODE_DIR


def autocannon(
    root: Path, url: str, *, duration: float, connections: int = 64, **extra: Any
) -> dict[str, Any]:
    """One autocannon run (on the load core) presenting the admin client certificate."""
    config = {
        "url": url,
        "cert": str(root / "admin.crt"),
        "key": str(root / "admin.key"),
        "ca": str(root / "apiserver.crt"),
        "connections": connections,
        "duration": duration,
        **extra,
    }
    env = dict(os.environ, NODE_PATH=str(ensure_autocannon() / "node_modules"))
    done = subprocess.run(
        ["node", str(BENCH / "_autocannon.js"), json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"autocannon failed: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
