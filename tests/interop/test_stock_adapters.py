"""The stock-server adapters (server_ext/stock) against real ejabberd and Prosody instances.

The adapter runs as ``server-ext serve`` runs it (:func:`server_ext.stock.base.load_kind`),
against a registry on a real SQLite file; devices are real slixmpp clients with self-signed
certificates made as ``device-agent`` makes them. The whole flows through the CLIs are
``test_stock_flows.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pairing.errors import AuthenticationFailed, RequestFailed
from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from pairing.xmpp.component import find_component, register_certificate
from pairing.xmpp.connection import logout
from pairing.xmpp.devices import list_devices, revoke_device
from server_ext.app.handlers import ServerContext
from server_ext.app.router import SessionTable
from server_ext.config import ServerConfig, StockKind
from server_ext.model import DeviceState
from server_ext.net.component import ComponentFace
from server_ext.stock.base import (
    StockError,
    StockServer,
    close_stale_sessions,
    context_for,
    load_kind,
)
from server_ext.stock.options import ComponentSettings
from server_ext.storage.registry import Registry
from tests.interop.conftest import EjabberdFactory, Measured
from tests.support.certificates import CertificateFiles, self_signed_device
from tests.support.stock_clients import (
    PASSWORD,
    certificate_login,
    close,
    disconnection,
    password_login,
    raw_external,
    succeeded,
)
from tests.support.stock_servers import LOOPBACK, EjabberdNode, free_port, join_cluster

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

SECRET = "a shared secret of the test, 32+"
#: The issue's bound: a revoked device's live session is closed within this many seconds.
CLOSE_BOUND = 1.0


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry.open(tmp_path / "registry.sqlite3") as opened:
        yield opened


def enroll(registry: Registry, folder: Path, jid: str, name: str) -> CertificateFiles:
    """A device that made its own key and certificate, registered for its account."""
    device = self_signed_device(folder, jid, name=name)
    registry.devices.add(
        JID.parse(jid).bare,
        name,
        PeerCertificate.from_x509(device.certificate),
        added_by="test",
        added_via="test",
    )
    return device


def revoke(registry: Registry, name: str, account: str = "alice@localhost") -> Any:
    device = registry.devices.by_name(JID.parse(account), name)
    assert device is not None
    updated, _ = registry.devices.set_state(
        device.id, DeviceState.REVOKED, actor="test", reason="lost"
    )
    return updated


async def revoke_on(stock: StockServer, registry: Registry, name: str) -> int:
    """What serve does after a revocation: the trust set, then the device's sessions."""
    device = revoke(registry, name)
    await stock.sync_trust()
    return await stock.close_device(device, registry.devices.chain(device.id), "revoked")


def reloads(node: EjabberdNode, *, at_least: int = 0) -> int:
    """How many reloads the node logged; waits (up to 3 s) for ``at_least``, since ejabberd's
    logger writes the line a moment after the API call returned."""
    deadline = time.monotonic() + 3
    while True:
        count = node.log_path.read_text(errors="replace").count(
            "Configuration reloaded successfully"
        )
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


# -- ejabberd ---------------------------------------------------------------------------------


@pytest.fixture
def trust_file(tmp_path: Path) -> Path:
    path = tmp_path / "ejabberd-trust.pem"
    path.write_text("")  # what the snippet's operator starts from: no device yet
    return path


def ejabberd_node(start: EjabberdFactory, trust_file: Path, name: str = "ejabberd") -> EjabberdNode:
    node = start(name, c2s_listener={"tls_verify": True}, top_level={"c2s_cafile": str(trust_file)})
    return node


def api_of(node: EjabberdNode) -> str:
    return f"http://{LOOPBACK}:{node.http_port}/api"


