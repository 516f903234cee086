"""The error root of the ``server_ext`` package."""

from __future__ import annotations


class ServerExtError(Exception):
    """Base class for every error raised by ``server_ext``."""


class ConfigError(ServerExtError):
    """The server's configuration or data directory is unusable."""


class NoServerData(ConfigError):
    """The data directory holds no server configuration: nothing was set up there."""

    exit_code = 4  # docs/server.md, "Exit codes"


class DomainMismatch(ConfigError):
    """A --domain that is not the one the data directory was set up for (a usage error)."""

    exit_code = 2  # docs/server.md, "Exit codes": as a wrong --domain on any other command


class ServerNotRunning(ServerExtError):
    """The command needs the running server, and none answers for this data directory."""

    exit_code = 3  # as ejabberdctl's "node not running"


class RegistryError(ServerExtError):
    """A registry operation was refused; the message says why and what to do."""


class AccountExists(RegistryError):
    """An account with that JID already exists."""


class UnknownAccount(RegistryError):
    """No account has that JID."""


class DuplicateName(RegistryError):
    """The account already has a certificate with that name (XEP-0257 §3.1)."""


class DuplicateCertificate(RegistryError):
    """A certificate with the same SHA-256 fingerprint is already registered."""


class UnknownCertificate(RegistryError):
    """No certificate matches the given name or fingerprint."""


class UnknownToken(RegistryError):
    """No token has that id (for this account)."""


class TooManyTokens(RegistryError):
    """The account has too many unused tokens."""


class TokenRaceLost(RegistryError):
    """Another redemption of the same token won, or it expired meanwhile."""


class JIDInUse(RegistryError):
    """Another device that is not revoked already logs in as that full JID."""
