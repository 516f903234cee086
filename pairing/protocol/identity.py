"""Device identities: X.509 certificates that carry a JID in ``id-on-xmppAddr`` (XEP-0178).

Everything here is pure: certificates in, facts out. Files and keys on disk belong to
``device_agent.keystore``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from pairing.errors import CertificateError, InvalidJID
from pairing.protocol.jid import JID

#: id-on-xmppAddr, RFC 6120 §13.7.1.4: an otherName SAN whose value is a UTF8String JID.
XMPP_ADDR_OID = ObjectIdentifier("1.3.6.1.5.5.7.8.5")

_UTF8STRING_TAG = 0x0C
_CLIENT_AUTH_COMPATIBLE = (
    ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
)


def encode_utf8string(text: str) -> bytes:
    """DER-encode ``text`` as an ASN.1 UTF8String."""
    body = text.encode("utf-8")
    length = len(body)
    if length < 0x80:
        header = bytes([_UTF8STRING_TAG, length])
    else:
        size = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([_UTF8STRING_TAG, 0x80 | len(size)]) + size
    return header + body


def decode_utf8string(der: bytes) -> str:
    """Decode one DER UTF8String, raising :class:`CertificateError` on anything else."""
    if len(der) < 2 or der[0] != _UTF8STRING_TAG:
        raise CertificateError("an xmppAddr value is not a UTF8String")
    first = der[1]
    offset = 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            raise CertificateError("an xmppAddr value has a malformed length")
        length = int.from_bytes(der[2 : 2 + count], "big")
        offset += count
    if offset + length != len(der):
        raise CertificateError("an xmppAddr value has a malformed length")
    try:
        return der[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CertificateError("an xmppAddr value is not valid UTF-8") from exc


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse a DER or PEM certificate, raising :class:`CertificateError` if it cannot be read."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"the certificate cannot be parsed: {exc}") from exc


def certificate_der(cert: x509.Certificate) -> bytes:
    """The DER bytes of ``cert``."""
    return cert.public_bytes(Encoding.DER)


def certificate_pem(cert: x509.Certificate) -> bytes:
    """The PEM text of ``cert``."""
    return cert.public_bytes(Encoding.PEM)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM; the file it goes to must be mode 0600 (``secure_files``)."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate as 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


def format_fingerprint(hex_digest: str) -> str:
    """``AB:CD:…`` form of a hex fingerprint, as TLS tools print it."""
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


def xmpp_addrs(cert: x509.Certificate) -> tuple[JID, ...]:
    """The JIDs in the certificate's ``id-on-xmppAddr`` SANs (XEP-0178 §3), in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    except ValueError as exc:
        raise CertificateError(f"the subjectAltName extension is malformed: {exc}") from exc
    jids: list[JID] = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != XMPP_ADDR_OID:
            continue
        text = decode_utf8string(other.value)
        try:
            jids.append(JID.parse(text))
        except InvalidJID as exc:
            raise CertificateError(f"an xmppAddr is not a valid JID: {exc}") from exc
    return tuple(jids)


def allows_client_auth(cert: x509.Certificate) -> bool:
    """True unless an extendedKeyUsage extension excludes TLS client authentication."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # RFC 5280 §4.2.1.12: without the extension, no usage is excluded.
    return any(oid in eku for oid in _CLIENT_AUTH_COMPATIBLE)


#: RSA below 2048 bits has been disallowed for signatures since 2013 (NIST SP 800-131A).
MIN_RSA_BITS = 2048
#: The curves TLS 1.3 can sign with (RFC 8446 §4.2.3: ecdsa_secp256r1/384r1/521r1 only).
ACCEPTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_ADVICE = "use EC P-256, P-384 or P-521, Ed25519, or RSA of at least 2048 bits"


def require_strong_key(cert: x509.Certificate) -> None:
    """Raise :class:`CertificateError` unless the certificate's public key is strong enough.

    The one rule for device keys, applied at registration (XEP-0257 append and
    ``server-ext certs add``), enrollment and every EXTERNAL login.
    """
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"weak key: its type is not supported ({exc}); {_ADVICE}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                f"weak key: RSA with {key.key_size} bits (at least {MIN_RSA_BITS} are required)"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ACCEPTED_CURVES:
            raise CertificateError(f"weak key: the EC curve {key.curve.name} is refused; {_ADVICE}")
        return
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return
    if isinstance(key, dsa.DSAPublicKey):
        # DSA is gone from TLS 1.3 (RFC 8446 §4.2.3) and from FIPS 186-5.
        raise CertificateError(f"weak key: DSA is refused; {_ADVICE}")
    raise CertificateError(f"weak key: a {type(key).__name__} cannot be used; {_ADVICE}")


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key: fast handshakes and small certificates."""
    return ec.generate_private_key(ec.SECP256R1())


def build_device_certificate(
    key: ec.EllipticCurvePrivateKey,
    jids: JID | Sequence[JID],
    *,
    valid_for: dt.timedelta = dt.timedelta(days=365),
    now: dt.datetime | None = None,
    client_auth: bool = True,
) -> x509.Certificate:
    """A self-signed certificate carrying ``jids`` as xmppAddr SANs, for TLS client auth."""
    jid_list = [jids] if isinstance(jids, JID) else list(jids)
    if not jid_list:
        raise CertificateError("a device certificate needs at least one JID")
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(jid_list[0]))])
    san = x509.SubjectAlternativeName(
        [x509.OtherName(XMPP_ADDR_OID, encode_utf8string(str(jid))) for jid in jid_list]
    )
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH if client_auth else ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A minute of slack so a device with a slightly slow clock is not refused.
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + valid_for)
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
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(san, critical=False)
    )
    return builder.sign(key, hashes.SHA256())
