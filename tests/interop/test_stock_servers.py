"""The facts about ejabberd 23.01 and Prosody 0.12.3 that the stock-server design relies on.

Each test runs a private instance on loopback (tests/support/stock_servers.py) and a real
client: slixmpp through ``pairing.xmpp.connection`` where a client's view is the point, the
byte-level ``RawClient`` where the exact SASL and bind answers are. docs/stock-servers.md
records what each test found, with the configuration that produced it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from cryptography import x509
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from pairing.errors import AuthenticationFailed
from pairing.protocol.identity import certificate_der
from pairing.xmpp.connection import (
    PairingClient,
    logout,
)
from tests.interop.conftest import EjabberdFactory, Measured, ProsodyFactory
from tests.support.certificates import CertificateFiles, DeviceCA, self_signed_device
from tests.support.rawclient import RawClient, client_context
from tests.support.stock_clients import (
    PASSWORD,
    SCRAM_ONLY,
    bound_jid,
    certificate_login,
    close,
    disconnection,
    measure_close,
    password_login,
    raw_external,
    succeeded,
)
from tests.support.stock_servers import (
    ACCESS_ALLOW_ALL,
    LOOPBACK,
    EjabberdNode,
    StockServerError,
    join_cluster,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

PROBE_NS = "urn:xmpp-dp:probe"
PROBE_MODULE = Path(__file__).parent / "prosody" / "mod_xmpp_dp_probe.lua"
PROSODY_VERIFY = 'c2s_ssl = { verify = { "peer", "client_once" } }'


# -- clients ----------------------------------------------------------------------------------


class ProbeComponent(slixmpp.ComponentXMPP):  # type: ignore[misc]
    """An XEP-0114 component that answers ``<query xmlns='urn:xmpp-dp:probe'/>`` IQs and
    remembers who asked (the ``from`` the server stamped)."""

    def __init__(self, domain: str, secret: str, port: int) -> None:
        super().__init__(domain, secret, LOOPBACK, port)
        self.askers: list[str] = []
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.register_handler(
            Callback(
                "xmpp-dp probe",
                MatchXPath(f"{{jabber:component:accept}}iq/{{{PROBE_NS}}}query"),
                self._answer,
            )
        )

    def _answer(self, iq: Any) -> None:
        self.askers.append(str(iq["from"]))
        iq.reply().send()


async def ask_component(client: PairingClient, domain: str) -> Any:
    iq = client.Iq()
    iq["type"] = "get"
    iq["to"] = domain
    iq.append(ET.Element(f"{{{PROBE_NS}}}query"))
    return await iq.send(timeout=10)


# -- ejabberd: SASL EXTERNAL with a device CA -------------------------------------------------


@pytest.fixture
def ca_node(ejabberd: EjabberdFactory, device_ca: DeviceCA) -> EjabberdNode:
    """ejabberd with ``tls_verify: true`` on the c2s listener and the CA in ``c2s_cafile``."""
    node = ejabberd(
        c2s_listener={"tls_verify": True},
        top_level={"c2s_cafile": str(device_ca.cert_path)},
    )
    node.register("alice", PASSWORD)
    node.register("bob", PASSWORD)
    return node


async def test_ejabberd_external_logs_in_a_ca_signed_device_and_passwords_still_work(
    ca_node: EjabberdNode, server_cert: CertificateFiles, device_ca: DeviceCA
) -> None:
    device = device_ca.issue("sensor", "alice@localhost/sensor")
    client, jid = await certificate_login(
        ca_node.c2s_port, server_cert, "alice@localhost/sensor", device
    )
    assert str(jid) == "alice@localhost/sensor"
    assert client.plugin["feature_mechanisms"].mech.name == "EXTERNAL"
    # The owner, with no client certificate at all, on the same listener.
    owner, owner_jid = await password_login(ca_node.c2s_port, server_cert, "alice@localhost/laptop")
    assert str(owner_jid) == "alice@localhost/laptop"
    assert owner.plugin["feature_mechanisms"].mech.name in SCRAM_ONLY
    await logout(client)
    await logout(owner)


async def test_ejabberd_a_password_login_through_make_client_as_it_is(
    ca_node: EjabberdNode, server_cert: CertificateFiles
) -> None:
    owner, _ = await password_login(
        ca_node.c2s_port, server_cert, "alice@localhost/laptop", scram_only=False
    )
    await logout(owner)


async def test_ejabberd_refuses_self_signed_and_expired_certificates_at_sasl(
    ca_node: EjabberdNode, server_cert: CertificateFiles, device_ca: DeviceCA, tmp_path: Path
) -> None:
    self_signed = self_signed_device(tmp_path / "devices", "alice@localhost/bot")
    now = dt.datetime.now(dt.UTC)
    expired = device_ca.issue(
        "expired",
        "alice@localhost/old",
        not_before=now - dt.timedelta(days=2),
        not_after=now - dt.timedelta(hours=1),
    )
    for device, reason in (
        (self_signed, b"self signed certificate"),
        (expired, b"certificate has expired"),
    ):
        # The TLS handshake succeeds (ejabberd asks for a certificate but lets any through);
        # the verdict comes at SASL, as <not-authorized/> with OpenSSL's verify string.
        attempt = await raw_external(ca_node.c2s_port, server_cert, device)
        assert b"<mechanism>EXTERNAL</mechanism>" in attempt.features
        assert b"<not-authorized/>" in attempt.sasl, attempt.sasl
        assert reason in attempt.sasl, attempt.sasl
        await close(attempt)
    with pytest.raises(AuthenticationFailed) as refused:
        await certificate_login(ca_node.c2s_port, server_cert, "alice@localhost/bot", self_signed)
    assert refused.value.condition == "not-authorized"


async def test_ejabberd_does_not_lock_the_resource_named_in_the_certificate(
    ca_node: EjabberdNode, server_cert: CertificateFiles, device_ca: DeviceCA
) -> None:
    """A full JID in xmppAddr authenticates the account only: any resource can be bound."""
    device = device_ca.issue("sensor", "alice@localhost/sensor")
    attempt = await raw_external(ca_node.c2s_port, server_cert, device, resource="elsewhere")
    assert succeeded(attempt), attempt
    assert bound_jid(attempt) == "alice@localhost/elsewhere"
    await close(attempt)


#: (case, xmppAddrs in the CA-signed certificate, authzid sent, the account it logs in as).
IDENTITY_CASES: list[tuple[str, tuple[str, ...], str, str | None]] = [
    # No xmppAddr at all: the authzid alone decides (anchors.md: "logs in as anyone").
    ("no xmppAddr, authzid bob", (), "bob@localhost", "bob@localhost"),
    ("no xmppAddr, no authzid", (), "", None),
    # Only the domain: a "global" JID that matches every user of the domain.
    ("domain only, authzid bob", ("localhost",), "bob@localhost", "bob@localhost"),
    ("domain only, no authzid", ("localhost",), "", None),
    # A user JID and an authzid naming another user: refused.
    ("alice's JID, authzid bob", ("alice@localhost/sensor",), "bob@localhost", None),
    # The bare JID as authzid, as Conversations and Gajim send it.
    (
        "alice's JID, authzid alice",
        ("alice@localhost/sensor",),
        "alice@localhost",
        "alice@localhost",
    ),
    # Two user JIDs and no authzid: refused (XEP-0178 wants an authzid then).
    ("alice's and bob's JIDs", ("alice@localhost/a", "bob@localhost/b"), "", None),
    # An account that does not exist: accepted, with a session for it.
    ("no such account", ("ghost@localhost/sensor",), "", "ghost@localhost"),
]


async def test_ejabberd_external_identity_rules(
    ca_node: EjabberdNode, server_cert: CertificateFiles, device_ca: DeviceCA
) -> None:
    for number, (case, jids, authzid, expected) in enumerate(IDENTITY_CASES):
        device = device_ca.issue(f"probe-{number}", *jids)
        attempt = await raw_external(ca_node.c2s_port, server_cert, device, authzid=authzid)
        if expected is None:
            assert b"<not-authorized/>" in attempt.sasl, (case, attempt.sasl)
            assert b"Certificate JID mismatch" in attempt.sasl, (case, attempt.sasl)
        else:
            assert succeeded(attempt), (case, attempt)
            assert bound_jid(attempt).startswith(expected + "/"), (case, attempt.bind)
        await close(attempt)


@pytest.mark.parametrize(
    ("setting", "answer"),
    [
        ("tls_verify on the listener, c2s_cafile global", b"<success"),
        ("tls_verify and cafile on the listener", b"<success"),
        # Without tls_verify, EXTERNAL is not offered at all (ejabberd_c2s:sasl_mechanisms).
        ("c2s_cafile global, no tls_verify", None),
        # Offered, but nothing to verify the chain against.
        ("tls_verify on the listener, no CA file", b"unable to verify the first certificate"),
    ],
)
async def test_ejabberd_which_options_turn_external_on(
    ejabberd: EjabberdFactory,
    server_cert: CertificateFiles,
    device_ca: DeviceCA,
    setting: str,
    answer: bytes | None,
) -> None:
    ca = str(device_ca.cert_path)
    listener: dict[str, object] = {}
    top: dict[str, object] = {}
    if "tls_verify on" in setting or "tls_verify and" in setting:
        listener["tls_verify"] = True
    if "cafile on the listener" in setting:
        listener["cafile"] = ca
    if "c2s_cafile global" in setting:
        top["c2s_cafile"] = ca
    node = ejabberd(c2s_listener=listener, top_level=top)
    node.register("alice", PASSWORD)
    device = device_ca.issue("sensor", "alice@localhost/sensor")
    attempt = await raw_external(node.c2s_port, server_cert, device)
    if answer is None:
        assert b"<mechanism>EXTERNAL</mechanism>" not in attempt.features, attempt.features
    else:
        assert answer in attempt.sasl, attempt.sasl
        assert succeeded(attempt) == (answer == b"<success"), attempt
    await close(attempt)


def test_ejabberd_has_no_global_tls_verify_option(
    ejabberd: EjabberdFactory, device_ca: DeviceCA
) -> None:
    with pytest.raises(StockServerError, match="Unknown option: tls_verify"):
        ejabberd(top_level={"tls_verify": True, "c2s_cafile": str(device_ca.cert_path)})


# -- ejabberd: revocation -------------------------------------------------------------------


def deny_rule(*full_jids: str) -> str:
    """The c2s access rule with one ``deny`` per full JID (user AND resource), then allow."""
    lines = ["access_rules:", "  c2s:"]
    for full in full_jids:
        bare, _, resource = full.partition("/")
        lines += [
            "    - deny:",
            f'        - user: "{bare}"',
            f'          resource: "{resource}"',
        ]
    lines.append("    - allow: all")
    return "\n".join(lines) + "\n"


async def test_ejabberd_a_reloaded_deny_rule_refuses_the_device_at_bind(
    ca_node: EjabberdNode, server_cert: CertificateFiles, device_ca: DeviceCA, measured: Measured
) -> None:
    device = device_ca.issue("sensor", "alice@localhost/sensor")
    ca_node.write_access_rules(deny_rule("alice@localhost/sensor"))
    # Written but not reloaded: the running node still uses the rules it read at start.
    before = await raw_external(ca_node.c2s_port, server_cert, device, resource="sensor")
    assert succeeded(before), before

    began = time.monotonic()
    await asyncio.to_thread(ca_node.reload_config)
    reload_seconds = time.monotonic() - began

    # Access rules are checked when a session opens: the live session survives the reload
    # (revocation needs a kick as well).
    assert before.client is not None
    await before.client.send("<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"type='result'" in await before.client.read_iq("ping1")
    await close(before)

    refused = await raw_external(ca_node.c2s_port, server_cert, device, resource="sensor")
    # SASL EXTERNAL still succeeds: access rules are checked when the resource is bound.
    assert b"<success" in refused.sasl, refused.sasl
    assert b"type='error'" in refused.bind, refused.bind
    assert b"<not-allowed" in refused.bind, refused.bind
    assert b"Access denied by service policy" in refused.bind
    await close(refused)

    # The rule names a full JID, and ejabberd does not pin the resource to the certificate:
    # the same certificate binds any other resource. A deny rule for the device's resource
    # alone does not revoke a CA-signed certificate.
    dodged = await raw_external(ca_node.c2s_port, server_cert, device, resource="other")
    assert succeeded(dodged), dodged
    await close(dodged)
    # The owner's other sessions are untouched by the rule.
    owner, _ = await password_login(ca_node.c2s_port, server_cert, "alice@localhost/laptop")
    await logout(owner)
    measured("ejabberd: reload_config through ejabberd_ctl", reload_seconds)
    began = time.monotonic()
    await asyncio.to_thread(ca_node.api, "reload_config")
    measured("ejabberd: reload_config through mod_http_api", time.monotonic() - began)


async def test_ejabberd_a_deny_rule_for_the_whole_device_account_refuses_every_resource(
    ca_node: EjabberdNode, server_cert: CertificateFiles, device_ca: DeviceCA
) -> None:
    """When a device's certificate names an account of its own, denying that account
    refuses the certificate whatever resource it asks for; nobody else is affected."""
    device = device_ca.issue("sensor", "alice.sensor@localhost")
    ca_node.write_access_rules(
        'access_rules:\n  c2s:\n    - deny:\n        - user: "alice.sensor@localhost"\n'
        "    - allow: all\n"
    )
    await asyncio.to_thread(ca_node.reload_config)
    for resource in ("sensor", "other", None):
        attempt = await raw_external(ca_node.c2s_port, server_cert, device, resource=resource)
        assert b"<success" in attempt.sasl and b"<not-allowed" in attempt.bind, attempt
        await close(attempt)
    owner, _ = await password_login(ca_node.c2s_port, server_cert, "alice@localhost/laptop")
    await logout(owner)
    ca_node.write_access_rules(ACCESS_ALLOW_ALL)
    await asyncio.to_thread(ca_node.reload_config)
    again = await raw_external(ca_node.c2s_port, server_cert, device, resource="sensor")
    assert succeeded(again), again
    await close(again)


async def test_ejabberd_kick_session_ends_a_live_session(
    ca_node: EjabberdNode, server_cert: CertificateFiles, device_ca: DeviceCA, measured: Measured
) -> None:
    device = device_ca.issue("sensor", "alice@localhost/sensor")
    timings: dict[str, float] = {}
    for how in ("ejabberdctl kick_session", "mod_http_api kick_session", "ejabberdctl kick_user"):
        client, jid = await certificate_login(
            ca_node.c2s_port, server_cert, "alice@localhost/sensor", device
        )
        gone = disconnection(client)
        if how == "ejabberdctl kick_session":
            command: Any = lambda: ca_node.kick_session("alice", "sensor")  # noqa: E731
        elif how == "mod_http_api kick_session":
            command = lambda: ca_node.api(  # noqa: E731
                "kick_session", user="alice", host="localhost", resource="sensor", reason="r"
            )
        else:
            command = lambda: ca_node.ctl("kick_user", "alice", "localhost")  # noqa: E731
        timings[how] = await measure_close(gone, command)
        assert str(jid) == "alice@localhost/sensor"
        client.abort()
    for how, seconds in timings.items():
        measured(f"ejabberd: {how} to the client seeing the close", seconds)

    # What the kicked client reads: a stream error, then the end of the stream.
    attempt = await raw_external(ca_node.c2s_port, server_cert, device, resource="sensor")
    assert succeeded(attempt), attempt
    assert attempt.client is not None
    await asyncio.to_thread(ca_node.kick_session, "alice", "sensor", "device revoked")
    tail = await attempt.client.read_all(timeout=10)
    assert b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in tail
    assert b">device revoked</text>" in tail
    await close(attempt)


# -- ejabberd: an XEP-0114 component --------------------------------------------------------


async def test_ejabberd_component_gets_the_users_full_jid(
    ejabberd: EjabberdFactory, server_cert: CertificateFiles
) -> None:
    node = ejabberd(component_secret="component secret 1")
    node.register("alice", PASSWORD)
    await component_round_trip(node.component_port, node.c2s_port, server_cert)


async def component_round_trip(
    component_port: int, c2s_port: int, server_cert: CertificateFiles
) -> None:
    component = ProbeComponent("pairing.localhost", "component secret 1", component_port)
    component.connect()
    try:
        await asyncio.wait_for(component.ready.wait(), 10)
        client, jid = await password_login(c2s_port, server_cert, "alice@localhost/phone")
        reply = await ask_component(client, "pairing.localhost")
        assert reply["type"] == "result"
        assert component.askers == [str(jid)]
        assert str(jid) == "alice@localhost/phone"
        await logout(client)
    finally:
        await component.disconnect(wait=2)


# -- ejabberd: two nodes in a cluster -------------------------------------------------------


async def test_ejabberd_two_node_cluster(
    ejabberd: EjabberdFactory,
    server_cert: CertificateFiles,
    device_ca: DeviceCA,
    measured: Measured,
) -> None:
    options: dict[str, Any] = {
        "c2s_listener": {"tls_verify": True},
        "top_level": {"c2s_cafile": str(device_ca.cert_path)},
    }
    first = ejabberd("node1", **options)
    second = ejabberd("node2", **options)
    join_seconds = await asyncio.to_thread(join_cluster, second, first)
    assert first.node in first.ctl("list_cluster") and second.node in first.ctl("list_cluster")

    first.register("alice", PASSWORD)  # on one node ...
    owner, _ = await password_login(second.c2s_port, server_cert, "alice@localhost/laptop")
    await logout(owner)  # ... logs in on the other

    device = device_ca.issue("sensor", "alice@localhost/sensor")
    for node in (first, second):
        client, jid = await certificate_login(
            node.c2s_port, server_cert, "alice@localhost/sensor", device
        )
        assert str(jid) == "alice@localhost/sensor"
        await logout(client)

    # A session held on the second node, kicked through the first.
    client, _ = await certificate_login(
        second.c2s_port, server_cert, "alice@localhost/sensor", device
    )
    gone = disconnection(client)
    kick_seconds = await measure_close(gone, lambda: first.kick_session("alice", "sensor"))
    client.abort()

    # Configuration is per node: a deny rule reloaded on one node binds only that node.
    first.write_access_rules(deny_rule("alice@localhost/sensor"))
    await asyncio.to_thread(first.reload_config)
    on_first = await raw_external(first.c2s_port, server_cert, device, resource="sensor")
    on_second = await raw_external(second.c2s_port, server_cert, device, resource="sensor")
    assert b"<not-allowed" in on_first.bind, on_first
    assert succeeded(on_second), on_second
    await close(on_first, on_second)
    second.write_access_rules(deny_rule("alice@localhost/sensor"))
    await asyncio.to_thread(second.reload_config)
    on_second = await raw_external(second.c2s_port, server_cert, device, resource="sensor")
    assert b"<not-allowed" in on_second.bind, on_second
    await close(on_second)

    measured("ejabberd: join_cluster until both nodes list each other", join_seconds)
    measured("ejabberd: kick_session on node 1 closing a session on node 2", kick_seconds)


# -- Prosody --------------------------------------------------------------------------------


@dataclass
class ProbeRegistry:
    """The loopback HTTP endpoint the Prosody probe module asks: PEM in, username or 403 out.

    ``hold`` keeps every answer back until it is set, so a test can see the SASL step wait.
    """

    known: dict[bytes, str] = field(default_factory=dict)  # certificate DER -> username
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)  # a request came in
    port: int = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                der = certificate_der(x509.load_pem_x509_certificate(body))
                registry.requests.append((der, dict(self.headers.items())))
                registry.arrived.set()
                registry.hold.wait(20)
                user = registry.known.get(der)
                self.send_response(200 if user else 403)
                payload = (user or "unknown").encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def probe_registry() -> Iterator[ProbeRegistry]:
    registry = ProbeRegistry()
    registry.hold.set()
    server = ThreadingHTTPServer((LOOPBACK, 0), registry.handler())
    registry.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        registry.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def probe_prosody(prosody: ProsodyFactory, probe_registry: ProbeRegistry, tmp_path: Path) -> Any:
    """Prosody with the probe module loaded from our own plugin_paths."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(PROBE_MODULE, plugins / PROBE_MODULE.name)

    def start(*, verify: bool = True) -> Any:
        instance = prosody(
            modules=["xmpp_dp_probe"],
            plugin_paths=[plugins],
            global_lines=[PROSODY_VERIFY] if verify else [],
            host_lines=[f'xmpp_dp_probe_url = "http://{LOOPBACK}:{probe_registry.port}/verify"'],
        )
        instance.adduser("alice", PASSWORD)
        return instance

    return start


