"""PLAIN (RFC 4616), verified against the stored SCRAM-SHA-256 keys; offered over TLS only."""

from __future__ import annotations

from collections.abc import Callable

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.auth.credentials import (
    PasswordRefused,
    derive_credentials,
    prepare_password,
    verify_password,
)
from server_ext.auth.mechanism import Challenge, Failure, Outcome, SASLUsageError, Success
from server_ext.model import ScramCredentials
from server_ext.wire.conditions import SASLCondition

_MAX_MESSAGE = 4096


class PlainMechanism:
    name = "PLAIN"

    def __init__(self, domain: str, lookup: Callable[[JID], ScramCredentials | None]) -> None:
        self._domain = domain
        self._lookup = lookup
        self._started = False
        self._done = False

    def start(self, initial_response: bytes | None) -> Outcome:
        if self._started:
            raise SASLUsageError("start() called twice")
        self._started = True
        if initial_response is None:
            return Challenge(b"")
        return self._decide(initial_response)

    def respond(self, data: bytes) -> Outcome:
        if self._done or not self._started:
            raise SASLUsageError("the exchange is already decided")
        return self._decide(data)

    def _decide(self, message: bytes) -> Outcome:
        self._done = True
        if len(message) > _MAX_MESSAGE:
            return Failure(SASLCondition.MALFORMED_REQUEST, "the message is too long")
        parts = message.split(b"\0")
        if len(parts) != 3:
            return Failure(SASLCondition.MALFORMED_REQUEST, "expected authzid\\0authcid\\0passwd")
        try:
            authzid_raw, authcid_raw, password_raw = (p.decode("utf-8") for p in parts)
            password = prepare_password(password_raw)  # RFC 4616 §2: SASLprep
            # RFC 6120 §6.3.8, RFC 7622 §3.3: the authcid is a localpart (or a bare JID) and is
            # prepared with PRECIS like every other localpart, never SASLprep'd onto another.
            account = JID.parse_account(authcid_raw, self._domain)
        except (UnicodeDecodeError, PasswordRefused, InvalidJID) as exc:
            return Failure(SASLCondition.MALFORMED_REQUEST, f"bad credentials: {exc}")
        if account.domain != self._domain:
            return Failure(SASLCondition.NOT_AUTHORIZED, "wrong username or password")
        if authzid_raw:
            try:
                authzid = JID.parse(authzid_raw)
            except InvalidJID:
                return Failure(SASLCondition.INVALID_AUTHZID, "the authzid is not a JID", account)
            if authzid != account:
                return Failure(
                    SASLCondition.INVALID_AUTHZID,
                    "you may only authorize as your own account",
                    account,
                )
        creds = self._lookup(account)
        if creds is None:
            # Spend the same work as a real check so timing does not reveal unknown users.
            verify_password(password, _DUMMY)
            return Failure(SASLCondition.NOT_AUTHORIZED, "wrong username or password", account)
        if not verify_password(password, creds):
            return Failure(SASLCondition.NOT_AUTHORIZED, "wrong username or password", account)
        return Success(account, self.name)


_DUMMY = derive_credentials("not a password", "sha256", salt=b"\0" * 16)
