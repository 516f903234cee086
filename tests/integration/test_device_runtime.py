"""`device-agent run` semantics: stay online, reconnect after a drop, give up when refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from device_agent.enrollment import enroll
from device_agent.keystore import KeyStore
from device_agent.runtime import LoginRefused, run
from pairing.protocol.jid import JID
from server_ext.admin.token_issuer import issue_token
from server_ext.model import DeviceState
from server_ext.policy.tokens import TokenRules
from tests.integration.conftest import RunningServer


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
