"""Admin revocation across processes: the CLI revokes, the running server cuts the device off."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.integration.cli_support import BIN, run


def enroll_device(data: Path, state: Path, resource: str = "bot") -> None:
    issued = json.loads(
        run(
            "server-ext",
            "--data-dir",
            str(data),
            "token",
            "create",
            "--jid",
            "alice",
            "--resource",
            resource,
            "--connect",
            f"127.0.0.1:{served_port(data)}",
            "--json",
        ).stdout
    )
    run("device-agent", "--state-dir", str(state), "enroll", "--uri", issued["uri"])


def served_port(data: Path) -> int:
    return int((data / "port").read_text())


def test_cli_revocation_closes_the_live_session_within_a_second(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    data, port, _ = served
    (data / "port").write_text(str(port))
    state = tmp_path / "bot"
    enroll_device(data, state)
    agent = subprocess.Popen(
        [str(BIN / "device-agent"), "--state-dir", str(state), "run"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert agent.stderr is not None
    assert "online as alice@localhost/bot" in agent.stderr.readline()
    listed = json.loads(
        run("server-ext", "--data-dir", str(data), "devices", "list", "--json").stdout
    )
    assert [(d["name"], d["online"], d["online_as"]) for d in listed] == [
        ("bot", True, ["alice@localhost/bot"])
    ]
    before = len(json.loads(run("server-ext", "--data-dir", str(data), "audit", "--json").stdout))

    started = time.monotonic()
    out = run(
        "server-ext",
        "--data-dir",
        str(data),
        "devices",
        "revoke",
        "alice@localhost/bot",
        "--reason",
        "laptop stolen",
    )
    line = agent.stderr.readline()
    elapsed = time.monotonic() - started
    assert "closed 1 live session(s)" in out.stdout
    assert "refused" in line and "laptop stolen" in line, line
    assert elapsed < 1.0, f"the device was cut off after {elapsed:.2f} s"

    # The agent stops by itself instead of hammering the server ...
    agent.wait(timeout=10)
    assert agent.returncode == 1
    time.sleep(2)
    events = json.loads(run("server-ext", "--data-dir", str(data), "audit", "--json").stdout)
    assert [e["event"] for e in events[before:]] == ["device.revoked"]  # no further login attempt
    # ... remembers why, and a restart does not try either.
    status = json.loads(run("device-agent", "--state-dir", str(state), "status", "--json").stdout)
    assert status["state"] == "revoked" and "laptop stolen" in status["reason"]
    again = run("device-agent", "--state-dir", str(state), "run", ok=False)
    assert again.returncode == 1 and "revoked" in again.stderr
    events = json.loads(run("server-ext", "--data-dir", str(data), "audit", "--json").stdout)
    assert [e["event"] for e in events[before:]] == ["device.revoked"]
    # A login by hand is refused with the reason.
    refused = run("device-agent", "--state-dir", str(state), "login", ok=False)
    assert "revoked: laptop stolen" in refused.stderr
    shown = json.loads(
        run("server-ext", "--data-dir", str(data), "devices", "show", "1", "--json").stdout
    )
    assert shown["state"] == "revoked" and shown["revoked_reason"] == "laptop stolen"
    device_events = json.loads(
        run("server-ext", "--data-dir", str(data), "audit", "--device", "1", "--json").stdout
    )
    assert [e["event"] for e in device_events] == [
        "cert.added",
        "token.redeemed",
        "login.external",  # the enrollment's own first login
        "login.external",  # device-agent run
        "device.revoked",
        "login.failed",  # the login by hand above
    ]
    # Reset wipes the key so the device can be enrolled afresh.
    run("device-agent", "--state-dir", str(state), "reset", "--yes")
    assert not (state / "device.key").exists()
    enroll_device(data, state, resource="bot2")
    assert (
        "logged in as alice@localhost/bot2"
        in run("device-agent", "--state-dir", str(state), "login").stdout
    )


def test_disable_and_enable_from_the_cli(served: tuple[Path, int, str], tmp_path: Path) -> None:
    data, port, _ = served
    (data / "port").write_text(str(port))
    state = tmp_path / "bot"
    enroll_device(data, state)
    run("server-ext", "--data-dir", str(data), "devices", "disable", "1")
    assert run("device-agent", "--state-dir", str(state), "login", ok=False).returncode == 1
    run("server-ext", "--data-dir", str(data), "devices", "enable", "1")
    assert "logged in" in run("device-agent", "--state-dir", str(state), "login").stdout


def test_deleting_an_account_revokes_devices_and_cancels_tokens(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    data, port, _ = served
    (data / "port").write_text(str(port))
    enroll_device(data, tmp_path / "bot")
    run(
        "server-ext",
        "--data-dir",
        str(data),
        "token",
        "create",
        "--jid",
        "alice",
        "--resource",
        "later",
        "--json",
    )
    run("server-ext", "--data-dir", str(data), "user", "delete", "alice", "--yes")
    tokens = json.loads(
        run("server-ext", "--data-dir", str(data), "token", "list", "--all", "--json").stdout
    )
    assert {t["state"] for t in tokens} == {"redeemed", "cancelled"}
    devices = json.loads(
        run("server-ext", "--data-dir", str(data), "devices", "list", "--json").stdout
    )
    assert devices[0]["state"] == "revoked" and devices[0]["revoked_reason"] == "account deleted"
