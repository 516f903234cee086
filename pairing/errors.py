"""The error root of the ``pairing`` package."""

from __future__ import annotations


class PairingError(Exception):
    """Base class for every error raised by ``pairing``."""


class InvalidJID(PairingError, ValueError):
    """A string is not a valid JID (RFC 7622)."""


class InvalidServerAddress(PairingError, ValueError):
    """A server address is not ``host``, ``host:port`` or ``[v6]:port``."""


class CertificateError(PairingError, ValueError):
    """A certificate cannot be parsed or lacks what XEP-0178 requires."""


class ConnectionFailed(PairingError):
    """The server could not be reached or the connection dropped before login finished."""


class LoginTimedOut(ConnectionFailed):
    """The server took the connection but the login did not finish in time (a server under
    load, a link that stalls)."""


class ServerUnreachable(ConnectionFailed):
    """No server answered at the address (nothing listens, no route, no such host).

    ``exit_code`` is the CLIs' "server not running or not reachable" status
    (:data:`pairing.cli_output.EXIT_UNREACHABLE`, as ejabberdctl's).
    """

    exit_code = 3


class ServerIdentityMismatch(PairingError):
    """The server's TLS certificate is not the pinned one; nothing secret was sent."""


class AuthenticationFailed(PairingError):
    """The server refused the login; ``condition`` is the RFC 6120 §6.5 condition.

    ``revoked`` is True only when the ``<failure/>`` carried the typed revoked condition
    (:mod:`pairing.protocol.conditions`): this device will never log in again. The ``text``
    is for people; nothing decides on it.
    """

    def __init__(self, condition: str, text: str = "", *, revoked: bool = False) -> None:
        detail = f" ({text})" if text else ""
        super().__init__(f"authentication refused: {condition}{detail}")
        self.condition = condition
        self.text = text
        self.revoked = revoked


class StreamClosed(ConnectionFailed):
    """The server ended the stream with a stream error (RFC 6120 §4.9).

    ``revoked`` is True only when the error carried the typed revoked condition.
    """

    def __init__(self, condition: str, text: str = "", *, revoked: bool = False) -> None:
        super().__init__(f"stream error: {condition} {text}".strip())
        self.condition = condition
        self.text = text
        self.revoked = revoked


class RequestFailed(PairingError):
    """The server answered a request with an error stanza (RFC 6120 §8.3)."""

    def __init__(self, what: str, condition: str, text: str = "") -> None:
        detail = f": {text}" if text else ""
        super().__init__(f"{what} failed: {condition}{detail}")
        self.condition = condition
        self.text = text


class CredentialFileError(PairingError):
    """A certificate or key file is missing, unreadable or does not match."""


class RemoteProtocolError(PairingError):
    """The peer sent something malformed or out of order (the peer's fault)."""


class LocalProtocolError(PairingError):
    """We were asked to do something the protocol does not allow now (our own bug)."""
