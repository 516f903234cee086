"""The whole user flows of issue 11 on a real ejabberd and a real Prosody, through the CLIs.

A person with an account on the stock server logs the ``pairing`` CLI in once, pairs a bot
by QR (``pairing token`` → ``device-agent enroll``) and a sensor by its label (LAN pairing,
both directions), registers a device by hand, sees them online, and revokes them (from
``server-ext devices revoke``, from the component's ad-hoc command, and with ``pairing
devices revoke``): the live session closes within 1 s and no certificate the device ever
had logs in again. Every process is a real CLI beside a private stock server configured from
``server-ext stock snippet`` (tests/interop/flows_world.py); one world per server kind and
module, with accounts and devices per test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

import device_agent
from device_agent.enrollment import ServerSettings, enroll_https
from device_agent.keystore import KeyStore
from device_agent.runtime import run
from pairing.protocol.identity import PeerCertificate, build_device_certificate, generate_key
from pairing.protocol.jid import JID
from pairing.protocol.uri import HTTPSEnrollmentURI
from pairing.xmpp.connection import PairingClient, logout
from server_ext.app.adhoc import COMMANDS, NODE_REVOKE
from server_ext.model import CertState
from tests.interop.conftest import MEASUREMENTS
from tests.interop.flows_world import (
    COMPONENT,
    Agent,
    Owner,
    World,
    cli,
    stock_world,
)
from tests.support.certificates import CertificateFiles, self_signed_device
from tests.support.netns import NamespaceUnavailable, private_network
from tests.support.stock_clients import (
    certificate_login,
    close,
    disconnection,
    password_login,
    raw_external,
    succeeded,
)
from tests.support.stock_servers import LOOPBACK

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

#: The issue's bound: a revoked device's live session is closed within this many seconds.
CLOSE_BOUND = 1.0
INTERFACE = ["--interface", LOOPBACK]


@pytest.fixture(scope="module", params=["ejabberd", "prosody"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One stock server and one ``server-ext serve`` per kind, in a network of their own."""
    folder = tmp_path_factory.mktemp(f"flows-{request.param}")
    try:
        with private_network(), stock_world(request.param, folder) as made:
            yield made
    except NamespaceUnavailable as exc:
        pytest.fail(f"the stock flows need a private network namespace: {exc}")


def certificate_files(state: Path) -> CertificateFiles:
    """The device's current key and certificate, copied aside (a later rotation replaces them)."""
    identity = KeyStore(state).load()
    folder = state.parent / f"{state.name}-copy-{identity.fingerprint[:8]}"
    folder.mkdir(exist_ok=True)
    cert = Path(shutil.copy(identity.cert_path, folder / "device.crt"))
    key = Path(shutil.copy(identity.key_path, folder / "device.key"))
    return CertificateFiles(cert, key, cert, x509.load_pem_x509_certificate(cert.read_bytes()))


async def refused(world: World, device: CertificateFiles, resource: str) -> bool:
    """True when the stock server refuses ``device``'s certificate (SASL or bind)."""
    results = []
    for port in world.c2s_ports:
        attempt = await raw_external(port, world.server_cert, device, resource=resource)
        results.append(not succeeded(attempt))
        await close(attempt)
    return all(results)


async def revoked_within_bound(
    world: World,
    client: PairingClient,
    account: str,
    name: str,
    revoke: Callable[[], Awaitable[object]],
    what: str,
) -> float:
    """Run ``revoke``; the device's live session must close within the bound of the
    revocation's moment (its audit time, written as the registry revokes it)."""
    gone = disconnection(client)
    seen_at: list[dt.datetime] = []
    client.add_event_handler("disconnected", lambda _: seen_at.append(dt.datetime.now(dt.UTC)))
    await revoke()
    await asyncio.wait_for(gone.wait(), 10)
    client.abort()
    return within_bound(world, account, name, seen_at[0], what)


