"""A device is the unit of revocation: every certificate of its rotation chain goes with it.

The hole these close: a token-enrolled device registered a successor for its own full JID,
then revoking "the device" by name, JID or id revoked one certificate of the two while the
live session and the other certificate kept working.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pairing.errors import AuthenticationFailed, RequestFailed
from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    certificate_pem,
    generate_key,
    private_key_pem,
)
from pairing.protocol.jid import JID
from pairing.secure_files import write_private, write_public
from pairing.xmpp.connection import (
    PairingClient,
    ServerAddress,
    TrustAnchor,
    login,
    logout,
    make_client,
)
from pairing.xmpp.devices import revoke_device
from pairing.xmpp.saslcert import PLUGINS, add_certificate, revoke_certificate
from server_ext.admin.token_issuer import issue_token
from server_ext.model import CertState, DeviceState
from server_ext.policy.tokens import TokenRules
from tests.integration.conftest import PASSWORD, RunningServer, ServerFactory

BOT = JID.parse("alice@localhost/bot")
BIN = Path(sys.executable).parent


def identity(folder: Path, jid: JID = BOT) -> tuple[Path, Path, bytes]:
    """A device key and certificate on disk; returns (cert, key, DER)."""
    key = generate_key()
    cert = build_device_certificate(key, jid, valid_for=dt.timedelta(days=30))
    folder.mkdir(parents=True, exist_ok=True)
    write_private(folder / "device.key", private_key_pem(key))
    write_public(folder / "device.crt", certificate_pem(cert))
    return folder / "device.crt", folder / "device.key", certificate_der(cert)


def device_client(server: RunningServer, cert: Path, key: Path) -> PairingClient:
    return make_client(
        str(BOT),
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        certfile=cert,
        keyfile=key,
        plugins=PLUGINS,
    )


def owner(server: RunningServer) -> PairingClient:
    return make_client(
        "alice@localhost/phone",
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        password=PASSWORD,
        plugins=PLUGINS,
    )


async def enrolled_device_with_a_successor(
    server: RunningServer, tmp_path: Path
) -> tuple[PairingClient, asyncio.Event, list[tuple[Path, Path]]]:
    """A token-enrolled device, online with its first certificate, that registered a
    successor over its own session (what a rotation does before it switches)."""
    server.add_user("alice")
    issued = issue_token(
        server.registry,
        TokenRules(),
        account=BOT.bare,
        resource="bot",
        name=None,
        ttl=None,
        created_by="test",
    )
    first_cert, first_key, first_der = identity(tmp_path / "first")
    # The registry path a token redemption takes: burn and register, no-cert-management.
    server.registry.tokens.redeem(
        issued.record.token_hash, PeerCertificate.parse(first_der), address="127.0.0.1"
    )
    bot = device_client(server, first_cert, first_key)
    await login(bot)
    gone = asyncio.Event()
    bot.add_event_handler("disconnected", lambda _: gone.set())
    second_cert, second_key, second_der = identity(tmp_path / "second")
    await add_certificate(bot, "rotation", second_der, allow_management=False)
    chain = server.registry.devices.chain(
        server.registry.devices.by_name(BOT.bare, "bot").id  # type: ignore[union-attr]
    )
    assert [c.state for c in chain] == [CertState.ACTIVE, CertState.ACTIVE]
    assert len({c.device.id for c in chain}) == 1
    return bot, gone, [(first_cert, first_key), (second_cert, second_key)]


async def cli(*args: str) -> tuple[int, str, str]:
    """A CLI as a real process, without blocking the in-process server's event loop."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / args[0]),
        *args[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def revoke_by_xep0257_name(server: RunningServer) -> None:
    # What `pairing devices revoke bot` sends: XEP-0257 <revoke><name>bot</name></revoke>.
    alice = owner(server)
    await login(alice)
    await revoke_certificate(alice, "bot")
    await logout(alice)


async def revoke_by_adhoc_name(server: RunningServer) -> None:
    alice = owner(server)
    await login(alice)
    note = await revoke_device(alice, "bot", reason="lost")
    assert "Revoked device" in note and "closed 1 session(s)" in note, note
    await logout(alice)


async def revoke_by_cli_jid(server: RunningServer) -> None:
    code, out, err = await cli(
        "server-ext",
        "--data-dir",
        str(server.config.data_dir),
        "devices",
        "revoke",
        str(BOT),
        "--reason",
        "stolen",
    )
    assert code == 0, err
    assert "revoked device" in out and "closed 1 live session(s)" in out, out


async def revoke_by_cli_id(server: RunningServer) -> None:
    data = str(server.config.data_dir)
    code, out, err = await cli("server-ext", "--data-dir", data, "devices", "list", "--json")
    assert code == 0, err
    (device,) = json.loads(out)
    assert device["name"] == "bot" and device["online_as"] == [str(BOT)]
    assert [c["state"] for c in device["certificates"]] == ["active", "active"]
    code, out, err = await cli(
        "server-ext", "--data-dir", data, "devices", "revoke", str(device["id"])
    )
    assert code == 0, err
    assert "closed 1 live session(s)" in out, out


@pytest.mark.parametrize(
    "revoke",
    [revoke_by_xep0257_name, revoke_by_adhoc_name, revoke_by_cli_jid, revoke_by_cli_id],
    ids=["xep0257-name", "adhoc-name", "cli-jid", "cli-id"],
)
async def test_revoking_a_device_revokes_every_certificate_and_session(
    make_server: ServerFactory, tmp_path: Path, revoke: Any
) -> None:
    server = await make_server()
    bot, gone, certificates = await enrolled_device_with_a_successor(server, tmp_path)
    await revoke(server)
    # The live session (on the first certificate) closes at once ...
    await asyncio.wait_for(gone.wait(), 5)
    # ... and neither certificate of the device can log in again.
    for cert, key in certificates:
        with pytest.raises(AuthenticationFailed, match="revoked") as refused:
            await login(device_client(server, cert, key))
        assert refused.value.revoked  # the typed <revoked/> condition, not the text
    device = server.registry.devices.by_name(BOT.bare, "bot")
    assert device is not None and device.state is DeviceState.REVOKED
    assert {c.state for c in server.registry.devices.chain(device.id)} == {CertState.REVOKED}
    await logout(bot)


async def test_a_revoked_device_stays_reachable_by_jid_and_keeps_its_first_reason(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server()
    bot, gone, _ = await enrolled_device_with_a_successor(server, tmp_path)
    await revoke_by_cli_jid(server)  # reason "stolen"
    await asyncio.wait_for(gone.wait(), 5)
    data = str(server.config.data_dir)
    code, out, err = await cli(
        "server-ext", "--data-dir", data, "devices", "revoke", str(BOT), "--reason", "oops"
    )
    assert code == 0, err
    assert "already revoked: stolen" in out, out
    code, out, err = await cli(
        "server-ext", "--data-dir", data, "devices", "show", str(BOT), "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["state"], shown["revoked_reason"]) == ("revoked", "stolen")
    code, out, err = await cli(
        "server-ext", "--data-dir", data, "audit", "--device", str(BOT), "--json"
    )
    assert code == 0, err
    events = [e["event"] for e in json.loads(out)]
    # The history of both certificates of the device, in one place.
    assert events.count("cert.added") == 2 and "cert.rotated" in events
    assert events.count("device.revoked") == 1, events
    await logout(bot)


async def test_a_device_registers_at_most_one_successor_and_is_rate_limited(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server()
    bot, _, _ = await enrolled_device_with_a_successor(server, tmp_path)
    # Asking again at once is refused, and the refusal is audited.
    _, _, third = identity(tmp_path / "third")
    with pytest.raises(RequestFailed, match=r"resource-constraint.*retry in"):
        await add_certificate(bot, "rotation", third, allow_management=False)
    assert server.registry.audit.events()[-1].event == "cert.rotation_refused"
    device = server.registry.devices.by_name(BOT.bare, "bot")
    assert device is not None
    assert len(server.registry.devices.chain(device.id)) == 2
    # A certificate for another resource is never a rotation, and this device may not
    # manage certificates (it was enrolled with a token).
    _, _, other = identity(tmp_path / "other", JID.parse("alice@localhost/laptop"))
    with pytest.raises(RequestFailed, match="forbidden"):
        await add_certificate(bot, "sneaky", other, allow_management=False)
    await logout(bot)
    # The owner's password session cannot register a second device for the same full JID:
    # that is not a rotation, and two devices would share one identity.
    alice = owner(server)
    await login(alice)
    _, _, twin = identity(tmp_path / "twin")
    with pytest.raises(RequestFailed, match="conflict"):
        await add_certificate(alice, "bot-twin", twin)
    await logout(alice)


async def test_a_lost_successor_is_replaced_after_the_interval(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A device that could not store its new key asks again later; the unused successor is
    revoked, so there is never more than one waiting."""
    clock = [dt.datetime.now(dt.UTC)]
    server = await make_server(clock=lambda: clock[0])
    bot, _, certificates = await enrolled_device_with_a_successor(server, tmp_path)
    clock[0] += dt.timedelta(hours=1, minutes=1)
    _, _, third = identity(tmp_path / "third")
    await add_certificate(bot, "rotation", third, allow_management=False)
    device = server.registry.devices.by_name(BOT.bare, "bot")
    assert device is not None
    assert [c.state for c in server.registry.devices.chain(device.id)] == [
        CertState.ACTIVE,
        CertState.REVOKED,  # superseded before first use
        CertState.ACTIVE,
    ]
    # The superseded certificate is refused with a text that says "revoked", but the device
    # is not revoked, so the refusal carries no <revoked/> condition.
    cert, key = certificates[1]
    with pytest.raises(AuthenticationFailed, match="superseded before first use") as refused:
        await login(device_client(server, cert, key))
    assert not refused.value.revoked
    await logout(bot)


async def test_a_token_for_a_resource_in_use_is_refused_until_the_device_is_revoked(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server()
    bot, gone, _ = await enrolled_device_with_a_successor(server, tmp_path)
    data = str(server.config.data_dir)
    create = ("server-ext", "--data-dir", data, "token", "create", "--jid", "alice")
    code, out, err = await cli(*create, "--resource", "bot", "--json")
    assert code != 0
    (line,) = err.strip().splitlines()
    assert "already logs in as alice@localhost/bot" in line and "revoke it first" in line
    await revoke_by_cli_jid(server)
    await asyncio.wait_for(gone.wait(), 5)
    code, out, err = await cli(*create, "--resource", "bot", "--name", "bot (new)", "--json")
    assert code == 0, err
    assert json.loads(out)["jid"] == str(BOT)
    await logout(bot)
