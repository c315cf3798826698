"""Development certificates: the serving certificate, a client CA, client certificates.

When an operator gives no ``--tls-cert-file`` the server generates its own, like
kube-apiserver's self-signed fallback: a one-off CA plus a serving certificate for
``localhost``, ``127.0.0.1`` and ``::1`` signed by it, written as a chain to
``apiserver.crt`` — so clients can use that file as their CA bundle. Without
``--client-ca-file`` a development client CA and an admin certificate
(``O=system:masters``) are generated too, with an ``admin.kubeconfig``, and a certificate
for shard ``root`` (``CN=system:kcp:shard:root, O=system:kcp:shards``) with a
``shard.kubeconfig``. All keys are ECDSA P-256 (fast handshakes) and written with mode
0600.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kcp_cache.meta import DEFAULT_SERVING_HOSTS, SYSTEM_MASTERS
from kcp_cache.server._principals import SHARD_PREFIX, SHARDS_GROUP

__all__ = [
    "CertificateFiles",
    "DevCredentials",
    "ensure_dev_credentials",
    "ensure_serving_certificate",
    "issue_certificate",
    "load_certificate",
    "load_private_key",
    "new_ca",
    "write_kubeconfig",
    "write_pair",
]


ADMIN_USER = "kcp-cache-admin"
#: The shard the development set-up issues a certificate for (kcp's first shard).
DEV_SHARD = "root"

PrivateKey = ec.EllipticCurvePrivateKey

_ONE_DAY = datetime.timedelta(days=1)
_CA_VALIDITY = datetime.timedelta(days=3650)
_LEAF_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A PEM certificate (chain) and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class DevCredentials:
    """The generated client CA, admin certificate and kubeconfig."""

    client_ca: CertificateFiles
    admin: CertificateFiles
    kubeconfig: Path
    #: ``shard.kubeconfig``: shard :data:`DEV_SHARD`'s certificate (scoped to its space).
    shard_kubeconfig: Path | None = None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def new_ca(common_name: str) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA certificate and its key."""
    key = _new_key()
    now = _now()
    subject = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    hosts: Sequence[str] = (),
    client: bool = True,
    validity: datetime.timedelta = _LEAF_VALIDITY,
) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf certificate signed by the CA: client auth (default) or serving (``hosts``)."""
    key = _new_key()
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file; ``OSError`` names ``path``.

    Renamed into place, so a crash never leaves half a key behind; on failure (a full
    disk) the temporary file is removed and ``path`` keeps its old content.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked when the disk fills up
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def write_pair(
    files: CertificateFiles, certs: Sequence[x509.Certificate], key: PrivateKey
) -> CertificateFiles:
    """Write a certificate chain (mode 0644) and its key (mode 0600)."""
    _write(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(files.cert, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), 0o644)
    return files


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an ECDSA key")
    return key


def _usable(files: CertificateFiles, hosts: Sequence[str] = ()) -> bool:
    """An existing pair that parses, matches, is valid for a day more and covers ``hosts``."""
    try:
        cert = load_certificate(files.cert)
        key = load_private_key(files.key)
    except (OSError, ValueError):
        return False
    if cert.public_key() != key.public_key():
        return False
    now = _now()
    if not (cert.not_valid_before_utc <= now and now + _ONE_DAY < cert.not_valid_after_utc):
        return False
    if hosts:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        present = {str(n) for n in san.get_values_for_type(x509.DNSName)}
        present |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        wanted = {str(ipaddress.ip_address(h)) if _is_ip(h) else h for h in hosts}
        if not wanted <= present:
            return False
    return True


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ensure_serving_certificate(
    root: Path, hosts: Sequence[str] = DEFAULT_SERVING_HOSTS
) -> tuple[CertificateFiles, bool]:
    """``<root>/apiserver.crt|key``, reused when still usable; returns ``(files, created)``.

    The certificate file holds the serving certificate followed by its one-off CA, so
    clients can use it directly as their CA bundle.
    """
    files = CertificateFiles(root / "apiserver.crt", root / "apiserver.key")
    if _usable(files, hosts):
        return files, False
    ca_cert, ca_key = new_ca(f"kcp-cache-server-ca@{int(_now().timestamp())}")
    cert, key = issue_certificate(
        ca_cert, ca_key, f"kcp-cache-server@{int(_now().timestamp())}", hosts=hosts, client=False
    )
    return write_pair(files, [cert, ca_cert], key), True


def ensure_dev_credentials(root: Path, server_url: str, serving_ca: Path) -> DevCredentials:
    """The development client CA, admin certificate and ``admin.kubeconfig`` in ``root``.

    Existing usable files are kept (so restarts do not invalidate handed-out
    credentials); the kubeconfig is rewritten because the port may have changed.
    """
    ca_files = CertificateFiles(root / "client-ca.crt", root / "client-ca.key")
    admin_files = CertificateFiles(root / "admin.crt", root / "admin.key")
    if _usable(ca_files):
        ca_cert, ca_key = load_certificate(ca_files.cert), load_private_key(ca_files.key)
    else:
        ca_cert, ca_key = new_ca("kcp-cache-client-ca")
        write_pair(ca_files, [ca_cert], ca_key)
    if not _usable(admin_files) or not _signed_by(admin_files.cert, ca_cert):
        cert, key = issue_certificate(ca_cert, ca_key, ADMIN_USER, organizations=[SYSTEM_MASTERS])
        write_pair(admin_files, [cert], key)
    kubeconfig = write_kubeconfig(
        root / "admin.kubeconfig",
        server_url=server_url,
        ca_file=serving_ca,
        cert_file=admin_files.cert,
        key_file=admin_files.key,
    )
    shard_files = CertificateFiles(root / "shard.crt", root / "shard.key")
    if not _usable(shard_files) or not _signed_by(shard_files.cert, ca_cert):
        cert, key = issue_certificate(
            ca_cert, ca_key, SHARD_PREFIX + DEV_SHARD, organizations=[SHARDS_GROUP]
        )
        write_pair(shard_files, [cert], key)
    shard_kubeconfig = write_kubeconfig(
        root / "shard.kubeconfig",
        server_url=server_url,
        ca_file=serving_ca,
        cert_file=shard_files.cert,
        key_file=shard_files.key,
        user_name=f"shard-{DEV_SHARD}",
    )
    return DevCredentials(ca_files, admin_files, kubeconfig, shard_kubeconfig)


def _signed_by(cert_path: Path, ca: x509.Certificate) -> bool:
    try:
        load_certificate(cert_path).verify_directly_issued_by(ca)
    except (ValueError, TypeError, OSError, InvalidSignature):
        return False
    return True


def write_kubeconfig(
    path: Path,
    *,
    server_url: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    user_name: str = "admin",
) -> Path:
    """A kubeconfig with absolute file paths and two contexts.

    ``all-shards`` (current) points at ``/shards/*/clusters/*`` so that
    ``kubectl get <resource>`` lists across every shard and cluster at once; ``base``
    points at the server root for clients that add the shard and cluster themselves.
    """
    user = {"client-certificate": str(cert_file.resolve()), "client-key": str(key_file.resolve())}
    ca = str(ca_file.resolve())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "base", "cluster": {"server": server_url, "certificate-authority": ca}},
            {
                "name": "all-shards",
                "cluster": {
                    "server": f"{server_url}/shards/*/clusters/*",
                    "certificate-authority": ca,
                },
            },
        ],
        "users": [{"name": user_name, "user": user}],
        "contexts": [
            {"name": "all-shards", "context": {"cluster": "all-shards", "user": user_name}},
            {"name": "base", "context": {"cluster": "base", "user": user_name}},
        ],
        "current-context": "all-shards",
    }
    _write(path, yaml.safe_dump(config, sort_keys=False).encode(), 0o600)
    return path
