"""The server's TLS certificate: a configured one, or a self-signed one made at first start.

Devices pin the SHA-256 fingerprint advertised in DHCP options and the mDNS TXT record (trust on
first use); a CA-issued certificate configured in [tls] replaces the self-signed one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class CertInfo:
    cert_file: Path
    key_file: Path
    fingerprint_sha256: str  # lowercase hex of SHA-256 over the DER certificate
    self_signed: bool


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def load_configured(cert_file: Path, key_file: Path) -> CertInfo:
    """Check a configured certificate/key pair is readable and matches; or raise ValueError."""
    try:
        pem = cert_file.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as e:
        raise ValueError(f"[tls] cert_file {cert_file}: cannot read a PEM certificate ({e})") from e
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(
            f"[tls] key_file {key_file}: cannot read an unencrypted PEM key ({e})"
        ) from e
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert_pub = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub != cert_pub:
        raise ValueError(f"[tls] key_file {key_file} does not belong to cert_file {cert_file}")
    return CertInfo(cert_file, key_file, cert.fingerprint(hashes.SHA256()).hex(), False)


def ensure_self_signed(
    state_dir: Path, names: list[str], now: dt.datetime | None = None
) -> CertInfo:
    """Reuse or create `imprint-tls.{crt,key}` in `state_dir` for host names/addresses `names`."""
    cert_file = state_dir / "imprint-tls.crt"
    key_file = state_dir / "imprint-tls.key"
    if cert_file.exists() and key_file.exists():
        return CertInfo(cert_file, key_file, fingerprint(cert_file.read_bytes()), True)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in dict.fromkeys([*names, socket.gethostname(), "localhost"]):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "imprint")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertInfo(cert_file, key_file, cert.fingerprint(hashes.SHA256()).hex(), True)
