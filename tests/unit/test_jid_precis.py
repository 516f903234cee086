"""JID preparation per RFC 7622 (PRECIS), and every entry point that must use it.

Vectors, with their sources:
- RFC 7622 §3.5.1 (valid JIDs) and §3.5.2 (invalid JIDs), the examples of the JID spec itself;
- RFC 8265 §3.5 and the PRECIS examples of the precis-i18n test suite (test/examples.txt in
  https://github.com/byllyfish/precis_i18n) for UsernameCaseMapped and OpaqueString.
Non-ASCII characters are written as escapes so that each vector says exactly which code point
it holds (ruff's RUF001 would rightly flag the look-alikes otherwise).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from pairing.errors import CertificateError, InvalidJID, RemoteProtocolError
from pairing.protocol.identity import (
    XMPP_ADDR_OID,
    PeerCertificate,
    certificate_der,
    encode_utf8string,
    generate_key,
    xmpp_addrs,
)
from pairing.protocol.jid import (
    JID,
    prepare_domainpart,
    prepare_localpart,
    prepare_resourcepart,
)
from pairing.protocol.pair_messages import DeviceHello, EnrollmentOffer, EnrollmentResult
from pairing.protocol.uri import EnrollmentURI, InvalidPairingURI
from server_ext.auth.credentials import derive_credentials
from server_ext.auth.mechanism import Challenge, Failure, Success
from server_ext.auth.plain import PlainMechanism
from server_ext.auth.scram import ScramMechanism
from server_ext.config import ServerConfig
from server_ext.model import (
    ScramCredentials,
)
from server_ext.policy.external import ExternalAccepted, ExternalRefused, decide_external
from server_ext.wire.conditions import SASLCondition
from server_ext.wire.events import StreamFailed
from server_ext.wire.stream import C2SStream
from tests.support.records import certificate_record

ZWSP = "\u200b"  # ZERO WIDTH SPACE: SASLprep maps it to nothing, PRECIS refuses it
FI = "\ufb01"  # LATIN SMALL LIGATURE FI: NFKC makes it "fi", PRECIS refuses it
CYRILLIC_A = "\u0430"  # looks like "a", is another letter


def fullwidth(text: str) -> str:
    """The fullwidth forms (U+FF01..U+FF5E) of printable ASCII."""
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


# --- vectors ----------------------------------------------------------------------------------

RFC7622_VALID = [
    # RFC 7622 §3.5.1, with what each prepares to.
    ("juliet@example.com", "juliet@example.com"),
    ("juliet@example.com/foo", "juliet@example.com/foo"),
    ("juliet@example.com/foo bar", "juliet@example.com/foo bar"),
    ("juliet@example.com/foo@bar", "juliet@example.com/foo@bar"),
    ("foo\\20bar@example.com", "foo\\20bar@example.com"),
    ("fussball@example.com", "fussball@example.com"),
    ("fu\u00dfball@example.com", "fu\u00dfball@example.com"),
    ("\u03c0@example.com", "\u03c0@example.com"),
    ("\u03a3@example.com/foo", "\u03c3@example.com/foo"),
    ("\u03c3@example.com/foo", "\u03c3@example.com/foo"),
    ("\u03c2@example.com/foo", "\u03c2@example.com/foo"),
    ("king@example.com/\u265a", "king@example.com/\u265a"),
    ("example.com", "example.com"),
    ("example.com/foobar", "example.com/foobar"),
    ("a.example.com/b@example.net", "a.example.com/b@example.net"),
]

RFC7622_INVALID = [
    # RFC 7622 §3.5.2, with the reason our message gives.
    ('"juliet"@example.com', "may not contain"),  # §3.3.1 forbids the quotation mark
    ("foo bar@example.com", "has a space"),
    ("henry\u2163@example.com", "compatibility character"),  # ROMAN NUMERAL FOUR
    ("\u265a@example.com", "has a symbol"),  # BLACK CHESS KING in a localpart
    ("juliet@", "domain is empty"),
    ("/foobar", "domain is empty"),
    ("juliet@example.com/", "resource is empty"),
    ("@example.com/", "localpart is empty"),
]


@pytest.mark.parametrize(("raw", "prepared"), RFC7622_VALID)
def test_rfc7622_valid_examples(raw: str, prepared: str) -> None:
    jid = JID.parse(raw)
    assert str(jid) == prepared
    assert JID.parse(str(jid)) == jid  # RFC 8264 §7: preparation is idempotent


@pytest.mark.parametrize(("raw", "reason"), RFC7622_INVALID)
def test_rfc7622_invalid_examples_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidJID, match="is not a valid JID") as caught:
        JID.parse(raw)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


USERNAME_CASE_MAPPED = [
    # RFC 8265 §3.5 and precis-i18n test/examples.txt (profile UsernameCaseMapped).
    ("Juliet", "juliet"),
    (fullwidth("Juliet"), "juliet"),  # width mapping, RFC 8265 §3.3.1 step 1
    ("\u212aevin", "kevin"),  # KELVIN SIGN: NFC makes it K, then lower case
    ("\u2126", "\u03c9"),  # OHM SIGN: NFC makes it capital omega, then lower case
    ("\u03a3", "\u03c3"),
    ("\u03c0", "\u03c0"),
    ("\u05d0\u05d1", "\u05d0\u05d1"),  # right-to-left only: the bidi rule holds
    ("\u0430lice", "\u0430lice"),  # Cyrillic a stays Cyrillic: a different name
]

USERNAME_REFUSED = [
    # precis-i18n test/examples.txt and RFC 8265 §3.5, with the reason in our message.
    ("", "is empty"),
    ("Juliet Capulet", "has a space"),
    (f"al{ZWSP}ice", "invisible"),  # RFC 3454 B.1 "mapped to nothing" is refused in PRECIS
    ("ali\u00adce", "invisible"),  # SOFT HYPHEN
    (f"{FI}x", "compatibility character"),
    ("\u24c0evin", "compatibility character"),  # CIRCLED LATIN CAPITAL LETTER K
    ("\U0001f1fa\U0001f1f8", "has a symbol"),  # a flag
    ("juliet\u200c", "zero-width non-joiner"),
    ("A\u05d0\u05d1", "bidi rule"),  # RFC 5893: left-to-right then right-to-left
    ("\x07bell", "control character"),
]


@pytest.mark.parametrize(("raw", "prepared"), USERNAME_CASE_MAPPED)
def test_localpart_is_username_case_mapped(raw: str, prepared: str) -> None:
    assert prepare_localpart(raw) == prepared


@pytest.mark.parametrize(("raw", "reason"), USERNAME_REFUSED)
def test_localpart_refusals_name_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidJID, match=reason):
        prepare_localpart(raw)


def test_refusal_names_an_invisible_code_point_in_u_plus_form() -> None:
    with pytest.raises(InvalidJID, match=r"U\+200B at position 3"):
        JID.parse(f"al{ZWSP}ice@example.org")


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        # RFC 8265 §4.2 OpaqueString: case is kept, non-ASCII spaces become U+0020, NFC.
        ("Phone", "Phone"),
        ("foo bar", "foo bar"),
        ("foo\u00a0bar", "foo bar"),
        ("\u265a", "\u265a"),
        ("e\u0301", "\u00e9"),
    ],
)
def test_resourcepart_is_opaque_string(raw: str, prepared: str) -> None:
    assert prepare_resourcepart(raw) == prepared


@pytest.mark.parametrize(("raw", "reason"), [(ZWSP, "invisible"), ("a\x00b", "control")])
def test_resourcepart_refusals(raw: str, reason: str) -> None:
    with pytest.raises(InvalidJID, match=reason):
        prepare_resourcepart(raw)


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        ("Example.ORG", "example.org"),
        ("example.org.", "example.org"),  # RFC 7622 §3.2: the trailing dot goes
        (fullwidth("EXAMPLE") + ".org", "example.org"),  # RFC 5895 §2.1 width mapping
        ("xn--bcher-kva.example", "b\u00fccher.example"),  # A-label → U-label (§3.2.1)
        ("B\u00fcCHER.example", "b\u00fccher.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("[0:0::1]", "[::1]"),
    ],
)
def test_domainpart_is_idna2008_u_labels(raw: str, prepared: str) -> None:
    assert prepare_domainpart(raw) == prepared


@pytest.mark.parametrize(
    "raw",
    [f"ex{ZWSP}ample.org", f"{FI}x.org", "a_b.org", "-a.org", "a..b", "[::g]", "x" * 64 + ".org"],
)
def test_domainpart_refusals(raw: str) -> None:
    # Strict IDNA2008, not UTS #46: an invisible or compatibility character is refused
    # rather than silently dropped or folded into another domain.
    with pytest.raises(InvalidJID, match="domain"):
        prepare_domainpart(raw)


def test_a_fullwidth_at_sign_does_not_split_the_jid() -> None:
    # RFC 7622 §3.1: the parts are split before preparation, so U+FF20 cannot become "@".
    with pytest.raises(InvalidJID):
        JID.parse(f"alice{fullwidth('@')}example.org")


def test_a_jid_built_from_raw_parts_is_prepared() -> None:
    assert JID(fullwidth("Alice"), "Example.org", "bot") == JID.parse("alice@example.org/bot")
    with pytest.raises(InvalidJID):
        JID(f"al{ZWSP}ice", "example.org")
    with pytest.raises(InvalidJID):
        JID.parse("alice@example.org").with_resource(ZWSP)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice@example.org"),
        (fullwidth("ALICE"), "alice@example.org"),
        ("Alice@Example.org", "alice@example.org"),
    ],
)
def test_parse_account(raw: str, expected: str) -> None:
    assert str(JID.parse_account(raw, "example.org")) == expected


@pytest.mark.parametrize("raw", ["a/b", "alice@example.org/bot", f"al{ZWSP}ice", f"{FI}x", ""])
def test_parse_account_refusals(raw: str) -> None:
    with pytest.raises(InvalidJID):
        JID.parse_account(raw, "example.org")


def test_lookalikes_are_different_accounts() -> None:
    assert JID.parse(f"{CYRILLIC_A}lice@example.org") != JID.parse("alice@example.org")


# --- SASL -------------------------------------------------------------------------------------

ALICE = JID.parse("alice@example.org")
KEY = b"k" * 32  # the registry's secret for unknown users' salts
CREDS = derive_credentials("pencil", "sha256")


class Lookups:
    """Records every account a mechanism looks up; only alice exists."""

    def __init__(self) -> None:
        self.seen: list[JID] = []

    def __call__(self, jid: JID) -> ScramCredentials | None:
        self.seen.append(jid)
        return CREDS if jid == ALICE else None


def scram_first(username: str, authzid: str = "") -> tuple[object, list[JID]]:
    lookups = Lookups()
    mech = ScramMechanism("sha256", "example.org", lookups, fake_salt_key=KEY)
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    return mech.start(f"{gs2}n={username},r=abcdef".encode()), lookups.seen


@pytest.mark.parametrize(
    "username", [fullwidth("alice"), fullwidth("ALICE"), "ALICE", "alice@EXAMPLE.org"]
)
def test_scram_username_is_prepared_like_account_names(username: str) -> None:
    outcome, seen = scram_first(username)
    assert isinstance(outcome, Challenge)
    assert seen == [ALICE]


@pytest.mark.parametrize("username", [f"al{ZWSP}ice", f"{FI}x", f"alice{ZWSP}"])
def test_scram_username_precis_refuses_is_never_mapped_onto_an_account(username: str) -> None:
    # Before RFC 7622 preparation, SASLprep dropped the ZWSP / folded the ligature and
    # logged these names in as "alice" / "fix".
    outcome, seen = scram_first(username)
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.MALFORMED_REQUEST
    assert seen == []


def test_scram_authzid_is_prepared_before_comparison() -> None:
    outcome, seen = scram_first("alice", authzid=fullwidth("ALICE") + "@example.org")
    assert isinstance(outcome, Challenge)
    assert seen == [ALICE]
    refused, _ = scram_first("alice", authzid=f"al{ZWSP}ice@example.org")
    assert isinstance(refused, Failure)
    assert refused.condition is SASLCondition.INVALID_AUTHZID


def test_scram_lookalike_is_another_account() -> None:
    outcome, seen = scram_first(f"{CYRILLIC_A}lice")
    assert isinstance(outcome, Challenge)
    assert seen == [JID(f"{CYRILLIC_A}lice", "example.org")]
    assert ALICE not in seen


def plain(message: str) -> tuple[object, list[JID]]:
    lookups = Lookups()
    return PlainMechanism("example.org", lookups).start(message.encode()), lookups.seen


def test_plain_authcid_and_authzid_are_prepared() -> None:
    outcome, seen = plain(f"{fullwidth('Alice')}@example.org\0{fullwidth('alice')}\0pencil")
    assert outcome == Success(ALICE, "PLAIN")
    assert seen == [ALICE]


@pytest.mark.parametrize("authcid", [f"al{ZWSP}ice", f"{FI}x"])
def test_plain_refused_names_log_in_as_nobody(authcid: str) -> None:
    outcome, seen = plain(f"\0{authcid}\0pencil")
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.MALFORMED_REQUEST
    assert seen == []


def test_stored_keys_for_ascii_passwords_still_verify() -> None:
    # Passwords stay SASLprep (RFC 5802 §2.2), the identity on ASCII: keys salted from the raw
    # bytes, as every stored account's were, still verify.
    salt, password = b"\x01" * 16, "correct horse battery staple"
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = ScramCredentials(
        hash_name="sha256",
        salt=salt,
        iterations=4096,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=hmac.new(salted, b"Server Key", "sha256").digest(),
    )
    mech = PlainMechanism("example.org", lambda jid: stored if jid == ALICE else None)
    assert mech.start(f"\0alice\0{password}".encode()) == Success(ALICE, "PLAIN")


# --- certificates and EXTERNAL ------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def raw_cert(*addrs: str) -> bytes:
    """A device certificate whose xmppAddrs are exactly ``addrs``, unprepared."""
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    san = x509.SubjectAlternativeName(
        [x509.OtherName(XMPP_ADDR_OID, encode_utf8string(a)) for a in addrs]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate_der(cert)


def test_xmpp_addr_is_prepared_like_any_jid() -> None:
    der = raw_cert(fullwidth("ALICE") + "@example.org/bot")
    cert = x509.load_der_x509_certificate(der)
    assert xmpp_addrs(cert) == (JID.parse("alice@example.org/bot"),)


def test_xmpp_addr_precis_refuses_makes_the_certificate_unusable() -> None:
    cert = x509.load_der_x509_certificate(raw_cert(f"al{ZWSP}ice@example.org/bot"))
    with pytest.raises(CertificateError, match="invisible"):
        xmpp_addrs(cert)


def external(der: bytes, authzid: str) -> ExternalAccepted | ExternalRefused:
    record = certificate_record(der, account=ALICE)
    try:
        return decide_external(
            presented=PeerCertificate.parse(der),
            authzid=authzid,
            domain="example.org",
            registered=record,
            now=NOW,
        )
    except ExternalRefused as refused:
        return refused


def test_external_authzid_is_prepared_before_matching() -> None:
    der = raw_cert("alice@example.org/bot")
    accepted = external(der, fullwidth("ALICE") + "@example.org")
    assert isinstance(accepted, ExternalAccepted)
    assert accepted.identity == ALICE
    refused = external(der, f"al{ZWSP}ice@example.org")
    assert isinstance(refused, ExternalRefused)
    assert refused.condition is SASLCondition.INVALID_AUTHZID


# --- URIs, LAN messages, the stream header, the server's domain ----------------------------------


def test_enrollment_uri_jid_is_prepared() -> None:
    token, fp = "A" * 32, "B" * 52
    encoded = "".join(f"%{b:02X}" for b in fullwidth("ALICE").encode())
    uri = EnrollmentURI.parse(f"XMPP-DP:1/{token}/{fp}/LOCALHOST/5222/{encoded}%40LOCALHOST/BOT")
    assert uri.jid == JID.parse("alice@localhost/bot")
    zwsp = "".join(f"%{b:02X}" for b in ZWSP.encode())
    with pytest.raises(InvalidPairingURI, match="invisible"):
        EnrollmentURI.parse(f"XMPP-DP:1/{token}/{fp}/LOCALHOST/5222/AL{zwsp}ICE%40LOCALHOST/BOT")


def offer_json(jid: str) -> dict[str, object]:
    return {
        "type": "enrollment-offer",
        "jid": jid,
        "host": "127.0.0.1",
        "port": 5222,
        "fingerprint": "ab" * 32,
        "mode": "xep0257",
    }


def test_lan_offer_jid_is_prepared_or_refused() -> None:
    offer = EnrollmentOffer.from_json(offer_json(fullwidth("Alice") + "@example.org/kitchen"))
    assert offer.jid == JID.parse("alice@example.org/kitchen")
    with pytest.raises(RemoteProtocolError, match="invisible"):
        EnrollmentOffer.from_json(offer_json(f"al{ZWSP}ice@example.org/kitchen"))
    with pytest.raises(RemoteProtocolError, match="full JID"):
        EnrollmentOffer.from_json(offer_json("alice@example.org"))


def test_lan_result_and_hello_are_prepared() -> None:
    result = EnrollmentResult.from_json(
        {"type": "result", "ok": True, "jid": "ALICE@example.org/kitchen"}
    )
    assert result.jid == JID.parse("alice@example.org/kitchen")
    with pytest.raises(RemoteProtocolError):
        EnrollmentResult.from_json({"type": "result", "ok": True, "jid": f"a{ZWSP}@x/y"})
    hello = DeviceHello("ABCDEFGHJK", b"\0" * 4, "Kitchen", "kitchen\u00a0sensor")
    assert hello.resource == "kitchen sensor"
    body = bytes([1]) + b"ABCDEFGHJK" + b"\0" * 4 + b"\x01K" + bytes([3]) + ZWSP.encode()
    with pytest.raises(RemoteProtocolError, match="invisible"):
        DeviceHello.parse(body)


def header(to: str) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream to='{to}' version='1.0' "
        "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    ).encode()


@pytest.mark.parametrize("to", ["EXAMPLE.ORG.", fullwidth("EXAMPLE") + ".org"])
def test_stream_to_is_prepared(to: str) -> None:
    stream = C2SStream("example.org")
    assert stream.receive_data(header(to)) == []
    assert b"<starttls" in stream.data_to_send()


@pytest.mark.parametrize("to", [f"ex{ZWSP}ample.org", "", "a..b"])
def test_stream_to_that_cannot_be_prepared_is_host_unknown(to: str) -> None:
    (event,) = C2SStream("example.org").receive_data(header(to))
    assert isinstance(event, StreamFailed)
    assert event.condition == "host-unknown"


def test_server_domain_is_prepared() -> None:
    assert ServerConfig(domain="Example.ORG.").domain == "example.org"
    with pytest.raises(InvalidJID):
        ServerConfig(domain=f"ex{ZWSP}ample.org")
