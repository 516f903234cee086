"""Certificates for the stock-server tests: a server certificate for ``localhost`` and a
device CA that signs client certificates carrying (or, to probe the servers, not carrying) a
JID in ``id-on-xmppAddr`` (RFC 6120 §13.7.1.4, XEP-0178).

ejabberd accepts SASL EXTERNAL only for certificates signed by a CA it is given, so these are
the certificates a ``server_ext`` device CA would issue, and the malformed ones it must never
issue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pairing.protocol.identity import (
    XMPP_ADDR_OID,
    build_device_certificate,
    certificate_pem,
    encode_utf8string,
    generate_key,
    private_key_pem,
)
from pairing.protocol.jid import JID
from pairing.secure_files import write_private, write_public

_KEY_USAGE_LEAF = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_KEY_USAGE_CA = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate and its key on disk (the key 0600), and the two in one PEM file."""

    cert: Path
    key: Path
    bundle: Path  # certificate then key: what ejabberd's ``certfiles`` takes
    certificate: x509.Certificate


def write_pair(
    folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertificateFiles:
    """Write ``cert`` and ``key`` as ``name.crt``, ``name.key`` and ``name.pem`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path, bundle = (
        folder / f"{name}.crt",
        folder / f"{name}.key",
        folder / f"{name}.pem",
    )
    write_public(cert_path, certificate_pem(cert))
    write_private(key_path, private_key_pem(key))
    write_private(bundle, certificate_pem(cert) + private_key_pem(key))
    return CertificateFiles(cert_path, key_path, bundle, cert)


def server_certificate(folder: Path, *names: str) -> CertificateFiles:
    """A self-signed TLS server certificate for ``names`` (``localhost`` by default)."""
    names = names or ("localhost",)
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    return write_pair(folder, "server", cert, key)


def self_signed_device(folder: Path, jid: str, name: str = "self-signed") -> CertificateFiles:
    """What a device of this project makes by itself: a self-signed certificate for ``jid``."""
    key = generate_key()
    return write_pair(folder, name, build_device_certificate(key, JID.parse(jid)), key)


class DeviceCA:
    """A CA that signs device certificates, as ``server-ext ca init`` would keep one."""

    def __init__(self, folder: Path, name: str = "xmpp-dp test device CA") -> None:
        self.folder = folder
        self.key = generate_key()
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_KEY_USAGE_CA, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.cert_path = folder / "device-ca.crt"
        write_public(self.cert_path, certificate_pem(self.certificate))

    def issue(
        self,
        name: str,
        *jids: str,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        san_dns: tuple[str, ...] = (),
    ) -> CertificateFiles:
        """A client certificate with ``jids`` as xmppAddr SANs (none at all when empty)."""
        key = generate_key()
        now = dt.datetime.now(dt.UTC)
        common_name = jids[0] if jids else name
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=1))
            .not_valid_after(not_after or now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_KEY_USAGE_LEAF, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        general_names: list[x509.GeneralName] = [
            x509.OtherName(XMPP_ADDR_OID, encode_utf8string(jid)) for jid in jids
        ]
        general_names += [x509.DNSName(dns) for dns in san_dns]
        if general_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(general_names), False)
        return write_pair(self.folder, name, builder.sign(self.key, hashes.SHA256()), key)
