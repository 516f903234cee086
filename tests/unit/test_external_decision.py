"""The XEP-0178 EXTERNAL decision as a pure function: certificates and records in, verdicts out."""

from __future__ import annotations

import datetime as dt

import pytest

from pairing.protocol.identity import (
    UnreadableCertificate,
    build_device_certificate,
    certificate_der,
    fingerprint,
    generate_key,
)
from pairing.protocol.jid import JID
from server_ext.model import CertificateRecord, CertState, DeviceState
from server_ext.policy.external import ExternalAccepted, ExternalRefused, decide_external
from server_ext.wire.conditions import SASLCondition
from tests.support.records import certificate_record

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
ALICE = JID.parse("alice@example.org")


def cert(*jids: str, client_auth: bool = True, now: dt.datetime = NOW, days: int = 30) -> bytes:
    return certificate_der(
        build_device_certificate(
            generate_key(),
            [JID.parse(j) for j in jids],
            now=now,
            valid_for=dt.timedelta(days=days),
            client_auth=client_auth,
        )
    )


def record(
    der: bytes,
    *,
    account: JID = ALICE,
    state: CertState = CertState.ACTIVE,
    device_state: DeviceState = DeviceState.ACTIVE,
) -> CertificateRecord:
    return certificate_record(
        der, account=account, state=state, device_state=device_state, revoked_reason="stolen"
    )


def decide(
    der: bytes | None,
    authzid: str = "",
    registered: CertificateRecord | None = None,
    now: dt.datetime = NOW,
    *,
    unregistered: bool = False,
) -> ExternalAccepted | ExternalRefused:
    """The decision for ``der`` as the TLS adapter would present it, or the refusal."""
    if registered is None and der is not None and not unregistered:
        registered = record(der)
    try:
        return decide_external(
            presented=UnreadableCertificate.presented(der) if der is not None else None,
            authzid=authzid,
            domain="example.org",
            registered=registered,
            now=now,
        )
    except ExternalRefused as refused:
        return refused


def rejected(result: object, condition: SASLCondition, words: str) -> None:
    assert isinstance(result, ExternalRefused), result
    assert result.condition is condition
    assert words in result.text


def test_single_full_jid_with_empty_authzid_locks_the_resource() -> None:
    der = cert("alice@example.org/bot")
    result = decide(der)
    assert isinstance(result, ExternalAccepted)
    assert (result.identity, result.locked_resource, result.certificate.fingerprint) == (
        ALICE,
        "bot",
        fingerprint(der),
    )


def test_bare_jid_certificate_has_no_lock() -> None:
    result = decide(cert("alice@example.org"))
    assert isinstance(result, ExternalAccepted)
    assert result.locked_resource is None


@pytest.mark.parametrize(
    "authzid", ["alice@example.org", "alice@example.org/bot", "Alice@Example.org"]
)
def test_authzid_may_be_the_bare_or_full_jid(authzid: str) -> None:
    result = decide(cert("alice@example.org/bot"), authzid)
    assert isinstance(result, ExternalAccepted)
    assert result.locked_resource == "bot"


def test_several_jids_need_an_authzid() -> None:
    der = cert("alice@example.org/a", "alice@example.org/b")
    rejected(decide(der), SASLCondition.INVALID_AUTHZID, "several")
    chosen = decide(der, "alice@example.org/b")
    assert isinstance(chosen, ExternalAccepted)
    assert chosen.locked_resource == "b"
    rejected(decide(der, "alice@example.org"), SASLCondition.INVALID_AUTHZID, "full JID")


@pytest.mark.parametrize("authzid", ["admin@example.org", "alice@example.org/other", "not a jid@@"])
def test_authzid_outside_the_certificate_is_refused(authzid: str) -> None:
    rejected(decide(cert("alice@example.org/bot"), authzid), SASLCondition.INVALID_AUTHZID, "")


def test_no_certificate() -> None:
    rejected(decide(None), SASLCondition.NOT_AUTHORIZED, "no client certificate")


def test_garbage_certificate() -> None:
    rejected(decide(b"\x30\x03\x02\x01\x01"), SASLCondition.NOT_AUTHORIZED, "unusable")


def test_expired_and_not_yet_valid() -> None:
    der = cert("alice@example.org/bot", days=1)
    rejected(decide(der, now=NOW + dt.timedelta(days=2)), SASLCondition.NOT_AUTHORIZED, "expired")
    rejected(
        decide(der, now=NOW - dt.timedelta(hours=1)), SASLCondition.NOT_AUTHORIZED, "not valid yet"
    )


def test_server_auth_only_certificate_is_refused() -> None:
    rejected(
        decide(cert("alice@example.org/bot", client_auth=False)),
        SASLCondition.NOT_AUTHORIZED,
        "extendedKeyUsage",
    )


def test_other_domain_jids_do_not_count() -> None:
    rejected(decide(cert("alice@elsewhere.net/bot")), SASLCondition.NOT_AUTHORIZED, "no xmppAddr")


def test_unregistered_disabled_revoked_and_wrong_account() -> None:
    der = cert("alice@example.org/bot")
    rejected(decide(der, unregistered=True), SASLCondition.NOT_AUTHORIZED, "not registered")
    rejected(
        decide(der, registered=record(der, state=CertState.DISABLED)),
        SASLCondition.NOT_AUTHORIZED,
        "disabled",
    )
    rejected(
        decide(der, registered=record(der, state=CertState.REVOKED)),
        SASLCondition.NOT_AUTHORIZED,
        "revoked",
    )
    # The device is the unit: an active certificate of a revoked or disabled device is refused.
    rejected(
        decide(der, registered=record(der, device_state=DeviceState.REVOKED)),
        SASLCondition.NOT_AUTHORIZED,
        "device was revoked: stolen",
    )
    rejected(
        decide(der, registered=record(der, device_state=DeviceState.DISABLED)),
        SASLCondition.NOT_AUTHORIZED,
        "device was disabled",
    )
    mallory = record(der, account=JID.parse("mallory@example.org"))
    rejected(decide(der, registered=mallory), SASLCondition.NOT_AUTHORIZED, "not registered for")
