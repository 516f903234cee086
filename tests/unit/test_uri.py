"""The enrollment URI: compact, QR-alphanumeric, and parsed strictly (docs/protocol.md §2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pairing import qr
from pairing.protocol.jid import JID
from pairing.protocol.uri import (
    EnrollmentURI,
    HTTPSEnrollmentURI,
    InvalidPairingURI,
    parse_enrollment_uri,
)

TOKEN = "QMMWLLPYQRK3K6IMENITWWPPYVDKNSIX"
FP = hashlib.sha256(b"server certificate").hexdigest()
ALNUM = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def uri(jid: str = "alice@example.org/weatherbot", host: str = "xmpp.example.org") -> EnrollmentURI:
    return EnrollmentURI(JID.parse(jid), TOKEN, host, 5222, FP)


@pytest.mark.parametrize(
    ("jid", "host"),
    [
        ("alice@example.org/weatherbot", "xmpp.example.org"),
        ("alice@example.org/Kitchen Sensor_2", "192.0.2.7"),
        ("jürgen@bücher.example/Ω-bot/with/slashes", "::1"),
    ],
)
def test_round_trip_in_the_qr_alphanumeric_set(jid: str, host: str) -> None:
    original = uri(jid, host)
    text = str(original)
    assert set(text) <= ALNUM
    assert EnrollmentURI.parse(text) == original


def test_example_from_the_docs() -> None:
    text = str(uri())
    assert text.startswith(f"XMPP-DP:1/{TOKEN}/")
    assert text.endswith("/XMPP.EXAMPLE.ORG/5222/ALICE%40EXAMPLE.ORG/WEATHERBOT")


def test_alphanumeric_mode_makes_a_smaller_code() -> None:
    text = str(uri())
    assert qr.modules(text) < qr.modules(text.lower())


def test_repr_hides_the_token() -> None:
    assert TOKEN not in repr(uri())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://example.org", "must start with XMPP-DP:"),
        ("XMPP-DP:2/A/B/C/1/D", "version '2' is not supported"),
        ("XMPP-DP:1/abc", "six parts"),
        (f"XMPP-DP:1/{TOKEN.lower()}/X/H/1/J", "token must be upper-case base32"),
        (f"XMPP-DP:1/{TOKEN[:-8]}/X/H/1/J", "token must be 20 bytes"),
        (f"XMPP-DP:1/{TOKEN}/AAAA/H/1/J", "fingerprint must be 32 bytes"),
        (f"XMPP-DP:1/{TOKEN}/{str(uri()).split('/')[2]}/H/port/J", "port 'port' is not a number"),
        (f"XMPP-DP:1/{TOKEN}/{str(uri()).split('/')[2]}/H/99999/A%40B/C", "out of range"),
        (f"XMPP-DP:1/{TOKEN}/{str(uri()).split('/')[2]}/h/1/A%40B/C", "host has lower-case"),
        (f"XMPP-DP:1/{TOKEN}/{str(uri()).split('/')[2]}/H/1/A%4", "bad %-escape"),
        (f"XMPP-DP:1/{TOKEN}/{str(uri()).split('/')[2]}/H/1/A%40B", "full JID"),
        (f"XMPP-DP:1/{TOKEN}/{str(uri()).split('/')[2]}/H/1/%FF", "not valid UTF-8"),
        (f"XMPP-DP:1/{TOKEN}/{str(uri()).split('/')[2]}/H/1/A_B", "must be escaped"),
    ],
)
def test_every_malformed_field_has_its_message(text: str, message: str) -> None:
    with pytest.raises(InvalidPairingURI, match=message):
        EnrollmentURI.parse(text)


def test_png_svg_and_reading_back(tmp_path: Path) -> None:
    text = str(uri())
    qr.write_png(text, tmp_path / "code.png")
    qr.write_svg(text, tmp_path / "code.svg")
    assert qr.read_image(tmp_path / "code.png") == text
    assert (tmp_path / "code.svg").read_text().lstrip().startswith("<?xml")
    assert "█" in qr.terminal(text) or "▀" in qr.terminal(text)


def test_unreadable_images(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(tmp_path / "blank.png")
    with pytest.raises(qr.UnreadableQR, match="no readable QR code"):
        qr.read_image(tmp_path / "blank.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(qr.UnreadableQR, match="not an image"):
        qr.read_image(tmp_path / "junk.png")
    with pytest.raises(qr.UnreadableQR, match="does not exist"):
        qr.read_image(tmp_path / "missing.png")


# --- version 2: HTTPS enrollment, then a stock XMPP server (docs/protocol.md, section 9) ----

XMPP_PIN = hashlib.sha256(b"ejabberd certificate").hexdigest()


def v2(
    pin: str | None = XMPP_PIN, jid: str = "alice@example.org/Kitchen Bot"
) -> HTTPSEnrollmentURI:
    return HTTPSEnrollmentURI(
        JID.parse(jid), TOKEN, "pair.example.org", 8443, FP, "xmpp.example.org", 5222, pin
    )


@pytest.mark.parametrize("pin", [XMPP_PIN, None])
def test_v2_round_trips_in_the_qr_alphanumeric_set(pin: str | None) -> None:
    original = v2(pin)
    text = str(original)
    assert set(text) <= ALNUM and text.startswith("XMPP-DP:2/")
    assert HTTPSEnrollmentURI.parse(text) == original
    assert parse_enrollment_uri(text) == original
    assert ("/-/" in text) is (pin is None)  # "-": check the XMPP server with the system CAs
    assert TOKEN not in repr(original)


def test_both_versions_are_read_by_their_version_field() -> None:
    assert isinstance(parse_enrollment_uri(str(uri())), EnrollmentURI)
    assert isinstance(parse_enrollment_uri(str(v2())), HTTPSEnrollmentURI)
    with pytest.raises(InvalidPairingURI, match="version '3' is not supported"):
        parse_enrollment_uri(str(uri()).replace("XMPP-DP:1/", "XMPP-DP:3/"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.replace("/8443/", "/84A3/"), "HTTPS port"),
        (lambda t: t.replace("/5222/", "/99999/"), "XMPP port 99999 is out of range"),
        (lambda t: "/".join(t.split("/")[:5]), "nine parts"),
        (lambda t: t.replace("/-/", "/NOTBASE32!/"), "XMPP pin"),
        (lambda t: t.replace("PAIR.EXAMPLE", "pair.EXAMPLE"), "lower-case"),
    ],
)
def test_v2_fields_are_checked_one_by_one(mutate: object, message: str) -> None:
    text = mutate(str(v2(None)))  # type: ignore[operator]
    with pytest.raises(InvalidPairingURI, match=message):
        parse_enrollment_uri(text)


def test_a_host_with_a_slash_cannot_be_put_into_a_uri() -> None:
    with pytest.raises(InvalidPairingURI, match="contains '/'"):
        HTTPSEnrollmentURI(
            JID.parse("a@b/c"), TOKEN, "pair/evil", 8443, FP, "xmpp.example.org", 5222, None
        )
