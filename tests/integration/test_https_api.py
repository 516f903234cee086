"""The HTTPS face (docs/protocol.md, section 9) on loopback: real TLS, a real SQLite file, the
device agent as a real process, and the hooks the stock servers call (Prosody's module,
MongooseIM's http auth method), against the embedded server behind the stock interface."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from device_agent.enrollment import ServerSettings, enroll_https
from device_agent.https_client import HTTPSEndpoint
from device_agent.keystore import KeyStore
from device_agent.renewal import renew
from device_agent.runtime import run
from device_agent.status_query import device_status
from pairing.errors import AuthenticationFailed, ServerIdentityMismatch
from pairing.protocol import https_api
from pairing.protocol.device_status import (
    DEVICE_STATUS_PATH,
    DeviceStatus,
    DeviceStatusQuery,
    status_message,
)
from pairing.protocol.device_status import DeviceState as WireState
from pairing.protocol.https_api import APIRefused, EnrollRequest, enrollment_message
from pairing.protocol.identity import (
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    generate_key,
)
from pairing.protocol.jid import JID
from pairing.protocol.proofs import sign
from pairing.protocol.uri import HTTPSEnrollmentURI
from pairing.xmpp.connection import ServerAddress, login, logout, make_client
from server_ext.admin import admin_channel
from server_ext.admin.token_issuer import HTTPSEnrollment, issue_token
from server_ext.model import CertState, DeviceState, TokenState
from server_ext.net.data_directory import stock_secret
from server_ext.policy.tokens import TokenRules, hash_token
from tests.integration.cli_support import run as run_cli
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.test_device_runtime import wait_for_line
from tests.integration.test_renewal import expired_device
from tests.support.mongooseim import MongooseIMHTTPAuth

BOT = JID.parse("alice@localhost/bot")
SECRET = "prosody-and-mongooseim-shared-secret"


async def https_server(make_server: ServerFactory, **options: Any) -> RunningServer:
    server = await make_server(https_port=0, **options)
    server.add_user("alice")
    return server


def endpoint(server: RunningServer, pin: str | None = None) -> HTTPSEndpoint:
    address = server.server.https_address
    assert address is not None
    return HTTPSEndpoint(address.host, address.port, pin or server.fingerprint)


def v2_uri(server: RunningServer, resource: str = "bot", *, pin: str | None = None) -> Any:
    """A v2 URI for the HTTPS face whose XMPP server is the embedded one (pinned)."""
    issued = issue_token(
        server.registry,
        TokenRules(),
        account=BOT.bare,
        resource=resource,
        name=None,
        ttl=None,
        created_by="test",
    )
    address = server.server.https_address
    assert address is not None
    target = HTTPSEnrollment(
        address.host, address.port, pin or server.fingerprint, server.server.xmpp_target()
    )
    return issued, issued.https_uri(target)


def device_certificate(jid: JID = BOT) -> tuple[Any, PeerCertificate]:
    key = generate_key()
    return key, PeerCertificate.parse(certificate_der(build_device_certificate(key, jid)))


async def enroll_request(
    server: RunningServer, token: str, key: Any, cert: PeerCertificate, *, signer: Any = None
) -> dict[str, Any]:
    api = endpoint(server)
    challenge = await api.post(https_api.CHALLENGE_PATH, None, timeout=5)
    nonce = challenge["nonce"]
    signature = sign(signer or key, enrollment_message(nonce, token, cert.fingerprint))
    return EnrollRequest(token, cert, nonce, signature).to_json()


async def post(server: RunningServer, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await endpoint(server).post(path, payload, timeout=5)
    return result


async def test_a_v2_token_enrolls_over_https_and_the_device_logs_in_with_external(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await https_server(make_server)
    issued, uri = v2_uri(server)
    assert str(uri).startswith("XMPP-DP:2/")
    state = tmp_path / "bot"
    done = await asyncio.to_thread(
        run_cli, "device-agent", "--state-dir", str(state), "enroll", "--uri", str(uri)
    )
    assert f"logs in as {BOT}" in done.stdout
    record = server.registry.tokens.get(issued.record.id)
    assert record is not None and record.state is TokenState.REDEEMED
    identity = KeyStore(state).load()
    registered = server.registry.devices.by_fingerprint(identity.fingerprint)
    assert registered is not None and registered.device.added_via == "token"
    settings = ServerSettings.load(state)
    assert settings.over_https and settings.https_pin == server.fingerprint
    assert (settings.host, settings.port, settings.fingerprint) == (
        server.host,
        server.port,
        server.fingerprint,
    )
    # It logs in again by itself, as `device-agent run` and device_agent.connect do.
    again = await asyncio.to_thread(run_cli, "device-agent", "--state-dir", str(state), "login")
    assert f"logged in as {BOT}" in again.stdout
    assert uri.token not in done.stdout + done.stderr  # the token is never echoed


async def test_the_https_pin_is_checked_before_the_token_leaves(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await https_server(make_server)
    issued, uri = v2_uri(server, pin="ab" * 32)
    store = KeyStore(tmp_path / "bot")
    with pytest.raises(Exception, match="not the pinned one"):
        await enroll_https(store, uri)
    record = server.registry.tokens.get(issued.record.id)
    assert record is not None and record.state is TokenState.PENDING  # never sent
    assert not store.exists()  # a key made for this attempt goes
    with pytest.raises(ServerIdentityMismatch):
        await endpoint(server, pin="cd" * 32).post(https_api.CHALLENGE_PATH, None, timeout=5)


async def test_a_retry_by_the_same_certificate_gets_the_same_answer_and_no_other_key_does(
    make_server: ServerFactory,
) -> None:
    server = await https_server(make_server)
    issued, _ = v2_uri(server)
    key, cert = device_certificate()
    first = await post(
        server, https_api.ENROLL_PATH, await enroll_request(server, issued.token, key, cert)
    )
    # The answer was lost; the device asks again with the same certificate and a new nonce.
    second = await post(
        server, https_api.ENROLL_PATH, await enroll_request(server, issued.token, key, cert)
    )
    assert first == second
    assert first["jid"] == str(BOT) and first["name"] == "bot"
    assert first["xmpp"] == {"host": server.host, "port": server.port, "pin": server.fingerprint}
    events = [e.event for e in server.registry.audit.events()]
    assert events.count("token.redeemed") == 1 and "enroll.repeated" in events
    other_key, other = device_certificate()
    with pytest.raises(APIRefused) as refused:
        await post(
            server,
            https_api.ENROLL_PATH,
            await enroll_request(server, issued.token, other_key, other),
        )
    assert (refused.value.condition, refused.value.status) == ("token-used", 403)


async def test_a_nonce_works_once_and_a_wrong_signature_leaves_the_token_usable(
    make_server: ServerFactory,
) -> None:
    server = await https_server(make_server)
    issued, _ = v2_uri(server)
    key, cert = device_certificate()
    # Signed by another key than the certificate's: whoever sends it does not hold the key.
    forged = await enroll_request(server, issued.token, key, cert, signer=generate_key())
    with pytest.raises(APIRefused) as refused:
        await post(server, https_api.ENROLL_PATH, forged)
    assert (refused.value.condition, refused.value.status) == ("bad-signature", 403)
    record = server.registry.tokens.by_hash(hash_token(issued.token))
    assert record is not None and record.state is TokenState.PENDING
    honest = await enroll_request(server, issued.token, key, cert)
    await post(server, https_api.ENROLL_PATH, honest)
    with pytest.raises(APIRefused) as replayed:
        await post(server, https_api.ENROLL_PATH, honest)  # the same nonce again
    assert replayed.value.condition == "nonce-unknown"


async def test_the_enrollment_rules_are_those_of_the_xmpp_redemption(
    make_server: ServerFactory,
) -> None:
    server = await https_server(make_server)
    issued, _ = v2_uri(server)
    key, wrong = device_certificate(JID.parse("alice@localhost/other"))
    with pytest.raises(APIRefused) as refused:
        await post(
            server, https_api.ENROLL_PATH, await enroll_request(server, issued.token, key, wrong)
        )
    assert refused.value.condition == "jid-mismatch"
    key, cert = device_certificate()
    with pytest.raises(APIRefused) as unknown:
        await post(server, https_api.ENROLL_PATH, await enroll_request(server, "A" * 32, key, cert))
    assert unknown.value.condition == "token-unknown"


@pytest.mark.parametrize(
    ("body", "condition"),
    [
        (b"not json", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"token": 5}', "malformed"),
        (b'{"token": "x", "certificate": "nope", "nonce": "n", "signature": ""}', "malformed"),
    ],
)
async def test_malformed_bodies_get_a_400_with_the_reason(
    make_server: ServerFactory, body: bytes, condition: str
) -> None:
    server = await https_server(make_server)
    api = server.server.https_api()
    reply = api.enroll(body, "127.0.0.1")
    assert reply.status == 400 and reply.body is not None
    assert reply.body["error"] == condition and reply.body["text"]


async def test_rotation_over_https_retires_the_previous_certificate_at_once(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await https_server(make_server, rotation_interval=0.0)
    _, uri = v2_uri(server)
    store = KeyStore(tmp_path / "bot")
    await enroll_https(store, uri)
    old = store.load()
    new = await renew(store.state_dir)  # valid: /api/v1/rotate
    assert new.fingerprint != old.fingerprint
    registry = server.registry
    rotated = registry.devices.by_fingerprint(new.fingerprint)
    previous = registry.devices.by_fingerprint(old.fingerprint)
    assert rotated is not None and rotated.added_via == "rotation"
    assert rotated.device.id == previous.device.id if previous else False
    assert previous is not None and previous.state is CertState.DISABLED
    client = make_client(
        str(BOT),
        server=ServerAddress(server.host, server.port),
        trust=ServerSettings.load(store.state_dir).trust,
        certfile=new.cert_path,
        keyfile=new.key_path,
    )
    assert await login(client) == BOT
    await logout(client)


async def test_an_expired_device_enrolled_over_https_renews_there_and_comes_online(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server, store, _ = await expired_device(make_server, tmp_path / "bot", https_port=0)
    address = server.server.https_address
    assert address is not None
    settings = ServerSettings.load(store.state_dir)
    ServerSettings(
        settings.host,
        settings.port,
        settings.fingerprint,
        settings.jid,
        settings.name,
        https_host=address.host,
        https_port=address.port,
        https_pin=server.fingerprint,
    ).save(store.state_dir)
    old = store.load()
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run(store.state_dir, report=lines.append, min_delay=0.1, stop=stop))
    await wait_for_line(lines, "online as alice@localhost/bot")
    new = store.load()
    renewed = server.registry.devices.by_fingerprint(new.fingerprint)
    assert renewed is not None and renewed.added_via == "renewal"
    expired = server.registry.devices.by_fingerprint(old.fingerprint)
    assert expired is not None and expired.state is CertState.DISABLED
    stop.set()
    await asyncio.wait_for(task, 10)


def prosody_query(der: bytes, authzid: str = "") -> bytes:
    return json.dumps({"der": base64.b64encode(der).decode(), "authzid": authzid}).encode()


async def test_the_prosody_hook_makes_the_external_decision_with_the_secret(
    make_server: ServerFactory,
) -> None:
    server = await https_server(make_server)
    server.server._stock_secret = SECRET
    issued, _ = v2_uri(server)
    key, cert = device_certificate()
    await post(server, https_api.ENROLL_PATH, await enroll_request(server, issued.token, key, cert))
    api = server.server.https_api()
    bearer = f"Bearer {SECRET}"
    assert api.prosody_certificate(prosody_query(cert.der), None, "127.0.0.1").status == 401
    wrong = api.prosody_certificate(prosody_query(cert.der), "Bearer nope", "127.0.0.1")
    assert wrong.status == 401
    accepted = api.prosody_certificate(prosody_query(cert.der, "alice@localhost"), bearer, "x")
    assert accepted.status == 200
    assert accepted.body == {"jid": str(BOT), "account": "alice@localhost", "resource": "bot"}
    _, stranger = device_certificate()
    unknown = api.prosody_certificate(prosody_query(stranger.der), bearer, "127.0.0.1")
    assert unknown.status == 403 and unknown.body is not None
    assert unknown.body["error"] == "refused"
    server.set_device_state("alice", "bot", DeviceState.REVOKED, reason="lost")
    revoked = api.prosody_certificate(prosody_query(cert.der), bearer, "127.0.0.1")
    assert revoked.status == 403 and revoked.body is not None
    assert revoked.body["error"] == "revoked" and "lost" in revoked.body["text"]
    garbage = api.prosody_certificate(b'{"der": "%%%"}', bearer, "127.0.0.1")
    assert garbage.status == 400


async def test_mongooseim_get_certs_follows_the_documented_http_auth_contract(
    make_server: ServerFactory,
) -> None:
    server = await https_server(make_server)
    server.server._stock_secret = SECRET
    address = server.server.https_address
    assert address is not None
    mongooseim = MongooseIMHTTPAuth(
        address.host, address.port, https_api.MONGOOSEIM_PREFIX, f"mongooseim:{SECRET}"
    )
    assert await asyncio.to_thread(mongooseim.get_certs, "alice", "localhost") == []
    issued, _ = v2_uri(server)
    key, cert = device_certificate()
    await post(server, https_api.ENROLL_PATH, await enroll_request(server, issued.token, key, cert))
    issued2, _ = v2_uri(server, "sensor")
    key2, cert2 = device_certificate(JID.parse("alice@localhost/sensor"))
    await post(
        server, https_api.ENROLL_PATH, await enroll_request(server, issued2.token, key2, cert2)
    )
    assert sorted(await asyncio.to_thread(mongooseim.get_certs, "alice", "localhost")) == sorted(
        [cert.der, cert2.der]
    )
    assert await asyncio.to_thread(mongooseim.accepts, "alice", "localhost", cert.der)
    assert await asyncio.to_thread(mongooseim.user_exists, "alice", "localhost")
    assert not await asyncio.to_thread(mongooseim.user_exists, "nobody", "localhost")
    # A revoked device's certificate disappears at once: the next login is refused.
    server.set_device_state("alice", "bot", DeviceState.REVOKED)
    assert await asyncio.to_thread(mongooseim.get_certs, "alice", "localhost") == [cert2.der]
    assert not await asyncio.to_thread(mongooseim.accepts, "alice", "localhost", cert.der)
    server.set_device_state("alice", "sensor", DeviceState.DISABLED)
    assert await asyncio.to_thread(mongooseim.get_certs, "alice", "localhost") == []
    # The wrong basic-auth password, or another domain: get_certs fails, nothing leaks.
    intruder = MongooseIMHTTPAuth(
        address.host, address.port, https_api.MONGOOSEIM_PREFIX, "mongooseim:guess"
    )
    assert not await asyncio.to_thread(intruder.accepts, "alice", "localhost", cert2.der)
    server.set_device_state("alice", "sensor", DeviceState.ACTIVE)
    assert not await asyncio.to_thread(mongooseim.accepts, "alice", "example.org", cert2.der)
    assert await asyncio.to_thread(mongooseim.accepts, "alice", "localhost", cert2.der)


async def test_the_admin_channel_asks_the_stock_interface(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await https_server(make_server)
    _, uri = v2_uri(server)
    store = KeyStore(tmp_path / "bot")
    await enroll_https(store, uri)
    identity = store.load()
    client = make_client(
        str(BOT),
        server=ServerAddress(server.host, server.port),
        trust=ServerSettings.load(store.state_dir).trust,
        certfile=identity.cert_path,
        keyfile=identity.key_path,
    )
    await login(client)
    data_dir = server.config.data_dir
    reply = await asyncio.to_thread(
        admin_channel.request, data_dir, {"op": "trust-changed", "reason": "test"}
    )
    assert reply == {"ok": True}
    sessions = await asyncio.to_thread(admin_channel.request, data_dir, {"op": "sessions"})
    assert sessions is not None
    assert [s["fingerprint"] for s in sessions["sessions"]] == [identity.fingerprint]
    await logout(client)


def test_the_stock_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "stock.secret"
    made = stock_secret(path)
    assert len(made) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stock_secret(path) == made
    os.chmod(path, 0o644)
    with pytest.raises(Exception, match="readable by others"):
        stock_secret(path)


async def test_a_revoked_device_cannot_log_in_after_https_enrollment(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await https_server(make_server)
    _, uri = v2_uri(server)
    store = KeyStore(tmp_path / "bot")
    await enroll_https(store, uri)
    server.set_device_state("alice", "bot", DeviceState.REVOKED, reason="stolen")
    identity = store.load()
    client = make_client(
        str(BOT),
        server=ServerAddress(server.host, server.port),
        trust=ServerSettings.load(store.state_dir).trust,
        certfile=identity.cert_path,
        keyfile=identity.key_path,
    )
    with pytest.raises(AuthenticationFailed) as refused:
        await login(client)
    assert refused.value.revoked


def set_stock(data_dir: Path, text: str) -> None:
    """What an operator adds to server.toml to attach to a stock server."""
    config = data_dir / "server.toml"
    config.write_text(config.read_text() + text)


def test_token_create_for_a_stock_server_gives_a_v2_uri(tmp_path: Path) -> None:
    data = tmp_path / "server"
    run_cli("server-ext", "--data-dir", str(data), "init", "--domain", "localhost")
    toml = (data / "server.toml").read_text()
    toml = toml.replace(
        'kind                                  = "embedded"',
        'kind                                  = "prosody"',
    )
    toml = toml.replace(
        "port                                  = 0  # 0 turns it off",
        "port                                  = 5443  # 0 turns it off",
    )
    (data / "server.toml").write_text(toml)
    done = run_cli(
        "server-ext", "--data-dir", str(data), "token", "create",
        "--jid", "alice", "--resource", "bot", "--json",
    )  # fmt: skip
    uri = HTTPSEnrollmentURI.parse(json.loads(done.stdout)["uri"])
    assert (uri.jid, uri.https_port, uri.xmpp_host, uri.xmpp_port) == (
        BOT,
        5443,
        "localhost",
        5222,
    )
    assert uri.xmpp_pin is None  # no [stock] xmpp_pin: the system's CAs
    # The account lives on the stock server: the registry records it without a password.
    audit = run_cli("server-ext", "--data-dir", str(data), "audit", "--json")
    assert "account.created" in audit.stdout


def test_a_stock_kind_without_the_https_face_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "server"
    run_cli("server-ext", "--data-dir", str(data), "init", "--domain", "localhost")
    toml = (
        (data / "server.toml")
        .read_text()
        .replace(
            'kind                                  = "embedded"',
            'kind                                  = "ejabberd"',
        )
    )
    (data / "server.toml").write_text(toml)
    done = run_cli("server-ext", "--data-dir", str(data), "serve", ok=False)
    assert done.returncode != 0
    assert "needs the HTTPS face" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


async def test_a_ca_certificate_cannot_enroll(make_server: ServerFactory) -> None:
    from tests.unit.test_stock_face import ca_like

    server = await https_server(make_server)
    issued, _ = v2_uri(server)
    key = generate_key()
    cert = ca_like(ca=True, key_cert_sign=True, key=key)
    with pytest.raises(APIRefused) as refused:
        await post(
            server, https_api.ENROLL_PATH, await enroll_request(server, issued.token, key, cert)
        )
    assert refused.value.condition == "bad-certificate" and "CA certificate" in refused.value.text
    record = server.registry.tokens.get(issued.record.id)
    assert record is not None and record.state is TokenState.PENDING  # the token stays usable


async def test_a_rotation_retried_after_a_lost_answer_is_taken_as_done(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    from pairing.protocol.https_api import SuccessorRequest, possession_message
    from pairing.protocol.renewal import sign_renewal

    server = await https_server(make_server, rotation_interval=0.0)
    _, uri = v2_uri(server)
    store = KeyStore(tmp_path / "bot")
    await enroll_https(store, uri)
    current = store.load()
    key, new = device_certificate()

    async def attempt() -> dict[str, Any]:
        nonce = (await endpoint(server).post(https_api.CHALLENGE_PATH, None, timeout=5))["nonce"]
        request = SuccessorRequest(
            current.certificate_der,
            new,
            nonce,
            sign_renewal(store.private_key(), "localhost", new.der),
            sign(key, possession_message(nonce, new.fingerprint)),
        )
        return await post(server, https_api.ROTATE_PATH, request.to_json())

    first = await attempt()
    assert first["fingerprint"] == new.fingerprint
    # Its answer was lost: the device asks again with the same staged certificate, although
    # the server retired the old one meanwhile. It must hear "already registered", not
    # "disabled", or it would throw its new key away and be locked out.
    with pytest.raises(APIRefused) as again:
        await attempt()
    assert (again.value.condition, again.value.status) == ("already-registered", 409)


async def test_a_device_asks_how_it_stands_and_only_its_key_gets_an_answer(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """POST /api/v1/device/status (docs/protocol.md, 9.7): what a device on a stock server asks
    after a refusal that did not say why."""
    server = await https_server(make_server)
    _, uri = v2_uri(server)
    store = KeyStore(tmp_path / "bot")
    await enroll_https(store, uri)
    assert await device_status(store.state_dir) == DeviceStatus(WireState.ACTIVE)
    server.set_device_state("alice", "bot", DeviceState.REVOKED, reason="stolen")
    assert await device_status(store.state_dir) == DeviceStatus(WireState.REVOKED, "stolen")

    async def ask(certificate: PeerCertificate, key: Any) -> Any:
        challenge = await endpoint(server).post(https_api.CHALLENGE_PATH, None, timeout=5)
        nonce = str(challenge["nonce"])
        signature = sign(key, status_message(nonce, certificate.fingerprint))
        query = DeviceStatusQuery(certificate, nonce, signature)
        return await endpoint(server).post(DEVICE_STATUS_PATH, query.to_json(), timeout=5)

    # Whoever has the certificate (it is public) but not the key learns nothing.
    mallory = generate_key()
    with pytest.raises(APIRefused) as refused:
        await ask(store.load().certificate, mallory)
    assert refused.value.condition == "bad-signature"
    # A certificate the registry does not hold.
    stranger = PeerCertificate.parse(
        certificate_der(build_device_certificate(mallory, JID.parse("alice@localhost/x")))
    )
    with pytest.raises(APIRefused) as refused:
        await ask(stranger, mallory)
    assert refused.value.condition == "not-found"
