"""``<data_dir>/server.toml``: the configuration ``server-ext init`` writes and every command reads.

The file is read with the standard library's ``tomllib`` and written from a template that keeps
a comment beside every setting, which is what an operator editing it needs and what a generic
TOML writer cannot give. Written values are read back before the file is put in place, so the
writer can never leave a file the reader refuses. Unknown keys are refused, not ignored: a
typo must not silently leave a default in force.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pairing.durations import InvalidDuration, format_duration, parse_duration
from pairing.errors import InvalidJID
from pairing.secure_files import write_public
from server_ext.config import ServerConfig, StockKind
from server_ext.errors import ConfigError, NoServerData

CONFIG_NAME = "server.toml"
CERT_NAME = "server.crt"
KEY_NAME = "server.key"


@dataclass(frozen=True, slots=True)
class _Setting:
    section: str
    key: str
    field: str  # the ServerConfig field
    kind: str  # "str", "int", "port", "seconds", "path", "host", "kind", "pin", "url"
    comment: str


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("listen", "host", "host", "str", "address to listen on; 0.0.0.0 or :: for all"),
    _Setting("listen", "port", "port", "port", "STARTTLS (RFC 6120 §14.7)"),
    _Setting("listen", "direct_tls_port", "direct_tls_port", "port", "XEP-0368; 0 turns it off"),
    _Setting(
        "listen",
        "public_host",
        "public_host",
        "host",
        'put into QR codes; "" = the listening host, else the domain',
    ),
    _Setting("tls", "certificate", "cert_file", "path", "PEM, leaf first; SIGHUP reloads it"),
    _Setting("tls", "key", "key_file", "path", "PEM, unencrypted, mode 0600"),
    _Setting(
        "limits", "max_stanza_bytes", "max_stanza_bytes", "int", "larger: <policy-violation/>"
    ),
    _Setting("limits", "auth_timeout", "auth_timeout", "seconds", "unauthenticated streams end"),
    _Setting(
        "limits",
        "resume_timeout",
        "resume_timeout",
        "seconds",
        "XEP-0198: a dropped session waits this long for its device",
    ),
    _Setting(
        "limits",
        "max_unacked_stanzas",
        "max_unacked_stanzas",
        "int",
        "XEP-0198: more unacknowledged: the session ends",
    ),
    _Setting(
        "limits",
        "max_unauthenticated_per_address",
        "max_unauthenticated_per_address",
        "int",
        "connections not yet logged in, per address",
    ),
    _Setting("limits", "backlog", "backlog", "int", "listen(2) backlog"),
    _Setting(
        "throttle",
        "failed_logins_per_account_and_address",
        "failed_logins_per_account_and_address",
        "int",
        "then that address waits for that account",
    ),
    _Setting(
        "throttle",
        "failed_logins_per_address",
        "failed_logins_per_address",
        "int",
        "then that address waits for every account",
    ),
    _Setting(
        "throttle",
        "failed_logins_before_slowdown",
        "failed_logins_before_slowdown",
        "int",
        "per account, all addresses: failures answered late",
    ),
    _Setting(
        "throttle", "slowdown_max_delay", "slowdown_max_delay", "seconds", "the latest answer"
    ),
    _Setting("throttle", "window", "failed_login_window", "seconds", "failures counted this long"),
    _Setting("tokens", "default_ttl", "token_default_ttl", "seconds", "when --ttl is not given"),
    _Setting("tokens", "min_ttl", "token_min_ttl", "seconds", "shortest lifetime allowed"),
    _Setting("tokens", "max_ttl", "token_max_ttl", "seconds", "longest lifetime allowed"),
    _Setting(
        "tokens",
        "max_outstanding_per_account",
        "max_tokens_per_account",
        "int",
        "unused tokens an account may hold",
    ),
    _Setting(
        "rotation",
        "interval",
        "rotation_interval",
        "seconds",
        "a device may register a successor certificate this often",
    ),
    _Setting(
        "rotation",
        "renewal_grace",
        "renewal_grace",
        "seconds",
        "an expired, never revoked certificate may still be renewed this long",
    ),
    _Setting(
        "stock",
        "kind",
        "stock_kind",
        "kind",
        "the XMPP server devices log in to: embedded, ejabberd, prosody, mongooseim",
    ),
    _Setting(
        "stock", "xmpp_host", "stock_xmpp_host", "host", 'a stock server\'s host; "" = the domain'
    ),
    _Setting("stock", "xmpp_port", "stock_xmpp_port", "port", "a stock server's c2s port"),
    _Setting(
        "stock",
        "xmpp_pin",
        "stock_xmpp_pin",
        "pin",
        'SHA-256 of its certificate, put into QR codes; "" = check with the system CAs',
    ),
    _Setting(
        "stock",
        "secret_file",
        "stock_secret_file",
        "optional-path",
        'the stock server\'s secret for the HTTPS API (0600); "" = stock.secret here',
    ),
    _Setting("https", "host", "https_host", "str", "the HTTPS API's address (enrollment)"),
    _Setting("https", "port", "https_port", "port", "0 turns it off; a stock kind needs it"),
    _Setting(
        "https",
        "public_host",
        "https_public_host",
        "host",
        'put into v2 QR codes; "" = as [listen] public_host',
    ),
    _Setting(
        "https",
        "public_url",
        "https_public_url",
        "url",
        'the web page as phones open it (a reverse proxy); "" = https://public_host:port',
    ),
)

_HEADER = """\
# server-ext configuration, written by `server-ext init` (docs/server.md, "Configuration").
# Every server-ext command run with this data directory reads it. Command-line options and
# SERVER_EXT_* environment variables override a setting for one run; they never change this
# file. Durations: 90s, 10m, 1h, 7d, or plain seconds. Relative paths are in this directory.