def within_bound(world: World, account: str, name: str, closed_at: dt.datetime, what: str) -> float:
    """Seconds from the device's revocation (its audit time) to ``closed_at``; asserts the
    issue's bound."""
    (event,) = [
        e
        for e in world.audit("device.revoked")
        if (e.detail.get("account"), e.detail.get("name")) == (account, name)
    ]
    delay = (closed_at - event.at).total_seconds()
    MEASUREMENTS.append((f"{world.kind}: {what}: revocation to the close", delay))
    assert 0 <= delay < CLOSE_BOUND, (what, delay)
    return delay


async def revoke_with_adhoc(client: PairingClient, device: str) -> None:
    """XEP-0050 as any client does it: execute the command, submit its form."""
    adhoc = client.plugin["xep_0050"]
    first = await adhoc.send_command(COMPONENT, NODE_REVOKE)
    command = first["command"]
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="device", value=device)
    form.add_field(var="reason", value="stolen")
    done = await adhoc.send_command(
        COMPONENT, NODE_REVOKE, action="complete", payload=form, sessionid=command["sessionid"]
    )
    assert done["command"]["status"] == "completed", done


def enroll_by_qr(world: World, owner: Owner, resource: str, state: Path) -> str:
    uri = world.token(owner, resource)
    assert uri.startswith("XMPP-DP:2/"), uri  # a stock server's token: HTTPS, then EXTERNAL
    done = cli("device-agent", "--state-dir", state, "enroll", "--uri", uri)
    jid = f"{owner.jid}/{resource}"
    assert f"logs in as {jid}" in done.stdout, done.stdout
    assert uri.split("/")[1] not in done.stdout + done.stderr
    return jid


# -- QR token ---------------------------------------------------------------------------------


async def test_a_bot_paired_by_qr_logs_in_rotates_and_is_revoked_by_the_operator(
    world: World, tmp_path: Path
) -> None:
    owner = world.account("qr")
    profile = world.login(owner)  # finds the component in the domain's disco#items
    assert profile["component"] == COMPONENT, profile
    state = tmp_path / "bot"
    jid = enroll_by_qr(world, owner, "bot", state)
    first = certificate_files(state)

    # device-agent run keeps it online; the owner sees it through the component.
    agent = Agent("device-agent", "--state-dir", state, "run")
    try:
        agent.wait_for(f"online as {jid}")
        assert world.devices(owner)["bot"]["online"] is True
    finally:
        agent.stop()

    # A rotation over HTTPS (the certificate is still valid): the successor logs in, the
    # previous certificate is refused at once although it has not expired.
    cli("device-agent", "--state-dir", state, "renew")
    second = certificate_files(state)
    assert second.certificate != first.certificate
    assert await refused(world, first, "bot")
    bot = await device_agent.connect(state)  # what a bot author writes
    assert str(bot.boundjid) == jid

    await revoked_within_bound(
        world,
        bot,
        owner.jid,
        "bot",
        lambda: asyncio.to_thread(
            world.admin, "devices", "revoke", "bot", "--jid", owner.jid, "--reason", "lost"
        ),
        "server-ext devices revoke",
    )
    assert await refused(world, second, "bot")
    assert await refused(world, first, "bot")
    with world.registry() as registry:
        found = registry.devices.by_fingerprint(
            PeerCertificate.from_x509(second.certificate).fingerprint
        )
        assert found is not None and found.state is CertState.REVOKED
    assert world.devices(owner)["bot"]["state"] == "revoked"
    assert world.devices(owner)["bot"]["online"] is False


