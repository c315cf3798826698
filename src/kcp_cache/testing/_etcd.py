"""Real etcd members for tests and benchmarks: free loopback ports, temporary data dirs.

Debian's ``etcd`` binary (package ``etcd-server``, installed by ``./scripts/test``) is
started as a child process. A single member or a cluster of several members can be
started, members can be SIGKILLed and restarted on the same ports and data directory
(to simulate an outage), and everything is stopped cleanly at the end.

This module never imports grpc: it only spawns processes and probes ``/health`` over
plain HTTP, so it is safe to use from a process that holds live gRPC channels (the
engine sets ``GRPC_ENABLE_FORK_SUPPORT=0`` for that, see ``docs/etcd.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["EtcdCluster", "EtcdMember", "EtcdTLS", "etcd_binary", "running_etcd"]

# Fast elections keep "kill a member" tests short; loopback latency is far below these.
_HEARTBEAT_MS = 50
_ELECTION_MS = 500


def etcd_binary() -> str:
    """The path of the etcd binary; fails with a clear message if it is not installed."""
    path = shutil.which("etcd")
    if path is None:
        raise RuntimeError(
            "the etcd binary is missing: install Debian's etcd-server package "
            "(./scripts/test does so)"
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class EtcdTLS:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def generate(cls, directory: Path, *, server_client_auth: bool = False) -> EtcdTLS:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kcp-cache test etcd CA")])
        ca = (
            _certificate_builder(ca_name, ca_name, ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        paths = cls(*(directory / name for name in _TLS_FILES))
        paths.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        for role, cert_path, key_path in (
            ("server", paths.server_cert, paths.server_key),
            ("client", paths.client_cert, paths.client_key),
        ):
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"etcd-{role}")])
            usage = (
                [ExtendedKeyUsageOID.SERVER_AUTH]
                if role == "server"
                else [ExtendedKeyUsageOID.CLIENT_AUTH]
            )
            if role == "server" and server_client_auth:
                # What etcd's JSON gateway needs under --client-cert-auth: it dials
                # etcd's own gRPC with the server certificate (kubeadm's carry both).
                usage.append(ExtendedKeyUsageOID.CLIENT_AUTH)
            cert = (
                _certificate_builder(name, ca_name, key)
                .add_extension(
                    x509.SubjectAlternativeName(
                        [
                            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                            x509.DNSName("localhost"),
                        ]
                    ),
                    critical=False,
                )
                .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return paths

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


_TLS_FILES = ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem")


def _certificate_builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


@dataclass
class EtcdMember:
    """One etcd process: its name, ports and data directory survive a restart."""

    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    tls: EtcdTLS | None = None
    #: More etcd flags (e.g. ``--enable-grpc-gateway=false``).
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, initial_cluster: str, *, state: str) -> None:
        """Start the process (does not wait for it to be healthy)."""
        args = [
            etcd_binary(),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=kcp-cache-test",
            f"--heartbeat-interval={_HEARTBEAT_MS}",
            f"--election-timeout={_ELECTION_MS}",
            # Watches on etcd < 3.4.31 learn their progress only from these (docs/etcd.md).
            "--experimental-watch-progress-notify-interval=1s",
            "--logger=zap",
            "--log-level=warn",
        ]
        if self.tls is not None:
            args += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca_file}",
                "--client-cert-auth",
            ]
        args += self.extra_args
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL the process: an abrupt outage, nothing flushed, sockets reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the member hangs with its sockets open (a stuck machine, a partition).

        Returns once the process is stopped: the signal is delivered asynchronously, and
        a request sent in between would still be answered.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.process.pid}/stat")
        deadline = time.monotonic() + 5.0
        while stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
            assert time.monotonic() < deadline, "etcd did not stop on SIGSTOP"
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # in case it was paused
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    async def wait_healthy(self, within: float = 20.0) -> None:
        """Wait until ``/health`` reports a member that has a leader."""
        deadline = time.monotonic() + within
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"etcd member {self.name} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            if await _healthy(self):
                if not await self._is_ours():
                    raise _PortTaken(f"another etcd answers on port {self.client_port}")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"etcd member {self.name} not healthy after {within}s:\n" + self.log_tail()
                )
            await asyncio.sleep(0.05)

    async def _is_ours(self) -> bool:
        if self.tls is not None:
            # The TLS handshake of the health check verified a certificate of this
            # cluster's own throw-away CA. (etcd 3.4's JSON gateway cannot serve the
            # member list under client-certificate auth anyway.)
            return True
        if "--enable-grpc-gateway=false" in self.extra_args:
            # The member list is read through the gateway, which is off: a port taken
            # by another etcd then shows as that etcd's data in the test instead.
            return True
        listing = await _post_json(self, "/v3/cluster/member/list", {})
        members = listing.get("members", []) if isinstance(listing, dict) else []
        return any(
            m.get("name") == self.name and self.client_url in m.get("clientURLs", [])
            for m in members
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class _PortTaken(RuntimeError):
    """An etcd that is not this member answers on its port (a free-port race)."""


async def _healthy(member: EtcdMember) -> bool:
    context = member.tls.client_context() if member.tls is not None else None
    try:
        async with asyncio.timeout(1.0):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", member.client_port, ssl=context
            )
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(2.0):
            response = await reader.read()
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _, _, body = response.partition(b"\r\n\r\n")
    try:
        return bool(json.loads(body).get("health") == "true")
    except ValueError:
        return False


async def _post_json(member: EtcdMember, path: str, body: object) -> Any:
    """POST ``body`` as JSON to etcd's gateway; ``None`` if the member does not answer."""
    payload = json.dumps(body).encode()
    try:
        async with asyncio.timeout(1.0):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                member.client_port,
                ssl=member.tls.client_context() if member.tls else None,
            )
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(
            f"POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        async with asyncio.timeout(2.0):
            response = await reader.read()
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _, _, data = response.partition(b"\r\n\r\n")
    try:
        return json.loads(data)
    except ValueError:
        return None


class EtcdCluster:
    """``size`` etcd members on loopback, each with its own ports and data directory."""

    def __init__(
        self,
        size: int = 1,
        base_dir: Path | None = None,
        *,
        tls: bool = False,
        tls_server_client_auth: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="kcp-etcd-")) if base_dir is None else base_dir
        #: Certificates of a TLS cluster (client certificates required), else ``None``.
        self.tls = (
            EtcdTLS.generate(self.base_dir / "pki", server_client_auth=tls_server_client_auth)
            if tls
            else None
        )
        self.members = [
            EtcdMember(
                # Unique, so that a member can tell an etcd of another test run that
                # grabbed the same free port from itself (see _PortTaken).
                name=f"m{i}-{secrets.token_hex(4)}",
                data_dir=self.base_dir / f"m{i}",
                client_port=_free_port(),
                peer_port=_free_port(),
                tls=self.tls,
                extra_args=extra_args,
            )
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every member (``http://127.0.0.1:PORT``)."""
        return [m.client_url for m in self.members]

    @property
    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    async def start(self) -> None:
        """Start every member (together: a new cluster needs a quorum to elect a leader).

        Free ports are found by binding port 0 and closing it, so a concurrent test run
        may take one before etcd binds it; then the cluster starts again on new ports.
        """
        for attempt in range(3):
            for member in self.members:
                member.spawn(self._initial_cluster, state="new")
            try:
                await asyncio.gather(*(m.wait_healthy() for m in self.members))
                return
            except BaseException as exc:
                self._stop_members()
                port_taken = isinstance(exc, _PortTaken) or any(
                    "address already in use" in m.log_tail() for m in self.members
                )
                if not port_taken or attempt == 2:
                    self.stop()
                    raise
            for member in self.members:
                shutil.rmtree(member.data_dir, ignore_errors=True)
                member.log_path.unlink(missing_ok=True)
                member.client_port, member.peer_port = _free_port(), _free_port()

    async def leader_index(self) -> int:
        """Index of the current leader (asked through etcd's JSON gateway)."""
        for member in self.members:
            if not member.running:
                continue
            status = await _post_json(member, "/v3/maintenance/status", {})
            if status is None or "leader" not in status:
                continue
            for index, other in enumerate(self.members):
                other_status = await _post_json(other, "/v3/maintenance/status", {})
                if other_status and other_status["header"]["member_id"] == status["leader"]:
                    return index
        raise RuntimeError("no etcd member reports a leader")

    def kill(self, index: int) -> None:
        """SIGKILL member ``index``."""
        self.members[index].kill()

    async def restart(self, index: int) -> None:
        """Start a killed member again on the same ports and data directory."""
        member = self.members[index]
        member.spawn(self._initial_cluster, state="existing")
        await member.wait_healthy()

    def _stop_members(self) -> None:
        for member in self.members:
            member.stop()

    def stop(self) -> None:
        """Stop every member and remove the data directories this object created."""
        self._stop_members()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_etcd(size: int = 1, **options: Any) -> AsyncIterator[EtcdCluster]:
    """An :class:`EtcdCluster` (``options`` as there) started on entry, stopped on exit."""
    cluster = EtcdCluster(size, **options)
    await cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# A process that spawns etcd may also hold live gRPC channels (the engine under test).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
