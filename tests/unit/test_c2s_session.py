"""The c2s session without sockets: bytes in, bytes and actions out (a real SQLite registry)."""

from __future__ import annotations

import base64
import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pairing.protocol.conditions import says_revoked
from pairing.protocol.identity import (
    PeerCertificate,
    UnreadableCertificate,
    build_device_certificate,
    generate_key,
)
from pairing.protocol.jid import JID
from server_ext.app.account_iq import account_handlers
from server_ext.app.delivery import Dispatcher
from server_ext.app.handlers import ServerContext
from server_ext.app.router import SessionTable
from server_ext.auth.credentials import credentials_for
from server_ext.model import DeviceState
from server_ext.policy.throttle import LoginThrottle
from server_ext.session.actions import Authenticated, Bound, HoldFailure, StartTLS
from server_ext.session.c2s import C2SSession
from server_ext.session.services import SessionServices
from server_ext.storage.registry import Registry

DOMAIN = "example.org"
HEADER = (
    f"<stream:stream to='{DOMAIN}' version='1.0' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams'>"
).encode()
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
ALICE = JID.parse(f"alice@{DOMAIN}")
BOT = ALICE.with_resource("bot")


class Owner:
    """What the session table routes to; here it only holds the session and what it got."""

    def __init__(self) -> None:
        self.session: C2SSession | None = None
        self.terminated: list[tuple[str, str, ET.Element | None]] = []
        self.available = False
        self.priority = 0
        self.csi_known: set[JID] | None = None

    @property
    def jid(self) -> JID:
        assert self.session is not None and self.session.jid is not None
        return self.session.jid

    @property
    def fingerprint(self) -> str | None:
        return self.session.fingerprint if self.session else None

    @property
    def auth_method(self) -> str:
        return self.session.auth_method if self.session else ""

    @property
    def address(self) -> str:
        return self.session.address if self.session else "?"

    def set_presence(self, available: bool, priority: int) -> None:
        self.available, self.priority = available, priority

    def deliver(self, element: ET.Element) -> None:
        assert self.session is not None
        self.session.deliver(element)

    def terminate(self, condition: str, text: str, application: ET.Element | None = None) -> None:
        self.terminated.append((condition, text, application))


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.now = dt.datetime.now(dt.UTC)
        self.registry = Registry.open(tmp_path / "registry.sqlite3", clock=lambda: self.now)
        self.registry.accounts.add(ALICE, credentials_for("pencil", iterations=4096))
        self.sessions = SessionTable()
        context = ServerContext(DOMAIN, self.registry, self.sessions)
        self.throttle = LoginThrottle(
            clock=lambda: 0.0, pair_limit=2, address_limit=100, account_soft_limit=3
        )
        self.services = SessionServices(
            context,
            Dispatcher(context, account_handlers()),
            self.throttle,
            65536,
            self.registry.accounts.server_secret("scram-fake-salt"),
        )

    def session(self, address: str = "192.0.2.1") -> tuple[C2SSession, Owner]:
        owner = Owner()
        session = C2SSession(self.services, owner, address=address, direct_tls=False)
        owner.session = session
        return session, owner


def secured(
    world: World, presented: PeerCertificate | UnreadableCertificate | None = None
) -> tuple[C2SSession, Owner]:
    """A session past STARTTLS (as the adapter would do it), with the stream restarted."""
    session, owner = world.session()
    session.receive_data(HEADER)
    assert session.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>") == [
        StartTLS()
    ]
    assert b"<proceed" in session.data_to_send()
    session.tls_established(presented)
    session.receive_data(HEADER)
    return session, owner


def device(jid: JID = BOT) -> PeerCertificate:
    return PeerCertificate.from_x509(build_device_certificate(generate_key(), jid))


def auth(session: C2SSession, mechanism: str, payload: bytes = b"") -> tuple[list[object], bytes]:
    body = base64.b64encode(payload).decode() if payload else "="
    actions = session.receive_data(
        f"<auth xmlns='{SASL}' mechanism='{mechanism}'>{body}</auth>".encode()
    )
    return list(actions), session.data_to_send()


