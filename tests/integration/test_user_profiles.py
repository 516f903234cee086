"""`pairing login` once, then flag-free commands (issue 10, "Users set up once"): the real
`pairing` CLI as a process against a real `server-ext` process on loopback.

Every test keeps its profiles in its own XDG_CONFIG_HOME (the autouse ``private_config``
fixture in conftest.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import termios
from pathlib import Path

import pytest

from tests.integration.cli_support import BIN, free_port, run

PASSWORD = "s3cret pass"  # what the `served` fixture gives alice


def login(
    port: int, pin: str, pw: Path, *extra: str, jid: str = "alice@localhost"
) -> subprocess.CompletedProcess[str]:
    return run(
        "pairing",
        "login",
        "--jid",
        jid,
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "--password-file",
        str(pw),
        *extra,
    )


def server_certs(data: Path) -> list[dict[str, object]]:
    out = run("server-ext", "--data-dir", str(data), "certs", "list", "--json").stdout
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def profile_dir(config: Path, name: str = "default") -> Path:
    return config / "xmpp-device-pairing" / "profiles" / name


def test_login_once_then_commands_need_no_flags_and_no_password(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    data, port, pin = served
    made = json.loads(login(port, pin, tmp_path / "pw", "--json").stdout)
    assert made["name"] == "default" and made["jid"] == "alice@localhost"
    assert made["password_stored"] is False
    assert made["certificate_name"].startswith("pairing CLI on ")

    # The profile: 0700 directories, 0600 files, and the password in none of them.
    root = private_config / "xmpp-device-pairing"
    for directory in (root, root / "profiles", profile_dir(private_config)):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    files = sorted(p.name for p in profile_dir(private_config).iterdir())
    assert files == ["client.crt", "client.key", "profile.json"]
    for path in profile_dir(private_config).iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert PASSWORD.encode() not in path.read_bytes()
    saved = json.loads((profile_dir(private_config) / "profile.json").read_text())
    assert saved["fingerprint"] == made["fingerprint"] and "password" not in json.dumps(saved)

    # Its certificate is registered for the account, like a device's.
    (cli_cert,) = [c for c in server_certs(data) if c["name"] == made["certificate_name"]]
    assert cli_cert["state"] == "active"
    assert cli_cert["fingerprint"] == made["fingerprint"]

    # No connection flags, no password anywhere (stdin is not a terminal either).
    devices = json.loads(run("pairing", "devices", "list", "--json").stdout)
    assert [d["name"] for d in devices] == [made["certificate_name"]]
    grant = json.loads(run("pairing", "token", "--resource", "bot", "--ttl", "5m", "--json").stdout)
    assert grant["jid"] == "alice@localhost/bot"
    listed = json.loads(run("pairing", "profiles", "--json").stdout)
    assert [(p["name"], p["jid"]) for p in listed] == [("default", "alice@localhost")]

    # Those commands logged in with the CLI's certificate (there was no password to use).
    audit = json.loads(run("server-ext", "--data-dir", str(data), "audit", "--json").stdout)
    externals = [e for e in audit if e["event"] == "login.external"]
    assert len(externals) >= 3  # login's own check, devices list, token
    assert {e["subject"] for e in externals} == {made["fingerprint"]}


def test_logout_revokes_the_cli_certificate_and_deletes_the_profile(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    data, port, pin = served
    made = json.loads(login(port, pin, tmp_path / "pw", "--json").stdout)
    gone = json.loads(run("pairing", "logout", "--json").stdout)
    assert gone == {
        "profile": "default",
        "jid": "alice@localhost",
        "certificate_name": made["certificate_name"],
        "revoked": True,
        "deleted": True,
    }
    (cli_cert,) = [c for c in server_certs(data) if c["name"] == made["certificate_name"]]
    assert cli_cert["state"] == "revoked"
    assert not profile_dir(private_config).exists()
    assert list((private_config / "xmpp-device-pairing" / "profiles").iterdir()) == []
    after = run("pairing", "devices", "list", ok=False)
    assert after.returncode == 2
    assert after.stderr.strip().splitlines() == [
        "Error: not logged in: run `pairing login --jid you@example.org` once (or, without a "
        "profile, `pairing --jid you@example.org --password-file FILE COMMAND`)"
    ]
    # Logging in again works: the new certificate has a name of its own.
    again = json.loads(login(port, pin, tmp_path / "pw", "--json").stdout)
    assert again["certificate_name"] != made["certificate_name"]


def test_several_profiles_by_name(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    data, port, pin = served
    pw = tmp_path / "pw"
    run("server-ext", "--data-dir", str(data), "user", "add", "bob", "--password-file", str(pw))
    login(port, pin, pw)
    login(port, pin, pw, "--profile", "bob-work", jid="bob@localhost")
    run("pairing", "token", "--resource", "alicebot")
    run("pairing", "--profile", "bob-work", "token", "--resource", "bobbot")

    def tokens(*args: str, env: dict[str, str] | None = None) -> list[str]:
        out = run("pairing", *args, "tokens", "list", "--json", env=env).stdout
        return [t["jid"] for t in json.loads(out)]

    assert tokens() == ["alice@localhost/alicebot"]
    assert tokens("--profile", "bob-work") == ["bob@localhost/bobbot"]
    assert tokens(env={"PAIRING_PROFILE": "bob-work"}) == ["bob@localhost/bobbot"]
    # On the subcommand too, and there it wins over the environment.
    out = run(
        "pairing",
        "tokens",
        "list",
        "--profile",
        "default",
        "--json",
        env={"PAIRING_PROFILE": "bob-work"},
    ).stdout
    assert [t["jid"] for t in json.loads(out)] == ["alice@localhost/alicebot"]

    listed = json.loads(run("pairing", "profiles", "--json").stdout)
    assert [(p["name"], p["jid"]) for p in listed] == [
        ("bob-work", "bob@localhost"),
        ("default", "alice@localhost"),
    ]
    table = run("pairing", "profiles").stdout
    assert "bob-work" in table and "127.0.0.1:" in table

    missing = run("pairing", "--profile", "nope", "devices", "list", ok=False)
    assert missing.returncode == 2
    (line,) = missing.stderr.strip().splitlines()
    assert "no profile 'nope' (profiles here: bob-work, default)" in line
    bad = run("pairing", "--profile", "../etc", "devices", "list", ok=False)
    assert bad.returncode == 2 and "is not a profile name" in bad.stderr
    taken = run("pairing", "login", "--jid", "alice@localhost", "--profile", "bob-work", ok=False)
    assert taken.returncode == 2 and "profile 'bob-work' exists already" in taken.stderr


def test_explicit_options_override_the_profile(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    login(port, pin, tmp_path / "pw")
    dead = run("pairing", "--server", f"127.0.0.1:{free_port()}", "devices", "list", ok=False)
    assert dead.returncode == 3
    assert "is not running or not reachable" in dead.stderr
    wrong_pin = run("pairing", "--pin", "ab" * 32, "devices", "list", ok=False)
    assert wrong_pin.returncode == 1 and "not the pinned one" in wrong_pin.stderr
    other = run(
        "pairing", "--profile", "default", "--jid", "bob@localhost", "devices", "list", ok=False
    )
    assert other.returncode == 2
    assert "is not the account of profile 'default' (alice@localhost)" in other.stderr
    # An explicit --jid without --profile is a password login, as scripts did before.
    scripted = run(
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "devices",
        "list",
        "--json",
        env={"PAIRING_PASSWORD": PASSWORD},
    )
    assert len(json.loads(scripted.stdout)) == 1


def test_a_failed_login_leaves_no_profile_and_no_key(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    data, port, pin = served
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    failed = run(
        "pairing",
        "login",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "--password-file",
        str(wrong),
        ok=False,
    )
    assert failed.returncode == 1
    assert "authentication refused" in failed.stderr and "Traceback" not in failed.stderr
    profiles = private_config / "xmpp-device-pairing" / "profiles"
    assert list(profiles.iterdir()) == []  # no profile, no temporary directory with a key
    assert server_certs(data) == []


def test_a_key_others_can_read_is_refused(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    _, port, pin = served
    login(port, pin, tmp_path / "pw")
    key = profile_dir(private_config) / "client.key"
    key.chmod(0o644)
    refused = run("pairing", "devices", "list", ok=False)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "is readable by others (mode 0644)" in line and "chmod 600" in line


def test_a_profile_revoked_elsewhere_says_so_and_logout_still_cleans_up(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    _, port, pin = served
    made = json.loads(login(port, pin, tmp_path / "pw", "--json").stdout)
    # Revoked from another machine (here: a password session, as a script would).
    run(
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "devices",
        "revoke",
        made["certificate_name"],
        env={"PAIRING_PASSWORD": PASSWORD},
    )
    refused = run("pairing", "devices", "list", ok=False)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert f"the certificate of profile 'default' ({made['certificate_name']}) was revoked" in line
    assert "pairing logout" in line
    gone = json.loads(run("pairing", "logout", "--json").stdout)
    assert gone["revoked"] is False and gone["deleted"] is True
    assert not profile_dir(private_config).exists()


def test_logout_keeps_the_profile_while_the_server_is_unreachable(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    data, port, pin = served
    made = json.loads(login(port, pin, tmp_path / "pw", "--json").stdout)
    saved = profile_dir(private_config) / "profile.json"
    record = json.loads(saved.read_text())
    record["server"] = f"127.0.0.1:{free_port()}"
    saved.write_text(json.dumps(record))
    kept = run("pairing", "logout", ok=False)
    assert kept.returncode == 3
    assert profile_dir(private_config).exists()
    forgot = json.loads(run("pairing", "logout", "--forget", "--json").stdout)
    assert forgot["revoked"] is False and forgot["deleted"] is True
    assert not profile_dir(private_config).exists()
    (cli_cert,) = [c for c in server_certs(data) if c["name"] == made["certificate_name"]]
    assert cli_cert["state"] == "active"  # as --forget says: revoke it later


def test_login_needs_an_account() -> None:
    result = run("pairing", "login", ok=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: give your account: pairing login --jid you@example.org"
    ]


# --- help --------------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["login"],
    ["logout"],
    ["profiles"],
    ["token"],
    ["tokens"],
    ["tokens", "list"],
    ["tokens", "cancel"],
    ["devices"],
    ["devices", "list"],
    ["devices", "revoke"],
    ["certs"],
    ["certs", "list"],
    ["certs", "add"],
    ["certs", "disable"],
    ["certs", "revoke"],
    ["listen"],
    ["add"],
    ["kick"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pairing")
def test_help_always_works(command: list[str]) -> None:
    """No profile, no options, no environment: every --help still answers (it used to fail
    with "Missing option '--jid'" below the group)."""
    result = run("pairing", *command, "--help", ok=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: pairing")


def test_help_documents_every_environment_variable() -> None:
    top = run("pairing", "--help").stdout
    for name in (
        "PAIRING_PROFILE",
        "PAIRING_JID",
        "PAIRING_SERVER",
        "PAIRING_PIN",
        "PAIRING_CAFILE",
        "PAIRING_PASSWORD_FILE",
        "PAIRING_PASSWORD",
        "XDG_CONFIG_HOME",
    ):
        assert name in top, name
    assert "env var: PAIRING_JID" in top  # click's show_envvar, beside the option
    assert "3 the server is not running or not reachable" in top
    assert "env var: PAIRING_PROFILE" in run("pairing", "devices", "list", "--help").stdout


# --- the background: no password prompt that stops the job --------------------------------------


def run_in_background(command: list[str], *, timeout: float = 30) -> tuple[int, str]:
    """Run ``command`` as a job started with ``&`` by a shell with job control on a terminal
    of its own: the job keeps the terminal as stdin but is not its foreground process group,
    so a password prompt stops the job (SIGTTOU when it turns echo off, SIGTTIN when it reads;
    the shell's `wait` then returns 128 + the signal). Returns (exit status, stderr)."""
    primary, secondary = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    script = 'set -m; "$@" & wait $!; echo "exit=$?" >&2'
    proc = subprocess.Popen(
        ["sh", "-c", script, "sh", *command],
        stdin=secondary,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=take_terminal,  # the job needs a controlling terminal
    )
    os.close(secondary)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{command[0]} did not finish: stopped at a prompt in the background?")
    finally:
        os.close(primary)
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("exit="), stderr
    return int(lines[-1].removeprefix("exit=")), "\n".join(lines[:-1])


@pytest.mark.parametrize(
    "command",
    [["devices", "list"], ["listen", "--code", "314-15-926"]],
    ids=["devices-list", "listen"],
)
def test_a_background_job_without_a_password_says_so_instead_of_stopping(
    served: tuple[Path, int, str], command: list[str]
) -> None:
    _, port, pin = served
    code, stderr = run_in_background(
        [
            str(BIN / "pairing"),
            "--jid",
            "alice@localhost",
            "--server",
            f"127.0.0.1:{port}",
            "--pin",
            pin,
            *command,
        ]
    )
    assert code == 1
    assert stderr.splitlines() == [
        "Error: no password and no terminal to ask on: run `pairing login` once in a terminal "
        "(then none is needed), or give --password-file FILE or set PAIRING_PASSWORD"
    ]


def test_a_background_job_with_a_profile_asks_nothing(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    login(port, pin, tmp_path / "pw")
    code, stderr = run_in_background([str(BIN / "pairing"), "tokens", "list", "--json"])
    assert (code, stderr) == (0, "")


# --- consistency: --jid for another account, one duration format, --json, exit codes -----------


def test_ttl_takes_the_one_duration_format(served: tuple[Path, int, str], tmp_path: Path) -> None:
    import datetime as dt

    _, port, pin = served
    login(port, pin, tmp_path / "pw")
    for index, (ttl, seconds) in enumerate([("90s", 90), ("10m", 600), ("1h", 3600), ("600", 600)]):
        before = dt.datetime.now(dt.UTC)
        out = run("pairing", "token", "--resource", f"bot{index}", "--ttl", ttl, "--json").stdout
        expires = dt.datetime.fromisoformat(json.loads(out)["expires"])
        assert abs((expires - before).total_seconds() - seconds) < 30, ttl
    bad = run("pairing", "token", "--resource", "x", "--ttl", "10 minutes", ok=False)
    assert bad.returncode == 2
    assert "is not a duration like 90s, 10m, 1h or 7d" in bad.stderr


def test_jid_names_another_account_for_admins_and_for_is_its_hidden_alias(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    data, port, pin = served
    pw = tmp_path / "pw"
    run(
        "server-ext", "--data-dir", str(data), "user", "add", "root", "--admin",
        "--password-file", str(pw),
    )  # fmt: skip
    login(port, pin, pw, jid="root@localhost")
    grant = json.loads(
        run("pairing", "token", "--resource", "bot", "--jid", "alice", "--json").stdout
    )
    assert grant["jid"] == "alice@localhost/bot"
    by_jid = run("pairing", "devices", "list", "--jid", "alice@localhost", "--json").stdout
    by_for = run("pairing", "devices", "list", "--for", "alice@localhost", "--json").stdout
    assert json.loads(by_jid) == json.loads(by_for)
    assert "--for" not in run("pairing", "devices", "list", "--help").stdout
    assert "--for" not in run("pairing", "token", "--help").stdout


def test_every_state_changing_command_can_answer_in_json(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    login(port, pin, tmp_path / "pw")
    device = tmp_path / "bot"
    run("device-agent", "--state-dir", str(device), "init", "--jid", "alice@localhost/bot")

    def as_json(*args: str) -> dict[str, object]:
        record: dict[str, object] = json.loads(run("pairing", *args, "--json").stdout)
        return record

    added = as_json("certs", "add", "bot", str(device / "device.crt"), "--no-cert-management")
    assert added["name"] == "bot" and added["jids"] == ["alice@localhost/bot"]
    assert as_json("certs", "disable", "bot") == {"name": "bot", "state": "disabled"}
    assert as_json("devices", "revoke", "bot") == {"name": "bot", "state": "revoked"}
    issued = as_json("token", "--resource", "other")
    assert as_json("tokens", "cancel", str(issued["token_id"])) == {
        "token_id": issued["token_id"],
        "cancelled": True,
    }


def test_an_unreachable_server_is_exit_3_and_says_it_is_not_running(tmp_path: Path) -> None:
    port = free_port()
    result = run(
        "pairing",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        "ab" * 32,
        "devices",
        "list",
        env={"PAIRING_PASSWORD": "x"},
        ok=False,
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"Error: the server at 127.0.0.1:{port} is not running or not reachable: "
        "nothing listens there (connection refused)"
    ]


def test_login_at_debug_level_logs_no_password_and_no_key(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    import base64

    _, port, pin = served
    result = run(
        "pairing",
        "-vv",
        "login",
        "--jid",
        "alice@localhost",
        "--server",
        f"127.0.0.1:{port}",
        "--pin",
        pin,
        "--password-file",
        str(tmp_path / "pw"),
    )
    assert "SEND:" in result.stderr and "<append" in result.stderr  # the debug lines were on
    assert PASSWORD not in result.stderr
    assert base64.b64encode(PASSWORD.encode()).decode() not in result.stderr
    key_lines = (profile_dir(private_config) / "client.key").read_text().splitlines()[1:-1]
    for line in key_lines:
        assert line not in result.stderr


def test_a_server_checked_with_a_ca_file_keeps_a_copy_in_the_profile(
    served: tuple[Path, int, str], tmp_path: Path, private_config: Path
) -> None:
    data, port, _ = served
    ca = tmp_path / "server.crt"
    ca.write_bytes((data / "server.crt").read_bytes())
    run(
        "pairing", "login", "--jid", "alice@localhost", "--server", f"127.0.0.1:{port}",
        "--cafile", str(ca), "--password-file", str(tmp_path / "pw"),
    )  # fmt: skip
    copy = profile_dir(private_config) / "ca.pem"
    assert copy.read_bytes() == ca.read_bytes() and copy.stat().st_mode & 0o777 == 0o600
    ca.unlink()  # the profile does not depend on the file it was given
    assert len(json.loads(run("pairing", "devices", "list", "--json").stdout)) == 1


def test_without_pin_or_cafile_the_system_cas_decide(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """As every XMPP client: a self-signed server is refused before anything is sent, and a
    certificate the system trusts (here through OpenSSL's SSL_CERT_FILE) is accepted."""
    data, port, _ = served
    script = [
        "pairing", "--jid", "alice@localhost", "--server", f"127.0.0.1:{port}",
        "--password-file", str(tmp_path / "pw"), "certs", "list", "--json",
    ]  # fmt: skip
    refused = run(*script, ok=False)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "presented a certificate that is not trusted (self-signed certificate)" in line
    assert "nothing was sent" in line and "--pin" in line
    trusted = run(*script, env={"SSL_CERT_FILE": str(data / "server.crt")})
    assert json.loads(trusted.stdout) == []


async def test_a_second_command_does_not_replace_a_running_ones_session(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    """A `pairing listen` left running and a `pairing devices list` typed meanwhile use the
    same profile: each binds a resource of its own, so neither session replaces the other
    (with a resource-locked certificate the second would end the first, RFC 6120 §7.7.2.2)."""
    import asyncio

    from pairing.cli.connection import resolve_connection
    from pairing.cli.options import Choices
    from pairing.xmpp.connection import logout
    from pairing.xmpp.saslcert import list_certificates

    _, port, pin = served
    made = json.loads(login(port, pin, tmp_path / "pw", "--json").stdout)
    running = await resolve_connection(Choices()).connect(None)  # the profile's session
    try:
        mine = str(running.boundjid.resource)
        assert mine.startswith("pairing-")
        listed = await asyncio.to_thread(run, "pairing", "certs", "list", "--json")
        (row,) = [r for r in json.loads(listed.stdout) if r["name"] == made["certificate_name"]]
        assert mine in row["online"] and len(row["online"]) == 2  # both sessions at once
        # The first session is still there and still answers.
        (item,) = await list_certificates(running)
        assert item.users == (mine,)
    finally:
        await logout(running)
