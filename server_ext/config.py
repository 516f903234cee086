"""The server's settings, with defaults for the embedded localhost server.

``server-ext init`` writes them to ``<data_dir>/server.toml`` (:mod:`server_ext.config_file`);
every later command reads them from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pairing.protocol.jid import prepare_domainpart

# SERVER_EXT_DATA_DIR is the documented name; SERVER_EXT_DATA is the older one, still read.
DEFAULT_DATA_DIR = Path(
    os.environ.get("SERVER_EXT_DATA_DIR") or os.environ.get("SERVER_EXT_DATA") or "./server-data"
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``server-ext serve`` can be told; defaults suit a laptop or a test."""

    domain: str = "localhost"
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 5222  # STARTTLS (RFC 6120 §14.7)
    direct_tls_port: int | None = 5223  # XEP-0368; None disables it
    cert_file: Path | None = None  # operator-provided certificate; generated if None
    key_file: Path | None = None
    max_stanza_bytes: int = 256 * 1024
    auth_timeout: float = 20.0  # seconds an unauthenticated stream may live
    max_unauthenticated_per_address: int = 64
    # Password throttling (docs/server.md, "Throttling"): the failing address waits, never the
    # account as a whole, so nobody can lock an owner out by failing on purpose.
    failed_logins_per_account_and_address: int = 5
    failed_logins_per_address: int = 20
    failed_logins_before_slowdown: int = 50  # per account, all addresses: answer failures late
    slowdown_max_delay: float = 8.0
    failed_login_window: float = 300.0
    backlog: int = 1024
    # A device may register a successor certificate (rotation) at most this often, seconds.
    rotation_interval: float = 3600.0
    # An expired certificate of a device that was never revoked may renew itself before SASL
    # for this long after its expiry, seconds (docs/admin.md, "Renewal after expiry").
    renewal_grace: float = 30 * 86400.0
    public_host: str | None = None  # the host put into enrollment URIs; see connect_host
    # One-time enrollment tokens (policy/tokens.TokenRules), seconds.
    token_default_ttl: float = 600.0
    token_min_ttl: float = 30.0
    token_max_ttl: float = 3600.0
    max_tokens_per_account: int = 10

    def __post_init__(self) -> None:
        # RFC 7622 §3.2: the served domain is compared with prepared domainparts everywhere,
        # so it is prepared once here (raising InvalidJID with the reason).
        object.__setattr__(self, "domain", prepare_domainpart(self.domain))

    @property
    def connect_host(self) -> str:
        """Where devices should connect: public_host, else the listening host or the domain."""
        if self.public_host:
            return self.public_host
        wildcard = self.host in ("0.0.0.0", "::", "")  # noqa: S104 - a comparison, not a bind
        return self.domain if wildcard else self.host

    @property
    def database_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"
