"""The server's own TLS certificate: generated on first start and kept, or the operator's."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pairing.protocol.identity import (
    certificate_der,
    certificate_pem,
    fingerprint,
    private_key_pem,
)
from pairing.secure_files import write_private, write_public
from server_ext.errors import ConfigError

CERT_NAME = "server.crt"
KEY_NAME = "server.key"
VALIDITY = dt.timedelta(days=730)


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    cert_path: Path
    key_path: Path
    fingerprint: str  # SHA-256 of the DER, hex
    not_after: dt.datetime


def _generate(data_dir: Path, domain: str, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    # RFC 6125 / RFC 7590: clients match the domain as a DNS-ID in subjectAltName.
    alt_names: list[x509.GeneralName] = [x509.DNSName(domain)]
    if domain == "localhost":
        alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(data_dir / KEY_NAME, private_key_pem(key))
    write_public(data_dir / CERT_NAME, certificate_pem(cert))


def ensure_server_certificate(
    data_dir: Path, domain: str, *, now: dt.datetime | None = None
) -> ServerCertificate:
    """The certificate in ``data_dir``, generated if missing, expired or for another domain."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_path, key_path = data_dir / CERT_NAME, data_dir / KEY_NAME
        if cert_path.exists() and key_path.exists():
            current = load_server_certificate(cert_path, key_path)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            names = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName)
            if current.not_after > now + dt.timedelta(days=1) and domain in names:
                return current
        _generate(data_dir, domain, now)
        return load_server_certificate(cert_path, key_path)
    except OSError as exc:
        raise ConfigError(f"cannot prepare the server certificate in {data_dir}: {exc}") from exc
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise ConfigError(f"the certificate in {data_dir} is unusable: {exc}") from exc


def load_server_certificate(cert_path: Path, key_path: Path) -> ServerCertificate:
    """Check an operator-provided certificate and key and describe them."""
    try:
        cert_pem = Path(cert_path).read_bytes()
        key_pem = Path(key_path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the server certificate or key: {exc}") from exc
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot parse {cert_path} or {key_path} (PEM, unencrypted key expected): {exc}"
        ) from exc
    leaf = chain[0]
    if leaf.public_key() != key.public_key():
        raise ConfigError(f"the key {key_path} does not belong to the certificate {cert_path}")
    return ServerCertificate(
        Path(cert_path),
        Path(key_path),
        fingerprint(certificate_der(leaf)),
        leaf.not_valid_after_utc,
    )
