"""The encrypted channel after SRP: HKDF-SHA512 keys and ChaCha20-Poly1305 (docs/protocol.md).

Each direction has its own key and a 64-bit message counter as nonce, so a message cannot be
replayed, reordered or reflected back to its sender.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pairing.errors import RemoteProtocolError

#: HKDF salt and info labels (RFC 5869), with the literal visible for the docs.
KDF_SALT = b"xmpp-dp pair-setup v1"
INFO_USER_TO_DEVICE = b"xmpp-dp user-to-device key v1"
INFO_DEVICE_TO_USER = b"xmpp-dp device-to-user key v1"
INFO_PROOF_OF_POSSESSION = b"xmpp-dp proof-of-possession v1"


def derive(session_key: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA512(), length=length, salt=KDF_SALT, info=info).derive(
        session_key
    )


def _nonce(counter: int) -> bytes:
    return b"\0\0\0\0" + counter.to_bytes(8, "little")


class SecureChannel:
    """One side's view: a key to send with and a key to receive with."""

    def __init__(self, session_key: bytes, *, is_device: bool) -> None:
        u2d = derive(session_key, INFO_USER_TO_DEVICE)
        d2u = derive(session_key, INFO_DEVICE_TO_USER)
        send_key, receive_key = (d2u, u2d) if is_device else (u2d, d2u)
        self._send = ChaCha20Poly1305(send_key)
        self._receive = ChaCha20Poly1305(receive_key)
        self._send_count = 0
        self._receive_count = 0
        self.binding = derive(session_key, INFO_PROOF_OF_POSSESSION)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        sealed = self._send.encrypt(_nonce(self._send_count), plaintext, aad)
        self._send_count += 1
        return sealed

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            plaintext = self._receive.decrypt(_nonce(self._receive_count), ciphertext, aad)
        except InvalidTag:
            raise RemoteProtocolError("an encrypted frame failed authentication") from None
        self._receive_count += 1
        return plaintext
