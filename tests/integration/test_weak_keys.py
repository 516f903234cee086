"""Weak device keys over the real paths: XEP-0257 append, `server-ext certs add`, enrollment
over TLS with the weak key itself, and EXTERNAL login with a weak certificate already registered.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from pairing.protocol.enrollment import ENROLL_NS
from pairing.protocol.identity import PeerCertificate
from pairing.protocol.jid import JID
from server_ext.admin.token_issuer import issue_token
from server_ext.model import TokenState
from server_ext.policy.tokens import TokenRules
from tests.integration.cli_support import run
from tests.integration.conftest import PASSWORD, RunningServer
from tests.support import keytypes
from tests.support.rawclient import RawClient

NS = "urn:xmpp:saslcert:1"
BOT = "alice@localhost/bot"


def weak_client_context(server: RunningServer, cert: Path, key: Path) -> ssl.SSLContext:
    """A client that *can* present a 1024-bit RSA key: OpenSSL's default level forbids it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_verify_locations(cafile=str(server.cert_path))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def weak_tls(server: RunningServer, cert: Path, key: Path) -> RawClient:
    client = await server.raw()
    await client.starttls(weak_client_context(server, cert, key))
    return client


@pytest.mark.parametrize("kind", ["rsa-1024", "dsa-2048", "ec-secp256k1"])
async def test_xep0257_append_refuses_a_weak_key_with_the_reason(
    xmpp_server: RunningServer, tmp_path: Path, kind: str
) -> None:
    xmpp_server.add_user("alice")
    owner = await xmpp_server.raw_tls()
    assert b"<success" in await owner.auth("PLAIN", f"\0alice\0{PASSWORD}".encode())
    await owner.bind("laptop")
    _, _, der = keytypes.write(tmp_path / kind, kind, BOT)
    await owner.send(
        f"<iq type='set' id='a'><append xmlns='{NS}'><name>weak</name>"
        f"<x509cert>{base64.b64encode(der).decode()}</x509cert></append></iq>"
    )
    reply = await owner.read_iq("a")
    assert b"<not-acceptable" in reply and b"weak key" in reply, reply
    assert xmpp_server.registry.devices.certificates(JID.parse("alice@localhost")) == []
    await owner.close()


def test_certs_add_refuses_a_weak_key_with_the_reason(tmp_path: Path) -> None:
    data = str(tmp_path / "server")
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    run("server-ext", "--data-dir", data, "init", "--domain", "localhost")
    run("server-ext", "--data-dir", data, "user", "add", "alice", "--password-file", str(pw))
    cert, _, _ = keytypes.write(tmp_path / "rsa", "rsa-1024", BOT)
    refused = run(
        "server-ext", "--data-dir", data, "certs", "add", "bot", str(cert), "--user", "alice",
        ok=False,
    )  # fmt: skip
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "weak key: RSA with 1024 bits" in line
    listed = run("server-ext", "--data-dir", data, "certs", "list", "--json")
    assert listed.stdout.strip() == "[]"


async def test_enrollment_with_a_weak_key_is_refused_and_keeps_the_token(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=JID.parse("alice@localhost"),
        resource="bot",
        name=None,
        ttl=None,
        created_by="test",
    )
    cert, key, _ = keytypes.write(tmp_path / "rsa", "rsa-1024", BOT)
    client = await weak_tls(xmpp_server, cert, key)
    await client.send(f"<enroll xmlns='{ENROLL_NS}' token='{issued.token}'/>")
    reply = await client.read_until(b"</failure>", b"<success")
    assert b"<bad-certificate/>" in reply and b"weak key: RSA with 1024 bits" in reply, reply
    (token,) = xmpp_server.registry.tokens.all()
    assert token.state is TokenState.PENDING
    assert xmpp_server.registry.devices.certificates(JID.parse("alice@localhost")) == []
    await client.close()


async def test_a_registered_weak_certificate_cannot_log_in(
    xmpp_server: RunningServer, tmp_path: Path
) -> None:
    """Registered before the rule existed (or behind its back): EXTERNAL refuses it, saying why."""
    xmpp_server.add_user("alice")
    cert, key, der = keytypes.write(tmp_path / "rsa", "rsa-1024", BOT)
    xmpp_server.registry.devices.add(
        JID.parse("alice@localhost"),
        "bot",
        PeerCertificate.parse(der),
        added_by="test",
        added_via="test",
    )
    client = await weak_tls(xmpp_server, cert, key)
    reply = await client.auth("EXTERNAL", b"")
    assert b"<not-authorized/>" in reply and b"weak key: RSA with 1024 bits" in reply, reply
    await client.close()