def ejabberd_adapter(
    tmp_path: Path, registry: Registry, trust_file: Path, *apis: str, timeout: float = 5.0
) -> StockServer:
    config = ServerConfig(
        domain="localhost",
        data_dir=tmp_path / "server-ext",
        stock_kind=StockKind.EJABBERD,
        stock_options={
            "ejabberd": {
                "api": list(apis),
                "trust_file": str(trust_file),
                "timeout": timeout,
            }
        },
    )
    return load_kind(config.stock_kind, context_for(config, registry, SECRET))


async def test_ejabberd_adapter_trusts_enrolled_devices_and_revokes_them(
    ejabberd: EjabberdFactory,
    registry: Registry,
    trust_file: Path,
    server_cert: CertificateFiles,
    tmp_path: Path,
    measured: Measured,
) -> None:
    node = ejabberd_node(ejabberd, trust_file)
    node.register("alice", PASSWORD)
    devices = tmp_path / "devices"
    sensor = enroll(registry, devices, "alice@localhost/sensor", "sensor")
    stock = ejabberd_adapter(tmp_path, registry, trust_file, api_of(node))
    before = reloads(node)
    await stock.start()  # the first sync: the file and the node agree with the registry
    try:
        assert reloads(node, at_least=before + 1) == before + 1
        assert trust_file.read_bytes().count(b"BEGIN CERTIFICATE") == 1
        assert trust_file.stat().st_mode & 0o777 == 0o644

        client, jid = await certificate_login(
            node.c2s_port, server_cert, "alice@localhost/sensor", sensor
        )
        assert str(jid) == "alice@localhost/sensor"
        assert JID.parse("alice@localhost/sensor") in await stock.online()

        # A burst of enrollments costs at most two reloads (one running, one queued).
        before = reloads(node)
        bots = [
            enroll(registry, devices, f"alice@localhost/bot{number}", f"bot{number}")
            for number in range(20)
        ]
        await asyncio.gather(*(stock.sync_trust() for _ in range(20)))
        assert reloads(node, at_least=before + 1) - before <= 2
        assert trust_file.read_bytes().count(b"BEGIN CERTIFICATE") == 21
        bot, _ = await certificate_login(
            node.c2s_port, server_cert, "alice@localhost/bot7", bots[7]
        )
        # Nothing changed: nothing is reloaded (the API log line shows any call).
        calls = node.log_path.read_text(errors="replace").count("API call reload_config")
        await stock.sync_trust()
        await asyncio.sleep(0.5)
        assert node.log_path.read_text(errors="replace").count("API call reload_config") == calls

        # Revocation: the live session is closed within the bound ...
        gone = disconnection(client)
        began = time.monotonic()
        closed = await revoke_on(stock, registry, "sensor")
        await asyncio.wait_for(gone.wait(), 5)
        seconds = time.monotonic() - began
        assert closed == 1
        assert seconds < CLOSE_BOUND, seconds
        client.abort()
        measured("ejabberd adapter: revocation to the device seeing the close", seconds)

        # ... the certificate is refused at SASL from now on ...
        refused = await raw_external(node.c2s_port, server_cert, sensor, resource="sensor")
        assert b"<not-authorized/>" in refused.sasl, refused.sasl
        assert b"self signed certificate" in refused.sasl
        await close(refused)
        with pytest.raises(AuthenticationFailed):
            await certificate_login(node.c2s_port, server_cert, "alice@localhost/sensor", sensor)
        # ... and the other devices keep their sessions and their logins.
        assert bot.is_connected()
        again = await raw_external(node.c2s_port, server_cert, bots[8], resource="bot8")
        assert succeeded(again), again
        await close(again)
        await logout(bot)
        assert trust_file.read_bytes().count(b"BEGIN CERTIFICATE") == 20
    finally:
        await stock.stop()


