"""The server's own TLS identity: generated once by ``init`` and kept, or the operator's.

Devices pin the certificate's SHA-256, so nothing here replaces a key or a certificate except
the two explicit operations, :func:`rotate_server_certificate` and
:func:`import_server_certificate` (``server-ext tls rotate|import``).
"""

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
from server_ext.config_file import CERT_NAME, KEY_NAME
from server_ext.errors import ConfigError

VALIDITY = dt.timedelta(days=730)


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    cert_path: Path
    key_path: Path
    fingerprint: str  # SHA-256 of the DER, hex
    not_after: dt.datetime
    dns_names: tuple[str, ...] = ()  # the leaf's subjectAltName DNS-IDs


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


def create_server_certificate(
    data_dir: Path, domain: str, *, now: dt.datetime | None = None
) -> ServerCertificate:
    """The identity in ``data_dir``: kept when present, generated only when absent.

    Never replaces a key or a certificate: devices pin this certificate's fingerprint, and a
    new one cuts every one of them off (issue 10). A certificate for another domain is an
    error here, not a reason to make a new one; only :func:`rotate_server_certificate` does.
    Only ``server-ext init`` and the first ``serve`` call this.
    """
    now = now or dt.datetime.now(dt.UTC)
    cert_path, key_path = data_dir / CERT_NAME, data_dir / KEY_NAME
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if cert_path.exists() or key_path.exists():
            current = load_server_certificate(cert_path, key_path)
            require_domain(current, domain)
            return current
        _generate(data_dir, domain, now)
    except OSError as exc:
        raise ConfigError(f"cannot prepare the server certificate in {data_dir}: {exc}") from exc
    return load_server_certificate(cert_path, key_path)


def require_domain(certificate: ServerCertificate, domain: str) -> None:
    """Refuse a certificate that does not name ``domain`` as a DNS-ID (RFC 6125 §6.4)."""
    if domain not in certificate.dns_names:
        names = ", ".join(certificate.dns_names) or "no DNS name"
        raise ConfigError(
            f"the certificate {certificate.cert_path} is for {names}, not {domain}; it is "
            "kept as it is (devices pin it): serve the domain it names, or make a new "
            "identity on purpose with `server-ext tls rotate` or `server-ext tls import`"
        )


def rotate_server_certificate(
    data_dir: Path, domain: str, *, now: dt.datetime | None = None
) -> tuple[ServerCertificate, ServerCertificate | None]:
    """A new key and certificate in ``data_dir``; the old pair is kept beside them.

    Returns the new certificate and the one it replaced (None if there was none). The old
    files become ``server.crt.previous``/``server.key.previous``, so a rotation by mistake
    can be undone by moving them back.
    """
    now = now or dt.datetime.now(dt.UTC)
    cert_path, key_path = data_dir / CERT_NAME, data_dir / KEY_NAME
    previous = None
    try:
        if cert_path.exists() and key_path.exists():
            previous = load_server_certificate(cert_path, key_path)
            _keep_previous(cert_path, key_path)
        _generate(data_dir, domain, now)
    except OSError as exc:
        raise ConfigError(f"cannot write the new certificate in {data_dir}: {exc}") from exc
    return load_server_certificate(cert_path, key_path), previous


def import_server_certificate(
    data_dir: Path, cert_file: Path, key_file: Path, domain: str
) -> tuple[ServerCertificate, ServerCertificate | None]:
    """Copy an operator's certificate and key into ``data_dir`` after checking them.

    The pair must belong together and name ``domain``; the replaced pair is kept as with
    :func:`rotate_server_certificate`.
    """
    offered = load_server_certificate(cert_file, key_file)
    require_domain(offered, domain)
    cert_path, key_path = data_dir / CERT_NAME, data_dir / KEY_NAME
    previous = None
    try:
        cert_pem, key_pem = Path(cert_file).read_bytes(), Path(key_file).read_bytes()
        if cert_path.exists() and key_path.exists():
            previous = load_server_certificate(cert_path, key_path)
            _keep_previous(cert_path, key_path)
        write_private(key_path, key_pem)
        write_public(cert_path, cert_pem)
    except OSError as exc:
        raise ConfigError(f"cannot write the certificate in {data_dir}: {exc}") from exc
    return load_server_certificate(cert_path, key_path), previous


def _keep_previous(cert_path: Path, key_path: Path) -> None:
    write_private(key_path.with_name(key_path.name + ".previous"), key_path.read_bytes())
    write_public(cert_path.with_name(cert_path.name + ".previous"), cert_path.read_bytes())


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
    if not chain:
        raise ConfigError(f"{cert_path} holds no certificate")
    leaf = chain[0]
    if leaf.public_key() != key.public_key():
        raise ConfigError(f"the key {key_path} does not belong to the certificate {cert_path}")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return ServerCertificate(
        Path(cert_path),
        Path(key_path),
        fingerprint(certificate_der(leaf)),
        leaf.not_valid_after_utc,
        dns_names,
    )
