"""SCRAM-SHA-1 and SCRAM-SHA-256 on the server side, checked against the RFC examples."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pairing.protocol.jid import JID
from server_ext.auth.credentials import (
    DEFAULT_ITERATIONS,
    PasswordRefused,
    derive_credentials,
    prepare_password,
    verify_password,
)
from server_ext.auth.mechanism import Challenge, Failure, SASLUsageError, Success
from server_ext.auth.plain import PlainMechanism
from server_ext.auth.scram import ChannelBindings, ScramMechanism
from server_ext.model import ScramCredentials
from server_ext.wire.conditions import SASLCondition

# RFC 5802 §5: user "user", password "pencil", salt QSXCR+Q6sek8bf92, 4096 iterations.
RFC5802 = {
    "salt": base64.b64decode("QSXCR+Q6sek8bf92"),
    "client_first": b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "server_nonce": "3rfcNHYJY1ZVvWVs7j",
    "server_first": b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "client_final": b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
    b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "server_final": b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
}
# RFC 7677 §3: the same user and password with SHA-256.
RFC7677 = {
    "salt": base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="),
    "client_first": b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "server_nonce": "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    "server_first": b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "client_final": b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "server_final": b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}
KEY = b"k" * 32  # the registry's secret for unknown users' salts
USER = JID.parse("user@example.org")


def mechanism(hash_name: str, vector: dict[str, object]) -> ScramMechanism:
    creds = derive_credentials(
        "pencil",
        hash_name,
        salt=vector["salt"],  # type: ignore[arg-type]
        iterations=4096,
    )
    return ScramMechanism(
        hash_name,
        "example.org",
        lambda jid: creds if jid == USER else None,
        fake_salt_key=KEY,
        nonce=lambda: str(vector["server_nonce"]),
    )


@pytest.mark.parametrize(("hash_name", "vector"), [("sha1", RFC5802), ("sha256", RFC7677)])
def test_rfc_example_exchange_byte_for_byte(hash_name: str, vector: dict[str, bytes]) -> None:
    mech = mechanism(hash_name, vector)
    assert mech.start(vector["client_first"]) == Challenge(vector["server_first"])
    outcome = mech.respond(vector["client_final"])
    assert outcome == Success(USER, mech.name, additional_data=vector["server_final"])
    with pytest.raises(SASLUsageError):
        mech.respond(b"again")


def test_wrong_password_is_not_authorized() -> None:
    mech = mechanism("sha256", RFC7677)
    mech.start(RFC7677["client_first"])
    forged = RFC7677["client_final"][:-8] + b"AAAAAAA="
    outcome = mech.respond(forged)
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.NOT_AUTHORIZED
    assert outcome.account == USER


def test_unknown_user_looks_like_a_wrong_password() -> None:
    """RFC 5802 §9: a probe must not learn which accounts exist."""
    mech = ScramMechanism("sha256", "example.org", lambda jid: None, fake_salt_key=KEY)
    challenge = mech.start(b"n,,n=ghost,r=abcdef")
    assert isinstance(challenge, Challenge)
    fields = dict(p.split("=", 1) for p in challenge.data.decode().split(","))
    assert len(base64.b64decode(fields["s"])) == 16
    assert fields["i"] == str(DEFAULT_ITERATIONS)  # the same as a real account's
    again = ScramMechanism("sha256", "example.org", lambda jid: None, fake_salt_key=KEY).start(
        b"n,,n=ghost,r=x"
    )
    assert isinstance(again, Challenge)
    assert dict(p.split("=", 1) for p in again.data.decode().split(","))["s"] == fields["s"]
    outcome = mech.respond(f"c=biws,r={fields['r']},p=AAAA".encode())
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.NOT_AUTHORIZED
    assert outcome.text == "wrong username or password"


def test_authzid_of_another_account_is_invalid_authzid() -> None:
    mech = mechanism("sha256", RFC7677)
    outcome = mech.start(b"n,a=admin@example.org,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.INVALID_AUTHZID


def test_authzid_of_ones_own_account_is_fine() -> None:
    mech = mechanism("sha256", RFC7677)
    assert isinstance(mech.start(b"n,a=user@example.org,n=user,r=abc"), Challenge)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"garbage",
        b"n,,r=abc",
        b"x,,n=user,r=abc",
        b"n,,n=us=er,r=abc",
        b"\xff\xfe",
        b"n" * 5000,
    ],
)
def test_malformed_client_first(message: bytes) -> None:
    outcome = mechanism("sha1", RFC5802).start(message)
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.MALFORMED_REQUEST


def test_channel_binding_request_is_refused_clearly() -> None:
    outcome = mechanism("sha256", RFC7677).start(b"p=tls-exporter,,n=user,r=abc")
    assert isinstance(outcome, Failure)
    assert "PLUS" in outcome.text


# --- channel binding (SCRAM-*-PLUS, RFC 5802 §6) ---------------------------------------------

BINDINGS = ChannelBindings(
    ("tls-exporter", "tls-server-end-point"),
    {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}.get,
)


def plus(vector: dict[str, object], bindings: ChannelBindings = BINDINGS) -> ScramMechanism:
    creds = derive_credentials("pencil", "sha256", salt=vector["salt"], iterations=4096)  # type: ignore[arg-type]
    return ScramMechanism(
        "sha256",
        "example.org",
        lambda jid: creds if jid == USER else None,
        fake_salt_key=KEY,
        bindings=bindings,
        plus=True,
    )


def client_final(challenge: bytes, gs2: bytes, cb_data: bytes, client_first_bare: bytes) -> bytes:
    """The client's final message, computed here from RFC 5802 §3 (not by the server's code)."""
    fields = dict(p.split("=", 1) for p in challenge.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", b"pencil", base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2 + cb_data).decode()},r={fields['r']}"
    auth_message = b",".join([client_first_bare, challenge, without_proof.encode()])
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(x ^ y for x, y in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def test_scramps_client_binds_with_tls_server_end_point() -> None:
    """An independent SCRAM client (scramp) against our server, with a channel binding."""
    from scramp import ScramClient

    data = BINDINGS.data("tls-server-end-point")
    client = ScramClient(
        ["SCRAM-SHA-256-PLUS"], "user", "pencil", channel_binding=("tls-server-end-point", data)
    )
    mech = plus(RFC7677)
    challenge = mech.start(client.get_client_first().encode())
    assert isinstance(challenge, Challenge)
    client.set_server_first(challenge.data.decode())
    outcome = mech.respond(client.get_client_final().encode())
    assert isinstance(outcome, Success) and outcome.additional_data is not None
    client.set_server_final(outcome.additional_data.decode())  # raises if the server lied


@pytest.mark.parametrize("kind", ["tls-exporter", "tls-server-end-point"])
def test_plus_binds_the_exchange_to_the_connection(kind: str) -> None:
    mech = plus(RFC7677)
    assert mech.name == "SCRAM-SHA-256-PLUS"
    bare = b"n=user,r=clientnonce"
    gs2 = f"p={kind},,".encode()
    challenge = mech.start(gs2 + bare)
    assert isinstance(challenge, Challenge)
    data = BINDINGS.data(kind)
    assert data is not None
    assert isinstance(mech.respond(client_final(challenge.data, gs2, data, bare)), Success)


def test_plus_refuses_a_proof_made_on_another_connection() -> None:
    """A man in the middle who terminates TLS relays a proof bound to *his* connection."""
    mech = plus(RFC7677)
    bare = b"n=user,r=clientnonce"
    gs2 = b"p=tls-exporter,,"
    challenge = mech.start(gs2 + bare)
    assert isinstance(challenge, Challenge)
    outcome = mech.respond(client_final(challenge.data, gs2, b"M" * 32, bare))
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.NOT_AUTHORIZED
    assert "channel binding" in outcome.text


@pytest.mark.parametrize(
    ("mech_plus", "first", "words"),
    [
        (True, b"n,,n=user,r=a", "needs a channel binding"),
        (True, b"p=tls-unique,,n=user,r=a", "not offered"),
        (False, b"p=tls-exporter,,n=user,r=a", "PLUS"),
        (False, b"y,,n=user,r=a", "downgrade"),  # RFC 5802 §6
    ],
)
def test_binding_flags_that_do_not_fit_are_refused(
    mech_plus: bool, first: bytes, words: str
) -> None:
    creds = derive_credentials("pencil", "sha256", iterations=4096)
    mech = ScramMechanism(
        "sha256",
        "example.org",
        lambda jid: creds,
        fake_salt_key=KEY,
        bindings=BINDINGS,
        plus=mech_plus,
    )
    outcome = mech.start(first)
    assert isinstance(outcome, Failure), outcome
    assert words in outcome.text


def test_y_is_fine_where_the_server_offers_no_binding() -> None:
    outcome = mechanism("sha256", RFC7677).start(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert isinstance(outcome, Challenge)


def test_no_initial_response_asks_for_one() -> None:
    assert mechanism("sha1", RFC5802).start(None) == Challenge(b"")


def test_nonce_tampering_is_refused() -> None:
    mech = mechanism("sha1", RFC5802)
    mech.start(RFC5802["client_first"])
    outcome = mech.respond(RFC5802["client_final"].replace(b"7j,p", b"7k,p"))
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.MALFORMED_REQUEST


def plain(creds: ScramCredentials | None) -> PlainMechanism:
    return PlainMechanism("example.org", lambda jid: creds if jid == USER else None)


def test_plain_accepts_the_right_password_only() -> None:
    creds = derive_credentials("pencil", "sha256")
    assert plain(creds).start(b"\0user\0pencil") == Success(USER, "PLAIN")
    wrong = plain(creds).start(b"\0user\0crayon")
    assert isinstance(wrong, Failure)
    assert wrong.condition is SASLCondition.NOT_AUTHORIZED


@pytest.mark.parametrize("authzid", [b"", b"user@example.org"])
def test_plain_own_authzid_is_fine(authzid: bytes) -> None:
    creds = derive_credentials("pencil", "sha256")
    assert isinstance(plain(creds).start(authzid + b"\0user\0pencil"), Success)


def test_plain_authzid_of_another_account_is_invalid_authzid() -> None:
    creds = derive_credentials("pencil", "sha256")
    outcome = plain(creds).start(b"admin@example.org\0user\0pencil")
    assert isinstance(outcome, Failure)
    assert outcome.condition is SASLCondition.INVALID_AUTHZID


@pytest.mark.parametrize(
    "message", [b"user\0pencil", b"\0\0", b"\0user\0\xff", b"\0a@other.org\0x"]
)
def test_plain_malformed_or_foreign(message: bytes) -> None:
    outcome = plain(None).start(message)
    assert isinstance(outcome, Failure)
    assert outcome.condition in (SASLCondition.MALFORMED_REQUEST, SASLCondition.NOT_AUTHORIZED)


def test_stored_keys_are_not_the_password() -> None:
    creds = derive_credentials("pencil", "sha256")
    assert b"pencil" not in creds.stored_key + creds.server_key + creds.salt
    assert verify_password("pencil", creds)
    assert not verify_password("Pencil", creds)


def test_saslprep_rfc4013_examples() -> None:
    """RFC 4013 §3 examples."""
    assert prepare_password("I\u00adX") == "IX"
    assert prepare_password("user") == "user"
    assert prepare_password("\u00aa") == "a"
    assert prepare_password("\u2168") == "IX"
    with pytest.raises(PasswordRefused):
        prepare_password("\u0007")
    with pytest.raises(PasswordRefused):
        prepare_password("\u0627\u0031")
