"""The device's paths that dead-ended (issue 10), as a person uses them: real CLI processes
against a real server-ext process."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, pkcs12

import device_agent
from device_agent.keystore import KeyStore
from pairing.protocol.identity import certificate_der
from pairing.xmpp.connection import logout
from tests.integration.cli_support import BIN, run

BOT = "alice@localhost/bot"


class Agent:
    """``device-agent run`` as a long-running process; its stderr lines as they come."""

    def __init__(self, state: Path) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "device-agent"), "--state-dir", str(state), "run"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, text: str) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in {self.lines}")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        _, rest = self.proc.communicate(timeout=30)
        self.lines.extend(rest.splitlines(keepends=True))
        return self.proc.returncode


def status(state: Path) -> dict[str, object]:
    shown: dict[str, object] = json.loads(
        run("device-agent", "--state-dir", str(state), "status", "--json").stdout
    )
    return shown


def register_by_hand(served: tuple[Path, int, str], tmp_path: Path) -> Path:
    """The README's manual way: init with where to log in, the owner uploads the cert."""
    _, port, pin = served
    state = tmp_path / "bot"
    out = run(
        "device-agent",
        "--state-dir",
        str(state),
        "init",
        "--jid",
        BOT,
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
    ).stdout
    assert f"pairing certs add bot {state / 'device.crt'}" in out
    owner = [
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "--password-file",
        str(tmp_path / "pw"),
    ]
    run(*owner, "certs", "add", "bot", str(state / "device.crt"), "--no-cert-management")
    return state


def test_a_device_registered_by_hand_stays_online_with_run_and_connect(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    state = register_by_hand(served, tmp_path)
    agent = Agent(state)
    try:
        agent.wait_for(f"online as {BOT}")
        shown = status(state)
        assert shown["state"] == "online" and shown["pid"] == agent.proc.pid
    finally:
        code = agent.stop(signal.SIGTERM)
    assert code == 0, agent.lines
    assert "stopped" in agent.lines[-1] and not any("Traceback" in x for x in agent.lines)
    assert status(state)["state"] == "stopped"

    async def connect_once() -> str:
        bot = await device_agent.connect(state)
        bound = str(bot.boundjid)
        await logout(bot)
        return bound

    assert asyncio.run(connect_once()) == BOT


def test_status_says_stopped_once_the_agent_is_gone(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """It said "online" after the agent was killed: status.json alone cannot know."""
    state = register_by_hand(served, tmp_path)
    agent = Agent(state)
    agent.wait_for(f"online as {BOT}")
    agent.stop(signal.SIGKILL)  # no chance to write anything
    shown = status(state)
    assert shown["state"] == "stopped"
    assert "not running" in str(shown["reason"]) and "online" in str(shown["reason"])
    assert "pid" not in shown


def test_run_takes_the_server_for_an_identity_made_without_it(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    state = tmp_path / "bot"
    run("device-agent", "--state-dir", str(state), "init", "--jid", BOT)
    missing = run("device-agent", "--state-dir", str(state), "run", ok=False)
    assert missing.returncode == 1
    assert "--server HOST[:PORT] --pin SHA256" in missing.stderr
    half = run("device-agent", "--state-dir", str(state), "run", "--pin", pin, ok=False)
    assert half.returncode == 2 and "give both --server" in half.stderr
    bad = run(
        "device-agent",
        "--state-dir",
        str(state),
        "run",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        "nothex",
        ok=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert not (state / "server.json").exists()
    owner = [
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "--password-file",
        str(tmp_path / "pw"),
    ]
    run(*owner, "certs", "add", "bot", str(state / "device.crt"))
    proc = subprocess.Popen(
        [
            str(BIN / "device-agent"),
            "--state-dir",
            str(state),
            "run",
            "--server",
            f"127.0.0.1:{port}",
            "--pin",
            pin,
        ],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        assert any(f"online as {BOT}" in line for line in iter_until(proc, "online as"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    # Recorded: the next run needs no flags.
    assert json.loads((state / "server.json").read_text())["port"] == port


def iter_until(proc: subprocess.Popen[str], text: str) -> list[str]:
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            break
    return seen


def test_init_refuses_a_half_or_bad_server_before_making_anything(tmp_path: Path) -> None:
    state = tmp_path / "bot"
    for extra, hint in (
        (["--server", "127.0.0.1"], "give both --server"),
        (["--server", "127.0.0.1", "--pin", "ab" * 31], "--pin"),
        (["--server", "[::1", "--pin", "ab" * 32], "--server"),
    ):
        result = run(
            "device-agent", "--state-dir", str(state), "init", "--jid", BOT, *extra, ok=False
        )
        assert result.returncode == 2, result.stderr
        assert hint in result.stderr and "Traceback" not in result.stderr
        assert not KeyStore(state).exists()


def test_export_pkcs12_opens_with_the_password_and_holds_the_same_identity(
    tmp_path: Path,
) -> None:
    state = tmp_path / "bot"
    run("device-agent", "--state-dir", str(state), "init", "--jid", BOT)
    password = tmp_path / "p12-password"
    password.write_text("correct horse\n")
    target = tmp_path / "bot.p12"
    result = run(
        "device-agent",
        "--state-dir",
        str(state),
        "export",
        "--pkcs12",
        str(target),
        "--password-file",
        str(password),
    )
    assert "key" in result.stderr and "Warning" in result.stderr  # said before anything
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    store = KeyStore(state)
    identity = store.load()
    loaded = pkcs12.load_pkcs12(target.read_bytes(), b"correct horse")
    assert loaded.cert is not None and loaded.key is not None
    assert certificate_der(loaded.cert.certificate) == identity.certificate_der
    public = loaded.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    own = store.private_key().public_key()
    assert public == own.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert loaded.cert.friendly_name == BOT.encode()
    for wrong in (b"wrong", None):  # never readable without the password
        with pytest.raises(ValueError, match="Invalid password"):
            pkcs12.load_pkcs12(target.read_bytes(), wrong)

    again = run(
        "device-agent",
        "--state-dir",
        str(state),
        "export",
        "--pkcs12",
        str(target),
        "--password-file",
        str(password),
        ok=False,
    )
    assert again.returncode == 1 and "--force" in again.stderr
    # No password and no terminal to ask on: one line, nothing written.
    other = tmp_path / "other.p12"
    nopw = run(
        "device-agent", "--state-dir", str(state), "export", "--pkcs12", str(other), ok=False
    )
    assert nopw.returncode == 1 and "DEVICE_AGENT_EXPORT_PASSWORD" in nopw.stderr
    assert not other.exists() and "Traceback" not in nopw.stderr
    env = run(
        "device-agent",
        "--state-dir",
        str(state),
        "export",
        "--pkcs12",
        str(other),
        env={"DEVICE_AGENT_EXPORT_PASSWORD": "from the environment"},
    )
    assert env.returncode == 0
    assert pkcs12.load_pkcs12(other.read_bytes(), b"from the environment").key is not None
