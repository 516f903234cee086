"""SCRAM-SHA-1, SCRAM-SHA-256 and their -PLUS variants, server side (RFC 5802, RFC 7677).

The -PLUS variants bind the exchange to this TLS connection (RFC 5802 §6) with
``tls-exporter`` (RFC 9266, TLS 1.3) or ``tls-server-end-point`` (RFC 5929 §4), so that a
password proof cannot be relayed through a man in the middle that terminates TLS. scramp, the
library the keys come from, cannot bind to ``tls-exporter`` (its README, "Missing tls-exporter
channel binding support"), which is what TLS 1.3 needs; so the exchange itself is here, checked
against the RFC 5802/7677 vectors and against scramp's client in the tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.auth.credentials import DEFAULT_ITERATIONS, HASHES, SALT_BYTES
from server_ext.auth.mechanism import Challenge, Failure, Outcome, SASLUsageError, Success
from server_ext.model import ScramCredentials
from server_ext.wire.conditions import SASLCondition

_MAX_MESSAGE = 4096


def _hmac(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


def _parse_attributes(message: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise ValueError(f"malformed attribute {part[:16]!r}")
        pairs.append((part[0], part[2:]))
    return pairs


def _decode_saslname(name: str) -> str:
    # RFC 5802 §5.1: "," and "=" are escaped as =2C and =3D; any other "=" is malformed.
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        raise ValueError("badly escaped username")
    return name.replace("=2C", ",").replace("=3D", "=")


@dataclass(frozen=True, slots=True)
class ChannelBindings:
    """What the TLS connection can bind SCRAM-*-PLUS to: the types, and their data."""

    types: tuple[str, ...]
    data: Callable[[str], bytes | None]


class ScramMechanism:
    """One SCRAM exchange: client-first, server-first, client-final, server-final."""

    def __init__(
        self,
        hash_name: str,
        domain: str,
        lookup: Callable[[JID], ScramCredentials | None],
        *,
        fake_salt_key: bytes,
        bindings: ChannelBindings | None = None,
        plus: bool = False,
        nonce: Callable[[], str] | None = None,
    ) -> None:
        """``fake_salt_key`` derives the salt an unknown user is shown: stable across
        restarts, so that a probe cannot tell an unknown user from a wrong password
        (RFC 5802 §9 recommends not revealing which accounts exist)."""
        if plus and (bindings is None or not bindings.types):
            raise SASLUsageError("SCRAM-*-PLUS needs a channel to bind to")
        self.name = HASHES[hash_name] + ("-PLUS" if plus else "")
        self._plus = plus
        self._bindings = bindings
        self._binding_data = b""
        self._hash = hash_name
        self._fake_salt_key = fake_salt_key
        self._domain = domain
        self._lookup = lookup
        self._nonce = nonce or (lambda: secrets.token_urlsafe(24))
        self._step = 0
        self._account: JID | None = None
        self._creds: ScramCredentials | None = None
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._combined_nonce = ""

    def start(self, initial_response: bytes | None) -> Outcome:
        if self._step != 0:
            raise SASLUsageError("start() called twice")
        self._step = 1
        if initial_response is None:
            return Challenge(b"")  # RFC 6120 §6.4.2: ask for the client-first message
        return self._client_first(initial_response)

    def respond(self, data: bytes) -> Outcome:
        if self._step == 1:
            return self._client_first(data)
        if self._step == 2:
            return self._client_final(data)
        raise SASLUsageError("the exchange is already decided")

    def _fail(self, condition: SASLCondition, text: str) -> Failure:
        self._step = 3
        return Failure(condition, text, self._account)

    def _client_first(self, data: bytes) -> Outcome:
        if len(data) > _MAX_MESSAGE:
            return self._fail(SASLCondition.MALFORMED_REQUEST, "the message is too long")
        try:
            text = data.decode("utf-8")
            cbind, authzid_part, bare = text.split(",", 2)
            refused = self._check_binding(cbind)
            if refused is not None:
                return refused
            attrs = _parse_attributes(bare)
            # RFC 5802 §5.1: a leading "m=" (mandatory extension) is not supported either.
            if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
                raise ValueError("client-first needs n= and r= (no extensions)")
            # RFC 6120 §6.3.8 and RFC 7622 §3.3: in XMPP the SASL simple user name is the
            # localpart, prepared with PRECIS UsernameCaseMapped like every other localpart,
            # not with the SASLprep of RFC 5802 §5.1, which would fold "ﬁx" into "fix".
            username = _decode_saslname(attrs[0][1])
            client_nonce = attrs[1][1]
            if not client_nonce or not client_nonce.isprintable() or "," in client_nonce:
                raise ValueError("bad nonce")
            account = self._account_for(username)
        except (UnicodeDecodeError, ValueError) as exc:
            # InvalidJID is a ValueError: a name PRECIS refuses is malformed, never mapped.
            return self._fail(SASLCondition.MALFORMED_REQUEST, f"bad client-first message: {exc}")
        self._account = account
        if authzid_part:
            if not authzid_part.startswith("a="):
                return self._fail(SASLCondition.MALFORMED_REQUEST, "bad authzid field")
            try:
                authzid = JID.parse(_decode_saslname(authzid_part[2:]))
            except (ValueError, InvalidJID):
                return self._fail(SASLCondition.INVALID_AUTHZID, "the authzid is not a JID")
            if authzid != account:
                # Only the authenticated identity may be requested; ejabberd 23.01 let one
                # account act as another through this field.
                return self._fail(
                    SASLCondition.INVALID_AUTHZID, "you may only authorize as your own account"
                )
        self._creds = self._lookup(account)
        salt, iterations = (
            (self._creds.salt, self._creds.iterations)
            if self._creds is not None
            else (self._fake_salt(account), DEFAULT_ITERATIONS)
        )
        self._gs2_header = f"{cbind},{authzid_part},"
        self._client_first_bare = bare
        self._combined_nonce = client_nonce + self._nonce()
        self._server_first = (
            f"r={self._combined_nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        )
        self._step = 2
        return Challenge(self._server_first.encode())

    def _check_binding(self, cbind: str) -> Failure | None:
        """The gs2 channel-binding flag against what this server offers (RFC 5802 §6)."""
        offered = self._bindings.types if self._bindings is not None else ()
        if cbind.startswith("p="):
            kind = cbind[2:]
            if not self._plus:
                # RFC 5802 §5.1: a client that binds must choose the -PLUS mechanism.
                return self._fail(
                    SASLCondition.MALFORMED_REQUEST, f"channel binding needs {self.name}-PLUS"
                )
            if kind not in offered:
                return self._fail(
                    SASLCondition.MALFORMED_REQUEST,
                    f"channel binding {kind!r} is not offered here; use one of "
                    + ", ".join(offered),
                )
            assert self._bindings is not None
            data = self._bindings.data(kind)
            if data is None:  # pragma: no cover - the TLS layer listed it
                return self._fail(SASLCondition.TEMPORARY_AUTH_FAILURE, "no channel binding data")
            self._binding_data = data
            return None
        if cbind == "y" and offered:
            # RFC 5802 §6: the client could bind but believes this server cannot. The server
            # offered -PLUS, so someone removed it on the way: a downgrade, refused.
            return self._fail(
                SASLCondition.NOT_AUTHORIZED,
                "the server offers channel binding (SCRAM-*-PLUS); a downgrade is refused",
            )
        if cbind not in ("n", "y"):
            return self._fail(SASLCondition.MALFORMED_REQUEST, "bad gs2 header")
        if self._plus:
            return self._fail(
                SASLCondition.MALFORMED_REQUEST, f"{self.name} needs a channel binding (p=…)"
            )
        return None

    def _account_for(self, username: str) -> JID:
        account = JID.parse_account(username, self._domain)
        if account.domain != self._domain:
            raise ValueError("the username names another domain")
        return account

    def _fake_salt(self, account: JID) -> bytes:
        return _hmac("sha256", self._fake_salt_key, str(account).encode())[:SALT_BYTES]

    def _client_final(self, data: bytes) -> Outcome:
        if len(data) > _MAX_MESSAGE:
            return self._fail(SASLCondition.MALFORMED_REQUEST, "the message is too long")
        try:
            text = data.decode("utf-8")
            without_proof, _, proof_part = text.rpartition(",p=")
            if not without_proof:
                raise ValueError("client-final needs p=")
            attrs = dict(_parse_attributes(without_proof))
            proof = base64.b64decode(proof_part, validate=True)
            channel = base64.b64decode(attrs["c"], validate=True)
        except (UnicodeDecodeError, ValueError, KeyError, binascii.Error) as exc:
            return self._fail(SASLCondition.MALFORMED_REQUEST, f"bad client-final message: {exc}")
        # RFC 5802 §7: c = base64(gs2-header [channel binding data]); for -PLUS the data is
        # this TLS connection's, so a proof relayed from another connection fails here.
        expected = self._gs2_header.encode() + self._binding_data
        if not hmac.compare_digest(channel, expected):
            return self._fail(SASLCondition.NOT_AUTHORIZED, "the channel binding data differs")
        if attrs.get("r") != self._combined_nonce:
            return self._fail(SASLCondition.MALFORMED_REQUEST, "the nonce does not match")
        creds = self._creds
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        if creds is None or len(proof) != len(creds.stored_key):
            return self._fail(SASLCondition.NOT_AUTHORIZED, "wrong username or password")
        signature = _hmac(self._hash, creds.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), creds.stored_key):
            return self._fail(SASLCondition.NOT_AUTHORIZED, "wrong username or password")
        assert self._account is not None
        server_signature = _hmac(self._hash, creds.server_key, auth_message)
        self._step = 3
        return Success(
            self._account,
            self.name,
            additional_data=b"v=" + base64.b64encode(server_signature),
        )
