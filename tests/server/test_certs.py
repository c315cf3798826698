"""Generated development certificates: content, reuse, permissions, kubeconfig."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kcp_cache.server import ensure_dev_credentials, ensure_serving_certificate, load_certificate


def test_serving_certificate_chain_sans_and_reuse(tmp_path: Path) -> None:
    files, created = ensure_serving_certificate(tmp_path)
    assert created
    chain = x509.load_pem_x509_certificates(files.cert.read_bytes())
    leaf, ca = chain
    leaf.verify_directly_issued_by(ca)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert files.key.stat().st_mode & 0o777 == 0o600

    again, created = ensure_serving_certificate(tmp_path)
    assert not created
    assert again.cert.read_bytes() == files.cert.read_bytes()

    # Another bind address not covered by the SANs ⇒ a new certificate.
    wider, created = ensure_serving_certificate(tmp_path, ("localhost", "127.0.0.1", "10.1.2.3"))
    assert created
    assert ipaddress.ip_address("10.1.2.3") in load_certificate(
        wider.cert
    ).extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress
    )


def test_broken_files_are_regenerated(tmp_path: Path) -> None:
    files, _ = ensure_serving_certificate(tmp_path)
    files.key.write_text("garbage")
    _, created = ensure_serving_certificate(tmp_path)
    assert created


def test_dev_credentials_admin_and_kubeconfig(tmp_path: Path) -> None:
    serving, _ = ensure_serving_certificate(tmp_path)
    creds = ensure_dev_credentials(tmp_path, "https://127.0.0.1:6443", serving.cert)
    ca = load_certificate(creds.client_ca.cert)
    admin = load_certificate(creds.admin.cert)
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kcp-cache-admin"
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for path in (creds.client_ca.key, creds.admin.key, creds.kubeconfig):
        assert path.stat().st_mode & 0o777 == 0o600, path

    config = yaml.safe_load(creds.kubeconfig.read_text())
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    assert clusters["base"]["server"] == "https://127.0.0.1:6443"
    assert clusters["all-shards"]["server"] == "https://127.0.0.1:6443/shards/*/clusters/*"
    assert clusters["base"]["certificate-authority"] == str(serving.cert.resolve())
    assert config["current-context"] == "all-shards"
    user = config["users"][0]["user"]
    assert user["client-certificate"] == str(creds.admin.cert.resolve())

    # A restart on another port keeps the CA and admin certificate, rewrites the URL.
    again = ensure_dev_credentials(tmp_path, "https://127.0.0.1:7443", serving.cert)
    assert again.admin.cert.read_bytes() == creds.admin.cert.read_bytes()
    assert "https://127.0.0.1:7443" in again.kubeconfig.read_text()
