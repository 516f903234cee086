"""The error root of the ``pairing`` package."""

from __future__ import annotations


class PairingError(Exception):
    """Base class for every error raised by ``pairing``."""


class InvalidJID(PairingError, ValueError):
    """A string is not a valid JID (RFC 7622)."""


class CertificateError(PairingError, ValueError):
    """A certificate cannot be parsed or lacks what XEP-0178 requires."""