async def test_prosody_module_decides_external_over_http_inside_the_sasl_step(
    probe_prosody: Any,
    probe_registry: ProbeRegistry,
    server_cert: CertificateFiles,
    tmp_path: Path,
) -> None:
    instance = probe_prosody()
    assert "EXTERNAL added to the SASL handler" in instance.log_path.read_text()
    device = self_signed_device(tmp_path / "devices", "alice@localhost/bot")
    probe_registry.known[certificate_der(device.certificate)] = "alice"

    # Hold the registry's answer: the EXTERNAL attempt waits on it, the server does not.
    probe_registry.hold.clear()
    raw = await RawClient.connect(LOOPBACK, instance.c2s_port, "localhost")
    features = await raw.starttls(client_context(server_cert.cert, device.cert, device.key))
    assert b"<mechanism>EXTERNAL</mechanism>" in features
    assert b"<mechanism>SCRAM-SHA-1</mechanism>" in features
    await raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert await asyncio.to_thread(probe_registry.arrived.wait, 10)
    # Meanwhile the owner logs in with a password (SCRAM, internal_hashed) on the same host.
    owner, owner_jid = await password_login(instance.c2s_port, server_cert, "alice@localhost/pc")
    assert str(owner_jid) == "alice@localhost/pc"
    await logout(owner)
    # A password client left to its own choice: EXTERNAL is not offered without a
    # certificate, so slixmpp does not try it (compare ejabberd, which offers it to all).
    owner, _ = await password_login(
        instance.c2s_port, server_cert, "alice@localhost/pc2", scram_only=False
    )
    assert owner.plugin["feature_mechanisms"].mech.name in SCRAM_ONLY
    await logout(owner)
    assert b"success" not in raw.buffer and b"failure" not in raw.buffer
    probe_registry.hold.set()
    answer = await raw.read_until(b"<success", b"</failure>")
    assert answer.endswith(b"<success"), answer
    await raw.close()

    # The self-signed certificate reached the module intact, and the module ran in the
    # session's async runner.
    der, headers = probe_registry.requests[0]
    assert der == certificate_der(device.certificate)
    assert headers["X-In-Async-Runner"] == "yes"
    assert headers["X-Authzid"] == ""

    # The whole login with slixmpp, then a certificate the registry does not know.
    client, jid = await certificate_login(
        instance.c2s_port, server_cert, "alice@localhost/bot", device
    )
    assert str(jid) == "alice@localhost/bot"
    await logout(client)
    stranger = self_signed_device(tmp_path / "devices", "alice@localhost/bot", name="stranger")
    with pytest.raises(AuthenticationFailed) as refused:
        await certificate_login(instance.c2s_port, server_cert, "alice@localhost/bot", stranger)
    assert refused.value.condition == "not-authorized"


