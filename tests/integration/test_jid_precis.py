"""One JID preparation (RFC 7622, PRECIS) from the CLI to the password login, end to end.

Accounts are made with the real `server-ext user add` process; logins go to a real
`server-ext serve` process on loopback, over real TLS, with the test SCRAM client.
Before this preparation, `user add` used NFC plus lower-case while SASL used SASLprep (NFKC,
"mapped to nothing"): a fullwidth name made an account nobody could log in to, and names
with a ligature or a zero-width space logged in to another account.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from server_ext.net.server_certificate import CERT_NAME
from tests.integration.cli_support import free_port, run
from tests.support.rawclient import RawClient, client_context
from tests.support.scramclient import scram_login

ZWSP = "\u200b"  # ZERO WIDTH SPACE
FI = "\ufb01"  # LATIN SMALL LIGATURE FI
CYRILLIC_A = "\u0430"  # CYRILLIC SMALL LETTER A, drawn like "a"

Served = tuple[Path, int, str]


def fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


def user_add(
    data: Path, tmp_path: Path, name: str, password: str, *, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    pw = tmp_path / f"pw-{abs(hash(name))}"
    pw.write_text(password + "\n")
    return run(
        "server-ext",
        "--data-dir",
        str(data),
        "user",
        "add",
        name,
        "--password-file",
        str(pw),
        ok=ok,
    )


def accounts(data: Path) -> list[str]:
    listed = run("server-ext", "--data-dir", str(data), "user", "list", "--json").stdout
    return sorted(a["jid"] for a in json.loads(listed))


async def password_login(data: Path, port: int, user: str, password: str) -> str | None:
    """SCRAM-SHA-256 then bind; the bound bare JID, or None if SASL refused the login."""
    client = await RawClient.connect("127.0.0.1", port, "localhost")
    try:
        await client.starttls(client_context(data / CERT_NAME))
        reply = await scram_login(client, user, password)
        if b"<success" not in reply:
            assert b"<failure" in reply
            return None
        bound = await client.bind()
        match = re.search(rb"<jid>([^<]+)</jid>", bound)
        assert match is not None, bound
        return match.group(1).decode().split("/", 1)[0]
    finally:
        await client.close()


async def test_fullwidth_user_add_is_the_account_a_password_login_reaches(
    served: Served, tmp_path: Path
) -> None:
    data, port, _ = served
    out = user_add(data, tmp_path, fullwidth("bob"), "bob's password").stdout
    assert "created bob@localhost" in out
    assert "bob@localhost" in accounts(data)
    # RFC 7622 §3.3: the name logs in as typed ASCII and as typed fullwidth, to one account.
    assert await password_login(data, port, "bob", "bob's password") == "bob@localhost"
    assert await password_login(data, port, fullwidth("bob"), "bob's password") == "bob@localhost"
    assert await password_login(data, port, fullwidth("BOB"), "bob's password") == "bob@localhost"
    # And the account cannot be created twice under its other spelling.
    again = user_add(data, tmp_path, "BOB", "other", ok=False)
    assert again.returncode == 1
    assert "already exists" in again.stderr


async def test_ligature_name_is_refused_and_never_logs_in_as_fix(
    served: Served, tmp_path: Path
) -> None:
    data, port, _ = served
    user_add(data, tmp_path, "fix", "fix's password")
    refused = user_add(data, tmp_path, f"{FI}x", "ligature's password", ok=False)
    assert refused.returncode == 2  # a bad argument, as click reports them
    (line,) = refused.stderr.strip().splitlines()
    assert "compatibility character" in line
    assert "U+FB01" in line
    assert accounts(data) == ["alice@localhost", "fix@localhost"]
    # SASLprep folded the ligature into "fix" and logged in; PRECIS refuses the name.
    assert await password_login(data, port, f"{FI}x", "fix's password") is None
    assert await password_login(data, port, "fix", "fix's password") == "fix@localhost"


async def test_zero_width_space_is_refused_by_the_cli_and_at_login(
    served: Served, tmp_path: Path
) -> None:
    data, port, _ = served
    before = accounts(data)
    refused = user_add(data, tmp_path, f"al{ZWSP}ice2", "zero's password", ok=False)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert "invisible" in line
    assert "U+200B" in line
    assert "Traceback" not in refused.stderr
    assert accounts(data) == before  # nothing half-made
    # The served fixture's alice has the password "s3cret pass"; SASLprep used to drop the
    # ZWSP and log this name in as alice.
    assert await password_login(data, port, f"al{ZWSP}ice", "s3cret pass") is None
    assert await password_login(data, port, "alice", "s3cret pass") == "alice@localhost"


async def test_lookalike_name_is_a_different_account_never_alice(
    served: Served, tmp_path: Path
) -> None:
    data, port, _ = served
    lookalike = f"{CYRILLIC_A}lice"
    out = user_add(data, tmp_path, lookalike, "mallory's password").stdout
    assert f"created {lookalike}@localhost" in out
    assert await password_login(data, port, lookalike, "s3cret pass") is None
    assert await password_login(data, port, "alice", "mallory's password") is None
    assert (
        await password_login(data, port, lookalike, "mallory's password")
        == f"{lookalike}@localhost"
    )
    assert await password_login(data, port, "alice", "s3cret pass") == "alice@localhost"


async def test_password_change_username_is_prepared(served: Served, tmp_path: Path) -> None:
    """XEP-0077 §3.3: the <username/> is alice's localpart, written any way PRECIS maps."""
    data, port, _ = served
    client = await RawClient.connect("127.0.0.1", port, "localhost")
    try:
        await client.starttls(client_context(data / CERT_NAME))
        assert b"<success" in await scram_login(client, "alice", "s3cret pass")
        await client.bind()
        for name, condition in ((f"al{ZWSP}ice", b"bad-request"), ("bob", b"bad-request")):
            await client.send(
                "<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
                f"<username>{name}</username><password>x</password></query></iq>"
            )
            assert condition in await client.read_iq("r1")
        await client.send(
            "<iq type='set' id='r2'><query xmlns='jabber:iq:register'>"
            f"<username>{fullwidth('ALICE')}</username><password>new pass</password>"
            "</query></iq>"
        )
        assert b"type='result'" in await client.read_iq("r2")
    finally:
        await client.close()
    assert await password_login(data, port, "alice", "new pass") == "alice@localhost"