def test_external_offered_only_with_a_certificate_and_then_a_bound_device(tmp_path: Path) -> None:
    world = World(tmp_path)
    plain, _ = secured(world, None)
    features = plain.data_to_send()
    assert b"EXTERNAL" not in features and b"SCRAM-SHA-256" in features
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, owner = secured(world, cert)
    features = session.data_to_send()
    assert b"<mechanism>EXTERNAL</mechanism>" in features
    assert b"<enroll xmlns='urn:xmpp-device-pairing:enroll:0'/>" in features
    actions, out = auth(session, "EXTERNAL")
    assert actions == [Authenticated()] and b"<success" in out
    session.receive_data(HEADER)
    session.data_to_send()
    # The certificate names a full JID: another resource is refused, its own is bound.
    actions = session.receive_data(
        b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<resource>laptop</resource></bind></iq>"
    )
    assert actions == [] and b"<not-allowed" in session.data_to_send()
    actions = session.receive_data(
        b"<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    )
    assert actions == [Bound()]
    assert f"<jid>{BOT}</jid>".encode() in session.data_to_send()
    assert world.sessions.get(BOT) is owner
    record = world.registry.devices.by_fingerprint(cert.fingerprint)
    assert record is not None and record.last_login_address == "192.0.2.1"
    assert world.registry.audit.events()[-1].event == "login.external"


def test_a_revoked_device_is_told_so_in_a_condition_it_can_read(tmp_path: Path) -> None:
    world = World(tmp_path)
    cert = device()
    record = world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    world.registry.devices.set_state(
        record.device.id, DeviceState.REVOKED, actor="t", reason="stolen"
    )
    session, _ = secured(world, cert)
    session.data_to_send()
    actions, out = auth(session, "EXTERNAL")
    assert actions == []
    failure = ET.fromstring(out)
    assert failure.find(f"{{{SASL}}}not-authorized") is not None
    assert says_revoked(failure)
    assert b"this device was revoked: stolen" in out
    # A disabled device is refused too, but not told it is revoked: it may come back.
    other = device(ALICE.with_resource("cam"))
    disabled = world.registry.devices.add(ALICE, "cam", other, added_by="t", added_via="t")
    world.registry.devices.set_state(disabled.device.id, DeviceState.DISABLED, actor="t")
    session, _ = secured(world, other)
    session.data_to_send()
    _, out = auth(session, "EXTERNAL")
    assert b"disabled" in out and not says_revoked(ET.fromstring(out))


def test_an_unreadable_certificate_is_refused_with_the_reason(tmp_path: Path) -> None:
    world = World(tmp_path)
    session, _ = secured(world, UnreadableCertificate(b"x", "ab" * 32, "an xmppAddr is garbage"))
    assert b"EXTERNAL" in session.data_to_send()
    _, out = auth(session, "EXTERNAL")
    assert b"<not-authorized/>" in out and b"an xmppAddr is garbage" in out


def test_password_failures_throttle_the_pair_but_never_a_certificate(tmp_path: Path) -> None:
    world = World(tmp_path)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, _ = secured(world, cert)
    session.data_to_send()
    for _ in range(2):
        _, out = auth(session, "PLAIN", b"\0alice\0wrong")
        assert b"<not-authorized/>" in out
    # Over the limit for this account from this address: the right password gets the same
    # answer as a wrong one ...
    _, out = auth(session, "PLAIN", b"\0alice\0pencil")
    assert b"<temporary-auth-failure/>" in out
    # ... while the device's certificate logs in from the same address.
    actions, out = auth(session, "EXTERNAL")
    assert actions == [Authenticated()] and b"<success" in out


def test_an_account_guessed_from_many_addresses_answers_failures_late(tmp_path: Path) -> None:
    world = World(tmp_path)
    for n in range(3):  # the account's soft limit, spread over addresses
        session, _ = secured(world, None)
        session.address = f"198.51.100.{n}"
        session.data_to_send()
        auth(session, "PLAIN", b"\0alice\0wrong")
    session, _ = secured(world, None)
    session.address = "198.51.100.9"
    session.data_to_send()
    actions, out = auth(session, "PLAIN", b"\0alice\0wrong")
    assert len(actions) == 1 and isinstance(actions[0], HoldFailure) and out == b""
    assert session.holding and 0 < actions[0].delay <= 8
    # The adapter reads nothing meanwhile; when the time is up the failure goes out.
    session.release()
    assert b"<not-authorized/>" in session.data_to_send() and not session.holding
    # The right password is never held back.
    session, _ = secured(world, None)
    session.address = "198.51.100.10"
    session.data_to_send()
    actions, out = auth(session, "PLAIN", b"\0alice\0pencil")
    assert actions == [Authenticated()] and b"<success" in out


def test_enrollment_before_sasl_registers_the_presented_certificate(tmp_path: Path) -> None:
    from server_ext.admin.token_issuer import issue_token
    from server_ext.policy.tokens import TokenRules

    world = World(tmp_path)
    issued = issue_token(
        world.registry,
        TokenRules(),
        account=ALICE,
        resource="bot",
        name=None,
        ttl=None,
        created_by="t",
    )
    cert = device()
    session, _ = secured(world, cert)
    session.data_to_send()
    session.receive_data(
        f"<enroll xmlns='urn:xmpp-device-pairing:enroll:0' token='{issued.token}'/>".encode()
    )
    reply = session.data_to_send()
    assert reply.startswith(b"<success xmlns='urn:xmpp-device-pairing:enroll:0'")
    assert f"jid='{BOT}'".encode() in reply
    registered = world.registry.devices.by_fingerprint(cert.fingerprint)
    assert registered is not None and registered.device.added_via == "token"
    # The same token with another key: used.
    session, _ = secured(world, device())
    session.data_to_send()
    session.receive_data(
        f"<enroll xmlns='urn:xmpp-device-pairing:enroll:0' token='{issued.token}'/>".encode()
    )
    assert b"<token-used/>" in session.data_to_send()


@pytest.mark.parametrize("bound", [False, True])
def test_the_deadline_closes_only_a_session_that_never_bound(tmp_path: Path, bound: bool) -> None:
    world = World(tmp_path)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, _ = secured(world, cert)
    if bound:
        auth(session, "EXTERNAL")
        session.receive_data(HEADER)
        session.receive_data(
            b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
        )
    session.data_to_send()
    session.timed_out()
    assert session.closed is not bound
    if not bound:
        assert b"<connection-timeout" in session.data_to_send()


def test_an_auth_and_what_ends_the_stream_in_one_chunk_is_no_internal_error(
    tmp_path: Path,
) -> None:
    """Found by fuzzing (fuzz/stream.py): the stream closed on the second element while the
    session still answered the first, and the answer raised (a traceback in the server's log,
    which any peer could cause at will)."""
    world = World(tmp_path)
    session, _ = secured(world, None)
    session.data_to_send()
    session.receive_data(
        f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGFsaWNlAHBlbmNpbA==</auth>".encode()
        + b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>"
    )
    out = session.data_to_send()
    assert session.closed
    assert b"<unsupported-stanza-type" in out and out.endswith(b"</stream:stream>")
    assert b"<success" not in out  # the stream was over before the answer


def test_two_binds_in_one_chunk_bind_once_and_refuse_the_second(tmp_path: Path) -> None:
    """Seen in the reconnect storm (bench/storm_bench.py): a client that retried on a stream
    it thought lost sent its bind twice in one chunk, and answering the second raised in the
    server (a traceback per device). One resource per stream (RFC 6120 §7.1)."""
    world = World(tmp_path)
    cert = device()
    world.registry.devices.add(ALICE, "bot", cert, added_by="t", added_via="t")
    session, owner = secured(world, cert)
    session.data_to_send()
    auth(session, "EXTERNAL")
    session.receive_data(HEADER)
    session.data_to_send()
    bind = b"<iq type='set' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    actions = session.receive_data(bind % b"b1" + bind % b"b2")
    assert actions == [Bound()]
    replies = [
        ET.fromstring(r) for r in session.data_to_send().replace(b"><iq", b">\n<iq").split(b"\n")
    ]
    by_id = {r.get("id"): r for r in replies}
    assert by_id["b1"].get("type") == "result"
    assert by_id["b2"].get("type") == "error"
    assert by_id["b2"].find("error/{urn:ietf:params:xml:ns:xmpp-stanzas}not-allowed") is not None
    assert world.sessions.get(BOT) is owner and not session.closed
