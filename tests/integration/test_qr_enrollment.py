"""Pairing a new bot with a QR scan, end to end on loopback (issue 3)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
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
from server_ext.admin.token_issuer import issue_token
from server_ext.model import TokenState
from server_ext.policy.tokens import TokenRules
from tests.integration.conftest import PASSWORD, Device, DeviceFactory, RunningServer, ServerFactory
from tests.support.rawclient import RawClient


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
    record = xmpp_server.registry.devices.current_named(JID.parse("alice@localhost"), "Weather bot")
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
    events = [e.event for e in xmpp_server.registry.audit.events()]
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
    assert len(xmpp_server.registry.devices.certificates(JID.parse("alice@localhost"))) == 1
    # Losers keep nothing: no key, no settings.
    assert sum(store.exists() for store in stores) == 1


async def test_expired_token(make_server: ServerFactory, tmp_path: Path) -> None:
    clock = [dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)]
    xmpp_server = await make_server(clock=lambda: clock[0])
    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server)  # issued two hours ago ...
    clock[0] = dt.datetime.now(dt.UTC)  # ... and redeemed now
    store = KeyStore(tmp_path / "bot")
    with pytest.raises(EnrollmentError, match="token-expired"):
        await enroll(store, uri)
    assert not store.exists()
    assert not (tmp_path / "bot" / "server.json").exists()
    (record,) = xmpp_server.registry.tokens.all()
    assert record.state is TokenState.EXPIRED
    assert "token.expired" in [e.event for e in xmpp_server.registry.audit.events()]


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
    (alice_token,) = xmpp_server.registry.tokens.all()
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
    (record,) = xmpp_server.registry.tokens.all()
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
    (record,) = xmpp_server.registry.tokens.all()
    assert record.state is TokenState.PENDING
    assert "enroll.failed" not in [e.event for e in xmpp_server.registry.audit.events()]


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
    conn = xmpp_server.registry._file.conn
    conn.execute("PRAGMA query_only = ON")  # every write now fails, like ENOSPC
    store = KeyStore(tmp_path / "bot")
    try:
        with pytest.raises(EnrollmentError, match="internal-error"):
            await enroll(store, uri)
    finally:
        conn.execute("PRAGMA query_only = OFF")
    assert not store.exists()
    (record,) = xmpp_server.registry.tokens.all()
    assert record.state is TokenState.PENDING
    assert xmpp_server.registry.devices.certificates() == []
    # The server kept serving, and the same token works once the disk is fine again.
    assert await enroll(store, uri) == JID.parse("alice@localhost/weatherbot")


class CuttingProxy:
    """A loopback TCP proxy that cuts the connection once the server has redeemed the token.

    ``after_answer``: cut at the device's next bytes (its SASL <auth/>), so the <success/>
    for <enroll/> did reach it. Otherwise cut at the server's next bytes (the answer is lost).
    The stream is TLS: the proxy cannot read it, so it watches the registry instead.
    """

    def __init__(self, server: RunningServer, token: str, *, after_answer: bool) -> None:
        from server_ext.policy.tokens import hash_token

        self.server = server
        self.token_hash = hash_token(token)
        self.after_answer = after_answer
        self.cutting = True
        self.cuts = 0
        self.port = 0
        self._listener: asyncio.Server | None = None

    def _redeemed(self) -> bool:
        record = self.server.registry.tokens.by_hash(self.token_hash)
        return record is not None and record.state is TokenState.REDEEMED

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]

    def close(self) -> None:
        assert self._listener is not None
        self._listener.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.server.host, self.server.port)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, from_device: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if self.cutting and from_device == self.after_answer and self._redeemed():
                        self.cuts += 1
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


async def _device_agent(*args: str) -> tuple[int, str, str]:
    """``device-agent ARGS`` as a real process, while this event loop serves the server."""
    from tests.integration.cli_support import BIN

    proc = await asyncio.create_subprocess_exec(
        str(BIN / "device-agent"),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("after_answer", [True, False], ids=["success-then-cut", "answer-lost"])
async def test_a_connection_lost_after_the_server_enrolled_never_bricks_the_device(
    xmpp_server: RunningServer, tmp_path: Path, after_answer: bool
) -> None:
    """The token is burned and the certificate active: the device keeps its key, and the same
    `device-agent enroll` again completes the enrollment (issue 8)."""
    xmpp_server.add_user("alice")
    direct = token_uri(xmpp_server)
    proxy = CuttingProxy(xmpp_server, direct.token, after_answer=after_answer)
    await proxy.start()
    uri = EnrollmentURI(direct.jid, direct.token, "127.0.0.1", proxy.port, direct.fingerprint)
    state = tmp_path / "bot"
    try:
        code, _, err = await _device_agent("--state-dir", str(state), "enroll", "--uri", str(uri))
        assert proxy.cuts == 1
        assert code != 0
        assert "Traceback" not in err
        assert "enroll" in err.splitlines()[-1]  # one line that says what to do
        # The server did register the device's certificate and burn the token...
        (token,) = xmpp_server.registry.tokens.all()
        assert token.state is TokenState.REDEEMED
        store = KeyStore(state)
        identity = store.load()  # ...and the device still holds that key.
        assert token.redeemed_fingerprint == identity.fingerprint
        if not after_answer:  # the device does not know yet, and says so
            code, out, _ = await _device_agent("--state-dir", str(state), "status", "--json")
            assert json.loads(out)["state"].startswith("enrollment unfinished"), out
        # The same URI again (the proxy no longer cuts) finishes the enrollment.
        proxy.cutting = False
        code, out, err = await _device_agent("--state-dir", str(state), "enroll", "--uri", str(uri))
        assert code == 0, err
        assert "enrolled: this device logs in as alice@localhost/weatherbot" in out
        assert store.load().fingerprint == identity.fingerprint
        assert not (state / "enrollment-pending.json").exists()
        bot = device(store)  # it logs in through the address of its QR code: the proxy
        assert await login(bot) == JID.parse("alice@localhost/weatherbot")
        await logout(bot)
    finally:
        proxy.close()
    assert len(xmpp_server.registry.devices.certificates(JID.parse("alice@localhost"))) == 1


async def test_a_retry_with_the_redeeming_certificate_is_idempotent(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """The documented already-registered path: same certificate only; others find it used."""
    from pairing.protocol.enrollment import ENROLL_NS

    xmpp_server.add_user("alice")
    uri = token_uri(xmpp_server)
    mine = make_device(str(uri.jid))
    thief = make_device(str(uri.jid))  # same JID, another key: e.g. whoever saw the QR code

    async def redeem(dev: Device) -> tuple[bytes, RawClient]:
        client = await xmpp_server.raw_tls(dev)
        await client.send(f"<enroll xmlns='{ENROLL_NS}' token='{uri.token}'/>")
        start = await client.read_until(b"<success", b"<failure")
        rest = await client.read_until(b"/>" if start.endswith(b"<success") else b"</failure>")
        return start + rest, client

    first, client = await redeem(mine)
    assert b"<success" in first
    await client.close()  # as if the answer never arrived
    for _ in range(2):  # idempotent: as often as the device needs
        again, client = await redeem(mine)
        assert b"<already-registered/>" in again, again
        assert b"<success" in await client.auth("EXTERNAL", b"")
        assert b"alice@localhost/weatherbot" in await client.bind()
        await client.close()
    stolen, client = await redeem(thief)
    assert b"<token-used/>" in stolen, stolen
    await client.close()
    (record,) = xmpp_server.registry.devices.certificates(JID.parse("alice@localhost"))
    assert record.fingerprint == mine.fingerprint
    events = [e.event for e in xmpp_server.registry.audit.events()]
    assert events.count("token.redeemed") == 1
    assert events.count("enroll.repeated") == 2
