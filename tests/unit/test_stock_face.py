"""The pieces of the stock-server face that need no socket: the HTTPS API's messages and
proofs, single-use nonces, the CA rule for device certificates, server.toml's [stock] and
[https], and the trust set a stock server is given."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

from pairing.protocol.https_api import (
    ENROLL_LABEL,
    APIRefused,
    Enrolled,
    EnrollRequest,
    SuccessorRequest,
    XMPPServer,
    enrollment_message,
    pem_of_der,
    possession_message,
    token_digest,
)
from pairing.protocol.identity import (
    XMPP_ADDR_OID,
    PeerCertificate,
    build_device_certificate,
    certificate_der,
    encode_utf8string,
    generate_key,
)
from pairing.protocol.jid import JID
from pairing.protocol.proofs import InvalidProof, sign, verify
from server_ext.config import ServerConfig, StockKind
from server_ext.config_file import parse_config, read_config, write_config
from server_ext.errors import ConfigError
from server_ext.model import DeviceState
from server_ext.policy.certificates import CertificateRefused, Problem, require_usable
from server_ext.policy.nonces import NonceBook, TooManyChallenges
from server_ext.policy.tokens import hash_token
from server_ext.stock.base import device_jids, trust_set
from server_ext.storage.registry import Registry

BOT = JID.parse("alice@example.org/bot")
TOKEN = "QMMWLLPYQRK3K6IMENITWWPPYVDKNSIX"
NOW = dt.datetime.now(dt.UTC)


def device(jid: JID = BOT, **kw: object) -> tuple[object, PeerCertificate]:
    key = generate_key()
    cert = build_device_certificate(key, jid, **kw)  # type: ignore[arg-type]
    return key, PeerCertificate.parse(certificate_der(cert))


# --- proofs and messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_key",
    [
        generate_key,
        ed25519.Ed25519PrivateKey.generate,
        lambda: rsa.generate_private_key(65537, 2048),
    ],
)
def test_a_proof_verifies_only_for_its_key_and_message(make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    message = enrollment_message("n" * 43, TOKEN, "ab" * 32)
    signature = sign(key, message)
    verify(key.public_key(), signature, message)
    with pytest.raises(InvalidProof):
        verify(key.public_key(), signature, message + b"x")
    with pytest.raises(InvalidProof):
        verify(generate_key().public_key(), signature, message)


def test_the_enrollment_message_binds_nonce_token_and_certificate() -> None:
    fp = hashlib.sha256(b"cert").hexdigest()
    message = enrollment_message("nonce-1234567890abcdef", TOKEN, fp)
    assert message.startswith(ENROLL_LABEL + b"\x00nonce-1234567890abcdef\x00")
    assert message.endswith(hashlib.sha256(TOKEN.encode()).digest() + bytes.fromhex(fp))
    # The server stores SHA-256 of the same normalised token: the device signs the same.
    assert token_digest(f" {TOKEN.lower()} ").hex() == hash_token(TOKEN)
    others = {
        enrollment_message("nonce-1234567890abcdeX", TOKEN, fp),
        enrollment_message("nonce-1234567890abcdef", "A" * 32, fp),
        enrollment_message("nonce-1234567890abcdef", TOKEN, "cd" * 32),
        possession_message("nonce-1234567890abcdef", fp),
    }
    assert message not in others and len(others) == 4


def test_requests_round_trip_and_a_malformed_one_says_which_field() -> None:
    _, cert = device()
    request = EnrollRequest(TOKEN, cert, "n" * 43, b"sig")
    again = EnrollRequest.from_json(request.to_json())
    assert again == request and TOKEN not in repr(again)
    successor = SuccessorRequest(cert.der, cert, "n" * 43, b"old", b"new")
    assert SuccessorRequest.from_json(successor.to_json()) == successor
    answer = Enrolled(BOT, "bot", XMPPServer("xmpp.example.org", 5222, None))
    assert Enrolled.from_json(answer.to_json()) == answer
    bad = dict(request.to_json(), signature="%%")
    with pytest.raises(APIRefused, match="'signature' is not base64") as refused:
        EnrollRequest.from_json(bad)
    assert refused.value.status == 400
    with pytest.raises(APIRefused, match="'certificate' is not a certificate"):
        EnrollRequest.from_json(dict(request.to_json(), certificate="-----BEGIN nope"))
    with pytest.raises(APIRefused) as nonce:
        EnrollRequest.from_json(dict(request.to_json(), nonce="../../etc"))
    assert nonce.value.condition == "nonce-unknown"
    with pytest.raises(APIRefused, match=r"xmpp\.pin"):
        Enrolled.from_json(dict(answer.to_json(), xmpp={"host": "h", "port": 1, "pin": "x"}))


def test_the_pem_the_api_carries_reads_back_as_the_same_der() -> None:
    _, cert = device()
    assert PeerCertificate.parse(pem_of_der(cert.der).encode()).der == cert.der


# --- nonces ------------------------------------------------------------------------------------


def test_a_nonce_is_good_once_and_for_two_minutes() -> None:
    now = [1000.0]
    book = NonceBook(lambda: now[0])
    nonce, expires = book.issue()
    assert expires == 1120.0 and len(base64.urlsafe_b64decode(nonce + "=")) == 32
    assert book.take(nonce) and not book.take(nonce)
    late, _ = book.issue()
    now[0] += 120.0
    assert not book.take(late)
    assert not book.take("never-issued-nonce-value")
    assert len(book) == 0


def test_the_nonce_book_has_a_cap() -> None:
    now = [0.0]
    book = NonceBook(lambda: now[0], limit=3)
    for _ in range(3):
        book.issue()
    with pytest.raises(TooManyChallenges):
        book.issue()
    now[0] += 121.0  # the old ones lapse and make room
    book.issue()


# --- the CA rule -------------------------------------------------------------------------------


def ca_like(*, ca: bool, key_cert_sign: bool, key: object = None) -> PeerCertificate:
    """A self-signed certificate for BOT that may sign others (basicConstraints or keyUsage)."""
    key = key or generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(BOT))])
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    san = x509.SubjectAlternativeName([x509.OtherName(XMPP_ADDR_OID, encode_utf8string(str(BOT)))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return PeerCertificate.parse(certificate_der(cert))


@pytest.mark.parametrize(("ca", "key_cert_sign"), [(True, True), (True, False), (False, True)])
def test_a_certificate_that_can_sign_certificates_is_never_a_device_certificate(
    ca: bool, key_cert_sign: bool
) -> None:
    # Listed in ejabberd's c2s_cafile it would be a trust anchor for any account.
    cert = ca_like(ca=ca, key_cert_sign=key_cert_sign)
    assert cert.certificate_authority
    with pytest.raises(CertificateRefused) as refused:
        require_usable(cert, NOW)
    assert refused.value.problem is Problem.CERTIFICATE_AUTHORITY
    leaf = ca_like(ca=False, key_cert_sign=False)
    require_usable(leaf, NOW)


# --- server.toml -----------------------------------------------------------------------------


def test_stock_and_https_settings_round_trip(tmp_path: Path) -> None:
    config = ServerConfig(
        domain="example.org",
        data_dir=tmp_path,
        stock_kind=StockKind.EJABBERD,
        stock_xmpp_host="xmpp.example.org",
        stock_xmpp_port=5223,
        stock_xmpp_pin="ab" * 32,
        stock_secret_file=tmp_path / "secrets" / "stock",
        stock_options={"ejabberd": {"api": ["http://127.0.0.1:5281/api"], "nodes": 2}},
        https_host="0.0.0.0",
        https_port=8443,
        https_public_host="pair.example.org",
        cert_file=tmp_path / "server.crt",
        key_file=tmp_path / "server.key",
    )
    write_config(config)
    assert read_config(tmp_path) == config
    assert config.https_connect_host == "pair.example.org"
    assert dataclasses.replace(config, https_public_host=None).https_connect_host == "example.org"
    default = parse_config('domain = "x.org"\n', tmp_path, source="t")
    assert default.stock_kind is StockKind.EMBEDDED and default.https_port is None
    assert default.stock_secret_path == tmp_path / "stock.secret"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[stock]\nkind = "openfire"\n', "choose one of embedded, ejabberd"),
        ('[stock]\nxmpp_pin = "12:34"\n', "64 hex digits"),
        ("[stock.openfire]\nx = 1\n", r"unknown table \[stock.openfire\]"),
        ("[https]\nport = 70000\n", "out of range"),
    ],
)
def test_bad_stock_settings_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config('domain = "x.org"\n' + text, tmp_path, source="server.toml")


# --- the trust set ------------------------------------------------------------------------------


def test_the_trust_set_holds_only_certificates_that_may_log_in(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "r.sqlite3") as registry:
        registry.accounts.ensure(BOT.bare, actor="test")
        assert not registry.accounts.ensure(BOT.bare, actor="test")  # once
        records = {}
        for name in ("bot", "sensor", "lamp"):
            _, cert = device(BOT.bare.with_resource(name))
            records[name] = registry.devices.add(
                BOT.bare, name, cert, added_by="test", added_via="token"
            )
        registry.devices.set_state(records["sensor"].device.id, DeviceState.REVOKED, actor="t")
        registry.devices.set_state(records["lamp"].device.id, DeviceState.DISABLED, actor="t")
        usable = trust_set(registry)
        assert [r.fingerprint for r in usable] == [records["bot"].fingerprint]
        assert trust_set(registry, JID.parse("bob@example.org")) == []
        assert device_jids(usable) == [BOT]
