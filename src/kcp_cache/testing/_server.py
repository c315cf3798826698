"""Run the real ``kcp-cache-server`` binary with real TLS, for tests and benchmarks.

Like kcp's ``StartStandaloneCacheServer``: a fresh root directory, a free loopback port,
wait for ``apiserver.crt``, then poll ``/livez`` and ``/readyz`` until both answer 200.
Any test can use it::

    from kcp_cache.testing import start_cache_server

    with start_cache_server(tmp_path) as server:
        path = server.resource_path("amber", "acme", "apis.kcp.io", "v1alpha1", "apiexports")
        with server.client() as client:              # admin (system:masters)
            client.get(path)
        with server.client(cert=None) as anonymous:  # no client certificate
            ...

or, in this project's tests, the ``cache_server`` fixture of ``tests/conftest.py`` (a
factory; servers are stopped at the end of the test). Without ``client_ca`` the server
generates its development CA and admin certificate; with a :class:`TestCA` the server
trusts that CA and the harness issues its own admin certificate (CN
``cache-test-client``, O ``system:masters``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from kcp_cache.client import AsyncClient, Client, TransportError
from kcp_cache.meta import SYSTEM_MASTERS
from kcp_cache.server import (
    CertificateFiles,
    issue_certificate,
    load_certificate,
    load_private_key,
    new_ca,
    write_pair,
)

__all__ = [
    "ADMIN",
    "CacheServer",
    "ClientCert",
    "ServerStartError",
    "TestCA",
    "running_cache_server",
    "start_cache_server",
]

START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 15.0
POLL_INTERVAL: Final = 0.05


class ServerStartError(RuntimeError):
    """The server exited or did not turn ready; the message carries its log."""


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key on disk."""

    cert: Path
    key: Path


class _Admin:
    def __repr__(self) -> str:
        return "ADMIN"


#: Marker for :meth:`CacheServer.client`: use the server's admin certificate.
ADMIN: Final = _Admin()


