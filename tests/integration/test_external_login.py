"""SASL EXTERNAL (XEP-0178) against registered certificates, over real TLS on loopback."""

from __future__ import annotations

import datetime as dt

import pytest

from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from tests.integration.conftest import PASSWORD, Device, DeviceFactory, RunningServer
from tests.support.scramclient import scram_login


def register(server: RunningServer, device: Device, name: str = "bot", account: str = "") -> None:
    owner = JID.parse(account) if account else device.jids[0].bare
    server.registry.devices.add(
        owner, name, PeerCertificate.parse(device.der), added_by="test", added_via="test"
    )


async def test_external_is_offered_only_with_a_client_certificate(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    without = await xmpp_server.raw()
    await without.open_stream()
    await without.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    await without.close()
    plain = await xmpp_server.raw_tls()
    # No certificate: a password client sees only password mechanisms.
    assert b"<mechanism>EXTERNAL</mechanism>" not in (await _features(xmpp_server, None))
    device = make_device("alice@localhost/bot")
    assert b"<mechanism>EXTERNAL</mechanism>" in (await _features(xmpp_server, device))
    await plain.close()


async def _features(server: RunningServer, device: Device | None) -> bytes:
    from tests.support.rawclient import client_context

    client = await server.raw()
    await client.open_stream()
    await client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    await client.read_until(b"<proceed")
    await client.read_until(b"/>")
    client.buffer = b""
    ctx = client_context(
        server.cert_path, device.cert_path if device else None, device.key_path if device else None
    )
    await client.writer.start_tls(ctx, server_hostname=server.domain)
    features = await client.open_stream()
    await client.close()
    return features


async def test_registered_certificate_logs_in_with_equals_and_binds_its_resource(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    assert b"<success" in await client.auth("EXTERNAL", b"")
    assert b"<jid>alice@localhost/bot</jid>" in await client.bind()
    record = xmpp_server.registry.devices.by_fingerprint(device.fingerprint)
    assert record is not None and record.last_login_at is not None
    events = [e.event for e in xmpp_server.registry.audit.events()]
    assert "login.external" in events
    await client.close()


@pytest.mark.parametrize("authzid", [b"alice@localhost", b"alice@localhost/bot"])
async def test_authzid_bare_or_full_jid_is_accepted(
    xmpp_server: RunningServer, make_device: DeviceFactory, authzid: bytes
) -> None:
    """Conversations and Gajim send the bare JID as authzid; libstrophe may send the full."""
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    assert b"<success" in await client.auth("EXTERNAL", authzid)
    assert b"<jid>alice@localhost/bot</jid>" in await client.bind()


async def test_resource_lock_refuses_another_resource(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """XEP-0257 §2: a full JID in xmppAddr locks the session to that resource."""
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    assert b"<success" in await client.auth("EXTERNAL", b"")
    reply = await client.bind("laptop")
    assert b"type='error'" in reply and b"<not-allowed" in reply
    assert b"may bind only 'bot'" in reply


async def test_bare_jid_certificate_binds_any_resource(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost")
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    assert b"<success" in await client.auth("EXTERNAL", b"")
    assert b"<jid>alice@localhost/laptop</jid>" in await client.bind("laptop")


async def test_unregistered_certificate_is_not_authorized(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    client = await xmpp_server.raw_tls(device)
    reply = await client.auth("EXTERNAL", b"")
    assert b"<not-authorized/>" in reply
    assert b"not registered" in reply
    assert "login.failed" in [e.event for e in xmpp_server.registry.audit.events()]


async def test_expired_certificate_is_not_authorized(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    device = make_device("alice@localhost/bot", valid_for=dt.timedelta(days=1), now=long_ago)
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    reply = await client.auth("EXTERNAL", b"")
    assert b"<not-authorized/>" in reply and b"expired" in reply


async def test_certificate_without_client_auth_usage_is_not_authorized(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot", client_auth=False)
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    assert b"<not-authorized/>" in await client.auth("EXTERNAL", b"")


async def test_certificate_registered_to_another_account_is_not_authorized(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """A certificate naming mallory, registered (wrongly) under alice, logs in as nobody."""
    xmpp_server.add_user("alice")
    xmpp_server.add_user("mallory")
    device = make_device("mallory@localhost/bot")
    register(xmpp_server, device, account="alice@localhost")
    client = await xmpp_server.raw_tls(device)
    assert b"<not-authorized/>" in await client.auth("EXTERNAL", b"")


async def test_two_jid_certificate_needs_an_authzid(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """XEP-0178 §3: with several xmppAddrs the client MUST name one."""
    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot1", "alice@localhost/bot2")
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    assert b"<invalid-authzid/>" in await client.auth("EXTERNAL", b"")
    assert b"<success" in await client.auth("EXTERNAL", b"alice@localhost/bot2")
    assert b"<jid>alice@localhost/bot2</jid>" in await client.bind()


async def test_external_authzid_naming_another_account_is_refused(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    """ejabberd 23.01 lets a certificate become any account named in authzid; not here."""
    xmpp_server.add_user("alice")
    xmpp_server.add_user("admin", admin=True)
    device = make_device("alice@localhost/bot")
    register(xmpp_server, device)
    client = await xmpp_server.raw_tls(device)
    assert b"<invalid-authzid/>" in await client.auth("EXTERNAL", b"admin@localhost")


async def test_plain_authzid_naming_another_account_is_refused(
    xmpp_server: RunningServer,
) -> None:
    xmpp_server.add_user("alice")
    xmpp_server.add_user("admin", admin=True)
    client = await xmpp_server.raw_tls()
    reply = await client.auth("PLAIN", f"admin@localhost\0alice\0{PASSWORD}".encode())
    assert b"<invalid-authzid/>" in reply
    ok = await client.auth("PLAIN", f"alice@localhost\0alice\0{PASSWORD}".encode())
    assert b"<success" in ok


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
async def test_scram_authzid_naming_another_account_is_refused(
    xmpp_server: RunningServer, hash_name: str
) -> None:
    xmpp_server.add_user("alice")
    xmpp_server.add_user("admin", admin=True)
    client = await xmpp_server.raw_tls()
    reply = await scram_login(
        client, "alice", PASSWORD, hash_name=hash_name, authzid="admin@localhost"
    )
    assert b"<invalid-authzid/>" in reply
    ok = await scram_login(client, "alice", PASSWORD, hash_name=hash_name)
    assert b"<success" in ok


async def test_disabled_certificate_cannot_log_in(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    from server_ext.model import DeviceState

    xmpp_server.add_user("alice")
    device = make_device("alice@localhost/bot")
    register(xmpp_server, device)
    xmpp_server.set_device_state("alice", "bot", DeviceState.DISABLED)
    client = await xmpp_server.raw_tls(device)
    reply = await client.auth("EXTERNAL", b"")
    assert b"<not-authorized/>" in reply and b"disabled" in reply


async def test_valid_certificate_login_is_never_throttled(
    make_server: object, make_device: DeviceFactory
) -> None:
    """Password guessing from an address must not lock the owner's devices out."""
    from tests.integration.conftest import ServerFactory

    factory: ServerFactory = make_server  # type: ignore[assignment]
    server = await factory(failed_logins_per_account_and_address=2, failed_logins_per_address=2)
    server.add_user("alice")
    device = make_device("alice@localhost/bot")
    register(server, device)
    for _ in range(4):
        guesser = await server.raw_tls()
        await guesser.auth("PLAIN", b"\0alice\0guess")
        await guesser.close()
    blocked = await server.raw_tls()
    assert b"<temporary-auth-failure/>" in await blocked.auth(
        "PLAIN", f"\0alice\0{PASSWORD}".encode()
    )
    client = await server.raw_tls(device)
    assert b"<success" in await client.auth("EXTERNAL", b"")
