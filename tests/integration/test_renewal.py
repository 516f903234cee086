"""Renewal after expiry (issue 10): a device that was off past its certificate's expiry renews
before SASL within the grace period, and nobody else can (docs/protocol.md, section 8)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from device_agent.enrollment import ServerSettings
from device_agent.keystore import KeyStore
from device_agent.renewal import RenewalError, renew_expired
from device_agent.runtime import LoginRefused, run
from pairing.errors import PairingError
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    generate_key,
)
from pairing.protocol.jid import JID
from pairing.protocol.renewal import sign_renewal
from pairing.xmpp.connection import TrustAnchor, login, logout, make_client
from pairing.xmpp.renewal import RenewalOffer, offer_renewal
from server_ext.model import CertState, DeviceState
from tests.integration.cli_support import BIN
from tests.integration.conftest import Device, DeviceFactory, RunningServer, ServerFactory
from tests.integration.test_device_runtime import wait_for_line

BOT = JID.parse("alice@localhost/bot")
LIFETIME = dt.timedelta(days=30)


class Clock:
    """The server's clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


async def expired_device(
    make_server: ServerFactory,
    folder: Path,
    *,
    expired_for: dt.timedelta = dt.timedelta(days=10),
    **server_options: object,
) -> tuple[RunningServer, KeyStore, Clock]:
    """A device registered when its certificate was valid, which then expired while it was
    off: its key store holds the expired identity and its server settings."""
    clock = Clock()
    server = await make_server(clock=clock, **server_options)
    server.add_user("alice")
    made_at = dt.datetime.now(dt.UTC) - LIFETIME - expired_for
    key = generate_key()
    cert = build_device_certificate(key, BOT, valid_for=LIFETIME, now=made_at)
    clock.offset = made_at - dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    server.registry.devices.add(
        BOT.bare,
        "bot",
        PeerCertificate.from_x509(cert),
        no_cert_management=True,
        added_by="test",
        added_via="token",
    )
    clock.offset = dt.timedelta(0)  # now: the certificate expired `expired_for` ago
    store = KeyStore(folder)
    store.install(key, cert)
    ServerSettings(server.host, server.port, server.fingerprint, str(BOT), "Bot").save(folder)
    return server, store, clock