# The XMPP domain served (RFC 7622). The server's certificate names it, and every account
# and device belongs to it: it cannot change without a new identity (`server-ext tls rotate`)
# and new accounts.
"""


def config_path(data_dir: Path) -> Path:
    return data_dir / CONFIG_NAME


def has_config(data_dir: Path) -> bool:
    return config_path(data_dir).is_file()


def _toml_string(text: str) -> str:
    # A TOML basic string is a JSON string without \\/ and with U+007F escaped too (TOML 1.0,
    # "String"); ensure_ascii=False keeps astral characters whole instead of as surrogates.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _render_value(setting: _Setting, value: Any, data_dir: Path) -> str:
    if setting.kind == "seconds":
        seconds = float(value)
        if seconds == int(seconds):
            return _toml_string(format_duration(dt.timedelta(seconds=seconds)))
        return repr(seconds)
    if setting.kind == "path":
        path = Path(value) if value is not None else data_dir / _default_file(setting)
        try:
            shown = str(path.relative_to(data_dir))
        except ValueError:
            shown = str(path.absolute())
        return _toml_string(shown)
    if setting.kind in ("host", "pin", "url"):
        return _toml_string(value or "")
    if setting.kind == "optional-path":
        if value is None:
            return _toml_string("")
        setting = dataclasses.replace(setting, kind="path")
    if setting.kind == "port":
        return str(int(value or 0))
    if setting.kind == "int":
        return str(int(value))
    return _toml_string(str(value))


def _default_file(setting: _Setting) -> str:
    return CERT_NAME if setting.field == "cert_file" else KEY_NAME


def render_config(config: ServerConfig) -> str:
    """The text of ``server.toml`` for ``config``, one commented line per setting."""
    lines = [_HEADER + f"domain = {_toml_string(config.domain)}"]
    section = ""
    width = max(len(s.key) for s in _SETTINGS)
    for setting in _SETTINGS:
        if setting.section != section:
            section = setting.section
            lines.append(f"\n[{section}]")
        value = _render_value(setting, getattr(config, setting.field), config.data_dir)
        lines.append(f"{setting.key.ljust(width)} = {value}  # {setting.comment}")
    for kind, table in sorted(config.stock_options.items()):
        lines.append(f"\n[stock.{kind}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """A value of a ``[stock.<kind>]`` table: a string, number, boolean or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return _toml_string(value)
    raise ConfigError(f"cannot write {value!r} into server.toml")


def write_config(config: ServerConfig) -> Path:
    """Write ``server.toml`` atomically, after checking it reads back as ``config``."""
    text = render_config(config)
    again = parse_config(text, config.data_dir, source="the generated configuration")
    if again != _normalised(config):
        raise ConfigError("the configuration would not read back as written (a bug)")
    path = config_path(config.data_dir)
    write_public(path, text.encode("utf-8"))
    return path


def _normalised(config: ServerConfig) -> ServerConfig:
    """``config`` as reading its file gives it back: certificate paths always spelled out."""
    return dataclasses.replace(
        config,
        cert_file=config.cert_file or config.data_dir / CERT_NAME,
        key_file=config.key_file or config.data_dir / KEY_NAME,
        direct_tls_port=config.direct_tls_port or None,
        public_host=config.public_host or None,
        https_port=config.https_port or None,
        https_public_host=config.https_public_host or None,
        https_public_url=config.https_public_url or None,
        stock_xmpp_host=config.stock_xmpp_host or None,
        stock_xmpp_pin=config.stock_xmpp_pin or None,
    )