async def test_device_agent_run_rotates_a_short_lived_certificate_before_it_expires(
    world: World, tmp_path: Path
) -> None:
    """``device-agent run`` renews over HTTPS before expiry and stays online: the successor
    logs in before the old session goes, the agent never reports itself offline, and the
    certificate it replaced is refused at once although it has not expired."""
    owner = world.account("rot")
    world.login(owner)
    uri = HTTPSEnrollmentURI.parse(world.token(owner, "short"))
    state = tmp_path / "short"
    await enroll_https(KeyStore(state), uri, valid_for=dt.timedelta(seconds=300))
    first = certificate_files(state)

    lines: list[str] = []
    stop = asyncio.Event()
    # Due 299 s before expiry: about a second after the device comes online.
    task = asyncio.create_task(
        run(state, report=lines.append, stop=stop, rotate_before=dt.timedelta(seconds=299))
    )
    try:
        for _ in range(600):  # up to 60 s: ejabberd reloads its trust file for the successor
            if any(line.startswith("rotated") for line in lines) or task.done():
                break
            await asyncio.sleep(0.1)
        assert any(line.startswith("rotated") for line in lines), lines
        # Online once, never offline on the way: the rotation was make-before-break.
        assert [line for line in lines if line.startswith("online as")] == [
            f"online as {owner.jid}/short"
        ], lines
        assert not [line for line in lines if "offline" in line or "lost" in line], lines
        second = certificate_files(state)
        assert second.certificate != first.certificate
        devices = await asyncio.to_thread(world.devices, owner)
        assert devices["short"]["online"] is True
        assert await refused(world, first, "short")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert lines[-1] == "stopped", lines


def test_a_running_agent_that_is_revoked_stops_for_good_with_the_reason(
    world: World, tmp_path: Path
) -> None:
    """An admin revokes a device while ``device-agent run`` keeps it online: its session
    closes, and the agent stops for good saying why, instead of retrying a refused login for
    ever. ejabberd ends the session with a plain ``<conflict/>`` and then refuses the
    certificate without a reason: the agent asks server-ext how it stands (docs/protocol.md,
    9.7)."""
    owner = world.account("stop")
    world.login(owner)
    state = tmp_path / "bot"
    jid = enroll_by_qr(world, owner, "bot", state)
    agent = Agent("device-agent", "--state-dir", state, "run")
    try:
        agent.wait_for(f"online as {jid}")
        world.admin("devices", "revoke", "bot", "--jid", owner.jid, "--reason", "lost in the field")
        status, _, reports = agent.finish(90)
    finally:
        agent.stop()
    assert status == 1, reports
    refusal = next(line for line in reports.splitlines() if "refused:" in line)
    assert "was revoked" in refusal and "lost in the field" in refusal, reports
    assert "Traceback" not in reports
    record = json.loads(cli("device-agent", "--state-dir", state, "status", "--json").stdout)
    assert record["state"] == "revoked", record


# -- LAN pairing with the label's code --------------------------------------------------------


def make_label(state: Path, resource: str, name: str) -> str:
    """``device-agent label``: the setup code printed on the device."""
    done = cli(
        "device-agent", "--state-dir", state, "label", "--resource", resource, "--name", name,
        "--json",
    )  # fmt: skip
    code = json.loads(done.stdout)["code"]
    assert isinstance(code, str)
    return code


def lan_pair(
    world: World, owner: Owner, state: Path, code: str, *, advertise: bool, mode: str
) -> str:
    """Both ends of LAN pairing as processes; returns the report of the owner's side."""
    device_args = ["device-agent", "--state-dir", state, "pair", "--timeout", "60", *INTERFACE]
    owner_args = ["--code", code, "--mode", mode, "--timeout", "60", *INTERFACE, "--json"]
    if advertise:  # the device advertises itself, `pairing add` finds it
        device = Agent(*device_args, "--advertise")
        user = Agent("pairing", "add", *owner_args, env=owner.env)
    else:  # the owner opens a window, the device finds it
        user = Agent("pairing", "listen", *owner_args, env=owner.env)
        device = Agent(*device_args)
    try:
        status, _, err = device.finish(90)
        assert status == 0, err
        ustatus, uout, uerr = user.finish(90)
        assert ustatus == 0, uerr
    finally:
        device.stop()
        user.stop()
    for step in ("code verified", "logged in with EXTERNAL"):
        assert step in err, err
    return uout


