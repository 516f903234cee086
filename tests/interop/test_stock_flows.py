"""The whole user flows of issue 11 on a real ejabberd and a real Prosody, through the CLIs.

A person with an account on the stock server logs the ``pairing`` CLI in once, pairs a bot
by QR (``pairing token`` → ``device-agent enroll``) and a sensor by its label (LAN pairing,
both directions), registers a device by hand, sees them online, and revokes them (from
``server-ext devices revoke``, from the component's ad-hoc command, and with ``pairing
devices revoke``): the live session closes within 1 s and no certificate the device ever
had logs in again. Every process is a real CLI beside a private stock server configured from
``server-ext stock snippet`` (tests/interop/flows_world.py); one world per server kind and
module, with accounts and devices per test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

import device_agent
from device_agent.enrollment import ServerSettings
from device_agent.keystore import KeyStore
from pairing.protocol.identity import PeerCertificate, build_device_certificate, generate_key
from pairing.protocol.jid import JID
from pairing.xmpp.connection import PairingClient, logout
from server_ext.model import CertState
from tests.interop.flows_world import (
    COMPONENT,
    Agent,
    LOOPBACK,
    Owner,
    World,
    cli,
    stock_world,
)
from tests.support.certificates import CertificateFiles
from tests.support.netns import NamespaceUnavailable, private_network
from tests.support.stock_clients import close, disconnection, raw_external, succeeded

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

#: The issue's bound: a revoked device's live session is closed within this many seconds.
CLOSE_BOUND = 1.0
INTERFACE = ["--interface", LOOPBACK]


@pytest.fixture(scope="module", params=["ejabberd", "prosody"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One stock server and one ``server-ext serve`` per kind, in a network of their own."""
    folder = tmp_path_factory.mktemp(f"flows-{request.param}")
    try:
        with private_network(), stock_world(request.param, folder) as made:
            yield made
    except NamespaceUnavailable as exc:
        pytest.fail(f"the stock flows need a private network namespace: {exc}")


def certificate_files(state: Path) -> CertificateFiles:
    """The device's current key and certificate, copied aside (a later rotation replaces them)."""
    identity = KeyStore(state).load()
    folder = state.parent / f"{state.name}-copy-{identity.fingerprint[:8]}"
    folder.mkdir(exist_ok=True)
    cert = Path(shutil.copy(identity.cert_path, folder / "device.crt"))
    key = Path(shutil.copy(identity.key_path, folder / "device.key"))
    return CertificateFiles(cert, key, cert, x509.load_pem_x509_certificate(cert.read_bytes()))


async def refused(world: World, device: CertificateFiles, resource: str) -> bool:
    """True when the stock server refuses ``device``'s certificate (SASL or bind)."""
    results = []
    for port in world.c2s_ports:
        attempt = await raw_external(port, world.server_cert, device, resource=resource)
        results.append(not succeeded(attempt))
        await close(attempt)
    return all(results)


async def revoked_within_bound(
    world: World, client: PairingClient, jid: str, revoke: object, what: str
) -> float:
    """Run ``revoke`` (a callable, in a thread); the live session must close within the
    bound of the revocation's moment (its audit time). Returns that delay."""
    gone = disconnection(client)
    seen_at: list[dt.datetime] = []
    client.add_event_handler("disconnected", lambda _: seen_at.append(dt.datetime.now(dt.UTC)))
    assert callable(revoke)
    await asyncio.to_thread(revoke)
    await asyncio.wait_for(gone.wait(), 10)
    client.abort()
    account, _, name = jid.partition("/")
    (event,) = [
        e
        for e in world.audit("device.revoked")
        if (e.detail.get("account"), e.detail.get("name")) == (account, name)
    ]
    delay = (seen_at[0] - event.at).total_seconds()
    print(f"{world.kind}: {what}: session closed {delay:.3f} s after the revocation")
    assert 0 <= delay < CLOSE_BOUND, (what, delay)
    return delay


def enroll_by_qr(world: World, owner: Owner, resource: str, state: Path) -> str:
    uri = world.token(owner, resource)
    assert uri.startswith("XMPP-DP:2/"), uri  # a stock server's token: HTTPS, then EXTERNAL
    done = cli("device-agent", "--state-dir", state, "enroll", "--uri", uri)
    jid = f"{owner.jid}/{resource}"
    assert f"logs in as {jid}" in done.stdout, done.stdout
    assert uri.split("/")[1] not in done.stdout + done.stderr
    return jid


# -- QR token ---------------------------------------------------------------------------------


async def test_a_bot_paired_by_qr_logs_in_rotates_and_is_revoked_by_the_operator(
    world: World, tmp_path: Path
) -> None:
    owner = world.account("qr")
    profile = world.login(owner)  # finds the component in the domain's disco#items
    assert profile["component"] == COMPONENT, profile
    state = tmp_path / "bot"
    jid = enroll_by_qr(world, owner, "bot", state)
    first = certificate_files(state)

    # device-agent run keeps it online; the owner sees it through the component.
    agent = Agent("device-agent", "--state-dir", state, "run")
    try:
        agent.wait_for(f"online as {jid}")
        assert world.devices(owner)["bot"]["online"] is True
    finally:
        agent.stop()

    # A rotation over HTTPS (the certificate is still valid): the successor logs in, the
    # previous certificate is refused at once although it has not expired.
    cli("device-agent", "--state-dir", state, "renew")
    second = certificate_files(state)
    assert second.certificate != first.certificate
    assert await refused(world, first, "bot")
    bot = await device_agent.connect(state)  # what a bot author writes
    assert str(bot.boundjid) == jid

    await revoked_within_bound(
        world,
        bot,
        jid,
        lambda: world.admin("devices", "revoke", "bot", "--jid", owner.jid, "--reason", "lost"),
        "server-ext devices revoke",
    )
    assert await refused(world, second, "bot")
    assert await refused(world, first, "bot")
    with world.registry() as registry:
        found = registry.devices.by_fingerprint(PeerCertificate.from_x509(second.certificate).fingerprint)
        assert found is not None and found.state is CertState.REVOKED
    assert world.devices(owner)["bot"]["state"] == "revoked"
    assert world.devices(owner)["bot"]["online"] is False
