"""A device never bricks itself: SIGKILL the agent or the server at random moments (issue 8).

Real processes (``device-agent run``, ``server-ext serve``, a key-installing loop), real
sockets and real SQLite. Each kill lands at a random moment; after each one the device must
log in, and every enrollment the server confirmed must be there. ``CRASH_ITERATIONS`` raises
the number of kills (the default keeps each test well under a minute); run many with
``CRASH_ITERATIONS=300 pytest --timeout=0 tests/integration/test_crash_safety.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_agent import runtime
from device_agent.enrollment import SERVER_FILE, EnrollmentError, enroll
from device_agent.keystore import KeyStore
from pairing.protocol.identity import generate_key, private_key_pem
from pairing.protocol.jid import JID
from pairing.protocol.uri import EnrollmentURI
from pairing.xmpp.connection import logout
from server_ext.admin.token_issuer import issue_token
from server_ext.model import CertState
from server_ext.policy.tokens import TokenRules
from server_ext.storage.registry import Registry
from tests.integration.cli_support import BIN, free_port, run
from tests.integration.conftest import ServerFactory

BOT = JID.parse("alice@localhost/bot")
ITERATIONS = int(os.environ.get("CRASH_ITERATIONS", "0")) or None

# Installs new identities back to back, as fast as it can: every moment is inside an install.
INSTALL_LOOP = """
import sys
import time
from pathlib import Path
from device_agent.keystore import KeyStore
store = KeyStore(Path(sys.argv[1]))
print("ready", flush=True)
while True:
    store.install(*store.next_identity())