def read_config(data_dir: Path) -> ServerConfig:
    """The configuration in ``data_dir``, or :class:`NoServerData` saying what to do."""
    path = config_path(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NoServerData(_missing(data_dir)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    return parse_config(text, data_dir, source=str(path))


def _missing(data_dir: Path) -> str:
    where = data_dir.absolute()
    if (data_dir / "registry.sqlite3").exists() or (data_dir / CERT_NAME).exists():
        return (
            f"{where} holds server data but no {CONFIG_NAME} (made by an older server-ext): run "
            f"`server-ext --data-dir {data_dir} init --domain YOUR.DOMAIN` once; it keeps the "
            "registry and the certificate"
        )
    return (
        f"no server data in {where}: point --data-dir (or SERVER_EXT_DATA_DIR) at the server's "
        "data directory, or set one up with `server-ext init --domain YOUR.DOMAIN`"
    )


def parse_config(text: str, data_dir: Path, *, source: str) -> ServerConfig:
    """Parse the text of a ``server.toml`` into a :class:`ServerConfig` for ``data_dir``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {"data_dir": data_dir}
    known_sections = {s.section for s in _SETTINGS}
    for name, value in document.items():
        if name == "domain":
            values["domain"] = _expect(source, "domain", value, str)
        elif name in known_sections and isinstance(value, dict):
            _read_section(source, name, value, data_dir, values)
        else:
            raise ConfigError(f"{source}: unknown setting {name!r}")
    values.setdefault("cert_file", data_dir / CERT_NAME)
    values.setdefault("key_file", data_dir / KEY_NAME)
    if "domain" not in values:
        raise ConfigError(f'{source}: the domain is missing (domain = "example.org")')
    try:
        return ServerConfig(**values)
    except InvalidJID as exc:
        raise ConfigError(f"{source}: domain: {exc}") from None


def _read_section(
    source: str, section: str, table: Mapping[str, Any], data_dir: Path, out: dict[str, Any]
) -> None:
    by_key = {s.key: s for s in _SETTINGS if s.section == section}
    for key, value in table.items():
        if section == "stock" and isinstance(value, dict):
            if key not in {kind.value for kind in StockKind} or key == "embedded":
                raise ConfigError(f"{source}: unknown table [stock.{key}]")
            # Each kind checks its own table (server_ext.stock.<kind>.create).
            out.setdefault("stock_options", {})[key] = dict(value)
            continue
        setting = by_key.get(key)
        if setting is None:
            raise ConfigError(f"{source}: unknown setting {section}.{key}")
        out[setting.field] = _convert(source, setting, value, data_dir)


def _convert(source: str, setting: _Setting, value: Any, data_dir: Path) -> Any:
    name = f"{setting.section}.{setting.key}"
    if setting.kind == "seconds":
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(_expect(source, name, value, str)).total_seconds()
            except InvalidDuration as exc:
                raise ConfigError(f"{source}: {name}: {exc}") from None
        if seconds < 0:
            raise ConfigError(f"{source}: {name} must not be negative")
        return seconds
    if setting.kind in ("path", "optional-path"):
        text = _expect(source, name, value, str)
        if not text and setting.kind == "optional-path":
            return None
        path = Path(text)
        return path if path.is_absolute() else data_dir / path
    if setting.kind == "host":
        return _expect(source, name, value, str) or None
    if setting.kind == "url":
        return _web_origin(source, name, _expect(source, name, value, str))
    if setting.kind == "kind":
        text = _expect(source, name, value, str)
        try:
            return StockKind(text)
        except ValueError:
            choices = ", ".join(kind.value for kind in StockKind)
            raise ConfigError(f"{source}: {name} = {text!r}: choose one of {choices}") from None
    if setting.kind == "pin":
        text = _expect(source, name, value, str).replace(":", "").lower()
        if text and (len(text) != 64 or not set(text) <= set("0123456789abcdef")):
            raise ConfigError(f"{source}: {name} must be a SHA-256 fingerprint (64 hex digits)")
        return text or None
    number_checks: dict[str, Callable[[int], bool]] = {
        "port": lambda n: 0 <= n <= 65535,
        "int": lambda n: n > 0,
    }
    if setting.kind in number_checks:
        number = _expect(source, name, value, int)
        if not number_checks[setting.kind](number):
            raise ConfigError(f"{source}: {name} = {number} is out of range")
        if setting.kind == "port" and setting.field in ("direct_tls_port", "https_port"):
            return number or None
        return number
    return _expect(source, name, value, str)


def _web_origin(source: str, name: str, text: str) -> str | None:
    """An https origin (scheme, host, optional port; no path, query or credentials)."""
    if not text:
        return None
    parts = urlsplit(text)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not port_ok
    ):
        raise ConfigError(
            f"{source}: {name} = {text!r} must be an https origin such as "
            '"https://devices.example.org" (no path)'
        )
    return f"https://{parts.netloc}"


def _expect(source: str, name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{source}: {name} must be a {kind.__name__}, not {value!r}")
    return value


__all__ = [
    "CERT_NAME",
    "CONFIG_NAME",
    "KEY_NAME",
    "config_path",
    "has_config",
    "parse_config",
    "read_config",
    "render_config",
    "write_config",
]