async def test_ejabberd_a_device_revoked_while_server_ext_was_down_is_closed_at_start(
    ejabberd: EjabberdFactory,
    registry: Registry,
    trust_file: Path,
    server_cert: CertificateFiles,
    tmp_path: Path,
) -> None:
    node = ejabberd_node(ejabberd, trust_file)
    node.register("alice", PASSWORD)
    sensor = enroll(registry, tmp_path / "devices", "alice@localhost/sensor", "sensor")
    stock = ejabberd_adapter(tmp_path, registry, trust_file, api_of(node))
    await stock.start()
    client, _ = await certificate_login(
        node.c2s_port, server_cert, "alice@localhost/sensor", sensor
    )
    owner, _ = await password_login(node.c2s_port, server_cert, "alice@localhost/phone")
    await stock.stop()  # server-ext is down ...
    revoke(registry, "sensor")  # ... while `server-ext devices revoke` records the revocation
    gone = disconnection(client)
    stock = ejabberd_adapter(tmp_path, registry, trust_file, api_of(node))
    await stock.start()  # serve starts again: the trust file first, then the stale sessions
    try:
        assert await close_stale_sessions(stock, registry) == [JID.parse("alice@localhost/sensor")]
        await asyncio.wait_for(gone.wait(), 5)
        client.abort()
        assert owner.is_connected()  # the owner's own client is no device's session
        refused = await raw_external(node.c2s_port, server_cert, sensor, resource="sensor")
        assert b"<not-authorized/>" in refused.sasl, refused.sasl
        await close(refused)
        assert await close_stale_sessions(stock, registry) == []  # nothing left to close
    finally:
        await logout(owner)
        await stock.stop()


async def test_ejabberd_adapter_on_a_two_node_cluster(
    ejabberd: EjabberdFactory,
    registry: Registry,
    trust_file: Path,
    server_cert: CertificateFiles,
    tmp_path: Path,
    measured: Measured,
) -> None:
    """Trust and revocation on every node: configuration is per node, sessions cluster-wide."""
    first = ejabberd_node(ejabberd, trust_file, "node1")
    second = ejabberd_node(ejabberd, trust_file, "node2")
    await asyncio.to_thread(join_cluster, second, first)
    first.register("alice", PASSWORD)
    sensor = enroll(registry, tmp_path / "devices", "alice@localhost/sensor", "sensor")
    stock = ejabberd_adapter(tmp_path, registry, trust_file, api_of(first), api_of(second))
    await stock.start()
    try:
        for node in (first, second):
            client, jid = await certificate_login(
                node.c2s_port, server_cert, "alice@localhost/sensor", sensor
            )
            assert str(jid) == "alice@localhost/sensor"
            await logout(client)
        # Held on the second node; the adapter asks the first node that answers.
        client, _ = await certificate_login(
            second.c2s_port, server_cert, "alice@localhost/sensor", sensor
        )
        gone = disconnection(client)
        began = time.monotonic()
        await revoke_on(stock, registry, "sensor")
        await asyncio.wait_for(gone.wait(), 5)
        seconds = time.monotonic() - began
        assert seconds < CLOSE_BOUND, seconds
        client.abort()
        measured("ejabberd adapter, cluster: revocation to the close on the other node", seconds)
        for node in (first, second):
            refused = await raw_external(node.c2s_port, server_cert, sensor, resource="sensor")
            assert b"<not-authorized/>" in refused.sasl, (node.node, refused.sasl)
            await close(refused)
    finally:
        await stock.stop()