async def test_prosody_without_verify_the_client_certificate_never_arrives(
    probe_prosody: Any,
    probe_registry: ProbeRegistry,
    server_cert: CertificateFiles,
    tmp_path: Path,
) -> None:
    instance = probe_prosody(verify=False)
    device = self_signed_device(tmp_path / "devices", "alice@localhost/bot")
    probe_registry.known[certificate_der(device.certificate)] = "alice"
    attempt = await raw_external(instance.c2s_port, server_cert, device)
    # The module saw no certificate, so it did not offer EXTERNAL, and asked nobody.
    assert b"<mechanism>EXTERNAL</mechanism>" not in attempt.features, attempt.features
    assert probe_registry.requests == []
    await close(attempt)
    assert "no client certificate, EXTERNAL not offered" in instance.log_path.read_text()


async def test_prosody_component_gets_the_users_full_jid(
    prosody: ProsodyFactory, server_cert: CertificateFiles
) -> None:
    instance = prosody(component_secret="component secret 1")
    instance.adduser("alice", PASSWORD)
    await component_round_trip(instance.component_port, instance.c2s_port, server_cert)


async def test_prosody_admin_shell_closes_a_live_session(
    prosody: ProsodyFactory, server_cert: CertificateFiles, measured: Measured
) -> None:
    instance = prosody()
    instance.adduser("alice", PASSWORD)
    client, jid = await password_login(instance.c2s_port, server_cert, "alice@localhost/bot")
    gone = disconnection(client)
    output: list[str] = []
    seconds = await measure_close(
        gone, lambda: output.append(instance.shell(f'c2s:close("{jid}")'))
    )
    client.abort()
    assert "1 sessions closed" in output[0], output
    measured("Prosody: prosodyctl shell c2s:close to the client seeing the close", seconds)
