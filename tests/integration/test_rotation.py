"""Certificate rotation: the device renews itself over its own session, with no downtime."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

import pytest

from device_agent.enrollment import enroll
from device_agent.keystore import KeyStore
from device_agent.runtime import run
from pairing.errors import AuthenticationFailed
from pairing.protocol.identity import PeerCertificate, certificate_der
from pairing.protocol.jid import JID
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, make_client
from pairing.xmpp.saslcert import PLUGINS, add_certificate
from server_ext.admin.token_issuer import issue_token
from server_ext.model import CertState
from server_ext.policy.tokens import TokenRules
from tests.integration.conftest import DeviceFactory, RunningServer
from tests.integration.test_device_runtime import wait_for_line

BOT = JID.parse("alice@localhost/bot")


async def test_a_short_lived_certificate_is_rotated_while_the_device_stays_reachable(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=BOT.bare,
        resource="bot",
        name=None,
        ttl=None,
        created_by="test",
    )
    uri = issued.uri(
        host=xmpp_server.host, port=xmpp_server.port, fingerprint=xmpp_server.fingerprint
    )
    store = KeyStore(tmp_path / "bot")
    await enroll(store, uri, valid_for=dt.timedelta(seconds=300))
    old = store.load()
    shutil.copy(old.cert_path, tmp_path / "old.crt")
    shutil.copy(old.key_path, tmp_path / "old.key")
    (tmp_path / "old.key").chmod(0o600)

    lines: list[str] = []
    stop = asyncio.Event()
    # Rotate 299 s before expiry: about a second after the device comes online.
    task = asyncio.create_task(
        run(
            store.state_dir, report=lines.append, stop=stop, rotate_before=dt.timedelta(seconds=299)
        )
    )
    sessions = xmpp_server.server.sessions
    gaps = 0
    seen_online = False
    for _ in range(500):  # up to 5 s, sampling every 10 ms
        await asyncio.sleep(0.01)
        present = sessions.get(BOT) is not None
        seen_online = seen_online or present
        if seen_online and not present:
            gaps += 1
        if any("rotated" in line for line in lines):
            break
    assert any("rotated" in line for line in lines), lines
    assert gaps == 0, "the device was unreachable during rotation"
    new = store.load()
    assert new.fingerprint != old.fingerprint
    session = sessions.get(BOT)
    assert session is not None and session.fingerprint == new.fingerprint
    stop.set()
    await asyncio.wait_for(task, 10)

    registry = xmpp_server.registry
    new_record = registry.devices.by_fingerprint(new.fingerprint)
    old_record = registry.devices.by_fingerprint(old.fingerprint)
    assert new_record is not None and old_record is not None
    assert new_record.replaces == old_record.id  # one device, two certificates
    assert new_record.name == issued.record.name and new_record.added_via == "rotation"
    assert old_record.state is CertState.DISABLED
    assert "cert.rotated" in [e.event for e in registry.audit.events()]

    stale = make_client(
        str(BOT),
        server=ServerAddress(xmpp_server.host, xmpp_server.port),
        trust=TrustAnchor(fingerprint=xmpp_server.fingerprint),
        certfile=tmp_path / "old.crt",
        keyfile=tmp_path / "old.key",
    )
    with pytest.raises(AuthenticationFailed, match="disabled"):
        await login(stale)


async def test_rotation_cannot_register_another_identity(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """A device session may register only a successor naming its own full JID."""
    from pairing.errors import RequestFailed
    from pairing.xmpp.saslcert import PLUGINS, add_certificate

    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    xmpp_server.registry.devices.add(
        BOT.bare,
        "bot",
        PeerCertificate.parse(device.der),
        added_by="t",
        added_via="t",
        no_cert_management=True,
    )
    bot = make_client(
        str(BOT),
        server=ServerAddress(xmpp_server.host, xmpp_server.port),
        trust=TrustAnchor(cafile=xmpp_server.cert_path),
        certfile=device.cert_path,
        keyfile=device.key_path,
        plugins=PLUGINS,
    )
    await login(bot)
    other = make_device("alice@localhost/laptop")
    with pytest.raises(RequestFailed, match="forbidden"):
        await add_certificate(bot, "sneaky", other.der)
    assert xmpp_server.registry.devices.current_named(BOT.bare, "sneaky") is None


async def test_a_rotation_the_server_throttles_waits_longer_and_the_device_stays_online(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """The server allows one successor an hour; the agent backs off instead of asking again."""
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=BOT.bare,
        resource="bot",
        name=None,
        ttl=None,
        created_by="test",
    )
    uri = issued.uri(
        host=xmpp_server.host, port=xmpp_server.port, fingerprint=xmpp_server.fingerprint
    )
    store = KeyStore(tmp_path / "bot")
    await enroll(store, uri, valid_for=dt.timedelta(seconds=300))
    # A successor registered a moment ago (a rotation whose new key was then lost).
    identity = store.load()
    early = make_client(
        str(BOT),
        server=ServerAddress(xmpp_server.host, xmpp_server.port),
        trust=TrustAnchor(fingerprint=xmpp_server.fingerprint),
        certfile=identity.cert_path,
        keyfile=identity.key_path,
        plugins=PLUGINS,
    )
    await login(early)
    _, cert = store.next_identity()
    await add_certificate(early, "rotation", certificate_der(cert), allow_management=False)
    early.disconnect()

    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(
            store.state_dir, report=lines.append, stop=stop, rotate_before=dt.timedelta(seconds=299)
        )
    )
    online = await wait_for_line(lines, "online as")
    refused = await wait_for_line(lines, "rotation failed, will retry in 900 s", online)
    assert "resource-constraint" in lines[refused]
    await asyncio.sleep(1)
    assert not any("rotation failed" in line for line in lines[refused + 1 :])  # no hammering
    session = xmpp_server.server.sessions.get(BOT)
    assert session is not None and session.fingerprint == identity.fingerprint
    stop.set()
    await asyncio.wait_for(task, 10)
