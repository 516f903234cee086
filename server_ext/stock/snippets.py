"""What to paste into the stock server's configuration: ``server-ext stock snippet``.

Each snippet is data first (``--json``, and what the interop tests start the real servers
with) and text rendered from it, so the text cannot drift from what was tested. Every setting
in them is one docs/stock-servers.md records as verified on ejabberd 23.01 or Prosody 0.12.3;
MongooseIM's follows its documentation and is untested here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pairing.secure_files import write_public
from server_ext.config import ServerConfig, StockKind
from server_ext.errors import ConfigError
from server_ext.stock.base import StockContext, trust_set
from server_ext.stock.ejabberd import EjabberdSettings, render_trust_file
from server_ext.stock.options import ComponentSettings, Options
from server_ext.stock.prosody import MODULE_NAME, ProsodySettings, module_directory

#: The mod_http_api commands the ejabberd kind calls; nothing else is granted.
EJABBERD_COMMANDS = (
    "reload_config",
    "kick_session",
    "kick_user",
    "user_sessions_info",
    "connected_users_info",
)


@dataclass(frozen=True, slots=True)
class Snippet:
    """The configuration for one stock server: ``text`` to paste, ``data`` for programs."""

    kind: StockKind
    target: str  # the file it goes into
    text: str
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "target": self.target, **self.data}


def https_url(config: ServerConfig) -> str:
    """Where the stock server reaches the HTTPS face (it runs beside it: loopback by default)."""
    if config.https_port is None:
        raise ConfigError("[https] port is not set: a stock server needs the HTTPS face")
    host = config.https_host
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - a comparison, not a bind
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{config.https_port}"


def _yaml(value: object) -> str:
    # JSON scalars are YAML flow scalars: strings come out quoted and escaped.
    return json.dumps(value)


def _lua(value: str) -> str:
    # JSON string escapes are Lua escapes too, for the characters JSON escapes.
    return json.dumps(value, ensure_ascii=True)


def _yaml_listener(listener: Mapping[str, object]) -> list[str]:
    lines = []
    for number, (key, value) in enumerate(listener.items()):
        lines.append(f"  {'-' if number == 0 else ' '} {key}: {_yaml(value)}")
    return lines


def ejabberd_snippet(context: StockContext) -> Snippet:
    """ejabberd.yml: c2s_cafile and tls_verify, the component, mod_http_api on loopback."""
    config = context.config
    settings = EjabberdSettings.read(context)
    api = urlsplit(settings.api[0])
    c2s = {
        "port": config.stock_xmpp_port,
        "module": "ejabberd_c2s",
        "starttls_required": True,
        "tls_verify": True,
    }
    http = {
        "port": api.port or (443 if api.scheme == "https" else 80),
        "ip": api.hostname or "127.0.0.1",
        "module": "ejabberd_http",
        "request_handlers": {api.path or "/api": "mod_http_api"},
    }
    listeners: dict[str, dict[str, object]] = {"c2s": c2s, "http_api": http}
    component = settings.component
    if component.enabled:
        listeners["component"] = {
            "port": component.port,
            "ip": component.host,
            "module": "ejabberd_service",
            "hosts": {component.domain: {"password": context.secret}},
        }
    data = {
        "c2s_cafile": str(settings.trust_file),
        "listeners": listeners,
        "api_commands": list(EJABBERD_COMMANDS),
        "modules": ["mod_admin_extra", "mod_http_api"],
    }
    lines = [
        f"# ejabberd.yml for server-ext (xmpp-device-pairing), host {_yaml(config.domain)}.",
        "# Merge into your configuration; it holds the component secret.",
        "",
        "# Devices' certificates, written by server-ext (it reloads ejabberd on each change).",
        f"c2s_cafile: {_yaml(str(settings.trust_file))}",
        "",
        "listen:",
        "  # Your c2s listener, with tls_verify (a listener option only): ejabberd asks for a",
        "  # client certificate and offers SASL EXTERNAL; passwords keep working.",
        *_yaml_listener(c2s),
        "  # mod_http_api for server-ext on loopback (every node of a cluster: its own).",
        *_yaml_listener(http),
    ]
    if component.enabled:
        lines += [
            f"  # The component users send their pairing commands to ({component.domain}).",
            *_yaml_listener(listeners["component"]),
        ]
    lines += [
        "",
        "# api_permissions replaces ejabberd's defaults: keep ejabberdctl working, and give",
        "# loopback only the commands server-ext calls.",
        "api_permissions:",
        '  "console commands":',
        "    from: ejabberd_ctl",
        "    who: all",
        '    what: "*"',
        '  "server-ext":',
        "    from: mod_http_api",
        "    who:",
        "      ip: 127.0.0.1/8",
        "    what:",
        *[f"      - {_yaml(command)}" for command in EJABBERD_COMMANDS],
        "",
        "modules:",
        "  mod_admin_extra: {}  # kick_session",
        "  mod_http_api: {}",
    ]
    return Snippet(StockKind.EJABBERD, "ejabberd.yml", "\n".join(lines) + "\n", data)


def prosody_snippet(context: StockContext) -> Snippet:
    """prosody.cfg.lua: our module from plugin_paths, client certificates, the component."""
    config = context.config
    settings = ProsodySettings.read(context)
    module_http = urlsplit(settings.url)
    cafile = config.cert_file or config.data_dir / "server.crt"
    global_lines = [
        f"plugin_paths = {{ {_lua(str(module_directory()))} }}",
        # Without verify, the client certificate never reaches a module
        # (docs/stock-servers.md); Prosody's defaults then let self-signed ones through.
        'c2s_ssl = { verify = { "peer", "client_once" } }',
        f"http_ports = {{ {module_http.port or 80} }}",
        f"http_interfaces = {{ {_lua(module_http.hostname or '127.0.0.1')} }}",
    ]
    component = settings.component
    if component.enabled:
        global_lines += [
            f"component_ports = {{ {component.port} }}",
            f"component_interfaces = {{ {_lua(component.host)} }}",
        ]
    host_lines = [
        f"modules_enabled = {{ {_lua(MODULE_NAME)} }}",
        f"xmpp_device_pairing_url = {_lua(https_url(config))}",
        f"xmpp_device_pairing_cafile = {_lua(str(cafile))}",
        f"xmpp_device_pairing_secret = {_lua(context.secret)}",
    ]
    data: dict[str, Any] = {
        "global_lines": global_lines,
        "host_lines": host_lines,
        "module_directory": str(module_directory()),
    }
    lines = [
        f"-- prosody.cfg.lua for server-ext (xmpp-device-pairing), host {config.domain}.",
        "-- Merge into your configuration; it holds the shared secret. The module's directory",
        "-- must be readable by the prosody user (or copy mod_xmpp_device_pairing.lua elsewhere",
        "-- and name that directory in plugin_paths).",
        "",
        "-- In the global section (http_ports and component_ports: add to yours if you have",
        "-- them; server-ext calls the module's HTTP endpoints with the shared secret):",
        *global_lines,
        "",
        f"VirtualHost {_lua(config.domain)}",
        *[f"    {line}" for line in host_lines],
    ]
    if component.enabled:
        data["component"] = {"domain": component.domain, "secret": context.secret}
        lines += [
            "",
            "-- The component users send their pairing commands to.",
            f"Component {_lua(component.domain)}",
            f"    component_secret = {_lua(context.secret)}",
        ]
    return Snippet(StockKind.PROSODY, "prosody.cfg.lua", "\n".join(lines) + "\n", data)


def mongooseim_snippet(context: StockContext) -> Snippet:
    """mongooseim.toml: the http auth method pulling get_certs (from MongooseIM's docs)."""
    config = context.config
    options = Options(StockKind.MONGOOSEIM.value, context.options)
    component = ComponentSettings.read(options, config.domain, default_port=0)
    options.finish()
    cafile = config.cert_file or config.data_dir / "server.crt"
    data: dict[str, Any] = {
        "host": https_url(config),
        "path_prefix": "/api/v1/mongooseim/",
        "cacertfile": str(cafile),
    }
    lines = [
        f"# mongooseim.toml for server-ext (xmpp-device-pairing), host {config.domain}.",
        "# From MongooseIM's documentation (authentication-methods/http.md, client",
        "# certificates); not tested against a running MongooseIM. It holds the secret.",
        "",
        "[auth]",
        '  methods = ["http"]  # beside yours',
        '  sasl_mechanisms = ["external", "scram_sha256"]',
        "  [auth.http]",
        f"    basic_auth = {_lua('mongooseim:' + context.secret)}",
        "",
        "[outgoing_pools.http.auth]",
        f"  connection.host = {_lua(data['host'])}",
        f"  connection.tls.cacertfile = {_lua(str(cafile))}",
        '  connection.tls.verify_mode = "peer"',
        f"  request.path_prefix = {_lua(data['path_prefix'])}",
        "",
        "[[listen.c2s]]",
        "  # your c2s listener, accepting devices' self-signed certificates:",
        '  tls.verify_mode = "selfsigned_peer"',
    ]
    if component.enabled:
        lines += [
            "",
            "[[listen.service]]",
            f"  port = {component.port}",
            f"  ip_address = {_lua(component.host)}",
            f"  password = {_lua(context.secret)}",
        ]
    return Snippet(StockKind.MONGOOSEIM, "mongooseim.toml", "\n".join(lines) + "\n", data)


def snippet(context: StockContext) -> Snippet:
    """The snippet for ``context``'s kind (ConfigError for the embedded server)."""
    kind = context.config.stock_kind
    if kind is StockKind.EJABBERD:
        return ejabberd_snippet(context)
    if kind is StockKind.PROSODY:
        return prosody_snippet(context)
    if kind is StockKind.MONGOOSEIM:
        return mongooseim_snippet(context)
    raise ConfigError(
        "[stock] kind is embedded: server-ext is the XMPP server itself, there is nothing to "
        'paste; set kind = "ejabberd", "prosody" or "mongooseim" in server.toml first'
    )


def prepare(context: StockContext) -> list[str]:
    """Files the stock server needs before server-ext first runs; what was written.

    ejabberd refuses nothing when ``c2s_cafile`` is empty, but it must exist: it is written
    from the registry here if it is missing, so ejabberd can start first.
    """
    if context.config.stock_kind is not StockKind.EJABBERD:
        return []
    settings = EjabberdSettings.read(context)
    if settings.trust_file.exists():
        return []
    write_public(settings.trust_file, render_trust_file(trust_set(context.registry)))
    return [str(settings.trust_file)]
