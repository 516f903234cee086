"""Exporting the device identity as a password-protected PKCS#12 file for desktop clients.

This is the one way the private key leaves the agent's store, and only on the owner's
explicit command: a desktop client (docs/desktop-clients.md) that imports the file can log
in as the device, so whoever holds the file and its password can too.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from device_agent.errors import DeviceAgentError
from device_agent.keystore import DeviceIdentity, KeyStore
from pairing.secure_files import write_private

#: PBKDF2 rounds for the PKCS#12 key (RFC 8018 §4.2 asks for at least 1000; OpenSSL 3 uses
#: 2048 by default). Higher slows guessing the file's password.
KDF_ROUNDS = 200_000


class ExportError(DeviceAgentError):
    """The identity was not exported; the message says why."""


def export_pkcs12(
    store: KeyStore, path: Path, password: bytes, *, force: bool = False
) -> DeviceIdentity:
    """Write the device's key and certificate to ``path`` (mode 0600), encrypted.

    PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA256, and an HMAC-SHA256 MAC (RFC 7292, RFC 8018):
    what OpenSSL 3 writes by default and GnuTLS, NSS and Java read. Never without a password.
    """
    if not password:
        raise ExportError("the password is empty; a PKCS#12 file is never written unprotected")
    if path.exists() and not force:
        raise ExportError(f"{path} exists already; use --force to replace it")
    identity = store.load()
    key = store.private_key()
    cert = x509.load_der_x509_certificate(identity.certificate_der)
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    data = pkcs12.serialize_key_and_certificates(
        str(identity.jid).encode(), key, cert, None, encryption
    )
    try:
        write_private(path, data)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return identity