async def test_an_expired_device_renews_by_itself_and_comes_online(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server, store, _ = await expired_device(make_server, tmp_path / "bot")
    old = store.load()
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1, stop=stop))
    await wait_for_line(lines, "online as alice@localhost/bot")
    assert any("renewed the certificate" in line for line in lines), lines
    new = store.load()
    assert new.fingerprint != old.fingerprint and new.not_after > dt.datetime.now(dt.UTC)
    assert new.validity == old.validity  # as long as it was made for
    assert not old.key_path.exists()  # the expired key is destroyed once it is replaced
    session = server.server.sessions.get(BOT)
    assert session is not None and session.fingerprint == new.fingerprint
    registry = server.registry
    renewed = registry.devices.by_fingerprint(new.fingerprint)
    assert renewed is not None and renewed.added_via == "renewal"
    assert renewed.device.name == "bot"  # the same device, not a new one
    expired = registry.devices.by_fingerprint(old.fingerprint)
    assert expired is not None and expired.state is CertState.DISABLED  # retired at first login
    events = {e.event: e for e in registry.audit.events()}
    assert events["cert.renewed"].subject == new.fingerprint
    assert events["cert.renewed"].detail["replaces"] == old.fingerprint
    assert events["cert.renewed"].address == "127.0.0.1"
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_device_agent_renew_with_an_expired_certificate_runs_the_hook(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server, store, _ = await expired_device(make_server, tmp_path / "bot")
    old = store.load()
    seen = tmp_path / "hook.txt"
    script = tmp_path / "hook.py"
    script.write_text(
        "import os, sys\n"
        "env = os.environ\n"
        "open(sys.argv[1], 'w').write(env['DEVICE_AGENT_FINGERPRINT'] + ' ' + "
        "env['DEVICE_AGENT_CERT'])\n"
    )
    hook = f"{sys.executable} {script} '{seen}'"
    code, out, err = await agent("--state-dir", str(store.state_dir), "renew", "--exec", hook)
    assert code == 0, err
    new = store.load()
    assert new.fingerprint != old.fingerprint
    assert "renewed:" in out and new.not_after.strftime("%Y-%m-%d") in out
    assert seen.read_text() == f"{new.fingerprint} {store.cert_path}"
    record = server.registry.devices.by_fingerprint(new.fingerprint)
    assert record is not None and record.state is CertState.ACTIVE


async def test_device_agent_renew_before_expiry_rotates_over_the_session(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server, store, clock = await expired_device(
        make_server, tmp_path / "bot", expired_for=-dt.timedelta(days=5)
    )  # still valid for five days
    old = store.load()
    code, _, err = await agent("--state-dir", str(store.state_dir), "renew")
    assert code == 0, err
    new = store.load()
    assert new.fingerprint != old.fingerprint
    record = server.registry.devices.by_fingerprint(new.fingerprint)
    assert record is not None and record.added_via == "rotation"
    clock.offset = dt.timedelta(hours=2)  # past the rotation interval
    failing = await agent("--state-dir", str(store.state_dir), "renew", "--exec", "false")
    assert failing[0] == 1
    assert failing[2].strip().splitlines() == [
        "Error: the certificate was renewed, but --exec false exited with 1"
    ]


async def agent(*args: str) -> tuple[int, str, str]:
    """``device-agent`` as a process, without blocking the server on this event loop."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "device-agent"),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_revoked_device_cannot_renew_and_stops_for_good(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server, store, _ = await expired_device(make_server, tmp_path / "bot")
    server.set_device_state("alice", "bot", DeviceState.REVOKED, reason="stolen")
    before = store.load()
    lines: list[str] = []
    with pytest.raises(LoginRefused, match="stolen"):
        await asyncio.wait_for(run(store.state_dir, report=lines.append, min_delay=0.1), 10)
    assert store.load().fingerprint == before.fingerprint  # the staged key is gone, not used
    assert [p.name for p in store.state_dir.iterdir() if p.name.startswith("gen-")] == [
        before.key_path.parent.name
    ]
    assert len(server.registry.devices.chain(server_device_id(server))) == 1
    refused = [e for e in server.registry.audit.events() if e.event == "cert.renewal_refused"]
    assert [e.detail["condition"] for e in refused] == ["revoked"]
    assert refused[0].subject == before.fingerprint


def server_device_id(server: RunningServer) -> int:
    (device,) = server.registry.devices.all(BOT.bare)
    return device.id


async def test_past_the_grace_period_it_cannot_renew(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server, store, _ = await expired_device(
        make_server,
        tmp_path / "bot",
        expired_for=dt.timedelta(days=3),
        renewal_grace=2 * 86400.0,
    )
    with pytest.raises(RenewalError, match="grace-expired") as refused:
        await renew_expired(store.state_dir)
    assert refused.value.final and "enroll this device again" in str(refused.value)
    assert len(server.registry.devices.chain(server_device_id(server))) == 1
    lines: list[str] = []
    with pytest.raises(LoginRefused, match="grace-expired"):
        await asyncio.wait_for(run(store.state_dir, report=lines.append, min_delay=0.1), 10)


async def attempt(
    server: RunningServer, presented: Device, expired_der: bytes, signature: bytes
) -> RenewalOffer:
    """One ``<renew/>`` over a real stream, presenting ``presented`` in TLS."""
    client = make_client(
        str(BOT),
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        certfile=presented.cert_path,
        keyfile=presented.key_path,
    )
    offer = offer_renewal(client, expired_der, signature)
    try:
        await login(client)
    except PairingError:
        pass
    else:
        await logout(client)
    return offer


def signer(store: KeyStore) -> Callable[[Device, str], bytes]:
    key = store.private_key()

    def sign(new: Device, domain: str = "localhost") -> bytes:
        return sign_renewal(key, domain, new.der)

    return sign


async def test_a_stolen_expired_certificate_without_its_key_cannot_renew(
    make_server: ServerFactory, make_device: DeviceFactory, tmp_path: Path
) -> None:
    """The certificate is public (XEP-0257 lists it); the thief signs with a key of their own."""
    server, store, _ = await expired_device(make_server, tmp_path / "bot")
    expired = store.load().certificate_der
    thief = make_device(str(BOT))
    thief_key = generate_key()
    offer = await attempt(server, thief, expired, sign_renewal(thief_key, "localhost", thief.der))
    assert offer.refusal is not None and offer.refusal.condition == "bad-signature"
    offer = await attempt(server, thief, expired, b"\x30\x06\x02\x01\x01\x02\x01\x01")
    assert offer.refusal is not None and offer.refusal.condition == "bad-signature"
    assert server.registry.devices.by_fingerprint(thief.fingerprint) is None
    conditions = [
        e.detail["condition"]
        for e in server.registry.audit.events()
        if e.event == "cert.renewal_refused"
    ]
    assert conditions == ["bad-signature", "bad-signature"]


async def test_a_signature_replayed_for_another_key_or_server_cannot_renew(
    make_server: ServerFactory, make_device: DeviceFactory, tmp_path: Path
) -> None:
    """Someone who saw the device's renewal (its expired certificate and signature) presents
    their own key with it; or the signature was made for another server."""
    server, store, _ = await expired_device(make_server, tmp_path / "bot")
    expired = store.load().certificate_der
    sign = signer(store)
    genuine, other = make_device(str(BOT)), make_device(str(BOT))
    replayed = await attempt(server, other, expired, sign(genuine))
    assert replayed.refusal is not None and replayed.refusal.condition == "bad-signature"
    elsewhere = await attempt(server, genuine, expired, sign(genuine, "example.org"))
    assert elsewhere.refusal is not None and elsewhere.refusal.condition == "bad-signature"
    for device in (genuine, other):
        assert server.registry.devices.by_fingerprint(device.fingerprint) is None
    # The genuine request still works, once, and the device then logs in with its new key.
    accepted = await attempt(server, genuine, expired, sign(genuine))
    assert accepted.registered and accepted.outcome.result().jid == str(BOT)
    record = server.registry.devices.by_fingerprint(genuine.fingerprint)
    assert record is not None and record.last_login_at is not None


async def test_the_new_certificate_must_name_the_same_full_jid(
    make_server: ServerFactory, make_device: DeviceFactory, tmp_path: Path
) -> None:
    server, store, _ = await expired_device(make_server, tmp_path / "bot")
    expired = store.load().certificate_der
    sign = signer(store)
    for jids in (("alice@localhost/other",), ("alice@localhost",), (str(BOT), "bob@localhost/x")):
        wrong = make_device(*jids)
        offer = await attempt(server, wrong, expired, sign(wrong))
        assert offer.refusal is not None and offer.refusal.condition == "jid-mismatch", jids
        assert server.registry.devices.by_fingerprint(wrong.fingerprint) is None


async def test_a_disabled_device_cannot_renew_until_enabled(
    make_server: ServerFactory, make_device: DeviceFactory, tmp_path: Path
) -> None:
    server, store, _ = await expired_device(make_server, tmp_path / "bot")
    expired = store.load().certificate_der
    sign = signer(store)
    new = make_device(str(BOT))
    server.set_device_state("alice", "bot", DeviceState.DISABLED)
    offer = await attempt(server, new, expired, sign(new))
    assert offer.refusal is not None and offer.refusal.condition == "disabled"
    server.set_device_state("alice", "bot", DeviceState.ACTIVE)
    offer = await attempt(server, new, expired, sign(new))
    assert offer.registered
