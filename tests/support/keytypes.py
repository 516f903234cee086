"""Device certificates with keys of every type, strong and weak, for the key-strength tests.

``build_device_certificate`` makes only P-256 keys (what the project's devices use); a hostile
or old device may present anything, so the tests build those certificates here.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pairing.protocol.identity import XMPP_ADDR_OID, encode_utf8string
from pairing.protocol.jid import JID
from pairing.secure_files import write_private, write_public

KeyMaker = Callable[[], CertificateIssuerPrivateKeyTypes]


@functools.cache
def _dsa_key() -> dsa.DSAPrivateKey:
    return dsa.generate_private_key(2048)  # parameter generation is slow: once per run


#: name → key maker, and whether the key must be refused.
KEYS: dict[str, tuple[KeyMaker, bool]] = {
    "rsa-1024": (lambda: rsa.generate_private_key(65537, 1024), True),
    "rsa-2047": (lambda: rsa.generate_private_key(65537, 2047), True),
    "rsa-2048": (lambda: rsa.generate_private_key(65537, 2048), False),
    "dsa-2048": (_dsa_key, True),
    "ec-secp256k1": (lambda: ec.generate_private_key(ec.SECP256K1()), True),
    "ec-secp224r1": (lambda: ec.generate_private_key(ec.SECP224R1()), True),
    "ec-brainpoolP256r1": (lambda: ec.generate_private_key(ec.BrainpoolP256R1()), True),
    "ec-p256": (lambda: ec.generate_private_key(ec.SECP256R1()), False),
    "ec-p384": (lambda: ec.generate_private_key(ec.SECP384R1()), False),
    "ec-p521": (lambda: ec.generate_private_key(ec.SECP521R1()), False),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, False),
    "ed448": (ed448.Ed448PrivateKey.generate, False),
}
WEAK = sorted(name for name, (_, weak) in KEYS.items() if weak)
STRONG = sorted(name for name, (_, weak) in KEYS.items() if not weak)


def certificate(
    key: CertificateIssuerPrivateKeyTypes,
    *jids: str,
    now: dt.datetime | None = None,
    valid_for: dt.timedelta = dt.timedelta(days=30),
) -> x509.Certificate:
    """A self-signed client certificate for ``jids``, signed by ``key`` whatever its type."""
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, jids[0])])
    san = x509.SubjectAlternativeName(
        [x509.OtherName(XMPP_ADDR_OID, encode_utf8string(str(JID.parse(j)))) for j in jids]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + valid_for)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(san, critical=False)
    )
    # EdDSA signs the message itself; every other type takes a hash (RFC 8410 §6).
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return builder.sign(key, None)
    return builder.sign(key, hashes.SHA256())


def make(
    kind: str, *jids: str, now: dt.datetime | None = None
) -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
    key = KEYS[kind][0]()
    return key, certificate(key, *jids, now=now)


def write(folder: Path, kind: str, *jids: str) -> tuple[Path, Path, bytes]:
    """Key and certificate files of ``kind`` in ``folder``: (cert path, key path, DER)."""
    key, cert = make(kind, *jids)
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / "device.key", folder / "device.crt"
    write_private(key_path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    write_public(cert_path, cert.public_bytes(Encoding.PEM))
    return cert_path, key_path, cert.public_bytes(Encoding.DER)
