"""The renewal signature (pairing/protocol/renewal.py): what it binds, for each key type."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from pairing.protocol.identity import build_device_certificate, certificate_der, generate_key
from pairing.protocol.jid import JID
from pairing.protocol.renewal import (
    RENEWAL_LABEL,
    RenewalRefused,
    RenewalRequest,
    RenewCondition,
    SigningKey,
    renewal_message,
    sign_renewal,
)

BOT = JID.parse("alice@example.org/bot")


def certificate_for(key: SigningKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bot")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return certificate_der(builder.sign(key, algorithm))


def test_the_message_is_the_label_the_domain_and_the_new_certificates_digest() -> None:
    new = b"new certificate DER"
    message = renewal_message("example.org", new)
    assert message.startswith(RENEWAL_LABEL + b"\x00example.org\x00")
    assert len(message) == len(RENEWAL_LABEL) + len(b"\x00example.org\x00") + 32
    assert renewal_message("example.org", new + b"x") != message
    assert renewal_message("example.net", new) != message


@pytest.mark.parametrize(
    "key",
    [
        generate_key(),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["P-256", "P-384", "Ed25519", "RSA-2048"],
)
def test_a_signature_verifies_only_for_its_domain_and_certificate(key: SigningKey) -> None:
    expired = certificate_for(key)
    new = certificate_der(build_device_certificate(generate_key(), BOT))
    other = certificate_der(build_device_certificate(generate_key(), BOT))
    request = RenewalRequest.parse(expired, sign_renewal(key, "example.org", new))
    request.verify("example.org", new)
    for domain, der in (("example.org", other), ("example.net", new)):
        with pytest.raises(RenewalRefused) as refused:
            request.verify(domain, der)
        assert refused.value.condition is RenewCondition.BAD_SIGNATURE


def test_an_unreadable_expired_certificate_is_malformed() -> None:
    with pytest.raises(RenewalRefused) as refused:
        RenewalRequest.parse(b"\x30\x03\x02\x01\x00", b"sig")
    assert refused.value.condition is RenewCondition.MALFORMED
