"""`device-agent run` semantics: stay online, reconnect after a drop, give up when refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from pathlib import Path

import pytest

from device_agent.enrollment import enroll
from device_agent.keystore import KeyStore
from device_agent.runtime import LoginRefused, client_for, run
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import certificate_der
from pairing.protocol.jid import JID
from pairing.xmpp.connection import TrustAnchor, login, logout, make_client
from pairing.xmpp.devices import revoke_device
from pairing.xmpp.saslcert import PLUGINS, add_certificate
from server_ext.admin.token_issuer import issue_token
from server_ext.model import CertState, DeviceState
from server_ext.policy.tokens import TokenRules
from tests.integration.conftest import PASSWORD, RunningServer, ServerFactory


async def wait_for_line(lines: list[str], text: str, start: int = 0, timeout: float = 10) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for i in range(start, len(lines)):
            if text in lines[i]:
                return i
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never reported; got {lines}")


async def test_reconnects_after_a_drop_and_stops_when_revoked(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=JID.parse("alice@localhost"),
        resource="sensor",
        name=None,
        ttl=None,
        created_by="test",
    )
    uri = issued.uri(
        host=xmpp_server.host, port=xmpp_server.port, fingerprint=xmpp_server.fingerprint
    )
    store = KeyStore(tmp_path / "sensor")
    await enroll(store, uri)

    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1, stop=stop))
    first = await wait_for_line(lines, "online as alice@localhost/sensor")

    # The server drops the session (as a restart would): the agent comes back by itself.
    (session,) = xmpp_server.server.sessions.resources(JID.parse("alice@localhost"))
    session.terminate("system-shutdown", "maintenance")
    lost = await wait_for_line(lines, "connection lost", first)
    await wait_for_line(lines, "online as", lost)

    # Revoked: the session is cut, the next login is refused, and the agent gives up.
    xmpp_server.set_device_state("alice", "sensor", DeviceState.REVOKED)
    (session,) = xmpp_server.server.sessions.resources(JID.parse("alice@localhost"))
    session.terminate("reset", "revoked")
    with pytest.raises(LoginRefused, match="revoked"):
        await asyncio.wait_for(task, 10)
    assert any(line.startswith("refused:") for line in lines)


async def test_a_disabled_device_waits_and_returns_when_enabled(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=JID.parse("alice@localhost"),
        resource="sensor",
        name=None,
        ttl=None,
        created_by="test",
    )
    uri = issued.uri(
        host=xmpp_server.host, port=xmpp_server.port, fingerprint=xmpp_server.fingerprint
    )
    store = KeyStore(tmp_path / "sensor")
    await enroll(store, uri)
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(store.state_dir, report=lines.append, min_delay=0.1, max_delay=0.3, stop=stop)
    )
    first = await wait_for_line(lines, "online as")
    account = JID.parse("alice@localhost")
    xmpp_server.set_device_state("alice", "sensor", DeviceState.DISABLED)
    (session,) = xmpp_server.server.sessions.resources(account)
    session.terminate("system-shutdown", "maintenance")
    refused = await wait_for_line(lines, "disabled", first)
    assert not task.done()  # still trying, slowly
    xmpp_server.set_device_state("alice", "sensor", DeviceState.ACTIVE)
    await wait_for_line(lines, "online as", refused)
    stop.set()
    await asyncio.wait_for(task, 10)


async def enrolled_agent(
    server: RunningServer, folder: Path, resource: str = "sensor", name: str | None = None
) -> KeyStore:
    """A device enrolled with a token for alice@localhost/RESOURCE, as `device-agent enroll`."""
    server.add_user("alice")
    issued = issue_token(
        server.registry,
        TokenRules(),
        account=JID.parse("alice@localhost"),
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


def agent_status(store: KeyStore) -> dict[str, str]:
    """What `device-agent status` reads (status.json, whose fields stay as they were)."""
    status: dict[str, str] = json.loads((store.state_dir / "status.json").read_text())
    return status


async def test_a_refusal_that_only_says_revoked_keeps_the_agent_trying(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """Issue 9: the agent decided "revoked" by finding the word in the server's text.

    A certificate superseded before its first use is refused with the text "this certificate
    was revoked: superseded before first use", but its device is not revoked (it has a newer
    certificate) and the server sends no <revoked/> condition: the agent must keep trying
    (slowly), not stop for good until someone runs `device-agent reset`.
    """
    clock = [dt.datetime.now(dt.UTC)]
    server = await make_server(clock=lambda: clock[0])
    store = await enrolled_agent(server, tmp_path / "sensor")
    # A rotation interrupted twice: the device registered a successor, then a newer one an
    # hour later (which superseded the first), and it holds the first one now.
    online = client_for(store.state_dir, plugins=PLUGINS)
    await login(online)
    key, cert = store.next_identity()
    await add_certificate(online, "rotation", certificate_der(cert), allow_management=False)
    clock[0] += dt.timedelta(hours=1, minutes=1)
    _, newer = store.next_identity()
    await add_certificate(online, "rotation", certificate_der(newer), allow_management=False)
    await logout(online)
    store.install(key, cert)
    record = server.registry.devices.by_fingerprint(store.load().fingerprint)
    assert record is not None and record.state is CertState.REVOKED
    assert record.device.state is DeviceState.ACTIVE

    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(store.state_dir, report=lines.append, min_delay=0.1, max_delay=0.2, stop=stop)
    )
    first = await wait_for_line(lines, "superseded before first use")
    await wait_for_line(lines, "refused:", first + 1)  # it tried again
    assert not task.done()
    assert agent_status(store)["state"] == "refused"
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_stream_error_that_only_mentions_revoked_makes_the_agent_reconnect(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """A <reset/> whose text says "revoked" (a device's name, a server that does not send the
    typed condition) without <revoked xmlns='urn:xmpp-device-pairing:device:0'/> is a lost
    connection, not a revocation: the agent comes back."""
    store = await enrolled_agent(xmpp_server, tmp_path / "sensor", name="revoked-sensor")
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1, stop=stop))
    first = await wait_for_line(lines, "online as alice@localhost/sensor")
    (session,) = xmpp_server.server.sessions.resources(JID.parse("alice@localhost"))
    session.terminate("reset", "the device 'revoked-sensor' got a new certificate")
    lost = await wait_for_line(lines, "connection lost", first)
    await wait_for_line(lines, "online as", lost)
    assert agent_status(store)["state"] == "online"
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_revoked_device_stops_at_once_with_the_reason(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """The server's typed condition on the stream error that ends the session is enough:
    the agent stops without logging in again, and says why."""
    store = await enrolled_agent(xmpp_server, tmp_path / "sensor")
    lines: list[str] = []
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1))
    await wait_for_line(lines, "online as alice@localhost/sensor")
    owner = make_client(
        "alice@localhost/phone",
        server=ServerAddress(xmpp_server.host, xmpp_server.port),
        trust=TrustAnchor(fingerprint=xmpp_server.fingerprint),
        password=PASSWORD,
        plugins=PLUGINS,
    )
    await login(owner)
    await revoke_device(owner, "sensor", reason="stolen from the shed")
    await logout(owner)
    with pytest.raises(LoginRefused, match="stolen from the shed"):
        await asyncio.wait_for(task, 10)
    assert not any("reconnecting" in line or "offline" in line for line in lines), lines
    events = [e.event for e in xmpp_server.registry.audit.events()]
    assert "login.failed" not in events  # it never tried again
    status = agent_status(store)
    assert status["state"] == "revoked" and "stolen from the shed" in status["reason"]


async def test_a_login_that_times_out_closes_its_connection() -> None:
    """A server that accepts and never answers (overloaded, or a stuck middlebox): the login
    gives up after its timeout and closes the stream it opened, so the agent's next attempt
    does not run beside a stale one (in the reconnect storm the stale stream's bind arrived
    on the next one)."""
    from pairing.errors import ConnectionFailed

    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass  # reads the header and never answers
        closed.set()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = make_client(
        "alice@localhost/bot",
        server=ServerAddress("127.0.0.1", port),
        trust=TrustAnchor(fingerprint="00" * 32),
        password="unused",
    )
    try:
        with pytest.raises(ConnectionFailed, match=r"no login at 127\.0\.0\.1"):
            await login(client, timeout=0.5)
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_refused_login_leaves_no_attempt_of_its_own_behind() -> None:
    """slixmpp retries a refused connection by itself a few seconds later; after a failed
    login nothing may connect behind the agent's back (its own backoff decides), or the
    agent's next login runs a second stream on the same client."""
    from pairing.errors import ServerUnreachable

    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    client = make_client(
        "alice@localhost/bot",
        server=ServerAddress("127.0.0.1", port),
        trust=TrustAnchor(fingerprint="00" * 32),
        password="unused",
    )
    with pytest.raises(ServerUnreachable):
        await login(client, timeout=5)
    arrived = asyncio.Event()

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", port)
    try:
        # slixmpp's own retry comes 3 s after the first refusal (its back-off: twice 1 s, plus 1 s).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 4.5)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_server_too_slow_to_log_in_gets_more_time_not_more_connections(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """Against a server that accepts and then does not finish the login in time (under load),
    each attempt that ran out of time doubles the next one's, up to the slowest backoff: an
    overloaded ejabberd or Prosody in the reconnect storm (docs/performance.md) spent its
    time on handshakes the devices then abandoned."""
    import dataclasses

    from device_agent.enrollment import ServerSettings

    store = await enrolled_agent(xmpp_server, tmp_path / "sensor")
    accepted: list[float] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(asyncio.get_running_loop().time())
        while await reader.read(4096):
            pass
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    settings = ServerSettings.load(store.state_dir)
    dataclasses.replace(settings, port=port).save(store.state_dir)
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(
            store.state_dir,
            report=lines.append,
            min_delay=0.05,
            max_delay=1.0,
            stop=stop,
            login_timeout=0.25,
        )
    )
    try:
        await wait_for_line(lines, "within 1 s", timeout=15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        listener.close()
        await listener.wait_closed()
    waits = [line.split("within ")[1].split(";")[0] for line in lines if "no login at" in line]
    assert waits[:3] == ["0.25 s", "0.5 s", "1 s"], lines
    # One connection per attempt (and perhaps the one the stop interrupted).
    assert len(waits) <= len(accepted) <= len(waits) + 1
