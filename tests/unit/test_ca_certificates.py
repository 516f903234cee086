"""A CA certificate is never a device certificate: registration and login refuse it.

With ejabberd every usable device certificate is listed in ``c2s_cafile`` as a trust anchor
(docs/server.md, "ejabberd"); a listed certificate that may sign certificates would let its
key mint a login for any account. The rule lives in ``require_usable``, so every server kind
and every way in (XEP-0257 append, tokens, rotation, ``certs add``, EXTERNAL) applies it.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pairing.protocol.identity import (
    XMPP_ADDR_OID,
    PeerCertificate,
    build_device_certificate,
    encode_utf8string,
)
from pairing.protocol.jid import JID
from server_ext.policy.certificates import (
    CertificateRefused,
    Problem,
    require_registrable,
    require_usable,
)
from server_ext.policy.external import ExternalRefused, decide_external
from tests.support.records import certificate_record

NOW = dt.datetime.now(dt.UTC)
BOT = JID.parse("alice@example.org/bot")

#: A self-signed X.509 version 1 certificate (no extensions at all), valid until 2126, made
#: with ``openssl req -new`` then ``openssl x509 -req -signkey KEY -days 36500``. OpenSSL
#: takes a version 1 self-signed certificate as a CA root (``check_ca``, V1_ROOT).
V1_PEM = b"""-----BEGIN CERTIFICATE-----
MIIBFjCBvQIUaV0GjqwvdY9A7KJQp9NL3Dz8njwwCgYIKoZIzj0EAwIwDTELMAkG
A1UEAwwCdjEwIBcNMjYxMjAzMDY1MDQ2WhgPMjEyNjExMDkwNjUwNDZaMA0xCzAJ
BgNVBAMMAnYxMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOVaX10FxGRVcInqT
2Z9CYIpM3oFk8AxNqvjyMsx1Mcn0n1z4/Ujty5YZXZtE9ZhOqJ7y3WIPEb3K9GvZ
qJRFSjAKBggqhkjOPQQDAgNIADBFAiASOoX8Y4IV1a3t3meQRLnqGoq3qLiCtmIU
JvO7tEPF/QIhAKw8DddP8p3kkNlp0akQ+iSzf1fcE4Q5SObBEXpgEx+3
-----END CERTIFICATE-----
"""


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def device_like(
    *,
    ca: bool | None,
    cert_sign: bool | None,
    netscape_ca: bool = False,
) -> PeerCertificate:
    """A self-signed client certificate for BOT with the given CA-ness.

    ``ca`` None leaves basicConstraints out; ``cert_sign`` None leaves keyUsage out.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(BOT))])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.OtherName(XMPP_ADDR_OID, encode_utf8string(str(BOT)))]
            ),
            False,
        )
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if cert_sign is not None:
        builder = builder.add_extension(_usage(cert_sign=cert_sign), critical=True)
    if netscape_ca:
        # nsCertType with sslCA (bit 5): BIT STRING of one octet, 2 unused bits, 0x04.
        builder = builder.add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("2.16.840.1.113730.1.1"), bytes([0x03, 0x02, 0x02, 0x04])
            ),
            critical=False,
        )
    return PeerCertificate.from_x509(builder.sign(key, hashes.SHA256()))


@pytest.mark.parametrize(
    ("case", "ca", "cert_sign", "netscape_ca"),
    [
        ("basicConstraints cA", True, False, False),
        ("basicConstraints cA, no keyUsage", True, None, False),
        ("keyUsage keyCertSign", False, True, False),
        ("keyUsage keyCertSign, no basicConstraints", None, True, False),
        ("Netscape CA type, no basicConstraints", None, None, True),
    ],
)
def test_ca_certificates_are_refused_with_the_reason(
    case: str, ca: bool | None, cert_sign: bool | None, netscape_ca: bool
) -> None:
    cert = device_like(ca=ca, cert_sign=cert_sign, netscape_ca=netscape_ca)
    assert cert.certificate_authority, case
    with pytest.raises(CertificateRefused, match="CA certificate") as info:
        require_usable(cert, NOW)
    assert info.value.problem is Problem.CERTIFICATE_AUTHORITY
    with pytest.raises(CertificateRefused):
        require_registrable(cert, BOT.bare, NOW, exactly=BOT)


def test_a_version_1_certificate_counts_as_a_ca() -> None:
    cert = PeerCertificate.parse(V1_PEM)
    assert cert.certificate_authority
    with pytest.raises(CertificateRefused) as info:
        require_usable(cert, NOW)
    assert info.value.problem is Problem.CERTIFICATE_AUTHORITY


@pytest.mark.parametrize(
    ("case", "ca", "cert_sign"),
    [
        ("what devices make", False, False),
        ("no extensions but EKU and SAN", None, None),
        ("keyUsage without keyCertSign, no basicConstraints", None, False),
        ("Netscape type ignored when basicConstraints says no", False, None),
    ],
)
def test_end_entity_certificates_pass(case: str, ca: bool | None, cert_sign: bool | None) -> None:
    cert = device_like(ca=ca, cert_sign=cert_sign, netscape_ca=case.startswith("Netscape"))
    assert not cert.certificate_authority, case
    require_usable(cert, NOW)
    require_registrable(cert, BOT.bare, NOW, exactly=BOT)


def test_the_project_device_certificate_is_an_end_entity() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = PeerCertificate.from_x509(build_device_certificate(key, BOT))
    assert not cert.certificate_authority
    # The real now: the certificate is made now, valid from a minute ago, while NOW was read
    # at import, which a whole-suite run does long before this test runs.
    require_registrable(cert, BOT.bare, dt.datetime.now(dt.UTC), exactly=BOT)


def test_external_refuses_a_registered_ca_certificate() -> None:
    """A CA certificate registered before this rule existed cannot log in either."""
    cert = device_like(ca=True, cert_sign=True)
    registered = certificate_record(cert.der, account=BOT.bare, subject_jids=(str(BOT),))
    with pytest.raises(ExternalRefused, match="CA certificate"):
        decide_external(
            presented=cert, authzid="", domain="example.org", registered=registered, now=NOW
        )
