"""Pairing a new bot with a QR scan, end to end on loopback (issue 3)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from device_agent.enrollment import EnrollmentError, ServerSettings, enroll
from device_agent.keystore import KeyStore
from pairing import qr
from pairing.errors import RequestFailed
from pairing.protocol.jid import JID
from pairing.protocol.uri import EnrollmentURI
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, logout, make_client
from pairing.xmpp.tokens import cancel_token, list_tokens, request_token
from server_ext.model import TokenState
from server_ext.policy.tokens import TokenRules
from server_ext.token_issuer import issue_token
from tests.integration.conftest import PASSWORD, RunningServer


def owner(server: RunningServer) -> Any:
    return make_client(
        "alice@localhost/phone",
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        password=PASSWORD,
    )


def device(store: KeyStore) -> Any:
    settings = ServerSettings.load(store.state_dir)
    identity = store.load()
    return make_client(
        settings.jid,
        server=ServerAddress(settings.host, settings.port),
        trust=TrustAnchor(fingerprint=settings.fingerprint),
        certfile=identity.cert_path,
        keyfile=identity.key_path,
    )


def token_uri(server: RunningServer, resource: str = "weatherbot", **kw: Any) -> EnrollmentURI:
    issued = issue_token(
        server.registry,
        TokenRules(),
        account=JID.parse("alice@localhost"),
        resource=resource,
        name=kw.pop("name", None),
        ttl=kw.pop("ttl", None),
        created_by="test",
        now=kw.pop("now", None),
    )
    return issued.uri(host=server.host, port=server.port, fingerprint=server.fingerprint)


async def test_issue_render_scan_enroll_login_and_chat(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    phone = owner(xmpp_server)
    await login(phone)
    # 1. The user asks the server for a token (XEP-0050 ad-hoc command).
    grant = await request_token(phone, "weatherbot", name="Weather bot")
    assert grant.jid == "alice@localhost/weatherbot"
    # 2. It is shown as a QR code; the bot reads a photo of it.
    png = tmp_path / "qr.png"
    qr.write_png(grant.uri, png)
    scanned = EnrollmentURI.parse(qr.read_image(png))
    assert scanned.fingerprint == xmpp_server.fingerprint
    # 3. The bot enrolls from the image: its own key, its certificate, the token.
    store = KeyStore(tmp_path / "bot")
    bound = await enroll(store, scanned)
    assert bound == JID.parse("alice@localhost/weatherbot")
    record = xmpp_server.registry.get_certificate(JID.parse("alice@localhost"), "Weather bot")
    assert record is not None
    assert record.fingerprint == store.load().fingerprint
    assert record.added_via == "token"
    # 4. From now on it logs in with EXTERNAL, and 5. talks to its owner.
    bot = device(store)
    assert await login(bot) == JID.parse("alice@localhost/weatherbot")
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    phone.add_event_handler("message", inbox.put_nowait)
    bot.send_message(mto="alice@localhost/phone", mbody="enrolled and online", mtype="chat")
    message = await asyncio.wait_for(inbox.get(), 5)
    assert message["body"] == "enrolled and online"
    events = [e.event for e in xmpp_server.registry.audit_events()]
    assert {"token.issued", "token.redeemed", "cert.added", "login.external"} <= set(events)
    await logout(bot)
    await logout(phone)


async def test_fifty_concurrent_redemptions_give_one_enrollment(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server)
    stores = [KeyStore(tmp_path / f"d{i}") for i in range(50)]
    results = await asyncio.gather(
        *(enroll(store, uri) for store in stores), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, JID)]
    losers = [r for r in results if isinstance(r, EnrollmentError)]
    assert len(winners) == 1, results
    assert len(losers) == 49
    assert all("token-used" in str(e) for e in losers)
    assert len(xmpp_server.registry.list_certificates(JID.parse("alice@localhost"))) == 1
    # Losers keep nothing: no key, no settings.
    assert sum(store.exists() for store in stores) == 1


async def test_expired_token(xmpp_server: RunningServer, tmp_path: Path) -> None:
    xmpp_server.add_user("alice")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    uri = token_uri(xmpp_server, now=long_ago)
    store = KeyStore(tmp_path / "bot")
    with pytest.raises(EnrollmentError, match="token-expired"):
        await enroll(store, uri)
    assert not store.exists()
    assert not (tmp_path / "bot" / "server.json").exists()
    (record,) = xmpp_server.registry.list_tokens()
    assert record.state is TokenState.EXPIRED
    assert "token.expired" in [e.event for e in xmpp_server.registry.audit_events()]


async def test_cancelled_token_over_adhoc(xmpp_server: RunningServer, tmp_path: Path) -> None:
    xmpp_server.add_user("alice")
    phone = owner(xmpp_server)
    await login(phone)
    grant = await request_token(phone, "bot")
    assert [t.token_id for t in await list_tokens(phone)] == [grant.token_id]
    await cancel_token(phone, grant.token_id)
    assert await list_tokens(phone) == []
    with pytest.raises(EnrollmentError, match="token-cancelled"):
        await enroll(KeyStore(tmp_path / "bot"), EnrollmentURI.parse(grant.uri))
    await logout(phone)


async def test_users_cannot_touch_other_accounts_tokens(xmpp_server: RunningServer) -> None:
    xmpp_server.add_user("alice")
    xmpp_server.add_user("bob")
    uri = token_uri(xmpp_server)
    del uri
    (alice_token,) = xmpp_server.registry.list_tokens()
    bob = make_client(
        "bob@localhost/pc",
        server=ServerAddress(xmpp_server.host, xmpp_server.port),
        trust=TrustAnchor(fingerprint=xmpp_server.fingerprint),
        password=PASSWORD,
    )
    await login(bob)
    with pytest.raises(RequestFailed, match="item-not-found"):
        await cancel_token(bob, alice_token.id)
    with pytest.raises(RequestFailed, match="forbidden"):
        await request_token(bob, "bot", account="alice@localhost")
    await logout(bob)


async def test_wrong_resource_leaves_the_token_usable(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """The device's certificate names another resource: refused, and the token survives."""
    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server, resource="weatherbot")
    store = KeyStore(tmp_path / "bot")
    store.create(JID.parse("alice@localhost/other"))
    forged = EnrollmentURI(
        JID.parse("alice@localhost/other"), uri.token, uri.host, uri.port, uri.fingerprint
    )
    with pytest.raises(EnrollmentError, match="jid-mismatch"):
        await enroll(store, forged)
    (record,) = xmpp_server.registry.list_tokens()
    assert record.state is TokenState.PENDING
    assert await enroll(KeyStore(tmp_path / "good"), uri) == JID.parse("alice@localhost/weatherbot")


