"""Weak device keys are refused by one rule, at registration, enrollment and login (issue 8)."""

from __future__ import annotations

import datetime as dt

import pytest

from pairing.protocol.enrollment import EnrollCondition
from pairing.protocol.identity import PeerCertificate, certificate_der
from pairing.protocol.jid import JID
from server_ext.model import TokenRecord, TokenState
from server_ext.policy.certificates import (
    CertificateRefused,
    Problem,
    require_registrable,
    require_strong_key,
)
from server_ext.policy.external import ExternalAccepted, ExternalRefused, decide_external
from server_ext.policy.tokens import TokenRefused, check_redemption
from server_ext.wire.conditions import SASLCondition
from tests.support import keytypes
from tests.support.records import certificate_record

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
BOT = JID.parse("alice@example.org/bot")

#: What each refusal must say, so the operator or the device learns why.
REASONS = {
    "rsa-1024": "RSA with 1024 bits",
    "rsa-2047": "RSA with 2047 bits",
    "dsa-2048": "DSA is refused",
    "ec-secp256k1": "secp256k1 is refused",
    "ec-secp224r1": "secp224r1 is refused",
    "ec-brainpoolP256r1": "brainpoolP256r1 is refused",
}


def login(der: bytes) -> ExternalAccepted | ExternalRefused:
    """The EXTERNAL decision for ``der``, registered and active for alice."""
    registered = certificate_record(der, account=BOT.bare, subject_jids=(str(BOT),))
    try:
        return decide_external(
            presented=PeerCertificate.parse(der),
            authzid="",
            domain="example.org",
            registered=registered,
            now=NOW,
        )
    except ExternalRefused as refused:
        return refused


def test_every_weak_kind_has_a_reason() -> None:
    assert sorted(REASONS) == keytypes.WEAK


@pytest.mark.parametrize("kind", keytypes.STRONG)
def test_strong_keys_pass(kind: str) -> None:
    _, cert = keytypes.make(kind, str(BOT), now=NOW)
    require_strong_key(PeerCertificate.from_x509(cert))
    require_registrable(PeerCertificate.from_x509(cert), BOT.bare, NOW)


@pytest.mark.parametrize("kind", keytypes.WEAK)
def test_the_rule_refuses_weak_keys_with_the_reason(kind: str) -> None:
    _, cert = keytypes.make(kind, str(BOT), now=NOW)
    with pytest.raises(CertificateRefused, match="weak key") as info:
        require_strong_key(PeerCertificate.from_x509(cert))
    assert info.value.problem is Problem.WEAK_KEY
    assert REASONS[kind] in str(info.value)


@pytest.mark.parametrize("kind", keytypes.WEAK)
def test_registration_refuses_weak_keys(kind: str) -> None:
    """XEP-0257 append, rotation and ``server-ext certs add`` all go through this check."""
    _, cert = keytypes.make(kind, str(BOT), now=NOW)
    with pytest.raises(CertificateRefused) as info:
        require_registrable(PeerCertificate.from_x509(cert), BOT.bare, NOW)
    assert REASONS[kind] in str(info.value)


@pytest.mark.parametrize("kind", keytypes.WEAK)
def test_enrollment_refuses_weak_keys_and_keeps_the_token(kind: str) -> None:
    _, cert = keytypes.make(kind, str(BOT), now=NOW)
    token = TokenRecord(
        1, "h", BOT, "bot", TokenState.PENDING, NOW, NOW + dt.timedelta(minutes=5), "alice"
    )
    with pytest.raises(TokenRefused) as info:
        check_redemption(token, PeerCertificate.from_x509(cert), NOW)
    assert info.value.condition is EnrollCondition.BAD_CERTIFICATE
    assert not info.value.condition.burns_token
    assert REASONS[kind] in info.value.text


@pytest.mark.parametrize("kind", keytypes.WEAK)
def test_login_refuses_weak_keys_even_when_registered(kind: str) -> None:
    """A certificate registered before the rule existed cannot log in either."""
    _, cert = keytypes.make(kind, str(BOT), now=NOW)
    der = certificate_der(cert)
    result = login(der)
    assert isinstance(result, ExternalRefused), result
    assert result.condition is SASLCondition.NOT_AUTHORIZED
    assert REASONS[kind] in result.text


@pytest.mark.parametrize("kind", keytypes.STRONG)
def test_login_accepts_strong_keys(kind: str) -> None:
    _, cert = keytypes.make(kind, str(BOT), now=NOW)
    der = certificate_der(cert)
    result = login(der)
    assert isinstance(result, ExternalAccepted), result
