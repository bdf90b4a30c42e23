"""The lab's own certificate authority, as kubeadm makes one for a cluster: a CA,
the API server's certificate (for 127.0.0.1 and localhost only) and one client
certificate for the lab's admin (`O=system:masters`), all in the run directory,
readable by root only. kubectl and the `kubernetes` Python client trust the CA
and present the client certificate through the lab's kubeconfig.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365
ADMIN_USER = "netlab-admin"


@dataclass(frozen=True)
class LabPki:
    """Paths of the PEM files (keys are mode 0600)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def client_cert(self) -> Path:
        return self.root / "admin.crt"

    @property
    def client_key(self) -> Path:
        return self.root / "admin.key"

    def exists(self) -> bool:
        return all(
            p.exists()
            for p in (
                self.ca_cert,
                self.server_cert,
                self.server_key,
                self.client_cert,
                self.client_key,
            )
        )


def _name(common: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        parts.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(root: Path, lab: str) -> LabPki:
    """A CA and the two certificates it signs, written under `root` (made 0700)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki = LabPki(root)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"netlab-{lab}-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(_name("netlab-apiserver"), server_key, ca_name, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue(_name(ADMIN_USER, "system:masters"), client_key, ca_name, ca_key)
    pem = serialization.Encoding.PEM
    _write(pki.ca_cert, ca.public_bytes(pem), private=False)
    _write(pki.server_cert, server.public_bytes(pem), private=False)
    _write(pki.server_key, _key_pem(server_key), private=True)
    _write(pki.client_cert, client.public_bytes(pem), private=False)
    _write(pki.client_key, _key_pem(client_key), private=True)
    return pki


def load_or_make(root: Path, lab: str) -> LabPki:
    """The lab's PKI as an earlier supervisor left it, or a new one."""
    pki = LabPki(root)
    return pki if pki.exists() else make_pki(root, lab)
