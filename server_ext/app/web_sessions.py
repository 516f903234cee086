"""The web page's logins, sessions and CSRF tokens (docs/web.md), without I/O.

- A password is checked against the account's stored SCRAM keys (RFC 5802 §3: the same
  derivation with the stored salt and iteration count, compared in constant time), through the
  same :class:`~server_ext.policy.throttle.LoginThrottle` as XMPP password logins, so the web
  page is no cheaper a place to guess passwords.
- A session id is 256 random bits, made fresh at each login (no session exists before, so
  none can be fixed by an attacker) and kept only as its SHA-256: a copy of the server's
  memory does not give live cookies.
- Each session has its own CSRF token (the synchronizer token pattern), compared in constant
  time on every form; ``SameSite=Strict`` cookies are a second line.

- A session lasts only as long as what it was opened with: every request looks the account
  up again, so deleting it or changing its password (its SCRAM keys) ends its sessions, and
  taking admin rights away takes effect at the next click, not at the next login.

In memory: a restart logs everyone out of the page, which costs a login.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.auth.credentials import verify_password
from server_ext.errors import ServerExtError
from server_ext.model import Account, ScramCredentials
from server_ext.policy.throttle import LoginThrottle
from server_ext.storage.registry import Registry

IDLE_TIMEOUT = dt.timedelta(minutes=30)
MAX_AGE = dt.timedelta(hours=12)
MAX_SESSIONS = 10_000


class LoginRefused(ServerExtError):
    """Wrong account or password, or throttled; ``retry_after`` seconds when throttled."""

    def __init__(self, text: str, retry_after: int | None = None, delay: float = 0.0) -> None:
        super().__init__(text)
        self.text = text
        self.retry_after = retry_after
        self.delay = delay  # hold the answer this long (guessing spread over addresses)


@dataclass(frozen=True, slots=True)
class WebSession:
    account: JID
    is_admin: bool
    csrf: str
    created_at: dt.datetime
    seen_at: dt.datetime
    # What the account's stored credentials were at login (a digest of its SCRAM keys); None
    # when the registry had no record of it (an account of a stock server, first seen here).
    credentials: str | None = None

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _credentials_digest(account: Account) -> str:
    """Changes whenever the account's password does (new salt and keys)."""
    digest = hashlib.sha256()
    for c in sorted(account.scram, key=lambda c: c.hash_name):
        for part in (c.hash_name.encode(), c.salt, str(c.iterations).encode(), c.stored_key):
            digest.update(len(part).to_bytes(4, "big") + part)
    return digest.hexdigest()


AccountLookup = Callable[[JID], Account | None]


class WebSessions:
    """Live sessions by the SHA-256 of their id.

    With ``accounts`` (the registry's lookup), a session ends when its account is deleted or
    its password changes, and its admin right follows the registry's.
    """

    def __init__(
        self, clock: Callable[[], dt.datetime], accounts: AccountLookup | None = None
    ) -> None:
        self._clock = clock
        self._accounts = accounts
        self._sessions: dict[str, WebSession] = {}

    def open(self, account: JID, is_admin: bool) -> tuple[str, WebSession]:
        """A new session: the id (for the cookie, never stored) and the session."""
        now = self._clock()
        self._sweep(now)
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes first
            oldest = min(self._sessions, key=lambda k: self._sessions[k].seen_at)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        known = self._accounts(account.bare) if self._accounts is not None else None
        session = WebSession(
            account.bare,
            is_admin,
            secrets.token_urlsafe(32),
            now,
            now,
            _credentials_digest(known) if known is not None else None,
        )
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None, *, touch: bool = True) -> WebSession | None:
        """The live session of ``session_id``, or None. ``touch=False`` (the live-update
        stream, which runs without the user doing anything) does not count as activity, so
        an open tab does not keep a session from lapsing when idle."""
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen_at > IDLE_TIMEOUT or now - session.created_at > MAX_AGE:
            del self._sessions[key]
            return None
        is_admin = session.is_admin
        if self._accounts is not None:
            current = self._accounts(session.account)
            if session.credentials is not None and (
                current is None or _credentials_digest(current) != session.credentials
            ):  # deleted, or its password changed since this session began
                del self._sessions[key]
                return None
            if current is not None:
                is_admin = current.is_admin
        touched = replace(session, seen_at=now if touch else session.seen_at, is_admin=is_admin)
        self._sessions[key] = touched
        return touched

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def close_account(self, account: JID) -> None:
        """End every session of ``account`` (deleted, or its password changed)."""
        for key in [k for k, s in self._sessions.items() if s.account == account.bare]:
            del self._sessions[key]

    def _sweep(self, now: dt.datetime) -> None:
        for key in [
            k
            for k, s in self._sessions.items()
            if now - s.seen_at > IDLE_TIMEOUT or now - s.created_at > MAX_AGE
        ]:
            del self._sessions[key]


WRONG = "wrong account or password"


def login_account(domain: str, throttle: LoginThrottle, username: str, address: str) -> JID:
    """The account a sign-in names, once the throttle lets this address try it."""
    try:
        account = JID.parse_account(username.strip(), domain)
    except InvalidJID:
        throttle.failed(None, address)
        raise LoginRefused(WRONG) from None
    wait = throttle.retry_after(account, address)
    if wait > 0:
        seconds = int(wait) + 1
        raise LoginRefused(f"too many failed logins; retry in {seconds} s", seconds)
    return account


def login_failed(throttle: LoginThrottle, account: JID, address: str) -> LoginRefused:
    """Count a wrong password; the refusal to raise (held back like XMPP failures)."""
    throttle.failed(account, address)
    return LoginRefused(WRONG, delay=throttle.failure_delay(account))


def check_password(
    registry: Registry,
    domain: str,
    throttle: LoginThrottle,
    username: str,
    password: str,
    address: str,
) -> tuple[JID, bool]:
    """The account and whether it is an admin, or :class:`LoginRefused` (accounts whose keys
    are in this registry: the embedded server's)."""
    account = login_account(domain, throttle, username, address)
    record = registry.accounts.get(account) if account.domain == domain else None
    creds = registry.accounts.scram_credentials(account, "sha256") if record else None
    # An unknown account costs the same work as a wrong password: no oracle by timing.
    if not verify_password(password, creds or _DUMMY) or record is None or creds is None:
        raise login_failed(throttle, account, address)
    throttle.succeeded(account, address)
    return account, record.is_admin


def _dummy() -> ScramCredentials:
    from server_ext.auth.credentials import derive_credentials

    return derive_credentials("not a password", "sha256", salt=b"\0" * 16)


_DUMMY = _dummy()

__all__ = [
    "IDLE_TIMEOUT",
    "LoginRefused",
    "WebSession",
    "WebSessions",
    "check_password",
    "login_account",
    "login_failed",
]
