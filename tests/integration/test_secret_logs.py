"""Secrets never reach a log, even at -vv (issue 8, "Logs"): the real CLIs against a real
loopback server, with slixmpp's SEND/RECV debug lines switched on.

The CLIs log only to stderr (there is no log file to check); stdout is where a command
prints what the user asked for, such as the URI of `pairing token`.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tests.integration.cli_support import BIN, run
from tests.integration.test_lan_pairing import LOOPBACK, finish, make_label, start, user_cmd

PASSWORD = "s3cret pass"  # what the `served` fixture gives alice
#: A SASL element whose body is not redacted (RFC 6120 §6.4: auth, challenge, response,
#: success carry base64 payloads).
SASL_PAYLOAD = re.compile(r"<(auth|challenge|response|success)\b[^>]*(?<!/)>(?!\[redacted\])\S")
TOKEN_IN_URI = re.compile(r"XMPP-DP:1/[A-Z2-7]{32}")
TOKEN_ATTRIBUTE = re.compile(r"""token=["'][A-Z2-7]{32}""")


def assert_no_secret(stderr: str, *secrets: str) -> None:
    assert "SEND:" in stderr and "RECV:" in stderr  # the debug lines were on
    for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(), *secrets):
        assert secret not in stderr
    for pattern in (SASL_PAYLOAD, TOKEN_IN_URI, TOKEN_ATTRIBUTE):
        match = pattern.search(stderr)
        assert match is None, f"{pattern.pattern} matched {match.group(0)!r}"


def test_token_and_enroll_at_debug_level_log_no_token_or_password(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    pw = tmp_path / "pw"
    issued = run(
        "pairing", *user_cmd(port, pin, pw)[1:], "-vv", "token", "--resource", "bot", "--json"
    )
    uri = json.loads(issued.stdout)["uri"]
    token = uri.split("/")[1]
    assert_no_secret(issued.stderr, token)
    assert "[redacted]" in issued.stderr  # the SCRAM exchange was there, without its values
    enrolled = run(
        "device-agent", "--state-dir", str(tmp_path / "bot"), "-vv", "enroll", "--uri", uri
    )
    assert "enrolled: this device logs in as alice@localhost/bot" in enrolled.stdout
    assert_no_secret(enrolled.stderr, token)
    assert "<enroll " in enrolled.stderr  # the redemption was logged, its token was not


@pytest.mark.lan
def test_lan_pairing_at_debug_level_logs_no_code_token_or_password(
    served: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, pin = served
    pw = tmp_path / "pw"
    state = tmp_path / "sensor"
    label = make_label(state, "kitchen", "Kitchen sensor")
    window = start(
        [
            *user_cmd(port, pin, pw),
            "-vv",
            "listen",
            "--code",
            label["code"],
            "--timeout",
            "60",
            *LOOPBACK,
        ]
    )
    device = start(
        [
            str(BIN / "device-agent"),
            "--state-dir",
            str(state),
            "-vv",
            "pair",
            "--timeout",
            "60",
            *LOOPBACK,
        ]
    )
    code, _, derr = finish(device)
    assert code == 0, derr
    wcode, _, werr = finish(window)
    assert wcode == 0, werr
    digits = label["code"].replace("-", "")
    for stderr in (derr, werr):
        assert_no_secret(stderr, label["code"], digits)
