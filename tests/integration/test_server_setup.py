"""Issue 10, the operator's side: set up once, and the server identity is never lost.

Every test runs the real ``server-ext`` as a separate process on real files in a temporary
directory; servers listen on loopback on free ports.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_ext.net.server_certificate import create_server_certificate
from tests.integration.cli_support import BIN, free_port, init_server, run

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)


class Served:
    """A ``server-ext serve`` process and what it printed."""

    def __init__(
        self,
        data: Path,
        *group: str,
        serve: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.stderr_lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                str(BIN / "server-ext"),
                "--data-dir",
                str(data),
                *group,
                "serve",
                "--port",
                str(self.port),
                "--direct-tls-port",
                "0",
                *serve,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.banner: list[str] = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise AssertionError(f"serve ended: {''.join(self.stderr_lines)}")
            self.banner.append(line.strip())
            if line.startswith("data:"):
                break
        assert self.banner[0].startswith(f"listening on 127.0.0.1:{self.port}"), self.banner

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    @property
    def fingerprint(self) -> str:
        (line,) = [b for b in self.banner if b.startswith("server certificate SHA-256:")]
        return line.split(": ", 1)[1].replace(":", "").lower()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr_lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}: {self.stderr_lines}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


@pytest.fixture
def servers() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        if served.proc.poll() is None:
            served.stop()


def serve(started: list[Served], data: Path, *group: str, serve: tuple[str, ...] = ()) -> Served:
    served = Served(data, *group, serve=serve)
    started.append(served)
    return served


def tls_session(port: int) -> tuple[ssl.SSLSocket, str]:
    """STARTTLS on ``port``; the TLS socket (stream restarted) and the server's SHA-256."""
    plain = socket.create_connection(("127.0.0.1", port), timeout=10)
    plain.sendall(HEADER)
    read_until(plain, b"</stream:features>")
    plain.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(plain, b"<proceed")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fingerprint is what is checked
    tls = context.wrap_socket(plain, server_hostname="localhost")
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    tls.sendall(HEADER)
    read_until(tls, b"</stream:features>")
    return tls, hashlib.sha256(der).hexdigest()


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {data!r}")
        data += chunk
    return data


def add_user(data: Path, tmp_path: Path, name: str, *extra: str) -> str:
    password = tmp_path / "pw"
    password.write_text("s3cret pass\n")
    return run(
        "server-ext", "--data-dir", str(data), *extra, "user", "add", name,
        "--password-file", str(password),
    ).stdout  # fmt: skip


# --- the scenarios of issue 10 -------------------------------------------------------------


def test_a_plain_fingerprint_after_serving_another_domain_keeps_the_identity(
    tmp_path: Path, servers: list[Served]
) -> None:
    """`--domain example.org serve`, then a plain `fingerprint`: it used to print a new
    fingerprint and replace server.crt, cutting off every pinned device."""
    data = tmp_path / "server"
    first = serve(servers, data, "--domain", "example.org")
    served_fp = first.fingerprint
    first.stop()
    certificate = (data / "server.crt").read_bytes(), (data / "server.key").read_bytes()
    add_user(data, tmp_path, "bob")
    out = run("server-ext", "--data-dir", str(data), "fingerprint", "--json")
    assert json.loads(out.stdout)["sha256"] == served_fp
    token = run(
        "server-ext", "--data-dir", str(data), "token", "create", "--jid", "bob",
        "--resource", "bot", "--json",
    )  # fmt: skip
    assert json.loads(token.stdout)["jid"] == "bob@example.org/bot"
    assert ((data / "server.crt").read_bytes(), (data / "server.key").read_bytes()) == certificate
    again = serve(servers, data)  # a plain restart serves the same identity, for example.org
    assert again.fingerprint == served_fp
    assert "domain: example.org" in again.banner


