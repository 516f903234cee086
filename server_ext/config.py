"""The server's settings, with defaults for the embedded localhost server.

``server-ext init`` writes them to ``<data_dir>/server.toml`` (:mod:`server_ext.config_file`);
every later command reads them from there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pairing.protocol.jid import prepare_domainpart

# SERVER_EXT_DATA_DIR is the documented name; SERVER_EXT_DATA is the older one, still read.
DEFAULT_DATA_DIR = Path(
    os.environ.get("SERVER_EXT_DATA_DIR") or os.environ.get("SERVER_EXT_DATA") or "./server-data"
)


class StockKind(StrEnum):
    """``[stock] kind``: the XMPP server devices log in to (``server_ext.stock``)."""

    EMBEDDED = "embedded"  # the project's own XMPP server
    EJABBERD = "ejabberd"  # registry-backed trust-anchor file + mod_http_api
    PROSODY = "prosody"  # our Lua module asks the HTTPS face at SASL EXTERNAL
    MONGOOSEIM = "mongooseim"  # its http auth method pulls get_certs from the HTTPS face

    @property
    def embedded(self) -> bool:
        return self is StockKind.EMBEDDED


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
    # XEP-0198: how long a session whose link dropped waits for its client to resume ('max'),
    # and how many unacknowledged stanzas one session may hold.
    resume_timeout: float = 300.0
    max_unacked_stanzas: int = 500
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
    # The stock-server face (docs/server.md, "Stock servers"): which XMPP server devices log
    # in to, and where. For the embedded kind the xmpp_* settings are this server's own.
    stock_kind: StockKind = StockKind.EMBEDDED
    stock_xmpp_host: str | None = None  # where devices connect; None: the domain
    stock_xmpp_port: int = 5222
    stock_xmpp_pin: str | None = None  # SHA-256 of the stock server's certificate; None: CAs
    stock_secret_file: Path | None = None  # None: <data_dir>/stock.secret (0600, made by serve)
    # [stock.<kind>] tables as tomllib read them, by kind name; each kind checks its own.
    stock_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The HTTPS face (server_ext/net/https.py): enrollment, renewal, the stock servers' hooks.
    https_host: str = "127.0.0.1"
    https_port: int | None = None  # None: off (a stock kind needs it); 0: any free port
    https_public_host: str | None = None  # the host put into v2 URIs; see https_connect_host
    # The web page's origin as phones reach it (a reverse proxy's https://name[:port]); None:
    # https://<https_connect_host>:<the port the face listens on>. Only approval URLs use it:
    # devices still reach the HTTPS API itself directly, pinned.
    https_public_url: str | None = None

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
    def https_connect_host(self) -> str:
        """Where devices reach the HTTPS face: https_public_host, else as connect_host."""
        if self.https_public_host:
            return self.https_public_host
        wildcard = self.https_host in ("0.0.0.0", "::", "")  # noqa: S104 - a comparison
        return (self.public_host or self.domain) if wildcard else self.https_host

    @property
    def stock_secret_path(self) -> Path:
        return self.stock_secret_file or self.data_dir / "stock.secret"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"