async def test_ejabberd_adapter_names_the_node_that_failed(
    ejabberd: EjabberdFactory,
    registry: Registry,
    trust_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = ejabberd_node(ejabberd, trust_file)
    dead = f"http://{LOOPBACK}:{free_port()}/api"  # a second node nobody listens on
    stock = ejabberd_adapter(tmp_path, registry, trust_file, api_of(node), dead, timeout=2.0)
    # At start a node that is not up yet is said, by name, and serving goes on (it reads
    # the trust file when it starts) ...
    await stock.start()
    assert dead in caplog.text
    try:
        # ... the live node reloaded all the same; the next sync tries the dead one again and
        # names it to whoever changed the registry.
        assert reloads(node, at_least=1) >= 1
        with pytest.raises(StockError, match=dead):
            await stock.sync_trust()
    finally:
        await stock.stop()


# -- the component face -----------------------------------------------------------------------


@pytest.fixture
async def attach() -> AsyncIterator[Callable[..., Awaitable[ComponentFace]]]:
    """Attach a component face for a test (detached afterwards, even when it failed)."""
    faces: list[ComponentFace] = []

    async def start(port: int, registry: Registry, stock: StockServer) -> ComponentFace:
        settings = ComponentSettings("pairing.localhost", LOOPBACK, port)
        context = ServerContext("localhost", registry, SessionTable())
        face = ComponentFace(settings, SECRET, lambda: context, stock)
        faces.append(face)
        await face.start(wait=10)
        return face

    yield start
    for face in faces:
        await face.stop()


async def test_ejabberd_component_registers_lists_and_revokes(
    ejabberd: EjabberdFactory,
    registry: Registry,
    trust_file: Path,
    server_cert: CertificateFiles,
    tmp_path: Path,
    attach: Callable[..., Awaitable[ComponentFace]],
    measured: Measured,
) -> None:
    """What the pairing CLI does on ejabberd: find the component, register a certificate
    there (it logs in at once), see it online, revoke it (closed within the bound)."""
    node = ejabberd(
        component_secret=SECRET,
        c2s_listener={"tls_verify": True},
        top_level={"c2s_cafile": str(trust_file)},
    )
    node.register("alice", PASSWORD)
    node.register("bob", PASSWORD)
    stock = ejabberd_adapter(tmp_path, registry, trust_file, api_of(node))
    await stock.start()
    try:
        await attach(node.component_port, registry, stock)
        owner, _ = await password_login(
            node.c2s_port, server_cert, "alice@localhost/laptop", plugins=("xep_0030",)
        )
        service = await find_component(owner, "localhost")
        assert service == "pairing.localhost"

        sensor = self_signed_device(tmp_path / "devices", "alice@localhost/sensor")
        der = PeerCertificate.from_x509(sensor.certificate).der
        row = await register_certificate(owner, service, "sensor", der, allow_management=False)
        assert row["name"] == "sensor"
        # Registered means trusted: the device logs in right after the answer.
        device, jid = await certificate_login(
            node.c2s_port, server_cert, "alice@localhost/sensor", sensor
        )
        assert str(jid) == "alice@localhost/sensor"
        # A duplicate name is refused (XEP-0257 §3.1), never overwritten.
        other = self_signed_device(tmp_path / "devices", "alice@localhost/other", name="other")
        with pytest.raises(RequestFailed) as duplicate:
            await register_certificate(
                owner, service, "sensor", PeerCertificate.from_x509(other.certificate).der
            )
        assert duplicate.value.condition == "conflict"

        listed = {d.name: d for d in await list_devices(owner, service=service)}
        assert listed["sensor"].online
        assert listed["sensor"].state == "active"

        # Another user neither sees nor revokes alice's device.
        stranger, _ = await password_login(
            node.c2s_port, server_cert, "bob@localhost/pc", plugins=("xep_0030",)
        )
        assert await list_devices(stranger, service=service) == []
        with pytest.raises(RequestFailed) as refused:
            await revoke_device(stranger, "sensor", service=service)
        assert refused.value.condition == "item-not-found"
        await logout(stranger)

        gone = disconnection(device)
        began = time.monotonic()
        note = await revoke_device(owner, "sensor", reason="lost", service=service)
        await asyncio.wait_for(gone.wait(), 5)
        seconds = time.monotonic() - began
        assert seconds < CLOSE_BOUND, seconds
        assert "closed 1 session" in note, note
        device.abort()
        measured("ejabberd component: revoke command to the device seeing the close", seconds)
        with pytest.raises(AuthenticationFailed):
            await certificate_login(node.c2s_port, server_cert, "alice@localhost/sensor", sensor)
        listed = {d.name: d for d in await list_devices(owner, service=service)}
        assert listed["sensor"].state == "revoked"
        assert not listed["sensor"].online
        await logout(owner)
    finally:
        await stock.stop()
