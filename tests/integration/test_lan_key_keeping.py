"""LAN pairing in XEP-0257 mode: a device never deletes a key the server may have registered.

The user's client registers the device's certificate and then confirms over the encrypted
channel. If it goes away in between, the registration may have happened: deleting the fresh
key then leaves the account with a certificate whose key is gone, and the device unable to
log in as what the server knows (the loss the QR flow fixed in ``device_agent.enrollment``).

The device runs for real (``wait_for_user``, advertising on mDNS in the test's own network
namespace), the server is the real embedded one, and the user's client is the real
``UserSession`` and ``AccountEnroller`` over a real password session, stopped at the step
where a crashing client would stop.
"""

from __future__ import annotations

import asyncio
import re
from enum import Enum, auto
from pathlib import Path

import pytest

from device_agent.keystore import KeyStore
from device_agent.lan import PairingLimits, wait_for_user
from device_agent.setup_state import SetupState
from pairing.errors import RequestFailed
from pairing.lan.enroller import AccountEnroller
from pairing.protocol.address import ServerAddress
from pairing.protocol.jid import JID
from pairing.protocol.pair_messages import EnrollMode
from pairing.protocol.pair_setup import (
    CertificateReceived,
    DeviceIntroduced,
    EnrollmentFinished,
    Paired,
    UserSession,
)
from pairing.protocol.setup_code import SetupLabel
from pairing.xmpp.connection import PairingClient, TrustAnchor, login, logout, make_client
from pairing.xmpp.saslcert import PLUGINS, add_certificate
from tests.integration.conftest import PASSWORD, RunningServer

pytestmark = pytest.mark.lan

LAMP = JID.parse("alice@localhost/lamp")


class StopAt(Enum):
    """Where the user's client goes away."""

    RECEIVED = auto()  # it has the certificate and has not registered it
    REGISTERED = auto()  # the server registered it; the confirmation is never sent
    NEVER = auto()  # a whole pairing


async def device_port(lines: list[str]) -> int:
    for _ in range(500):
        found = [re.search(r"on port (\d+)", line) for line in lines]
        ports = [int(match.group(1)) for match in found if match]
        if ports:
            return ports[-1]
        await asyncio.sleep(0.02)
    raise AssertionError(f"the device never listened: {lines}")


async def user_client(port: int, code: str, owner: PairingClient, stop_at: StopAt) -> bytes:
    """The user's side of one pairing, over TCP, that hangs up at ``stop_at``; returns the
    certificate the device sent. A refused ``append`` ends it as it ends a window's: the
    connection closes without a word to the device."""
    enroller = AccountEnroller(owner, mode=EnrollMode.XEP0257)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    user = UserSession()
    der = b""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 20)
            assert data, "the device hung up"
            for event in user.receive_data(data):
                if isinstance(event, DeviceIntroduced):
                    user.start_setup(code)
                elif isinstance(event, Paired):
                    assert user.hello is not None
                    user.send_offer(await enroller.offer_for(user.hello))
                elif isinstance(event, CertificateReceived):
                    assert user.hello is not None
                    der = event.der
                    if stop_at is StopAt.RECEIVED:
                        return der
                    try:
                        await enroller.register(user.hello, der)
                    except RequestFailed:
                        return der
                    if stop_at is StopAt.REGISTERED:
                        return der
                    user.confirm_registered()
                elif isinstance(event, EnrollmentFinished):
                    assert event.result.ok, event.result
                    return der
                else:
                    raise AssertionError(f"unexpected {event}")
            writer.write(user.data_to_send())
            await writer.drain()
    finally:
        writer.close()


async def owner_session(server: RunningServer) -> PairingClient:
    server.add_user("alice")
    owner = make_client(
        "alice@localhost/phone",
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        password=PASSWORD,
        plugins=PLUGINS,
    )
    await login(owner)
    return owner


def advertising_device(
    state: Path, lines: list[str], deadline: float
) -> tuple[SetupLabel, asyncio.Task[JID]]:
    label = SetupLabel.generate()
    SetupState.create(state, label, name="Desk lamp", resource="lamp")
    task = asyncio.create_task(
        wait_for_user(
            state,
            limits=PairingLimits(deadline=deadline),
            host="127.0.0.1",
            interfaces=["127.0.0.1"],
            report=lines.append,
        )
    )
    return label, task


async def test_a_client_gone_after_registering_leaves_the_device_enrolled_with_its_key(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    owner = await owner_session(xmpp_server)
    lines: list[str] = []
    label, device = advertising_device(tmp_path / "lamp", lines, deadline=20)
    port = await device_port(lines)
    await user_client(port, label.code.digits, owner, StopAt.REGISTERED)
    await logout(owner)
    # The device asks the server itself (it knows the server from the offer), finds its
    # certificate registered, and is enrolled: no confirmation needed, nothing deleted.
    assert await asyncio.wait_for(device, 30) == LAMP
    identity = KeyStore(tmp_path / "lamp").load()
    registered = xmpp_server.registry.devices.by_fingerprint(identity.fingerprint)
    assert registered is not None and registered.device.name == "Desk lamp"
    assert (tmp_path / "lamp" / "server.json").exists()
    assert any("but the certificate is registered" in line for line in lines), lines


async def test_a_client_gone_before_registering_leaves_a_key_the_next_pairing_uses(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    owner = await owner_session(xmpp_server)
    lines: list[str] = []
    label, device = advertising_device(tmp_path / "lamp", lines, deadline=30)
    port = await device_port(lines)
    await user_client(port, label.code.digits, owner, StopAt.RECEIVED)
    # Whether the client registered it, the device cannot tell from the LAN; the server says
    # it is not registered (yet), so the device is not enrolled, but the key stays.
    for _ in range(500):
        if any("the key is kept" in line for line in lines):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"no word about the key: {lines}")
    assert not device.done()
    kept = KeyStore(tmp_path / "lamp").load().fingerprint
    assert not (tmp_path / "lamp" / "server.json").exists()
    # The next pairing registers that same key and the device logs in with it.
    await user_client(port, label.code.digits, owner, StopAt.NEVER)
    await logout(owner)
    assert await asyncio.wait_for(device, 30) == LAMP
    assert KeyStore(tmp_path / "lamp").load().fingerprint == kept
    assert xmpp_server.registry.devices.by_fingerprint(kept) is not None


async def test_a_registration_that_landed_unseen_is_found_at_the_next_pairing(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """The device asked too early: the client's append reached the server only after the
    device's own login was refused. At the next pairing the client's append of the same
    certificate is refused (``conflict``), the client hangs up, and the device's login finds
    itself registered."""
    owner = await owner_session(xmpp_server)
    lines: list[str] = []
    label, device = advertising_device(tmp_path / "lamp", lines, deadline=30)
    port = await device_port(lines)
    der = await user_client(port, label.code.digits, owner, StopAt.RECEIVED)
    for _ in range(500):
        if any("the key is kept" in line for line in lines):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"no word about the key: {lines}")
    await add_certificate(owner, "Desk lamp", der, allow_management=False)  # late, unseen
    await user_client(port, label.code.digits, owner, StopAt.NEVER)
    await logout(owner)
    assert await asyncio.wait_for(device, 30) == LAMP
    assert any("but the certificate is registered" in line for line in lines), lines
