"""Reading a kind's own ``[stock.<kind>]`` table of server.toml: one clear line per mistake."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pairing.errors import InvalidJID
from pairing.protocol.jid import prepare_domainpart
from server_ext.config import ServerConfig, StockKind
from server_ext.errors import ConfigError


class Options:
    """The table of one kind; every key must be read, so a typo is an error, not a default."""

    def __init__(self, kind: str, table: Mapping[str, Any]) -> None:
        self.kind = kind
        self._table = dict(table)
        self._read: set[str] = set()

    def _name(self, key: str) -> str:
        return f"[stock.{self.kind}] {key}"

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._table.get(key)

    def string(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self._name(key)} must be a non-empty string, not {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= minimum:
            raise ConfigError(
                f"{self._name(key)} must be a number above {minimum:g}, not {value!r}"
            )
        return float(value)

    def port(self, key: str, default: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError(f"{self._name(key)} must be a port number (0 turns it off)")
        return value

    def path(self, key: str, default: str, data_dir: Path) -> Path:
        path = Path(self.string(key, default))
        return path if path.is_absolute() else data_dir / path

    def urls(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            value = list(default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{self._name(key)} must be a URL or a list of URLs")
        return tuple(self._url(key, item) for item in value)

    def url(self, key: str, default: str) -> str:
        return self._url(key, self.string(key, default))

    def _url(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"{self._name(key)}: {value!r} is not a URL")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{self._name(key)}: {value!r} is not an http:// or https:// URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError(
                f"{self._name(key)}: {value!r} must not carry credentials, a query or a fragment"
            )
        return value.rstrip("/")

    def finish(self) -> None:
        """Refuse keys nobody read (a typo must not leave a default silently in force)."""
        unknown = sorted(set(self._table) - self._read)
        if unknown:
            raise ConfigError(f"[stock.{self.kind}]: unknown setting {unknown[0]!r}")


@dataclass(frozen=True, slots=True)
class ComponentSettings:
    """Where server-ext attaches to the stock server as an XEP-0114 component."""

    domain: str  # e.g. pairing.example.org: users send their ad-hoc commands here
    host: str
    port: int  # 0: no component

    @property
    def enabled(self) -> bool:
        return self.port != 0

    @classmethod
    def read(cls, options: Options, domain: str, *, default_port: int) -> ComponentSettings:
        name = options.string("component_domain", f"pairing.{domain}")
        try:
            prepared = prepare_domainpart(name)
        except InvalidJID as exc:
            raise ConfigError(f"[stock.{options.kind}] component_domain: {exc}") from None
        return cls(
            prepared,
            options.string("component_host", "127.0.0.1"),
            options.port("component_port", default_port),
        )


def component_settings(config: ServerConfig) -> ComponentSettings | None:
    """The XEP-0114 component of ``config``'s stock kind; None for the embedded server (its
    users reach the ad-hoc commands on the server itself) or when the port is 0."""
    if config.stock_kind is StockKind.EMBEDDED:
        return None
    kind = config.stock_kind.value
    options = Options(kind, config.stock_options.get(kind, {}))
    default = 0 if config.stock_kind is StockKind.MONGOOSEIM else 5347
    settings = ComponentSettings.read(options, config.domain, default_port=default)
    return settings if settings.enabled else None
