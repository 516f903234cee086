"""Prosody 0.12.3 with this project's module (server_ext/stock/lua/mod_xmpp_device_pairing.lua)
and ``server-ext serve`` beside it, configured from ``server-ext stock snippet``.

What the module promises (docs/server.md, "Stock servers"): SASL EXTERNAL decided by the HTTPS
face at each attempt (unregistered, revoked, disabled and retired certificates are refused at
SASL), offered only to a client that presented a certificate, the resource the certificate
names locked at bind, and HTTP endpoints for server-ext alone (the shared secret).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pairing.protocol.identity import PeerCertificate
from tests.interop.flows_world import World, stock_world
from tests.support.certificates import CertificateFiles, self_signed_device
from tests.support.netns import NamespaceUnavailable, private_network
from tests.support.stock_clients import (
    bound_jid,
    certificate_login,
    close,
    disconnection,
    password_login,
    raw_external,
    succeeded,
)
from tests.support.stock_servers import LOOPBACK

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("prosody-module")
    try:
        with private_network(), stock_world("prosody", folder) as made:
            yield made
    except NamespaceUnavailable as exc:
        pytest.fail(f"these tests need a private network namespace: {exc}")


def registered(world: World, folder: Path, user: str, resource: str) -> CertificateFiles:
    """A device certificate registered by the operator (``server-ext certs add``)."""
    device = self_signed_device(folder, f"{user}@localhost/{resource}", name=resource)
    world.admin("certs", "add", resource, device.cert, "--user", user)
    return device


def module_call(world: World, method: str, path: str, body: object, token: str | None) -> Any:
    """The module's HTTP endpoint as server-ext calls it (or anyone else, without the secret)."""
    assert world.prosody is not None
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{world.prosody.http_port}/xmpp_device_pairing{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Host": "localhost", "Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def secret(world: World) -> str:
    value = world.snippet["component"]["secret"]
    assert isinstance(value, str)
    return value


async def test_external_is_decided_by_server_ext_at_each_attempt(
    world: World, tmp_path: Path
) -> None:
    owner = world.account("decide")
    device = self_signed_device(tmp_path, f"{owner.jid}/sensor", name="sensor")
    # Not registered: EXTERNAL is offered (a certificate was presented) and refused at SASL.
    attempt = await raw_external(world.c2s_port, world.server_cert, device, resource="sensor")
    assert b"<mechanism>EXTERNAL</mechanism>" in attempt.features
    assert b"<not-authorized/>" in attempt.sasl, attempt.sasl
    await close(attempt)
    # Registered by the operator: the same certificate logs in, at the next attempt.
    world.admin("certs", "add", "sensor", device.cert, "--user", owner.user)
    attempt = await raw_external(world.c2s_port, world.server_cert, device, resource="sensor")
    assert succeeded(attempt), attempt
    assert bound_jid(attempt) == f"{owner.jid}/sensor"
    await close(attempt)
    # A certificate of another account's device never logs in as this one (authzid).
    other = world.account("other")
    attempt = await raw_external(
        world.c2s_port, world.server_cert, device, authzid=other.jid, resource="sensor"
    )
    assert not succeeded(attempt), attempt
    await close(attempt)
    # Without a certificate EXTERNAL is not offered: password clients are unaffected.
    attempt = await raw_external(world.c2s_port, world.server_cert, None)
    assert b"EXTERNAL" not in attempt.features
    assert b"SCRAM-SHA-1" in attempt.features
    client, jid = await password_login(
        world.c2s_port, world.server_cert, f"{owner.jid}/laptop", scram_only=False
    )
    assert str(jid) == f"{owner.jid}/laptop"
    client.abort()


async def test_the_resource_named_in_the_certificate_is_locked_at_bind(
    world: World, tmp_path: Path
) -> None:
    owner = world.account("lock")
    device = registered(world, tmp_path, owner.user, "sensor")
    elsewhere = await raw_external(world.c2s_port, world.server_cert, device, resource="other")
    assert b"<success" in elsewhere.sasl
    assert b"type='error'" in elsewhere.bind and b"<not-allowed" in elsewhere.bind, elsewhere.bind
    await close(elsewhere)
    # No resource asked for: the server assigns the certificate's (RFC 6120 §7.6).
    assigned = await raw_external(world.c2s_port, world.server_cert, device, resource=None)
    assert bound_jid(assigned) == f"{owner.jid}/sensor"
    await close(assigned)
    exact = await raw_external(world.c2s_port, world.server_cert, device, resource="sensor")
    assert bound_jid(exact) == f"{owner.jid}/sensor"
    await close(exact)


async def test_revoked_disabled_and_retired_certificates_are_refused_at_sasl(
    world: World, tmp_path: Path
) -> None:
    owner = world.account("refuse")
    device = registered(world, tmp_path, owner.user, "meter")
    world.admin("devices", "disable", "meter", "--jid", owner.jid)
    attempt = await raw_external(world.c2s_port, world.server_cert, device, resource="meter")
    assert b"<not-authorized/>" in attempt.sasl, attempt.sasl
    await close(attempt)
    world.admin("devices", "enable", "meter", "--jid", owner.jid)
    attempt = await raw_external(world.c2s_port, world.server_cert, device, resource="meter")
    assert succeeded(attempt), attempt
    await close(attempt)
    world.admin("devices", "revoke", "meter", "--jid", owner.jid)
    attempt = await raw_external(world.c2s_port, world.server_cert, device, resource="meter")
    assert b"<not-authorized/>" in attempt.sasl, attempt.sasl
    await close(attempt)
    assert world.prosody is not None
    log = world.prosody.log_path.read_text(errors="replace")
    assert "xmpp_device_pairing: EXTERNAL refused: revoked" in log


async def test_the_close_and_sessions_endpoints_answer_server_ext_only(
    world: World, tmp_path: Path
) -> None:
    owner = world.account("close")
    device = registered(world, tmp_path, owner.user, "lamp")
    fingerprint = PeerCertificate.from_x509(device.certificate).fingerprint
    client, jid = await certificate_login(
        world.c2s_port, world.server_cert, f"{owner.jid}/lamp", device
    )
    gone = disconnection(client)
    for token in (None, "not the secret, but long enough"):
        status, _ = module_call(world, "GET", "/sessions", None, token)
        assert status == 401
        status, _ = module_call(world, "POST", "/close", {"jids": [str(jid)]}, token)
        assert status == 401
    assert client.is_connected()

    status, listed = module_call(world, "GET", "/sessions", None, secret(world))
    assert status == 200
    rows = {row["jid"]: row["fingerprint"] for row in listed["sessions"]}
    assert rows[f"{owner.jid}/lamp"] == fingerprint
    status, answer = module_call(world, "POST", "/close", {"jids": "nope"}, secret(world))
    assert status == 400
    status, answer = module_call(
        world, "POST", "/close", {"jids": [str(jid)], "reason": "test", "revoked": True},
        secret(world),
    )  # fmt: skip
    assert (status, answer) == (200, {"closed": 1})
    await gone.wait()
    client.abort()