"""


def _kill(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _kill_installs(state: Path, times: int, seed: int, *, check: bool = True) -> list[str]:
    """Kill the install loop ``times`` times; returns the fingerprint loaded after each kill."""
    rng = random.Random(seed)
    seen = []
    for _ in range(times):
        proc = subprocess.Popen(
            [sys.executable, "-c", INSTALL_LOOP, str(state)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # Let it run through a few installs, then kill it somewhere inside one.
        proc.stdout.close()
        time.sleep(rng.uniform(0.01, 0.12))
        _kill(proc)
        if check:
            seen.append(KeyStore(state).load().fingerprint)  # raises on a key/cert mismatch
    return seen


def test_kill_9_during_install_leaves_a_key_and_its_own_certificate(tmp_path: Path) -> None:
    state = tmp_path / "bot"
    KeyStore(state).create(BOT)
    times = ITERATIONS or 30
    seen = _kill_installs(state, times, seed=8)
    # The loop did replace the identity between kills: the test exercised installs.
    assert len(set(seen)) > times // 2


def test_reset_removes_every_leftover_of_a_crash(tmp_path: Path) -> None:
    """Temporary files may hold private keys: `device-agent reset` leaves none behind."""
    state = tmp_path / "bot"
    KeyStore(state).create(BOT)
    _kill_installs(state, 5, seed=9, check=False)
    # What a kill inside an atomic write leaves: a temporary file with a whole private key.
    (state / ".tmp-k2j4h1x0").write_bytes(private_key_pem(generate_key()))
    (state / ".tmp-k2j4h1x0").chmod(0o600)
    run("device-agent", "--state-dir", str(state), "reset", "--yes")
    assert sorted(p.name for p in state.iterdir()) == []


async def _online(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert proc.stderr is not None
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), 30)
        if not raw:
            raise AssertionError(f"the agent ended before it was online: {lines}")
        lines.append(raw.decode().rstrip())
        if "online as" in lines[-1]:
            return


@pytest.mark.timeout(180)
async def test_the_agent_killed_at_random_moments_of_rotation_always_logs_in_again(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # Rotations back to back: the server's once-an-hour rotation limit (tested in
    # test_device_revocation.py) is lifted so that the kills land in many rotations.
    xmpp_server = await make_server(rotation_interval=0.0)
    xmpp_server.add_user("alice")
    issued = issue_token(
        xmpp_server.registry,
        TokenRules(),
        account=BOT.bare,
        resource="bot",
        name=None,
        ttl=None,
        created_by="test",
    )
    uri = issued.uri(
        host=xmpp_server.host, port=xmpp_server.port, fingerprint=xmpp_server.fingerprint
    )
    state = tmp_path / "bot"
    await enroll(KeyStore(state), uri, valid_for=dt.timedelta(days=1))
    # Due 0.3 s after each renewal: the agent does little but rotate, so a kill at a random
    # moment lands in key generation, the XEP-0257 request, the install or the switch.
    margin = (dt.timedelta(days=1) - dt.timedelta(seconds=0.3)) / dt.timedelta(days=1)
    rng = random.Random(8)
    rotations = 0
    fingerprints = set()
    for _ in range(ITERATIONS or 20):
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "device-agent"),
            "--state-dir",
            str(state),
            "run",
            "--rotate-before-days",
            repr(margin),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        lines: list[str] = []
        await _online(proc, lines)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        _, rest = await proc.communicate()
        lines += rest.decode().splitlines()
        assert not [line for line in lines if "Traceback" in line or "belong" in line], lines
        rotations += sum("rotated the certificate" in line for line in lines)
        # The device logs in, with the old identity or the new one: never half of each.
        client = await runtime.connect(state)
        assert JID.parse(str(client.boundjid.full)) == BOT
        await logout(client)
        fingerprints.add(KeyStore(state).load().fingerprint)
    assert rotations > 0 and len(fingerprints) > 1  # the kills did interrupt rotations
    # The registry agrees: what the device holds is active, and nothing but its own chain is.
    current = xmpp_server.registry.devices.by_fingerprint(KeyStore(state).load().fingerprint)
    assert current is not None and current.state is CertState.ACTIVE
    active = [
        c
        for c in xmpp_server.registry.devices.certificates(BOT.bare)
        if c.state is CertState.ACTIVE
    ]
    assert len(active) <= 2  # the current one, and at most one successor it never used


def _start_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    log = data.parent / "server.log"
    banner = f"listening on 127.0.0.1:{port}".encode()
    before = log.read_bytes().count(banner) if log.exists() else 0
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [
                str(BIN / "server-ext"),
                "--data-dir",
                str(data),
                "serve",
                "--port",
                str(port),
                "--direct-tls-port",
                "0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    for _ in range(600):  # the banner says when it listens
        if log.read_bytes().count(banner) > before:
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"server-ext serve ended: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"server-ext serve did not start: {log.read_text()[-2000:]}")


def _check_registry(database: Path, stores: list[KeyStore]) -> None:
    """Each confirmed device is registered; each burned token has exactly one certificate."""
    conn = sqlite3.connect(database)
    try:
        redeemed = [
            fp
            for (fp,) in conn.execute(
                "SELECT redeemed_fingerprint FROM tokens WHERE state = 'redeemed'"
            )
        ]
        by_token = [
            fp
            for (fp,) in conn.execute(
                "SELECT fingerprint FROM certificates WHERE added_via = 'token'"
            )
        ]
    finally:
        conn.close()
    assert sorted(redeemed) == sorted(by_token)
    assert len(set(by_token)) == len(by_token)
    for store in stores:
        if (store.state_dir / SERVER_FILE).exists():  # the server confirmed this enrollment
            assert store.load().fingerprint in by_token


@pytest.mark.timeout(180)
async def test_a_server_killed_during_concurrent_enrollments_loses_no_device(
    tmp_path: Path,
) -> None:
    data = tmp_path / "server"
    password = tmp_path / "pw"
    password.write_text("s3cret pass\n")
    run("server-ext", "--data-dir", str(data), "init", "--domain", "localhost")
    run(
        "server-ext",
        "--data-dir",
        str(data),
        "user",
        "add",
        "alice",
        "--password-file",
        str(password),
    )
    pin = json.loads(run("server-ext", "--data-dir", str(data), "fingerprint", "--json").stdout)[
        "sha256"
    ]
    port = free_port()
    database = data / "registry.sqlite3"
    rng = random.Random(8)
    devices = 6
    rounds = ITERATIONS or 6
    stores: list[KeyStore] = []
    server = await asyncio.to_thread(_start_server, data, port)
    assert database.exists(), sorted(p.name for p in data.iterdir())
    try:
        for round_ in range(rounds):
            with Registry.open(database) as registry:
                uris = [
                    issue_token(
                        registry,
                        TokenRules(max_outstanding=devices),
                        account=BOT.bare,
                        resource=f"bot{round_}-{i}",
                        name=None,
                        ttl=None,
                        created_by="test",
                    ).uri(host="127.0.0.1", port=port, fingerprint=pin)
                    for i in range(devices)
                ]
            batch = [KeyStore(tmp_path / f"d{round_}-{i}") for i in range(devices)]
            stores += batch
            attempts = [
                asyncio.ensure_future(enroll(store, uri, timeout=5))
                for store, uri in zip(batch, uris, strict=True)
            ]
            # Kill it at a random point of the round: before anything, or just after the k-th
            # redemption of this round committed (while answers are on their way).
            await _redemptions(database, round_ * devices + rng.randint(0, devices))
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            await asyncio.to_thread(_kill, server)
            results = await asyncio.gather(*attempts, return_exceptions=True)
            assert all(isinstance(r, JID | EnrollmentError) for r in results), results
            server = await asyncio.to_thread(_start_server, data, port)
            _check_registry(database, stores)
            # Every device of the round finishes with the same QR code: none was bricked.
            for store, uri, result in zip(batch, uris, results, strict=True):
                if not isinstance(result, JID):
                    await _retry(store, uri)
            _check_registry(database, stores)
            assert all((s.state_dir / SERVER_FILE).exists() for s in stores)
    finally:
        await asyncio.to_thread(_kill, server)


async def _redemptions(database: Path, count: int) -> None:
    """Wait until ``count`` tokens in all are redeemed (or a while, if that never happens)."""
    for _ in range(400):
        conn = sqlite3.connect(database)
        try:
            (done,) = conn.execute(
                "SELECT count(*) FROM tokens WHERE state = 'redeemed'"
            ).fetchone()
        finally:
            conn.close()
        if done >= count:
            return
        await asyncio.sleep(0.005)


async def _retry(store: KeyStore, uri: EnrollmentURI) -> None:
    try:
        assert await enroll(store, uri, timeout=10) == uri.jid
    except EnrollmentError as exc:
        raise AssertionError(
            f"{store.state_dir.name} cannot finish its enrollment: {exc}"
        ) from None
