"""Token rules: entropy, hashing, lifetimes and who may redeem (pure, clock injected)."""

from __future__ import annotations

import datetime as dt

import pytest

from pairing.protocol.enrollment import EnrollCondition
from pairing.protocol.identity import PeerCertificate, build_device_certificate, generate_key
from pairing.protocol.jid import JID
from server_ext.model import TokenRecord, TokenState
from server_ext.policy.tokens import (
    TokenPolicyError,
    TokenRefused,
    TokenRules,
    check_redemption,
    generate_token,
    hash_token,
    well_formed,
)

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
BOT = JID.parse("alice@example.org/bot")


def record(
    state: TokenState = TokenState.PENDING, expires: dt.timedelta = dt.timedelta(minutes=5)
) -> TokenRecord:
    return TokenRecord(1, "h", BOT, "bot", state, NOW, NOW + expires, "alice")


def cert(*jids: str, days: int = 30, client_auth: bool = True) -> PeerCertificate:
    return PeerCertificate.from_x509(
        build_device_certificate(
            generate_key(),
            [JID.parse(j) for j in jids],
            now=NOW,
            valid_for=dt.timedelta(days=days),
            client_auth=client_auth,
        )
    )


def test_tokens_are_long_random_and_well_formed() -> None:
    tokens = {generate_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) == 32 and well_formed(t) for t in tokens)
    assert not well_formed("A" * 31) and not well_formed("1" * 32)


def test_hash_is_stable_and_not_the_token() -> None:
    token = generate_token()
    assert hash_token(token) == hash_token(token.lower()) == hash_token(f" {token}\n")
    assert token not in hash_token(token) and len(hash_token(token)) == 64


def test_lifetimes() -> None:
    rules = TokenRules()
    assert rules.ttl(None) == dt.timedelta(minutes=10)
    assert rules.ttl(dt.timedelta(minutes=30)) == dt.timedelta(minutes=30)
    for bad in (dt.timedelta(seconds=5), dt.timedelta(hours=2)):
        with pytest.raises(TokenPolicyError, match="between 30 s and 1 h"):
            rules.ttl(bad)


def test_the_happy_path_returns_the_token_jid() -> None:
    assert check_redemption(record(), cert("alice@example.org/bot"), NOW) == BOT


@pytest.mark.parametrize(
    ("rec", "condition"),
    [
        (None, EnrollCondition.TOKEN_UNKNOWN),
        (record(TokenState.REDEEMED), EnrollCondition.TOKEN_USED),
        (record(TokenState.CANCELLED), EnrollCondition.TOKEN_CANCELLED),
        (record(TokenState.EXPIRED), EnrollCondition.TOKEN_EXPIRED),
        (record(expires=dt.timedelta(0)), EnrollCondition.TOKEN_EXPIRED),
    ],
)
def test_the_tokens_own_failures(rec: TokenRecord | None, condition: EnrollCondition) -> None:
    with pytest.raises(TokenRefused) as info:
        check_redemption(rec, cert("alice@example.org/bot"), NOW)
    assert info.value.condition is condition
    assert condition.burns_token


@pytest.mark.parametrize(
    ("certificate", "condition"),
    [
        (None, EnrollCondition.BAD_CERTIFICATE),
        (cert("alice@example.org/bot", client_auth=False), EnrollCondition.BAD_CERTIFICATE),
        (cert("alice@example.org/other"), EnrollCondition.JID_MISMATCH),
        (cert("alice@example.org"), EnrollCondition.JID_MISMATCH),
        (cert("alice@example.org/bot", "mallory@example.org/bot"), EnrollCondition.JID_MISMATCH),
    ],
)
def test_device_failures_leave_the_token_unburned(
    certificate: object, condition: EnrollCondition
) -> None:
    with pytest.raises(TokenRefused) as info:
        check_redemption(record(), certificate, NOW)
    assert info.value.condition is condition
    assert not condition.burns_token


def test_only_the_redeeming_certificate_is_told_it_is_registered_already() -> None:
    """A retry after a lost answer succeeds; any other key still finds the token used."""
    mine = cert("alice@example.org/bot")
    redeemed = TokenRecord(
        1,
        "h",
        BOT,
        "bot",
        TokenState.REDEEMED,
        NOW,
        NOW + dt.timedelta(minutes=5),
        "alice",
        redeemed_at=NOW,
        redeemed_fingerprint=mine.fingerprint,
    )
    # Even after the token's lifetime: the retry may come late, the certificate is the proof.
    for now in (NOW, NOW + dt.timedelta(hours=2)):
        with pytest.raises(TokenRefused) as info:
            check_redemption(redeemed, mine, now)
        assert info.value.condition is EnrollCondition.ALREADY_REGISTERED
    for other in (cert("alice@example.org/bot"), None):
        with pytest.raises(TokenRefused) as info:
            check_redemption(redeemed, other, NOW)
        assert info.value.condition is EnrollCondition.TOKEN_USED