def test_admin_commands_from_another_directory_create_nothing(
    tmp_path: Path, servers: list[Served]
) -> None:
    """Run from elsewhere, a command used to make ./server-data with a new identity."""
    data = tmp_path / "server"
    fingerprint = serve(servers, data, "--domain", "example.org").fingerprint
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for argv in (["fingerprint"], ["user", "list"], ["token", "list"], ["audit"]):
        result = subprocess.run(
            [str(BIN / "server-ext"), *argv],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("SERVER_EXT_")},
        )
        assert result.returncode == 4, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "no server data in" in line and "--data-dir" in line
        assert "Traceback" not in result.stderr
    assert list(elsewhere.iterdir()) == []  # no ./server-data appeared
    # With the data directory named (flag or environment), from anywhere: the same server.
    result = subprocess.run(
        [str(BIN / "server-ext"), "fingerprint", "--json"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SERVER_EXT_DATA_DIR": str(data)},
    )
    assert json.loads(result.stdout)["sha256"] == fingerprint


def test_user_add_on_an_example_org_server_makes_an_example_org_account(
    tmp_path: Path, servers: list[Served]
) -> None:
    """`user add bob` on an example.org data dir used to create bob@localhost."""
    data = tmp_path / "server"
    serve(servers, data, "--domain", "example.org").stop()
    assert "created bob@example.org" in add_user(data, tmp_path, "bob")
    refused = run(
        "server-ext", "--data-dir", str(data), "--domain", "localhost", "user", "add", "carol",
        "--password-file", str(tmp_path / "pw"), ok=False,
    )  # fmt: skip
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "not this server's domain example.org" in line
    env_refused = run(
        "server-ext", "--data-dir", str(data), "user", "list",
        env={"SERVER_EXT_DOMAIN": "localhost"}, ok=False,
    )  # fmt: skip
    assert env_refused.returncode == 2
    listed = json.loads(run("server-ext", "--data-dir", str(data), "user", "list", "--json").stdout)
    assert [u["jid"] for u in listed] == ["bob@example.org"]


# --- init, and the only ways to replace the identity ---------------------------------------


def test_init_writes_the_configuration_once_and_later_commands_read_it(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    out = run(
        "server-ext", "init", "--domain", "Example.ORG", "--data-dir", str(data),
        "--host", "0.0.0.0", "--port", "5999", "--public-host", "xmpp.example.org", "--json",
    )  # fmt: skip
    record = json.loads(out.stdout)
    assert record["created"] is True and record["domain"] == "example.org"
    text = (data / "server.toml").read_text()
    assert 'domain = "example.org"' in text and "port" in text and "default_ttl" in text
    assert (data / "server.key").stat().st_mode & 0o077 == 0
    add_user(data, tmp_path, "alice")
    # Again, same domain: nothing changes; another domain: refused, identity untouched.
    before = (data / "server.crt").read_bytes(), text
    again = json.loads(
        run(
            "server-ext", "--data-dir", str(data), "init", "--domain", "example.org", "--json"
        ).stdout
    )
    assert again["created"] is False and again["sha256"] == record["sha256"]
    other = run("server-ext", "--data-dir", str(data), "init", "--domain", "other.org", ok=False)
    assert other.returncode == 2 and "already set up for example.org" in other.stderr
    assert ((data / "server.crt").read_bytes(), (data / "server.toml").read_text()) == before
    # The token's QR code points where server.toml says devices connect.
    uri = json.loads(
        run(
            "server-ext", "--data-dir", str(data), "token", "create", "--jid", "alice",
            "--resource", "bot", "--json",
        ).stdout
    )["uri"]  # fmt: skip
    assert "xmpp.example.org" in uri.lower() and "5999" in uri


def test_a_directory_from_an_older_version_is_adopted_never_replaced(
    tmp_path: Path, servers: list[Served]
) -> None:
    """A registry and an example.org certificate but no server.toml (before issue 10)."""
    data = tmp_path / "old"
    old = create_server_certificate(data, "example.org")
    identity = old.cert_path.read_bytes(), old.key_path.read_bytes()
    listed = run("server-ext", "--data-dir", str(data), "user", "list", ok=False)
    assert listed.returncode == 4 and "older server-ext" in listed.stderr
    # A plain serve would have served localhost with a new key; now it refuses.
    refused = subprocess.run(
        [str(BIN / "server-ext"), "--data-dir", str(data), "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode == 1
    assert "is for example.org, not localhost" in refused.stderr
    assert (old.cert_path.read_bytes(), old.key_path.read_bytes()) == identity
    assert not (data / "server.toml").exists()
    adopted = json.loads(
        run(
            "server-ext", "--data-dir", str(data), "init", "--domain", "example.org", "--json"
        ).stdout
    )
    assert adopted["sha256"] == old.fingerprint
    assert serve(servers, data).fingerprint == old.fingerprint


def test_only_tls_rotate_and_import_replace_the_identity(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    init_server(data, "example.org")
    first = json.loads(run("server-ext", "--data-dir", str(data), "fingerprint", "--json").stdout)
    no_tty = run("server-ext", "--data-dir", str(data), "tls", "rotate", ok=False)
    assert no_tty.returncode != 0  # no confirmation, nothing replaced
    same = json.loads(run("server-ext", "--data-dir", str(data), "fingerprint", "--json").stdout)
    assert same["sha256"] == first["sha256"]
    rotated = json.loads(
        run("server-ext", "--data-dir", str(data), "tls", "rotate", "--yes", "--json").stdout
    )
    assert rotated["previous_sha256"] == first["sha256"] != rotated["sha256"]
    assert rotated["reloaded"] is None  # no server running
    assert (data / "server.crt.previous").exists()
    assert (data / "server.key.previous").stat().st_mode & 0o077 == 0
    # Import: a pair for another domain is refused; a matching one is installed.
    wrong = create_server_certificate(tmp_path / "wrong", "localhost")
    refused = run(
        "server-ext", "--data-dir", str(data), "tls", "import",
        "--cert", str(wrong.cert_path), "--key", str(wrong.key_path), ok=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "not example.org" in refused.stderr
    right = create_server_certificate(tmp_path / "right", "example.org")
    imported = json.loads(
        run(
            "server-ext", "--data-dir", str(data), "tls", "import",
            "--cert", str(right.cert_path), "--key", str(right.key_path), "--json",
        ).stdout
    )  # fmt: skip
    assert imported["sha256"] == right.fingerprint
    shown = json.loads(run("server-ext", "--data-dir", str(data), "fingerprint", "--json").stdout)
    assert shown["sha256"] == right.fingerprint


# --- SIGHUP and logs -----------------------------------------------------------------------


def test_sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one(
    tmp_path: Path, servers: list[Served]
) -> None:
    """The operator's certificate (as certbot renews it) is reloaded without a restart."""
    external = tmp_path / "letsencrypt"
    first = create_server_certificate(external, "localhost")
    data = tmp_path / "srv"
    run(
        "server-ext", "--data-dir", str(data), "init", "--domain", "localhost",
        "--cert", str(first.cert_path), "--key", str(first.key_path),
    )  # fmt: skip
    add_user(data, tmp_path, "alice")
    served = serve(servers, data, serve=("--log-format", "json"))
    live, seen = tls_session(served.port)
    assert seen == first.fingerprint == served.fingerprint
    # The renewal: new files in place, then SIGHUP (what `systemctl reload` sends).
    renewed = create_server_certificate(tmp_path / "renewed", "localhost")
    first.cert_path.write_bytes(renewed.cert_path.read_bytes())
    first.key_path.write_bytes(renewed.key_path.read_bytes())
    served.proc.send_signal(signal.SIGHUP)
    served.wait_for_log("TLS certificate reloaded")
    fresh, seen = tls_session(served.port)
    assert seen == renewed.fingerprint
    fresh.close()
    # The session that was open before the reload goes on: it logs in over its old TLS.
    plain = base64.b64encode(b"\0alice\0s3cret pass").decode()
    live.sendall(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>".encode()
    )
    assert b"<success" in read_until(live, b"success")
    live.close()
    # A half-written file: the server keeps the certificate it has and says so once.
    first.cert_path.write_text("-----BEGIN CERTIFICATE-----\ntruncated")
    served.proc.send_signal(signal.SIGHUP)
    failure = served.wait_for_log("TLS reload failed")
    after, seen = tls_session(served.port)
    assert seen == renewed.fingerprint
    after.close()
    assert served.proc.poll() is None
    # Every log line is one JSON object with a time; the failure is exactly one of them.
    served.stop()
    entries = [json.loads(line) for line in served.stderr_lines if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert [e["level"] for e in entries if "TLS reload failed" in e["message"]] == ["ERROR"]
    assert json.loads(failure)["message"].startswith("TLS reload failed, still serving")
    dt.datetime.fromisoformat(entries[0]["time"])


def test_text_logs_carry_timestamps(tmp_path: Path, servers: list[Served]) -> None:
    data = tmp_path / "srv"
    init_server(data)
    served = serve(servers, data)
    served.proc.send_signal(signal.SIGHUP)
    line = served.wait_for_log("TLS certificate reloaded")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO server_ext\.net\.server: ", line), line


def test_tls_rotate_tells_the_running_server(tmp_path: Path, servers: list[Served]) -> None:
    data = tmp_path / "srv"
    init_server(data)
    served = serve(servers, data)
    rotated = json.loads(
        run("server-ext", "--data-dir", str(data), "tls", "rotate", "--yes", "--json").stdout
    )
    assert rotated["reloaded"] is True
    tls, seen = tls_session(served.port)
    tls.close()
    assert seen == rotated["sha256"] != served.fingerprint


# --- options, environment, exit codes ------------------------------------------------------


def test_every_option_has_an_environment_variable_shown_in_help(tmp_path: Path) -> None:
    assert "SERVER_EXT_DATA_DIR" in run("server-ext", "--help").stdout
    assert "SERVER_EXT_DOMAIN" in run("server-ext", "--help").stdout
    serve_help = run("server-ext", "serve", "--help").stdout
    for name in ("SERVER_EXT_PORT", "SERVER_EXT_HOST", "SERVER_EXT_LOG_FORMAT"):
        assert name in serve_help
    assert "SERVER_EXT_TOKEN_CREATE_TTL" in run("server-ext", "token", "create", "--help").stdout
    assert "SERVER_EXT_CERTS_LIST_JID" in run("server-ext", "certs", "list", "--help").stdout
    data = tmp_path / "srv"
    init_server(data)
    env = {"SERVER_EXT_DATA_DIR": str(data), "SERVER_EXT_USER_LIST_JSON": "1"}
    assert json.loads(run("server-ext", "user", "list", env=env).stdout) == []


def test_the_account_option_is_jid_everywhere(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    init_server(data)
    for argv in (["certs", "list"], ["devices", "list"], ["token", "list"], ["certs", "add"]):
        text = run("server-ext", *argv, "--help").stdout
        assert "--jid" in text and "--user" not in text, argv
    # The old spelling still works for scripts.
    old = run("server-ext", "--data-dir", str(data), "certs", "list", "--user", "alice", "--json")
    new = run("server-ext", "--data-dir", str(data), "certs", "list", "--jid", "alice", "--json")
    assert json.loads(old.stdout) == json.loads(new.stdout) == []


def test_ttl_takes_one_duration_format(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    init_server(data)
    add_user(data, tmp_path, "alice")
    create = ("server-ext", "--data-dir", str(data), "token", "create", "--jid", "alice")
    lifetimes = {}
    for n, ttl in enumerate(("90s", "600", "1h", "1h0m", "45m")):
        record = json.loads(run(*create, "--resource", f"b{n}", "--ttl", ttl, "--json").stdout)
        made = dt.datetime.fromisoformat(record["created_at"])
        lifetimes[ttl] = dt.datetime.fromisoformat(record["expires_at"]) - made
    assert lifetimes["90s"] == dt.timedelta(seconds=90)
    assert lifetimes["600"] == dt.timedelta(minutes=10)
    assert lifetimes["1h"] == lifetimes["1h0m"] == dt.timedelta(hours=1)
    too_long = run(*create, "--resource", "x", "--ttl", "2h", ok=False)
    assert too_long.returncode == 1 and "between" in too_long.stderr
    nonsense = run(*create, "--resource", "x", "--ttl", "10x", ok=False)
    assert nonsense.returncode == 2 and "not a duration" in nonsense.stderr


def test_audit_limit_shows_the_newest_and_since_takes_relative_times(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    init_server(data)
    for name in ("ann", "ben", "cat", "dan"):
        add_user(data, tmp_path, name)
    audit = ("server-ext", "--data-dir", str(data), "audit", "--json")
    every = json.loads(run(*audit).stdout)
    newest = json.loads(run(*audit, "--limit", "2").stdout)
    assert [e["subject"] for e in newest] == ["cat@localhost", "dan@localhost"]
    assert newest == every[-2:]
    assert json.loads(run(*audit, "--since", "1h").stdout) == every
    assert json.loads(run(*audit, "--since", "7d", "--limit", "1").stdout) == every[-1:]
    assert json.loads(run(*audit, "--since", "2999-01-01").stdout) == []
    assert json.loads(run(*audit, "--since", "2000-01-01T00:00").stdout) == every
    bad = run(*audit, "--since", "yesterday", ok=False)
    assert bad.returncode == 2 and "neither a time ago" in bad.stderr


def test_state_changes_print_json_and_exit_codes_are_distinct(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    init_server(data)
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    base = ("server-ext", "--data-dir", str(data))
    added = json.loads(
        run(*base, "user", "add", "eve", "--password-file", str(pw), "--json").stdout
    )
    assert added == {"jid": "eve@localhost", "admin": False, "created": True}
    assert json.loads(run(*base, "user", "admin", "eve", "--on", "--json").stdout)["admin"] is True
    changed = run(*base, "user", "passwd", "eve", "--password-file", str(pw), "--json")
    assert json.loads(changed.stdout)["password_changed"] is True
    token = json.loads(
        run(*base, "token", "create", "--jid", "eve", "--resource", "b", "--json").stdout
    )
    cancelled = json.loads(run(*base, "token", "cancel", str(token["id"]), "--json").stdout)
    assert cancelled["state"] == "cancelled"
    # 3: the command needs the running server and none is running.
    kick = run(*base, "user", "kick", "eve", ok=False)
    assert kick.returncode == 3
    (line,) = kick.stderr.strip().splitlines()
    assert "the server is not running (nothing listens on" in line
    deleted = json.loads(run(*base, "user", "delete", "eve", "--yes", "--json").stdout)
    assert deleted["deleted"] is True
    # 2: usage; 4: no server data here.
    assert run(*base, "user", "add", ok=False).returncode == 2
    assert (
        run("server-ext", "--data-dir", str(tmp_path / "none"), "audit", ok=False).returncode == 4
    )
    assert not (tmp_path / "none").exists()
    assert "Exit status" in run("server-ext", "--help").stdout


def test_a_lost_identity_is_reported_never_regenerated(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    init_server(data, "example.org")
    (data / "server.crt").unlink()
    (data / "server.key").unlink()
    for argv in (["serve", "--port", str(free_port())], ["fingerprint"]):
        result = subprocess.run(
            [str(BIN / "server-ext"), "--data-dir", str(data), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert "is missing; restore it from a backup" in line
    assert not (data / "server.crt").exists() and not (data / "server.key").exists()


# --- backup ----------------------------------------------------------------------------------


def test_a_backup_taken_while_the_server_writes_serves_with_the_same_identity(
    tmp_path: Path, servers: list[Served]
) -> None:
    import sqlite3

    data = tmp_path / "srv"
    init_server(data)
    add_user(data, tmp_path, "alice")
    served = serve(servers, data)
    stop = threading.Event()
    added: list[str] = []

    def keep_writing() -> None:  # accounts made while the backups are taken
        while not stop.is_set():
            name = f"user{len(added)}"
            add_user(data, tmp_path, name)
            added.append(name)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        copies = [tmp_path / f"backup{number}" for number in range(3)]
        for copy in copies:
            done = json.loads(
                run("server-ext", "--data-dir", str(data), "backup", str(copy), "--json").stdout
            )
            assert done["backup"] == str(copy)
            assert {"registry.sqlite3", "server.toml", "server.crt", "server.key"} <= set(
                done["files"]
            )
    finally:
        stop.set()
        writer.join()
    for copy in copies:
        assert copy.stat().st_mode & 0o777 == 0o700
        assert (copy / "server.key").stat().st_mode & 0o777 == 0o600
        assert not list(copy.glob("*-wal"))  # one self-contained file
        with sqlite3.connect(copy / "registry.sqlite3") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not list(tmp_path.glob(".backup*"))  # no partial folder left behind
    # The last copy is a data directory: it serves, with the identity devices pinned, and
    # holds every account made before it was taken.
    served.stop()
    listed = json.loads(
        run("server-ext", "--data-dir", str(copies[-1]), "user", "list", "--json").stdout
    )
    names = {str(row["jid"]).split("@")[0] for row in listed}
    assert "alice" in names and names <= {"alice", *added}
    restored = serve(servers, copies[-1])
    tls, seen = tls_session(restored.port)
    tls.close()
    assert seen == served.fingerprint
    # A second backup into an existing folder is refused, and changes nothing.
    refused = run("server-ext", "--data-dir", str(data), "backup", str(copies[0]), ok=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_direct_tls_port_zero_turns_direct_tls_off(tmp_path: Path) -> None:
    """``--direct-tls-port 0`` is "off" (as in server.toml), never the default 5223: a test
    server on a fixed port would collide with every other run on the machine."""
    data = tmp_path / "srv"
    init_server(data)
    proc = subprocess.Popen(
        [str(BIN / "server-ext"), "--data-dir", str(data), "serve", "--port", "0",
         "--direct-tls-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert lines[0].startswith("listening on 127.0.0.1:") and "(STARTTLS)" in lines[0], lines
    assert not any("direct TLS" in line for line in lines), lines
    # And in the file: init with 0 writes 0 (off), which serve reads back as off.
    other = tmp_path / "other"
    run("server-ext", "--data-dir", str(other), "init", "--domain", "localhost",
        "--direct-tls-port", "0")  # fmt: skip
    assert re.search(r"^direct_tls_port\s+= 0\b", (other / "server.toml").read_text(), re.M)
