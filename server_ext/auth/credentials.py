"""Salted SCRAM keys (RFC 5802 §3): what an account stores instead of its password."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from server_ext.auth.saslprep import SASLprepError, saslprep
from server_ext.model import ScramCredentials

HASHES = {"sha1": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}
# RFC 7677 §4 asks for at least 4096; like Prosody 0.12 we use more, since a stolen registry
# should cost an attacker as much as possible per password guess.
DEFAULT_ITERATIONS = 10_000
SALT_BYTES = 16
_MAX_MESSAGE = 4096


def _hmac(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


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
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    # Passwords stay SASLprep (RFC 5802 §2.2, "Normalize"), not PRECIS OpaqueString
    # (RFC 8265 §4.2): a SCRAM client salts the password it prepared itself, and the clients
    # people run (slixmpp among them) use SASLprep, so keys made any other way would not match
    # theirs for non-ASCII passwords. For ASCII passwords both are the identity, so the keys
    # already stored keep verifying. Identifiers, unlike passwords, are PRECIS: see
    # pairing.protocol.jid.
    salted = hashlib.pbkdf2_hmac(hash_name, saslprep(password).encode(), salt, iterations)
    client_key = _hmac(hash_name, salted, b"Client Key")
    return ScramCredentials(
        hash_name=hash_name,
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(hash_name, client_key).digest(),
        server_key=_hmac(hash_name, salted, b"Server Key"),
    )


def verify_password(password: str, creds: ScramCredentials) -> bool:
    """True if ``password`` matches the stored keys (compared in constant time)."""
    try:
        candidate = derive_credentials(
            password, creds.hash_name, salt=creds.salt, iterations=creds.iterations
        )
    except SASLprepError:
        return False
    return hmac.compare_digest(candidate.stored_key, creds.stored_key)


def credentials_for(
    password: str, *, iterations: int = DEFAULT_ITERATIONS
) -> tuple[ScramCredentials, ...]:
    """The keys to store for a new password: one set per SCRAM hash the server offers."""
    return tuple(derive_credentials(password, h, iterations=iterations) for h in HASHES)
