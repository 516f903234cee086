"""The three CLIs as a person uses them: real processes, a real server, real files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    *args: str, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    if ok and result.returncode != 0:
        raise AssertionError(f"{args} failed: {result.stdout}{result.stderr}")
    return result


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    data = tmp_path / "server"
    password = tmp_path / "pw"
    password.write_text("s3cret pass\n")
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
    fp = run("server-ext", "--data-dir", str(data), "fingerprint", "--json")
    pin = json.loads(fp.stdout)["sha256"]
    port = free_port()
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert banner.startswith(f"listening on 127.0.0.1:{port}"), banner
    try:
        yield data, port, pin
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_manual_enrollment_login_and_revocation(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    data, port, pin = served
    state = tmp_path / "device"
    pw = tmp_path / "pw"
    out = run("device-agent", "--state-dir", str(state), "init", "--jid", "alice@localhost/bot")
    assert "SHA-256" in out.stdout
    assert (state / "device.key").stat().st_mode & 0o777 == 0o600
    user = [
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "--password-file",
        str(pw),
    ]
    run(*user, "certs", "add", "bot", str(state / "device.crt"), "--no-cert-management")
    listed = json.loads(run(*user, "certs", "list", "--json").stdout)
    assert [c["name"] for c in listed] == ["bot"]
    assert listed[0]["jids"] == ["alice@localhost/bot"]

    device = [
        "device-agent",
        "--state-dir",
        str(state),
        "login",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
    ]
    assert "logged in as alice@localhost/bot" in run(*device).stdout

    run(*user, "certs", "revoke", "bot")
    refused = run(*device, ok=False)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "Error: authentication refused: not-authorized (this certificate was revoked)"
    ]

    certs = json.loads(run("server-ext", "--data-dir", str(data), "certs", "list", "--json").stdout)
    assert certs[0]["state"] == "revoked"
    assert certs[0]["last_login_address"] == "127.0.0.1"
    shown = json.loads(
        run(
            "server-ext",
            "--data-dir",
            str(data),
            "certs",
            "show",
            certs[0]["fingerprint"][:12],
            "--json",
        ).stdout
    )
    assert shown["name"] == "bot" and shown["no_cert_management"] is True
    events = [
        e["event"]
        for e in json.loads(run("server-ext", "--data-dir", str(data), "audit", "--json").stdout)
    ]
    for expected in (
        "account.created",
        "cert.added",
        "login.external",
        "cert.revoked",
        "login.failed",
    ):
        assert expected in events


def test_wrong_pin_is_a_clear_error(served: tuple[Path, int, str], tmp_path: Path) -> None:
    _, port, _ = served
    pw = tmp_path / "pw"
    result = run(
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        "ab" * 32,
        "--password-file",
        str(pw),
        "certs",
        "list",
        ok=False,
    )
    assert result.returncode == 1
    assert "not the pinned one" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    result = run(
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{free_port()}",
        "--pin",
        "ab" * 32,
        "--password-file",
        str(pw),
        "certs",
        "list",
        ok=False,
    )
    assert result.returncode == 1
    assert "127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


def test_errors_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    data = str(tmp_path / "server")
    missing = run("device-agent", "--state-dir", str(tmp_path / "nothing"), "show", ok=False)
    assert missing.returncode == 1
    assert "device-agent init" in missing.stderr
    bad = run("server-ext", "--data-dir", data, "user", "add", "not a jid!", ok=False)
    assert bad.returncode == 2
    nopw = run("server-ext", "--data-dir", data, "user", "add", "bob", ok=False)
    assert nopw.returncode == 1
    assert "--password-file" in nopw.stderr
    unknown = run("server-ext", "--data-dir", data, "certs", "show", "deadbeefdead", ok=False)
    assert unknown.returncode == 1
    assert "no certificate" in unknown.stderr
    for result in (missing, bad, nopw, unknown):
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("tool", ["server-ext", "pairing", "device-agent"])
def test_help_explains_the_tool(tool: str) -> None:
    out = run(tool, "--help").stdout
    assert "Usage:" in out
    assert "certificate" in out.lower()


def test_listings_have_json(tmp_path: Path) -> None:
    data = str(tmp_path / "server")
    assert json.loads(run("server-ext", "--data-dir", data, "user", "list", "--json").stdout) == []
    assert json.loads(run("server-ext", "--data-dir", data, "certs", "list", "--json").stdout) == []
    assert json.loads(run("server-ext", "--data-dir", data, "audit", "--json").stdout) == []