async def test_wrong_fingerprint_never_sends_the_token(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server)
    wrong = EnrollmentURI(uri.jid, uri.token, uri.host, uri.port, "00" * 32)
    with pytest.raises(EnrollmentError, match="not the pinned one"):
        await enroll(KeyStore(tmp_path / "bot"), wrong)
    (record,) = xmpp_server.registry.list_tokens()
    assert record.state is TokenState.PENDING
    assert "enroll.failed" not in [e.event for e in xmpp_server.registry.audit_events()]


async def test_unknown_token_and_unreachable_server(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server)
    bogus = EnrollmentURI(uri.jid, "A" * 32, uri.host, uri.port, uri.fingerprint)
    with pytest.raises(EnrollmentError, match="token-unknown"):
        await enroll(KeyStore(tmp_path / "a"), bogus)
    nowhere = EnrollmentURI(uri.jid, uri.token, uri.host, 1, uri.fingerprint)
    with pytest.raises(EnrollmentError, match="reachable"):
        await enroll(KeyStore(tmp_path / "b"), nowhere, timeout=3)


async def test_database_holds_no_plain_token(xmpp_server: RunningServer) -> None:
    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server)
    raw = b""
    for suffix in ("", "-wal"):
        path = Path(str(xmpp_server.config.database_path) + suffix)
        if path.exists():
            raw += path.read_bytes()
    assert raw  # the token row was written somewhere in these files
    assert uri.token.encode() not in raw
    assert uri.token.lower().encode() not in raw
    assert base64.b32decode(uri.token) not in raw  # nor its raw 20 bytes
    rows = (
        sqlite3.connect(xmpp_server.config.database_path).execute("SELECT * FROM tokens").fetchall()
    )
    assert all(uri.token not in str(row) for row in rows)


async def test_private_key_never_on_the_wire(xmpp_server: RunningServer, tmp_path: Path) -> None:
    """Capture every byte the device sends, through a loopback proxy and before encryption."""
    xmpp_server.add_user("alice")
    sent_raw = bytearray()

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if log is not None:
                    log.extend(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(xmpp_server.host, xmpp_server.port)
        await asyncio.gather(pipe(reader, up_writer, sent_raw), pipe(up_reader, writer, None))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    uri = token_uri(xmpp_server)
    via_proxy = EnrollmentURI(uri.jid, uri.token, "127.0.0.1", port, uri.fingerprint)
    store = KeyStore(tmp_path / "bot")
    identity = store.create(uri.jid)
    plaintext = bytearray()
    import slixmpp

    original = slixmpp.ClientXMPP.send_raw

    def capture(self: Any, data: str | bytes) -> None:
        plaintext.extend(data.encode() if isinstance(data, str) else data)
        original(self, data)

    slixmpp.ClientXMPP.send_raw = capture  # type: ignore[method-assign]
    try:
        await enroll(store, via_proxy)
    finally:
        slixmpp.ClientXMPP.send_raw = original  # type: ignore[method-assign]
        proxy.close()
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(identity.key_path.read_bytes(), password=None)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    scalar = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    pem_body = b"".join(identity.key_path.read_bytes().splitlines()[1:-1])
    assert b"<enroll" in plaintext  # the capture did see the conversation
    assert len(sent_raw) > 500
    for secret in (der, scalar, pem_body, base64.b64encode(der)):
        assert secret not in sent_raw
        assert secret not in plaintext


async def test_a_failing_disk_leaves_nothing_half_enrolled(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """The registry refuses writes (as on a full disk): the device is told, the token survives."""
    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server)
    conn = xmpp_server.registry._conn
    conn.execute("PRAGMA query_only = ON")  # every write now fails, like ENOSPC
    store = KeyStore(tmp_path / "bot")
    try:
        with pytest.raises(EnrollmentError, match="internal-error"):
            await enroll(store, uri)
    finally:
        conn.execute("PRAGMA query_only = OFF")
    assert not store.exists()
    (record,) = xmpp_server.registry.list_tokens()
    assert record.state is TokenState.PENDING
    assert xmpp_server.registry.list_certificates() == []
    # The server kept serving, and the same token works once the disk is fine again.
    assert await enroll(store, uri) == JID.parse("alice@localhost/weatherbot")
