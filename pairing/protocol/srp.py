"""SRP-6a for pair-setup: RFC 5054's 3072-bit group with SHA-512, fixed-width encodings.

srptools does the group arithmetic (its defaults, SHA-1 and 1024 bits, are never used here).
The password hash, the session key and the proofs are computed here so that every value is
hashed at a fixed width: A, B and S as 384 bytes (the size of N), the salt as its 16 bytes.
Minimal-length encodings are the classic SRP interop bug (≈0.4 % of handshakes fail when a
value has a leading zero byte); tests pin these encodings with leading-zero vectors and check
them against an independent SRP-6a implementation.

    x  = H(salt | H(I | ":" | P))          RFC 5054 §2.4, the salt as its 16 bytes
    v  = g^x mod N
    K  = H(PAD(S))
    M1 = H(H(N) XOR H(PAD(g)) | H(I) | salt | PAD(A) | PAD(B) | K)
    M2 = H(PAD(A) | M1 | K)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from srptools import SRPContext
from srptools.constants import PRIME_3072, PRIME_3072_GEN

from pairing.errors import PairingError

USERNAME = "xmpp-dp pair-setup"  # SRP's I; fixed, like HomeKit's "Pair-Setup"
N_BYTES = 384
SALT_BYTES = 16
HASH_BYTES = 64
_PRIVATE_BITS = 256


class SRPError(PairingError):
    """An SRP value from the peer is invalid, or its proof is wrong."""


def _context(code: str | None = None) -> SRPContext:
    return SRPContext(
        USERNAME,
        code,
        prime=PRIME_3072,
        generator=PRIME_3072_GEN,
        hash_func=hashlib.sha512,
        bits_random=_PRIVATE_BITS,
        bits_salt=SALT_BYTES * 8,
    )


_GROUP = _context()
N = int(PRIME_3072, 16)
G = int(PRIME_3072_GEN, 16)


def pad(value: int) -> bytes:
    return value.to_bytes(N_BYTES, "big")


def _h(*parts: bytes) -> bytes:
    return hashlib.sha512(b"".join(parts)).digest()


_HN_XOR_HG = bytes(a ^ b for a, b in zip(_h(pad(N)[-N_BYTES:]), _h(pad(G)), strict=True))


def password_hash(salt: bytes, code: str) -> int:
    """x = H(salt | H(I | ":" | P)) (RFC 5054 §2.4), with the salt hashed as its 16 bytes.

    srptools takes the salt as an integer and hashes its minimal encoding, which drops a
    leading zero byte (1 salt in 256) and gives a verifier that RFC 5054 firmware would not.
    """
    if len(salt) != SALT_BYTES:
        raise SRPError(f"the salt must be {SALT_BYTES} bytes")
    inner = _h(f"{USERNAME}:{code}".encode())
    return int.from_bytes(_h(salt, inner), "big")


def session_key(premaster: int) -> bytes:
    return _h(pad(premaster))


def client_proof(salt: bytes, a_pub: int, b_pub: int, key: bytes) -> bytes:
    return _h(_HN_XOR_HG, _h(USERNAME.encode()), salt, pad(a_pub), pad(b_pub), key)


def server_proof(a_pub: int, m1: bytes, key: bytes) -> bytes:
    return _h(pad(a_pub), m1, key)


def _public(value: bytes, what: str) -> int:
    if len(value) != N_BYTES:
        raise SRPError(f"{what} must be {N_BYTES} bytes")
    number = int.from_bytes(value, "big")
    # RFC 5054 §2.5.4 / §2.5.3: abort if A % N == 0 or B % N == 0.
    if number % N == 0:
        raise SRPError(f"{what} is invalid")
    return number


@dataclass(frozen=True, slots=True)
class Verifier:
    """What the device stores instead of its code: the salt and v = g^x."""

    salt: bytes
    verifier: bytes  # PAD(v)

    def __repr__(self) -> str:
        return "Verifier(***)"


def make_verifier(code: str, salt: bytes | None = None) -> Verifier:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    return Verifier(salt, pad(pow(G, password_hash(salt, code), N)))


class SRPServer:
    """The device's side: it holds the verifier."""

    def __init__(self, verifier: Verifier, *, private: int | None = None) -> None:
        self._salt = verifier.salt
        self._v = int.from_bytes(verifier.verifier, "big")
        self._b = private if private is not None else _GROUP.generate_server_private()
        self.public = pad(
            _GROUP.get_server_public(password_verifier=self._v, server_private=self._b)
        )
        self._key: bytes | None = None

    @property
    def salt(self) -> bytes:
        return self._salt

    def verify(self, a_bytes: bytes, m1: bytes) -> tuple[bytes, bytes]:
        """Check the user's proof; returns (M2, K). Raises :class:`SRPError` on a wrong code."""
        a_pub = _public(a_bytes, "A")
        b_pub = int.from_bytes(self.public, "big")
        u = _GROUP.get_common_secret(b_pub, a_pub)
        premaster = _GROUP.get_server_premaster_secret(
            password_verifier=self._v, server_private=self._b, client_public=a_pub, common_secret=u
        )
        key = session_key(premaster)
        expected = client_proof(self._salt, a_pub, b_pub, key)
        if len(m1) != HASH_BYTES or not hmac.compare_digest(expected, m1):
            raise SRPError("the setup code does not match")
        return server_proof(a_pub, m1, key), key


class SRPClient:
    """The user's side: it knows the code."""

    def __init__(self, code: str, *, private: int | None = None) -> None:
        self._code = code
        self._ctx = _context(code)
        self._a = private if private is not None else self._ctx.generate_client_private()
        self.public = pad(self._ctx.get_client_public(client_private=self._a))
        self._expected_m2 = b""
        self._key = b""

    def respond(self, salt: bytes, b_bytes: bytes) -> bytes:
        """Given the device's salt and B, return M1 (and remember K and the expected M2)."""
        if len(salt) != SALT_BYTES:
            raise SRPError(f"the salt must be {SALT_BYTES} bytes")
        b_pub = _public(b_bytes, "B")
        a_pub = int.from_bytes(self.public, "big")
        u = _GROUP.get_common_secret(b_pub, a_pub)
        if u == 0:
            raise SRPError("u is zero")  # RFC 5054 §2.6
        x = password_hash(salt, self._code)
        premaster = self._ctx.get_client_premaster_secret(
            password_hash=x, server_public=b_pub, client_private=self._a, common_secret=u
        )
        self._key = session_key(premaster)
        m1 = client_proof(salt, a_pub, b_pub, self._key)
        self._expected_m2 = server_proof(a_pub, m1, self._key)
        return m1

    def verify(self, m2: bytes) -> bytes:
        """Check the device's proof; returns K."""
        if not self._expected_m2 or not hmac.compare_digest(self._expected_m2, m2):
            raise SRPError("the device could not prove it knows the setup code")
        return self._key
