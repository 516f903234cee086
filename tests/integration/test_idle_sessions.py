"""Idle device sessions are cheap: once bound, a session keeps no XML parser state and no
full TLS buffers, and it still answers the next stanza (docs/performance.md, "Connected
fleet")."""

from __future__ import annotations

import tracemalloc

from OpenSSL import SSL

from pairing.protocol.identity import PeerCertificate
from server_ext.wire.tls import make_server_context
from tests.integration.conftest import DeviceFactory, RunningServer
from tests.support.rawclient import RawClient

PING = "<iq type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>"


def test_tls_buffers_are_released_while_a_connection_is_idle(xmpp_server: RunningServer) -> None:
    cert = xmpp_server.server.certificate
    ctx = make_server_context(cert.cert_path, cert.key_path)
    assert ctx.set_mode(0) & SSL.MODE_RELEASE_BUFFERS


async def test_bound_sessions_hold_little_python_memory_and_still_answer(
    xmpp_server: RunningServer, make_device: DeviceFactory
) -> None:
    owner = xmpp_server.add_user("alice")
    count = 30
    devices = [make_device(f"alice@localhost/d{i}") for i in range(count + 1)]
    for i, device in enumerate(devices):
        xmpp_server.registry.devices.add(
            owner, f"d{i}", PeerCertificate.parse(device.der), added_by="test", added_via="test"
        )

    async def login(i: int) -> RawClient:
        client = await xmpp_server.raw_tls(devices[i])
        assert b"<success" in await client.auth("EXTERNAL", b"")
        assert b"<jid>" in await client.bind()
        return client

    first = await login(count)  # imports, caches and SQLite pages are warm after this one
    await first.close()
    # Only what the server's own code allocates (the clients share this process).
    tracemalloc.start(30)
    try:
        only_server = [tracemalloc.Filter(True, "*server_ext*", all_frames=True)]
        before = tracemalloc.take_snapshot().filter_traces(only_server)
        clients = [await login(i) for i in range(count)]
        after = tracemalloc.take_snapshot().filter_traces(only_server)
    finally:
        tracemalloc.stop()
    per_session = sum(d.size_diff for d in after.compare_to(before, "filename")) / count
    # About 28 KB before the parser was parked after bind, most of it expat's tables.
    assert per_session < 12_000, f"{per_session:.0f} bytes of Python objects per idle session"
    for n, client in enumerate(clients):
        await client.send(PING.format(n=n))
        assert b"type='result'" in await client.read_iq(f"p{n}")
        await client.send(PING.format(n=n + 1000))  # parked again after the first answer
        assert b"type='result'" in await client.read_iq(f"p{n + 1000}")
        await client.close()
