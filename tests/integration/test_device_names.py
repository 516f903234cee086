"""A new device under a revoked device's name (issue 10): it is enrolled and gets the name;
the revoked one keeps its id and history. A name a live device holds is refused where the
owner can act on it, and the device's message says what the owner must do."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.enrollment import EnrollmentError, enroll
from device_agent.keystore import KeyStore
from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from server_ext.admin.token_issuer import issue_token
from server_ext.errors import ServerExtError
from server_ext.model import DeviceState
from server_ext.policy.tokens import TokenRules
from tests.integration.conftest import DeviceFactory, RunningServer

ALICE = JID.parse("alice@localhost")


async def enroll_with_token(
    server: RunningServer, folder: Path, resource: str, name: str
) -> KeyStore:
    issued = issue_token(
        server.registry,
        TokenRules(),
        account=ALICE,
        resource=resource,
        name=name,
        ttl=None,
        created_by="test",
    )
    store = KeyStore(folder)
    await enroll(
        store, issued.uri(host=server.host, port=server.port, fingerprint=server.fingerprint)
    )
    return store


async def test_a_new_device_takes_the_name_of_a_revoked_one(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    first = await enroll_with_token(xmpp_server, tmp_path / "old", "sensor", "Kitchen sensor")
    old_fingerprint = first.load().fingerprint
    xmpp_server.set_device_state("alice", "Kitchen sensor", DeviceState.REVOKED, reason="broken")
    # The same resource and the same name: what the owner does after replacing the hardware.
    second = await enroll_with_token(xmpp_server, tmp_path / "new", "sensor", "Kitchen sensor")
    devices = xmpp_server.registry.devices
    current = devices.by_name(ALICE, "Kitchen sensor")
    assert current is not None and current.state is DeviceState.ACTIVE
    (cert,) = devices.chain(current.id)
    assert cert.fingerprint == second.load().fingerprint
    old = devices.by_fingerprint(old_fingerprint)
    assert old is not None and old.device.id != current.id
    assert old.device.state is DeviceState.REVOKED and old.device.revoked_reason == "broken"
    assert old.name.startswith("Kitchen sensor (revoked ")
    history = [e.event for e in xmpp_server.registry.audit.events(subjects=[old_fingerprint])]
    assert history[-2:] == ["device.revoked", "device.renamed"]


async def test_a_name_a_live_device_holds_is_refused_when_the_token_is_made(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    await enroll_with_token(xmpp_server, tmp_path / "one", "sensor", "Sensor")
    with pytest.raises(ServerExtError, match="already has a device named 'Sensor'"):
        issue_token(
            xmpp_server.registry,
            TokenRules(),
            account=ALICE,
            resource="other",
            name="Sensor",
            ttl=None,
            created_by="test",
        )


async def test_a_name_conflict_tells_the_device_what_the_owner_must_do(
    xmpp_server: RunningServer, make_device: DeviceFactory, tmp_path: Path
) -> None:
    """The name was free when the token was made and taken before the device redeemed it."""
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=ALICE,
        resource="lamp",
        name="Lamp",
        ttl=None,
        created_by="test",
    )
    other = make_device("alice@localhost/desk")
    xmpp_server.registry.devices.add(
        ALICE, "Lamp", PeerCertificate.parse(other.der), added_by="test", added_via="test"
    )
    uri = issued.uri(
        host=xmpp_server.host, port=xmpp_server.port, fingerprint=xmpp_server.fingerprint
    )
    with pytest.raises(EnrollmentError) as refused:
        await enroll(KeyStore(tmp_path / "lamp"), uri)
    message = str(refused.value)
    assert "name-conflict" in message
    assert "account owner must revoke" in message and "another name" in message
    assert "ask for a token" not in message  # the device cannot ask for anything