class TestCA:
    """A client CA for tests: ``issue(cn, groups)`` writes a signed client certificate."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "test-client-ca") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        files = CertificateFiles(directory / f"{name}.crt", directory / f"{name}.key")
        if files.cert.exists() and files.key.exists():
            self._cert, self._key = load_certificate(files.cert), load_private_key(files.key)
        else:
            self._cert, self._key = new_ca(name)
            write_pair(files, [self._cert], self._key)
        self.cert_path = files.cert
        self.key_path = files.key

    def issue(
        self, common_name: str, groups: Sequence[str] = (), *, file_name: str | None = None
    ) -> ClientCert:
        cert, key = issue_certificate(self._cert, self._key, common_name, organizations=groups)
        stem = file_name or f"{self.name}-{common_name}"
        files = CertificateFiles(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        write_pair(files, [cert], key)
        return ClientCert(files.cert, files.key)


@dataclass
class CacheServer:
    """A running ``kcp-cache-server`` process and what a test needs to talk to it.

    *command_prefix* goes in front of the server's command line, e.g. ``("taskset", "-c",
    "0")`` to pin the server to a core as the benchmarks do (a prefix that ``exec``s keeps
    the process id the server's).
    """

    root: Path
    extra_args: tuple[str, ...]
    client_ca: TestCA | None
    env: dict[str, str] | None = None
    command_prefix: tuple[str, ...] = ()
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    admin_cert: ClientCert | None = None
    log_path: Path = field(init=False)
    _log_file: Any = None

    def __post_init__(self) -> None:
        self.log_path = self.root.parent / f"{self.root.name}.log"

    # -- addresses and files ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def serving_cert(self) -> Path:
        """``apiserver.crt``: the serving certificate chain, usable as the CA bundle."""
        return self.root / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        """``admin.kubeconfig`` (only generated when no client CA was given)."""
        return self.root / "admin.kubeconfig"

    @property
    def client_ca_cert(self) -> Path:
        return self.client_ca.cert_path if self.client_ca else self.root / "client-ca.crt"

    @staticmethod
    def resource_path(
        shard: str, cluster: str, group: str, version: str, resource: str, *rest: str
    ) -> str:
        """``/services/cache/shards/S/clusters/C/apis/G/V/R[/…]``."""
        tail = "/".join((resource, *rest))
        return f"/services/cache/shards/{shard}/clusters/{cluster}/apis/{group}/{version}/{tail}"

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- clients ------------------------------------------------------------------------

    def ssl_context(self, cert: ClientCert | _Admin | None = ADMIN) -> ssl.SSLContext:
        """Trusts the serving certificate; presents ``cert`` (``None``: no certificate)."""
        context = ssl.create_default_context(cafile=str(self.serving_cert))
        if cert is ADMIN:
            cert = self.admin_cert
            if cert is None:
                raise RuntimeError("this server has no admin certificate")
        if isinstance(cert, ClientCert):
            context.load_cert_chain(str(cert.cert), str(cert.key))
        return context

    def client(self, cert: ClientCert | _Admin | None = ADMIN, **kwargs: Any) -> Client:
        """A sync client with ``base_url`` set; ``cert=None`` for an anonymous client."""
        kwargs.setdefault("timeout", 30.0)
        return Client(base_url=self.base_url, verify=self.ssl_context(cert), **kwargs)

    def async_client(self, cert: ClientCert | _Admin | None = ADMIN, **kwargs: Any) -> AsyncClient:
        kwargs.setdefault("timeout", 30.0)
        return AsyncClient(base_url=self.base_url, verify=self.ssl_context(cert), **kwargs)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = START_TIMEOUT) -> CacheServer:
        """Start the process (same root directory and, after the first start, same port)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the server is already running")
        self.root.mkdir(parents=True, exist_ok=True)
        port_file = self.root / "secure-port"
        port_file.unlink(missing_ok=True)
        args = [
            *self.command_prefix,
            sys.executable,
            "-m",
            "kcp_cache",
            "--root-directory",
            str(self.root),
            "--secure-port",
            str(self.port),
        ]
        if self.client_ca is not None:
            args += ["--client-ca-file", str(self.client_ca.cert_path)]
        args += self.extra_args
        self._log_file = self.log_path.open("ab")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=self.root.parent
        )
        if wait:
            self.wait_ready(timeout=timeout)
        return self

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise ServerStartError(
                f"kcp-cache-server exited with {self.process.returncode}:\n{self.logs()}"
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for ``apiserver.crt`` and the port file, then for 200 from /livez and /readyz."""
        deadline = time.monotonic() + timeout
        port_file = self.root / "secure-port"
        while not (self.serving_cert.exists() and port_file.exists()):
            self._check_alive()
            if time.monotonic() > deadline:
                raise ServerStartError(f"no apiserver.crt/secure-port in time:\n{self.logs()}")
            time.sleep(POLL_INTERVAL)
        self.port = int(port_file.read_text().strip())
        if self.client_ca is not None and self.admin_cert is None:
            self.admin_cert = self.client_ca.issue(
                "cache-test-client", [SYSTEM_MASTERS], file_name="test-client"
            )
        elif self.client_ca is None:
            self.admin_cert = ClientCert(self.root / "admin.crt", self.root / "admin.key")
        with self.client(cert=None, timeout=5.0) as client:
            for path in ("/livez", "/readyz"):
                while True:
                    self._check_alive()
                    with contextlib.suppress(TransportError):
                        if client.get(path).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise ServerStartError(f"{path} did not turn 200 in time:\n{self.logs()}")
                    time.sleep(POLL_INTERVAL)

    def wait_workers(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """With ``--workers``: wait until each of ``count`` workers has answered a
        ``/metrics`` request (each on a new connection, which the kernel gives to any of
        them), so that a test's connections land on all of them."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            self._check_alive()
            if time.monotonic() > deadline:
                raise ServerStartError(f"only workers {sorted(seen)} answered:\n{self.logs()}")
            with self.client(timeout=5.0) as client, contextlib.suppress(TransportError):
                text = client.get("/metrics").text
                seen.update(re.findall(r'worker="(\d+)"', text[:4000])[:1])
            time.sleep(POLL_INTERVAL / 5)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (durability tests)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        process.wait()
        self._close_log()
        return process.returncode

    def restart(self, *, kill: bool = False, timeout: float = START_TIMEOUT) -> CacheServer:
        """Stop (or kill) and start again on the same root directory and port."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout=timeout)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> CacheServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_cache_server(
    directory: Path,
    *extra_args: str,
    client_ca: TestCA | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = START_TIMEOUT,
) -> CacheServer:
    """Start ``kcp-cache-server`` with root ``<directory>/cache`` on a free port.

    ``extra_args`` are more flags (``"--storage", "memory"``); ``client_ca`` makes the
    server trust that CA instead of generating its development CA.
    """
    server = CacheServer(directory / "cache", tuple(extra_args), client_ca, env)
    try:
        return server.start(wait=wait, timeout=timeout)
    except BaseException:
        server.stop()
        raise


@contextlib.contextmanager
def running_cache_server(directory: Path, *extra_args: str, **kwargs: Any) -> Iterator[CacheServer]:
    """``with running_cache_server(tmp_path) as server:`` — stopped on exit."""
    server = start_cache_server(directory, *extra_args, **kwargs)
    try:
        yield server
    finally:
        server.stop()
