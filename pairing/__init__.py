"""Passwordless XMPP login for devices and bots: the protocol core and the user's client."""

from pairing.errors import CertificateError, InvalidJID, PairingError

__all__ = ["CertificateError", "InvalidJID", "PairingError"]
__version__ = "0.1.0"
