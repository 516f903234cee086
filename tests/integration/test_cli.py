"""The three CLIs as a person uses them: real processes, a real server, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_support import free_port, init_server, run


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
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(
        "Error: authentication refused: not-authorized "
        "(this device was revoked: by alice@localhost/"
    )

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
        "device.revoked",
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
    assert result.returncode == 3  # issue 10: "server unreachable" has its own status
    assert "127.0.0.1" in result.stderr
    assert "is not running or not reachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_errors_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    data = str(tmp_path / "server")
    missing = run("device-agent", "--state-dir", str(tmp_path / "nothing"), "show", ok=False)
    assert missing.returncode == 1
    assert "device-agent init" in missing.stderr
    init_server(data)
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


def test_a_rotation_margin_at_or_above_the_lifetime_is_refused(tmp_path: Path) -> None:
    """It would rotate without pause (hundreds of times a minute): one line, non-zero exit."""
    state = tmp_path / "bot"
    run(
        "device-agent",
        "--state-dir",
        str(state),
        "init",
        "--jid",
        "alice@localhost/bot",
        "--valid-days",
        "1",
    )
    settings = {
        "host": "127.0.0.1",
        "port": free_port(),
        "fingerprint": "ab" * 32,
        "jid": "alice@localhost/bot",
    }
    (state / "server.json").write_text(json.dumps(settings))
    for days in ("1", "400", "0", "-2"):
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "device-agent"),
                "--state-dir",
                str(state),
                "run",
                "--rotate-before-days",
                days,
            ],
            capture_output=True,
            text=True,
            timeout=20,  # without the check it would run (and retry) until killed
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "--rotate-before-days" in line and "Traceback" not in line
        if days in ("1", "400"):
            assert "valid for only 1 day" in line
    assert not (state / "status.json").exists()  # it never started


@pytest.mark.parametrize("tool", ["server-ext", "pairing", "device-agent"])
def test_help_explains_the_tool(tool: str) -> None:
    out = run(tool, "--help").stdout
    assert "Usage:" in out
    assert "certificate" in out.lower()


def test_listings_have_json(tmp_path: Path) -> None:
    data = str(tmp_path / "server")
    init_server(data)
    assert json.loads(run("server-ext", "--data-dir", data, "user", "list", "--json").stdout) == []
    assert json.loads(run("server-ext", "--data-dir", data, "certs", "list", "--json").stdout) == []
    assert json.loads(run("server-ext", "--data-dir", data, "audit", "--json").stdout) == []


def test_qr_pairing_with_the_clis_and_the_example_bot(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """The README walkthrough: a QR code from the user's CLI, scanned by the device agent."""
    _, port, pin = served
    pw = tmp_path / "pw"
    png = tmp_path / "qr.png"
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
    shown = run(*user, "token", "--resource", "echo", "--name", "Echo bot", "--png", str(png))
    assert "XMPP-DP:1/" in shown.stdout
    assert png.stat().st_size > 0
    listed = json.loads(run(*user, "tokens", "list", "--json").stdout)
    assert [t["jid"] for t in listed] == ["alice@localhost/echo"]

    state = tmp_path / "bot"
    out = run("device-agent", "--state-dir", str(state), "enroll", "--qr-image", str(png))
    assert "logs in as alice@localhost/echo" in out.stdout
    status = json.loads(run("device-agent", "--state-dir", str(state), "status", "--json").stdout)
    assert status["state"] == "enrolled"
    assert status["server"] == f"127.0.0.1:{port}"
    assert (
        "logged in as alice@localhost/echo"
        in run("device-agent", "--state-dir", str(state), "login").stdout
    )
    again = run(
        "device-agent",
        "--state-dir",
        str(tmp_path / "other"),
        "enroll",
        "--qr-image",
        str(png),
        ok=False,
    )
    assert again.returncode == 1
    assert "token-used" in again.stderr and "Traceback" not in again.stderr
    assert json.loads(run(*user, "tokens", "list", "--json").stdout) == []

    bot = subprocess.Popen(
        [sys.executable, str(Path(__file__).parents[2] / "examples" / "echo_bot.py"), str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert bot.stdout is not None
        assert "online as alice@localhost/echo" in bot.stdout.readline()
        reply = subprocess.run(
            [sys.executable, "-c", ECHO_CHECK, str(port), pin, str(pw), "echo"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reply.stdout.strip() == "echo: ping", reply.stderr
    finally:
        bot.terminate()
        bot.wait(timeout=10)


def test_unreadable_qr_image_is_a_clear_error(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (200, 200), 255).save(blank)
    result = run(
        "device-agent",
        "--state-dir",
        str(tmp_path / "d"),
        "enroll",
        "--qr-image",
        str(blank),
        ok=False,
    )
    assert result.returncode == 1
    assert "no readable QR code" in result.stderr
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    result = run(
        "device-agent",
        "--state-dir",
        str(tmp_path / "d"),
        "enroll",
        "--qr-image",
        str(garbage),
        ok=False,
    )
    assert "not an image" in result.stderr
    assert not (tmp_path / "d").exists()


ECHO_CHECK = """
import asyncio, sys
from pathlib import Path
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, logout, make_client

async def main():
    port, pin, pw = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]).read_text().strip()
    client = make_client("alice@localhost/phone", server=ServerAddress("127.0.0.1", port),
                         trust=TrustAnchor(fingerprint=pin), password=pw)
    await login(client)
    got = asyncio.get_running_loop().create_future()
    client.add_event_handler("message", lambda m: got.done() or got.set_result(m["body"]))
    client.send_message(mto=f"alice@localhost/{sys.argv[4]}", mbody="ping", mtype="chat")
    print(await asyncio.wait_for(got, 10))
    await logout(client)

asyncio.run(main())
"""


def test_every_state_changing_device_agent_command_can_answer_in_json(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """init, enroll, renew, export and reset with --json: one JSON object on stdout and
    nothing else there (progress goes to stderr), as the other two CLIs do."""
    data, port, _ = served

    def agent(state: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
        done = run("device-agent", "--state-dir", str(state), *args, "--json", env=env)
        record = json.loads(done.stdout)  # the whole of stdout is one object
        assert isinstance(record, dict)
        return record

    manual = tmp_path / "manual"
    made = agent(manual, "init", "--jid", "alice@localhost/manual")
    assert made["jid"] == "alice@localhost/manual" and made["server"] is None
    assert made["register"] == f"pairing certs add manual {manual / 'device.crt'}"

    token = run(
        "server-ext", "--data-dir", str(data), "token", "create", "--jid", "alice@localhost",
        "--resource", "bot", "--connect", f"127.0.0.1:{port}", "--json",
    )  # fmt: skip
    state = tmp_path / "bot"
    enrolled = agent(state, "enroll", "--uri", json.loads(token.stdout)["uri"])
    assert enrolled["jid"] == "alice@localhost/bot" and len(str(enrolled["sha256"])) == 64
    renewed = agent(state, "renew")
    assert renewed["jid"] == "alice@localhost/bot" and renewed["sha256"] != enrolled["sha256"]
    p12 = tmp_path / "bot.p12"
    exported = agent(
        state, "export", "--pkcs12", str(p12),
        env={"DEVICE_AGENT_EXPORT_PASSWORD": "export pass"},
    )  # fmt: skip
    assert exported == {"jid": "alice@localhost/bot", "file": str(p12), "sha256": renewed["sha256"]}
    assert agent(state, "reset", "--yes") == {"state_dir": str(state), "wiped": True}
    assert not (state / "device.key").exists()
