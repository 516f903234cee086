"""Salted SCRAM keys (RFC 5802 §3): what an account stores instead of its password.

The derivation and SASLprep (RFC 4013) come from scramp, a well-kept SCRAM library; the server
side of the exchange is ``server_ext.auth.scram`` (scramp cannot bind to ``tls-exporter``).
"""

from __future__ import annotations

import hmac
import secrets

from scramp import ScramException
from scramp import ScramMechanism as ScrampMechanism
from scramp.utils import saslprep

from server_ext.errors import ServerExtError
from server_ext.model import ScramCredentials

HASHES = {"sha1": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}
# RFC 7677 §4 asks for at least 4096; like Prosody 0.12 we use more, since a stolen registry
# should cost an attacker as much as possible per password guess.
DEFAULT_ITERATIONS = 10_000
SALT_BYTES = 16


class PasswordRefused(ServerExtError, ValueError):
    """SASLprep (RFC 4013) refuses the password; the message says why, never the password."""


def prepare_password(password: str) -> str:
    """SASLprep, RFC 4013 §2 (RFC 5802 §2.2 "Normalize").

    Passwords stay SASLprep, not PRECIS OpaqueString (RFC 8265 §4.2): a SCRAM client salts the
    password it prepared itself, and the clients people run (slixmpp among them) use SASLprep,
    so keys made any other way would not match theirs for non-ASCII passwords. For ASCII
    passwords both are the identity. Identifiers, unlike passwords, are PRECIS
    (``pairing.protocol.jid``).
    """
    try:
        return str(saslprep(password))
    except ScramException as exc:
        raise PasswordRefused(f"the password is not allowed by SASLprep: {exc.args[0]}") from None


def derive_credentials(
    password: str,
    hash_name: str,
    *,
    salt: bytes | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> ScramCredentials:
    """The stored keys for ``password`` (RFC 5802 §3); the password itself is not kept."""
    if hash_name not in HASHES:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}")
    prepared = prepare_password(password)
    try:
        stored_salt, stored_key, server_key, count = ScrampMechanism(
            HASHES[hash_name]
        ).make_auth_info(
            prepared,
            iteration_count=iterations,
            salt=salt if salt is not None else secrets.token_bytes(SALT_BYTES),
        )
    except ScramException as exc:
        raise PasswordRefused(str(exc.args[0])) from None
    return ScramCredentials(
        hash_name=hash_name,
        salt=stored_salt,
        iterations=count,
        stored_key=stored_key,
        server_key=server_key,
    )


def verify_password(password: str, creds: ScramCredentials) -> bool:
    """True if ``password`` matches the stored keys (compared in constant time)."""
    try:
        candidate = derive_credentials(
            password, creds.hash_name, salt=creds.salt, iterations=creds.iterations
        )
    except PasswordRefused:
        return False
    return hmac.compare_digest(candidate.stored_key, creds.stored_key)


def credentials_for(
    password: str, *, iterations: int = DEFAULT_ITERATIONS
) -> tuple[ScramCredentials, ...]:
    """The keys to store for a new password: one set per SCRAM hash the server offers."""
    return tuple(derive_credentials(password, h, iterations=iterations) for h in HASHES)
