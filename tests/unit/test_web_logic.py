"""The web page's logic without I/O: pairing requests, web sessions and password checks, on a
real SQLite registry in a temporary directory and an injected clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    generate_key,
)
from pairing.protocol.jid import JID
from server_ext.app.pair_requests import PairingRequestBook, RequestRefused, RequestState
from server_ext.app.web_sessions import LoginRefused, WebSessions, check_password
from server_ext.auth.credentials import credentials_for
from server_ext.policy.throttle import LoginThrottle
from server_ext.storage.registry import Registry

ALICE = JID.parse("alice@localhost")
MALLORY = JID.parse("mallory@localhost")


class Clock:
    def __init__(self) -> None:
        # Certificates made by a test are valid from the real now: start the clock just after.
        self.now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(tmp_path: Path, clock: Clock) -> Iterator[Registry]:
    with Registry.open(tmp_path / "registry.sqlite3", clock=clock) as opened:
        opened.accounts.add(ALICE, credentials_for("alice's password", iterations=4096))
        opened.accounts.add(MALLORY, credentials_for("mallory's password", iterations=4096))
        yield opened


def certificate(jid: str = "alice@localhost/sensor") -> PeerCertificate:
    cert = build_device_certificate(
        generate_key(), JID.parse(jid), valid_for=dt.timedelta(days=3650)
    )
    return PeerCertificate.parse(certificate_der(cert))


def test_an_approved_request_registers_its_certificate_once(registry: Registry) -> None:
    book = PairingRequestBook(registry, "localhost")
    cert = certificate()
    request = book.create(cert, "sensor", "192.0.2.7")
    assert registry.devices.by_fingerprint(cert.fingerprint) is None  # nothing before approval
    approved = book.approve(request.id, ALICE, is_admin=False)
    assert approved.state is RequestState.APPROVED
    registered = registry.devices.by_fingerprint(cert.fingerprint)
    assert registered is not None and registered.device.added_via == "request"
    assert registered.device.added_by == str(ALICE)
    with pytest.raises(RequestRefused, match="approved"):  # single use
        book.approve(request.id, ALICE, is_admin=False)
    with pytest.raises(RequestRefused, match="approved"):
        book.deny(request.id, ALICE, is_admin=False)


def test_only_the_account_or_an_admin_decides(registry: Registry) -> None:
    book = PairingRequestBook(registry, "localhost")
    request = book.create(certificate(), "sensor", "192.0.2.7")
    with pytest.raises(RequestRefused) as refused:
        book.approve(request.id, MALLORY, is_admin=False)
    assert refused.value.condition == "request-unknown"  # the same as a request that is not
    assert registry.devices.all() == []
    assert book.approve(request.id, MALLORY, is_admin=True).state is RequestState.APPROVED


def test_a_request_expires_unapproved(registry: Registry, clock: Clock) -> None:
    book = PairingRequestBook(registry, "localhost")
    request = book.create(certificate(), "sensor", "192.0.2.7")
    clock.advance(minutes=5, seconds=1)
    current = book.get(request.id)
    assert current is not None and current.state is RequestState.EXPIRED
    with pytest.raises(RequestRefused) as refused:
        book.approve(request.id, ALICE, is_admin=False)
    assert refused.value.condition == "request-expired"
    assert registry.devices.all() == []
    clock.advance(minutes=10)
    assert book.get(request.id) is None  # forgotten later


def test_requests_are_limited_per_address(registry: Registry) -> None:
    book = PairingRequestBook(registry, "localhost", per_address=2)
    for n in range(2):
        book.create(certificate(f"alice@localhost/s{n}"), f"s{n}", "192.0.2.7")
    with pytest.raises(RequestRefused) as refused:
        book.create(certificate("alice@localhost/s3"), "s3", "192.0.2.7")
    assert refused.value.condition == "rate-limited"
    book.create(certificate("alice@localhost/s3"), "s3", "198.51.100.1")  # another address


@pytest.mark.parametrize(
    ("jid", "condition"),
    [
        ("alice@localhost", "bad-certificate"),  # no resource: a request names one device
        ("alice@elsewhere.example/bot", "jid-mismatch"),
    ],
)
def test_a_request_names_one_full_jid_of_this_domain(
    registry: Registry, jid: str, condition: str
) -> None:
    book = PairingRequestBook(registry, "localhost")
    with pytest.raises(RequestRefused) as refused:
        book.create(certificate(jid), "x", "192.0.2.7")
    assert refused.value.condition == condition


def test_a_session_id_is_new_at_each_login_and_stored_hashed(clock: Clock) -> None:
    sessions = WebSessions(clock)
    first, session = sessions.open(ALICE, False)
    second, _ = sessions.open(ALICE, False)
    assert first != second and len(first) >= 43  # 256 bits
    assert sessions.get(first) == session.__class__(
        ALICE, False, session.csrf, session.created_at, clock()
    )
    assert first not in repr(vars(sessions))  # only its SHA-256 is kept
    assert sessions.get("an id the browser brought") is None  # nothing to fix
    sessions.close(first)
    assert sessions.get(first) is None and sessions.get(second) is not None


def test_a_session_lapses_when_idle(clock: Clock) -> None:
    sessions = WebSessions(clock)
    session_id, session = sessions.open(ALICE, False)
    assert session.csrf_ok(session.csrf) and not session.csrf_ok("forged")
    assert not session.csrf_ok(None)
    clock.advance(minutes=31)
    assert sessions.get(session_id) is None


def test_a_session_ends_with_a_password_change_or_the_account_and_follows_admin_rights(
    registry: Registry, clock: Clock
) -> None:
    sessions = WebSessions(clock, registry.accounts.get)
    registry.accounts.set_admin(ALICE, True)
    alice, _ = sessions.open(ALICE, True)
    mallory, _ = sessions.open(MALLORY, False)
    # Admin rights taken away apply at the next request, not at the next login.
    registry.accounts.set_admin(ALICE, False)
    session = sessions.get(alice)
    assert session is not None and not session.is_admin
    registry.accounts.set_admin(ALICE, True)
    session = sessions.get(alice)
    assert session is not None and session.is_admin
    # A new password (a thief's session must not outlive it) ends the account's sessions.
    registry.accounts.set_credentials(ALICE, credentials_for("new password", iterations=4096))
    assert sessions.get(alice) is None
    assert sessions.get(mallory) is not None  # nobody else's
    again, _ = sessions.open(ALICE, True)
    assert sessions.get(again) is not None  # a login with the new password works
    # A deleted account's sessions end at once.
    registry.accounts.delete(MALLORY)
    assert sessions.get(mallory) is None


def test_a_session_of_an_account_the_registry_does_not_hold_keeps_going(clock: Clock) -> None:
    """Accounts of a stock server (checked there) may have no record here."""
    sessions = WebSessions(clock, lambda jid: None)
    session_id, _ = sessions.open(ALICE, False)
    assert sessions.get(session_id) is not None


def test_the_live_updates_of_an_open_tab_do_not_keep_a_session_from_lapsing(
    clock: Clock,
) -> None:
    sessions = WebSessions(clock)
    session_id, _ = sessions.open(ALICE, False)
    clock.advance(minutes=20)
    assert sessions.get(session_id, touch=False) is not None  # the event stream checks
    clock.advance(minutes=11)  # 31 minutes without a click
    assert sessions.get(session_id, touch=False) is None
    clicked, _ = sessions.open(ALICE, False)
    clock.advance(minutes=20)
    assert sessions.get(clicked) is not None  # a click is activity
    clock.advance(minutes=11)
    assert sessions.get(clicked, touch=False) is not None


def test_password_check_uses_the_scram_keys_and_the_login_throttle(registry: Registry) -> None:
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0], pair_limit=3, address_limit=100)
    account, admin = check_password(
        registry, "localhost", throttle, "alice", "alice's password", "192.0.2.7"
    )
    assert account == ALICE and not admin
    for _ in range(3):
        with pytest.raises(LoginRefused, match="wrong account or password"):
            check_password(registry, "localhost", throttle, "alice", "guess", "192.0.2.7")
    with pytest.raises(LoginRefused, match="too many failed logins"):  # even the right one
        check_password(registry, "localhost", throttle, "alice", "alice's password", "192.0.2.7")
    # Another address is not held back by this one's failures (no lock-out of the owner).
    check_password(registry, "localhost", throttle, "alice", "alice's password", "198.51.100.1")
    with pytest.raises(LoginRefused, match="wrong account or password"):
        check_password(registry, "localhost", throttle, "nobody", "x", "198.51.100.1")