async def revoked_while_running(world: World, owner: Owner, agent: Agent, name: str) -> None:
    """The owner revokes ``name`` (``pairing devices revoke``) while ``agent`` (its
    ``device-agent run``) is online: the agent sees the close within the bound and never
    comes online again."""
    await asyncio.to_thread(world.pairing, owner, "devices", "revoke", name)
    if world.kind == "prosody":
        # Our module closes the stream with <reset/> and the project's <revoked/>: the agent
        # stops for good.
        line = agent.wait_for("refused:", timeout=10)
    else:
        # ejabberd's kick_session says <conflict/> (no typed condition can be added): the
        # agent reconnects and is refused at SASL from then on.
        line = agent.wait_for("connection lost", timeout=10)
    within_bound(
        world, owner.jid, name, agent.arrived[line],
        "pairing devices revoke (the owner), seen by device-agent run",
    )  # fmt: skip
    if world.kind == "prosody":
        status, _, report = agent.finish(30)
        assert status != 0, report
    else:
        agent.wait_for("refused:", timeout=20)
    assert "online as" not in "".join(agent.seen).split(line)[-1]
    assert world.devices(owner)[name]["online"] is False


async def test_done_when_a_bot_by_qr_and_a_sensor_by_label_are_seen_online_and_one_revoked(
    world: World, tmp_path: Path
) -> None:
    """Issue 11's "Done when", on ejabberd and on Prosody, every step a real CLI."""
    owner = world.account("person")
    world.login(owner)
    bot_state = tmp_path / "bot"
    bot_jid = enroll_by_qr(world, owner, "bot", bot_state)
    sensor_state = tmp_path / "sensor"
    code = make_label(sensor_state, "sensor", "Kitchen sensor")
    (row,) = json.loads(lan_pair(world, owner, sensor_state, code, advertise=False, mode="token"))
    sensor_jid = f"{owner.jid}/sensor"
    assert row["ok"] is True and row["jid"] == sensor_jid and row["name"] == "Kitchen sensor"
    assert code.replace("-", "") not in (sensor_state / "setup.json").read_text()
    sensor = certificate_files(sensor_state)

    bot = Agent("device-agent", "--state-dir", bot_state, "run")
    agent = Agent("device-agent", "--state-dir", sensor_state, "run")
    try:
        bot.wait_for(f"online as {bot_jid}")
        agent.wait_for(f"online as {sensor_jid}")
        listed = world.devices(owner)
        assert (listed["bot"]["online"], listed["Kitchen sensor"]["online"]) == (True, True)
        await revoked_while_running(world, owner, agent, "Kitchen sensor")
        # The bot is untouched: still online, its session never dropped.
        listed = world.devices(owner)
        assert listed["bot"]["online"] is True and listed["bot"]["state"] == "active"
        assert listed["Kitchen sensor"]["online"] is False
        assert listed["Kitchen sensor"]["state"] == "revoked"
        assert bot.process.poll() is None
        assert not [line for line in bot.pending() if "connection lost" in line]
    finally:
        agent.stop()
        bot.stop()
    assert await refused(world, sensor, "sensor")


@pytest.mark.parametrize(
    ("advertise", "mode"),
    [(True, "token"), (False, "xep0257")],
    # token: the device gets a v2 URI (HTTPS enrollment); xep0257: the owner's CLI registers
    # the device's certificate through the component. (The window with a token is the "Done
    # when" test above.)
    ids=["device-advertises", "window-registers-the-certificate"],
)
async def test_a_sensor_paired_by_its_label_logs_in_and_is_revoked_by_its_owner(
    world: World, tmp_path: Path, advertise: bool, mode: str
) -> None:
    owner = world.account("lan")
    world.login(owner)
    state = tmp_path / "sensor"
    code = make_label(state, "sensor", "Kitchen sensor")
    (row,) = json.loads(lan_pair(world, owner, state, code, advertise=advertise, mode=mode))
    jid = f"{owner.jid}/sensor"
    assert row["ok"] is True and row["jid"] == jid and row["name"] == "Kitchen sensor"
    device = certificate_files(state)
    agent = Agent("device-agent", "--state-dir", state, "run")
    try:
        agent.wait_for(f"online as {jid}")
        assert world.devices(owner)["Kitchen sensor"]["online"] is True
        await revoked_while_running(world, owner, agent, "Kitchen sensor")
    finally:
        agent.stop()
    assert await refused(world, device, "sensor")
    assert world.devices(owner)["Kitchen sensor"]["state"] == "revoked"


# -- manual registration through the component ------------------------------------------------


