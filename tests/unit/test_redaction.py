"""What the CLIs' log formatter removes (pairing.redaction), line by line."""

from __future__ import annotations

import base64
import logging
import sys

from pairing.redaction import REDACTED, RedactingFormatter, protect, redact

TOKEN = "QMMWLLPYQRK3K6IMENITWWPPYVDKNSIX"


def test_sasl_bodies_are_removed_for_every_mechanism() -> None:
    plain = base64.b64encode(b"\0alice\0correct horse").decode()
    for line in (
        f'SEND: <auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{plain}</auth>',
        "SEND: <response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdzLHI9</response>",
        'RECV: <challenge xmlns="urn:ietf:params:xml:ns:xmpp-sasl">cj0xMjM=</challenge>',
        'RECV: <success xmlns="urn:ietf:params:xml:ns:xmpp-sasl">dj1FNk14</success>',
        "<sasl:auth mechanism='PLAIN'>\n" + plain + "\n</sasl:auth>",
    ):
        out = redact(line)
        assert REDACTED in out
        for secret in (plain, "Yz1iaXdzLHI9", "cj0xMjM=", "dj1FNk14"):
            assert secret not in out
    # Empty and self-closing elements stay as they are.
    assert (
        redact("<auth mechanism='EXTERNAL'>=</auth>")
        == f"<auth mechanism='EXTERNAL'>{REDACTED}</auth>"
    )
    enrolled = '<success xmlns="urn:xmpp-device-pairing:enroll:0" jid="a@b/c" name="x" />'
    assert redact(enrolled) == enrolled


def test_tokens_uris_labels_codes_and_passwords_are_removed() -> None:
    cases = {
        f"<enroll xmlns='urn:xmpp-device-pairing:enroll:0' token='{TOKEN}'/>": TOKEN,
        f'<enroll token="{TOKEN}"/>': TOKEN,
        f"<value>XMPP-DP:1/{TOKEN}/FVYRMQVX/LOCALHOST/5222/ALICE%40LOCALHOST/BOT</value>": TOKEN,
        "scanned XMPP-DP-SETUP:1/ABCDEFGHJK/WXYZ/31415926": "31415926",
        "code 314-15-926 for the kitchen": "314-15-926",
        "<query xmlns='jabber:iq:register'><password>hunter22</password></query>": "hunter22",
    }
    for line, secret in cases.items():
        out = redact(line)
        assert secret not in out and REDACTED in out, out


def test_ordinary_text_is_left_alone() -> None:
    for line in (
        "listening on 127.0.0.1:5222 since 2024-05-06 12:00:01",
        "pairing window 0a1b2c3d open on 127.0.0.1:40211",
        "<iq type='result' id='abc'><bind><jid>alice@localhost/bot</jid></bind></iq>",
        "device ABCDEFGHJK: code verified, channel encrypted",
    ):
        assert redact(line) == line


def test_protected_values_and_tracebacks_are_removed_by_the_formatter() -> None:
    protect("my-own-secret-value")
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("login failed with my-own-secret-value")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "sent %s", (f"<enroll token='{TOKEN}'/>",), None
        )
        record.exc_info = sys.exc_info()
    out = formatter.format(record)
    assert "ValueError" in out
    assert "my-own-secret-value" not in out and TOKEN not in out


def test_json_log_lines_are_redacted_before_encoding() -> None:
    import json
    import logging

    from pairing.redaction import RedactingJSONFormatter

    record = logging.LogRecord(
        "server_ext.net.server", logging.INFO, __file__, 1,
        "redeeming <enroll token='ABCDEFGHIJKLMNOP'/> with code %s", ("123-45-678",), None,
    )  # fmt: skip
    line = RedactingJSONFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO" and entry["logger"] == "server_ext.net.server"
    assert "ABCDEFGHIJKLMNOP" not in line and "123-45-678" not in line
    assert entry["message"].count("[redacted]") == 2
    assert entry["time"].endswith("+00:00")
