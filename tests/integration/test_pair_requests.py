"""Pairing requests over the HTTPS API (docs/protocol.md, section 9.6) on loopback, real TLS
and a real registry: what a request may and may not become before its owner approves it."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest

from pairing.errors import AuthenticationFailed
from pairing.protocol import https_api
from pairing.protocol import pair_request as wire
from pairing.protocol.https_api import APIRefused
from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    certificate_pem,
    generate_key,
    private_key_pem,
)
from pairing.protocol.jid import JID
from pairing.protocol.proofs import sign
from pairing.secure_files import write_private, write_public
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, logout, make_client
from server_ext.app.pair_requests import REQUEST_LIFETIME
from tests.integration.cli_support import run as run_cli
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.test_https_api import endpoint

SENSOR = JID.parse("alice@localhost/sensor")
BIN = Path(sys.executable).parent


async def nonce(server: RunningServer) -> str:
    answer = await endpoint(server).post(https_api.CHALLENGE_PATH, None, timeout=5)
    return str(answer["nonce"])


async def ask(server: RunningServer, key: Any, cert: PeerCertificate) -> wire.PairRequestIssued:
    n = await nonce(server)
    request = wire.PairRequest(
        cert, "sensor", n, sign(key, wire.pair_request_message(n, cert.fingerprint, "sensor"))
    )
    answer = await endpoint(server).post(wire.PAIR_REQUEST_PATH, request.to_json(), timeout=5)
    return wire.PairRequestIssued.from_json(answer)


async def status(server: RunningServer, request_id: str, key: Any) -> dict[str, Any]:
    n = await nonce(server)
    query = wire.PairStatusQuery(request_id, n, sign(key, wire.pair_status_message(n, request_id)))
    result: dict[str, Any] = await endpoint(server).post(
        wire.PAIR_STATUS_PATH, query.to_json(), timeout=30
    )
    return result


def device_files(folder: Path, key: Any, jid: JID = SENSOR) -> tuple[Path, Path, PeerCertificate]:
    cert = build_device_certificate(key, jid, valid_for=dt.timedelta(days=30))
    folder.mkdir(parents=True, exist_ok=True)
    write_private(folder / "device.key", private_key_pem(key))
    write_public(folder / "device.crt", certificate_pem(cert))
    parsed = PeerCertificate.parse(certificate_der(cert))
    return folder / "device.crt", folder / "device.key", parsed


async def test_an_unapproved_request_never_logs_in_and_only_its_key_hears_the_answer(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server(https_port=0)
    server.add_user("alice")
    key = generate_key()
    cert_path, key_path, cert = device_files(tmp_path / "sensor", key)
    issued = await ask(server, key, cert)
    assert issued.approve_url == f"{server.server.web_origin}/approve/{issued.request}"
    assert len(issued.user_code) == 9 and issued.user_code[4] == "-"
    client = make_client(
        str(SENSOR),
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        certfile=cert_path,
        keyfile=key_path,
    )
    with pytest.raises(AuthenticationFailed):  # pending is not approved
        await login(client, timeout=10)
    # Someone who read the request id from a log, without the key, learns nothing.
    with pytest.raises(APIRefused) as refused:
        await status(server, issued.request, generate_key())
    assert refused.value.condition == "bad-signature"
    # The owner approves (what the web page does); the key's holder hears it, and logs in.
    server.server.pair_requests.approve(issued.request, SENSOR.bare, is_admin=False)
    answer = wire.PairStatus.from_json(await status(server, issued.request, key))
    assert answer.enrolled is not None and answer.enrolled.jid == SENSOR
    client = make_client(
        str(SENSOR),
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        certfile=cert_path,
        keyfile=key_path,
    )
    assert await login(client, timeout=10) == SENSOR
    await logout(client)


async def test_a_request_signed_by_another_key_is_refused(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server(https_port=0)
    server.add_user("alice")
    _, _, cert = device_files(tmp_path / "sensor", generate_key())
    with pytest.raises(APIRefused) as refused:
        await ask(server, generate_key(), cert)
    assert refused.value.condition == "bad-signature"
    assert list(server.server.pair_requests) == []


async def test_enroll_request_needs_its_options_and_says_so(tmp_path: Path) -> None:
    result = run_cli(
        "device-agent", "--state-dir", str(tmp_path / "d"), "enroll", "--request",
        "--jid", "alice@localhost", "--server", "127.0.0.1:1", "--pin", "00" * 32, ok=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "give a full JID with a resource" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(
        "device-agent", "--state-dir", str(tmp_path / "d"), "enroll", "--request", ok=False
    )
    assert result.returncode == 2 and "--request needs --jid" in result.stderr


class MovableClock:
    """The server's clock, which a test moves on (the device keeps real time)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)

    def __call__(self) -> dt.datetime:
        return self.now


async def test_a_request_nobody_approves_in_time_stops_the_device_with_a_clear_message(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """RFC 8628 §3.5 ``expired_token``, as the waiting device sees it: one line, exit 1, no
    traceback, and the key made for the request is gone with it."""
    clock = MovableClock()
    server = await make_server(https_port=0, clock=clock)
    server.add_user("alice")
    address = server.server.https_address
    assert address is not None
    state = tmp_path / "sensor"
    process = await asyncio.create_subprocess_exec(
        str(BIN / "device-agent"), "--state-dir", str(state),
        "enroll", "--request", "--jid", str(SENSOR),
        "--server", f"{address.host}:{address.port}", "--pin", server.fingerprint,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    while True:  # the device shows its code and waits
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line, "device-agent ended before showing its code"
        if line.startswith(b"user code:"):
            break
    clock.now += REQUEST_LIFETIME + dt.timedelta(seconds=1)  # nobody approved it
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1, (out, err)
    text = err.decode()
    assert "nobody approved the request in time; run the command again" in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert not (state / "device.key").exists()
    assert server.registry.devices.all() == []


async def test_behind_a_reverse_proxy_the_approval_url_is_the_one_phones_open(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """[https] public_url: the bot's QR code must point at the proxy, not at the loopback
    face the proxy forwards to (docs/web.md, "Behind a reverse proxy")."""
    server = await make_server(https_port=0, https_public_url="https://devices.example.org")
    key = generate_key()
    _, _, cert = device_files(tmp_path / "sensor", key)
    issued = await ask(server, key, cert)
    assert issued.approve_url == f"https://devices.example.org/approve/{issued.request}"