async def test_a_device_registered_by_hand_logs_in_and_is_revoked_by_an_adhoc_command(
    world: World, tmp_path: Path
) -> None:
    """``device-agent init`` + ``pairing certs add`` (the component), then any XEP-0050
    client revokes it with the component's command."""
    owner = world.account("manual")
    world.login(owner)
    state = tmp_path / "thermo"
    jid = f"{owner.jid}/thermo"
    cli(
        "device-agent", "--state-dir", state, "init", "--jid", jid,
        "--server", f"{LOOPBACK}:{world.c2s_port}", "--pin", world.stock_pin,
    )  # fmt: skip
    world.pairing(owner, "certs", "add", "thermo", state / "device.crt", "--no-cert-management")
    done = cli("device-agent", "--state-dir", state, "login")
    assert f"logged in as {jid}" in done.stdout, done.stdout

    thermo = await device_agent.connect(state)
    device = certificate_files(state)
    # Another account sees none of it and cannot revoke it.
    stranger = world.account("stranger")
    world.login(stranger)
    assert "thermo" not in world.devices(stranger)
    denied = world.pairing(stranger, "devices", "revoke", "thermo", ok=False)
    assert denied.returncode != 0 and "Traceback" not in denied.stderr
    assert thermo.is_connected()

    # The owner with a plain XMPP client (password, XEP-0050) runs the component's command.
    user, _ = await password_login(
        world.c2s_port, world.server_cert, f"{owner.jid}/phone", plugins=("xep_0030", "xep_0050")
    )
    try:
        commands = await user.plugin["xep_0030"].get_items(jid=COMPONENT, node=COMMANDS)
        nodes = {item[1] for item in commands["disco_items"]["items"]}
        assert NODE_REVOKE in nodes, nodes
        await revoked_within_bound(
            world,
            thermo,
            owner.jid,
            "thermo",
            lambda: revoke_with_adhoc(user, "thermo"),
            "the component's ad-hoc command",
        )
    finally:
        await logout(user)
    assert await refused(world, device, "thermo")
    failed = cli("device-agent", "--state-dir", state, "login", ok=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr


# -- renewal of an expired certificate over HTTPS ---------------------------------------------


async def test_an_expired_device_renews_over_https_and_logs_in(
    world: World, tmp_path: Path
) -> None:
    owner = world.account("renew")
    jid = JID.parse(f"{owner.jid}/meter")
    # Enrolled a year ago over HTTPS, off since its certificate expired ten days ago.
    made_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    key = generate_key()
    cert = build_device_certificate(key, jid, valid_for=dt.timedelta(days=30), now=made_at)
    with world.registry(clock=lambda: made_at + dt.timedelta(hours=1)) as registry:
        registry.accounts.ensure(jid.bare, actor="test")
        registry.devices.add(
            jid.bare, "meter", PeerCertificate.from_x509(cert), no_cert_management=True,
            added_by="test", added_via="token",
        )  # fmt: skip
    state = tmp_path / "meter"
    KeyStore(state).install(key, cert)
    ServerSettings(
        LOOPBACK, world.c2s_port, world.stock_pin, str(jid), "meter",
        https_host=LOOPBACK, https_port=world.https_port, https_pin=world.server_ext_pin,
    ).save(state)  # fmt: skip
    expired = certificate_files(state)
    assert await refused(world, expired, "meter")

    agent = Agent("device-agent", "--state-dir", state, "run")
    try:
        agent.wait_for("renewed the certificate")
        agent.wait_for(f"online as {jid}")
    finally:
        agent.stop()
    renewed = certificate_files(state)
    with world.registry() as registry:
        found = registry.devices.by_fingerprint(
            PeerCertificate.from_x509(renewed.certificate).fingerprint
        )
        assert found is not None and found.added_via == "renewal"
    bot = await device_agent.connect(state)
    await logout(bot)


# -- while server-ext serve is down --------------------------------------------------------------


async def test_a_revocation_while_serve_is_down_closes_the_session_and_refuses_the_device(
    world: World, tmp_path: Path
) -> None:
    """``server-ext devices revoke`` and ``user delete`` with serve stopped (an upgrade, a
    crash): the registry says revoked, so the stock server must close the device's session
    and refuse it now, not when serve starts again (ejabberd would otherwise keep it in its
    trust file)."""
    owner = world.account("down")
    world.login(owner)
    state = tmp_path / "bot"
    enroll_by_qr(world, owner, "bot", state)
    device = certificate_files(state)
    other_state = tmp_path / "other"
    enroll_by_qr(world, owner, "other", other_state)
    bot = await device_agent.connect(state)
    other = await device_agent.connect(other_state)
    answers: list[subprocess.CompletedProcess[str]] = []

    async def revoke() -> None:
        answers.append(
            await asyncio.to_thread(
                world.admin, "devices", "revoke", "bot", "--jid", owner.jid, "--json"
            )
        )

    with world.serve_stopped():
        await revoked_within_bound(
            world, bot, owner.jid, "bot", revoke, "server-ext devices revoke while serve is down"
        )
        record = json.loads(answers[0].stdout)
        assert (record["server_running"], record["sessions_closed"]) == (False, 1), record
        assert await refused(world, device, "bot")
        assert other.is_connected()  # only the revoked device was cut off
        if world.kind == "ejabberd":  # and the others keep logging in
            again = await device_agent.connect(other_state)  # (replaces `other`'s session)
            other = again
        # (Prosody refuses every EXTERNAL while serve is down: its module asks serve.)

        # A certificate registered by hand meanwhile is trusted at once on ejabberd.
        thermo = self_signed_device(tmp_path / "thermo", f"{owner.jid}/thermo", name="thermo")
        world.admin("certs", "add", "thermo", thermo.cert, "--user", owner.user)
        if world.kind == "ejabberd":
            client, _ = await certificate_login(
                world.c2s_port, world.server_cert, f"{owner.jid}/thermo", thermo
            )
            await logout(client)

        # The operator deletes the account meanwhile: its other device is cut off too.
        gone = disconnection(other)
        deleted = json.loads(world.admin("user", "delete", owner.jid, "--yes", "--json").stdout)
        assert deleted["certificates_revoked"] >= 1
        await asyncio.wait_for(gone.wait(), 5)
        other.abort()
    for name, folder in (("bot", state), ("other", other_state)):
        assert await refused(world, certificate_files(folder), name)


# -- two ejabberd nodes clustered -------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[World]:
    """Two clustered ejabberd nodes, server-ext serving both ([stock.ejabberd] api lists
    each node's mod_http_api: the configuration, and so the trust file, is per node)."""
    try:
        with private_network(), stock_world("ejabberd", tmp_path / "cluster", nodes=2) as made:
            yield made
    except NamespaceUnavailable as exc:
        pytest.fail(f"the stock flows need a private network namespace: {exc}")


async def test_a_device_enrolled_once_logs_in_on_either_node_and_is_revoked_on_both(
    cluster: World, tmp_path: Path
) -> None:
    world = cluster
    first, second = world.nodes
    assert first.node in second.ctl("list_cluster")
    owner = world.account("fleet")
    world.login(owner)
    state = tmp_path / "bot"
    jid = enroll_by_qr(world, owner, "bot", state)  # logs in on the first node
    device = certificate_files(state)
    for port in world.c2s_ports:
        client, bound = await certificate_login(port, world.server_cert, jid, device)
        assert str(bound) == jid
        await logout(client)
    # A session held on the second node; the operator revokes the device.
    held, _ = await certificate_login(world.c2s_ports[1], world.server_cert, jid, device)
    await revoked_within_bound(
        world,
        held,
        owner.jid,
        "bot",
        lambda: asyncio.to_thread(world.admin, "devices", "revoke", "bot", "--jid", owner.jid),
        "cluster: server-ext devices revoke, session on the other node",
    )
    for port in world.c2s_ports:  # refused at SASL on each node: gone from its trust file
        attempt = await raw_external(port, world.server_cert, device, resource="bot")
        assert b"<not-authorized/>" in attempt.sasl, attempt.sasl
        assert b"self signed certificate" in attempt.sasl, attempt.sasl
        await close(attempt)
