"""Signatures that prove possession of a device key, over messages built in this package.

One rule for every key type a device certificate may carry (the same set
``server_ext.policy.certificates.require_strong_key`` accepts): ECDSA with SHA-256, RSA-PSS
with SHA-256, and plain Ed25519/Ed448. Renewal (:mod:`pairing.protocol.renewal`) and the
HTTPS enrollment API (:mod:`pairing.protocol.https_api`) sign with it. Pure: keys and bytes
in, bytes or :class:`InvalidProof` out.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from pairing.errors import PairingError
from pairing.protocol.identity import PeerCertificate

SigningKey = (
    ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | rsa.RSAPrivateKey
)

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class InvalidProof(PairingError):
    """The signature is not by the certificate's key over that message."""


def sign(key: SigningKey, message: bytes) -> bytes:
    """``key``'s signature over ``message``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, _PSS, hashes.SHA256())
    return key.sign(message)


def verify(public_key: object, signature: bytes, message: bytes) -> None:
    """Raise :class:`InvalidProof` unless ``signature`` is ``public_key``'s over ``message``."""
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, _PSS, hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, message)
        else:
            raise InvalidProof("this key type cannot sign a proof")
    except InvalidSignature:
        raise InvalidProof("the signature does not verify") from None


def verify_by_certificate(certificate: PeerCertificate, signature: bytes, message: bytes) -> None:
    """:func:`verify` with the key of ``certificate`` (read when it was parsed)."""
    if certificate.public_key is None:
        raise InvalidProof("the certificate's key cannot be read")
    verify(certificate.public_key, signature, message)


__all__ = ["InvalidProof", "SigningKey", "sign", "verify", "verify_by_certificate"]