@pytest.mark.parametrize(
    "argv",
    [
        ["device-agent", "--state-dir", "{tmp}/dev", "init", "--jid", f"al{ZWSP}ice@localhost/b"],
        ["device-agent", "--state-dir", "{tmp}/dev", "init", "--jid", f"alice@localhost/{ZWSP}"],
        ["device-agent", "--state-dir", "{tmp}/dev", "label", "--resource", f"{ZWSP}bot"],
        [
            "pairing",
            "--jid",
            f"al{ZWSP}ice@localhost",
            "--server",
            "127.0.0.1:{port}",
            "--pin",
            "ab" * 32,
            "certs",
            "list",
        ],
        [
            "pairing",
            "--jid",
            "alice@localhost",
            "--server",
            "127.0.0.1:{port}",
            "--pin",
            "ab" * 32,
            "--password-file",
            "{tmp}/pw",
            "token",
            "--resource",
            f"bot{ZWSP}",
        ],
        ["server-ext", "--data-dir", "{tmp}/srv", "--domain", f"ex{ZWSP}ample.org", "fingerprint"],
        [
            "server-ext",
            "--data-dir",
            "{tmp}/ready",
            "token",
            "create",
            "--jid",
            f"al{ZWSP}ice",
            "--resource",
            "b",
        ],
        [
            "server-ext",
            "--data-dir",
            "{tmp}/ready",
            "token",
            "create",
            "--jid",
            "alice",
            "--resource",
            ZWSP,
        ],
    ],
)
def test_every_cli_refuses_unpreparable_identifiers_in_one_line(
    tmp_path: Path, argv: list[str]
) -> None:
    (tmp_path / "pw").write_text("x\n")
    port = str(free_port())  # nothing listens: the refusal must come before any connection
    args = [a.replace("{tmp}", str(tmp_path)).replace("{port}", port) for a in argv]
    if "{tmp}/ready" in argv:  # an admin command needs a server set up to act on
        run("server-ext", "--data-dir", str(tmp_path / "ready"), "init", "--domain", "localhost")
    result = run(*args, ok=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert "U+200B" in line
    assert not (tmp_path / "dev").exists()
    assert not (tmp_path / "srv").exists()
