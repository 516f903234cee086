"""Device identities: X.509 certificates that carry a JID in ``id-on-xmppAddr`` (XEP-0178).

Everything here is pure: certificates in, facts out. Files and keys on disk belong to
``device_agent.keystore``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
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


#: Netscape's certificate-type extension; its CA bits still make OpenSSL treat a certificate
#: without basicConstraints as a CA (``check_ca`` in crypto/x509/v3_purp.c).
_NETSCAPE_CERT_TYPE_OID = ObjectIdentifier("2.16.840.1.113730.1.1")
_NETSCAPE_ANY_CA = 0x07  # sslCA, emailCA, objCA: bits 5 to 7 of the first octet


def signs_certificates(cert: x509.Certificate) -> bool:
    """True when TLS libraries would accept ``cert`` as the issuer of other certificates.

    basicConstraints ``cA`` or keyUsage ``keyCertSign`` (RFC 5280 §4.2.1.9, §4.2.1.3) say so
    outright. OpenSSL also takes a version 1 certificate, and one without basicConstraints
    whose Netscape certificate type names a CA, as a CA. Such a certificate listed as a trust
    anchor (ejabberd's ``c2s_cafile``) would vouch for any certificate its key signs.
    """
    if cert.version is x509.Version.v1:
        return True
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError as exc:
        raise CertificateError(f"the basicConstraints extension is malformed: {exc}") from exc
    if constraints is not None and constraints.ca:
        return True
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    except ValueError as exc:
        raise CertificateError(f"the keyUsage extension is malformed: {exc}") from exc
    if usage is not None and usage.key_cert_sign:
        return True
    if constraints is None:
        try:
            netscape = cert.extensions.get_extension_for_oid(_NETSCAPE_CERT_TYPE_OID).value
        except x509.ExtensionNotFound:
            return False
        raw = getattr(netscape, "value", b"")
        # DER BIT STRING: tag 0x03, length, unused-bit count, then the bits.
        return len(raw) >= 4 and raw[0] == 0x03 and bool(raw[3] & _NETSCAPE_ANY_CA)
    return False


class KeyType(StrEnum):
    """The kind of public key a certificate carries."""

    EC = "EC"
    RSA = "RSA"
    ED25519 = "Ed25519"
    ED448 = "Ed448"
    DSA = "DSA"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A certificate parsed once, where it enters (a TLS handshake, a PEM file, an IQ).

    Everything policy and storage need is here as plain facts, so nothing below the boundary
    parses DER again. :meth:`parse` refuses what cannot be read; whether the facts are
    acceptable is for the server's policy to say.
    """

    der: bytes
    fingerprint: str  # SHA-256 of the DER, 64 lowercase hex digits
    jids: tuple[JID, ...]  # the id-on-xmppAddr values, prepared (RFC 7622)
    not_before: dt.datetime
    not_after: dt.datetime
    client_auth: bool  # False when extendedKeyUsage excludes TLS client authentication
    key_type: KeyType
    key_bits: int  # the key size (RSA, DSA) or the curve's size (EC); 0 when unknown
    # The subject's public key, read once here (proofs of possession verify with it); None
    # when the certificate's key cannot be read. Not part of equality: the DER already is.
    public_key: CertificatePublicKeyTypes | None = field(compare=False, repr=False)
    curve: str | None = None  # the EC curve's name, e.g. "secp256r1"
    # A certificate that may sign others (signs_certificates()). Listed as a trust anchor
    # (ejabberd's c2s_cafile) it would let its key mint certificates for any account.
    certificate_authority: bool = False

    @classmethod
    def parse(cls, data: bytes) -> PeerCertificate:
        """Read a DER or PEM certificate; raises :class:`CertificateError` with the reason."""
        return cls.from_x509(load_certificate(data))

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> PeerCertificate:
        der = certificate_der(cert)
        try:
            public_key: CertificatePublicKeyTypes | None = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            public_key = None
        key_type, bits, curve = _key_facts(public_key)
        return cls(
            der=der,
            fingerprint=fingerprint(der),
            jids=xmpp_addrs(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            client_auth=allows_client_auth(cert),
            key_type=key_type,
            key_bits=bits,
            public_key=public_key,
            curve=curve,
            certificate_authority=signs_certificates(cert),
        )

    def __repr__(self) -> str:
        jids = ", ".join(str(j) for j in self.jids)
        return f"PeerCertificate({self.fingerprint[:16]}…, [{jids}])"


@dataclass(frozen=True, slots=True)
class UnreadableCertificate:
    """A certificate presented in a TLS handshake that :meth:`PeerCertificate.parse` refused."""

    der: bytes
    fingerprint: str
    reason: str

    @classmethod
    def presented(cls, cert: x509.Certificate | bytes) -> PeerCertificate | UnreadableCertificate:
        """What a peer presented (as parsed by the TLS library, or DER): the certificate's
        facts, or why it cannot be used."""
        try:
            if isinstance(cert, bytes):
                return PeerCertificate.parse(cert)
            return PeerCertificate.from_x509(cert)
        except CertificateError as exc:
            der = cert if isinstance(cert, bytes) else certificate_der(cert)
            return cls(der, fingerprint(der), str(exc))


def _key_facts(key: CertificatePublicKeyTypes | None) -> tuple[KeyType, int, str | None]:
    if isinstance(key, rsa.RSAPublicKey):
        return KeyType.RSA, key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return KeyType.EC, key.curve.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519, 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return KeyType.ED448, 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return KeyType.DSA, key.key_size, None
    return KeyType.OTHER, 0, None


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
