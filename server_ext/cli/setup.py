"""``server-ext init``: set up a data directory once, with its configuration and identity."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pairing.cli_output import BadInput, Duration
from pairing.errors import InvalidJID
from pairing.protocol.identity import format_fingerprint
from pairing.protocol.jid import prepare_domainpart
from server_ext.cli.settings import Settings, json_option, pass_settings, report
from server_ext.config import ServerConfig
from server_ext.config_file import config_path

#: Settings ``init`` records and ``serve`` may override for one run; None = not given.
_SERVER_OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option(
        "--host", envvar="SERVER_EXT_HOST", help="Address to listen on [server.toml; 127.0.0.1]."
    ),
    click.option(
        "--port",
        type=click.IntRange(0, 65535),
        envvar="SERVER_EXT_PORT",
        help="STARTTLS port, RFC 6120 [server.toml; 5222].",
    ),
    click.option(
        "--direct-tls-port",
        type=click.IntRange(0, 65535),
        envvar="SERVER_EXT_DIRECT_TLS_PORT",
        help="Direct TLS port, XEP-0368; 0 turns it off [server.toml; 5223].",
    ),
    click.option(
        "--public-host",
        envvar="SERVER_EXT_PUBLIC_HOST",
        help="The host devices connect to, put into QR codes [server.toml; the listening "
        "host, else the domain].",
    ),
    click.option(
        "--cert",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SERVER_EXT_CERT",
        help="Your own TLS certificate chain (PEM) instead of the generated one.",
    ),
    click.option(
        "--key",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SERVER_EXT_KEY",
        help="Its private key (PEM, unencrypted).",
    ),
    click.option(
        "--max-stanza-bytes",
        type=click.IntRange(min=1024),
        envvar="SERVER_EXT_MAX_STANZA_BYTES",
        help="Larger stanzas end the stream with <policy-violation/> [server.toml; 262144].",
    ),
    click.option(
        "--auth-timeout",
        type=Duration(),
        envvar="SERVER_EXT_AUTH_TIMEOUT",
        help="How long a connection may stay unauthenticated [server.toml; 20s].",
    ),
)


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_SERVER_OPTIONS):
        command = option(command)
    return command


def overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The :class:`ServerConfig` fields the given options set (those given only)."""
    if (options.get("cert") is None) != (options.get("key") is None):
        raise click.UsageError("--cert and --key go together")
    fields: dict[str, Any] = {
        "host": options.get("host"),
        "port": options.get("port"),
        "public_host": options.get("public_host"),
        "cert_file": options.get("cert"),
        "key_file": options.get("key"),
        "max_stanza_bytes": options.get("max_stanza_bytes"),
    }
    timeout = options.get("auth_timeout")
    if isinstance(timeout, dt.timedelta):
        if timeout.total_seconds() <= 0:
            raise BadInput("--auth-timeout must be longer than 0s")
        fields["auth_timeout"] = timeout.total_seconds()
    given = {k: v for k, v in fields.items() if v is not None}
    if options.get("direct_tls_port") is not None:
        # Set after the filter above: 0 means "off", which the configuration spells None.
        given["direct_tls_port"] = options["direct_tls_port"] or None
    return given


def initial_config(settings: Settings, domain: str | None, options: dict[str, Any]) -> ServerConfig:
    """The configuration a new data directory gets: defaults, then the options given."""
    try:
        chosen = prepare_domainpart(domain) if domain is not None else settings.domain_option
    except InvalidJID as exc:
        raise BadInput(f"--domain: {exc}") from None
    base = ServerConfig(domain=chosen or "localhost", data_dir=settings.data_dir)
    return dataclasses.replace(base, **overrides(options))


@click.command()
@click.option(
    "--domain",
    "init_domain",
    envvar="SERVER_EXT_DOMAIN",
    help="The XMPP domain this server serves (required, here or before `init`).",
)
@click.option(
    "--data-dir",
    "init_data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=["SERVER_EXT_DATA_DIR", "SERVER_EXT_DATA"],
    help="Where to set up (the same as server-ext --data-dir).",
)
@server_options
@json_option
@pass_settings
def init(
    settings: Settings,
    /,
    init_domain: str | None,
    init_data_dir: Path | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Set up a data directory: server.toml, the TLS identity and the registry.

    Run once per server. Running it again with the same domain changes nothing; the
    identity is never replaced (see `server-ext tls`).
    """
    from server_ext.net.data_directory import initialise

    if init_data_dir is not None:
        settings = dataclasses.replace(settings, data_dir=init_data_dir)
    if init_domain is None and settings.domain_option is None:
        raise click.UsageError("give the domain: server-ext init --domain example.org")
    setup = initialise(initial_config(settings, init_domain, options))
    config, certificate = setup.config, setup.certificate
    record = {
        "data_dir": str(config.data_dir.absolute()),
        "config": str(config_path(config.data_dir).absolute()),
        "domain": config.domain,
        "created": setup.created,
        "sha256": certificate.fingerprint,
        "certificate": str(certificate.cert_path),
        "not_after": certificate.not_after.isoformat(),
    }
    if setup.created:
        text = (
            f"set up {record['data_dir']} for {config.domain}\n"
            f"configuration: {record['config']}\n"
            f"server certificate SHA-256: {format_fingerprint(certificate.fingerprint)}\n"
            f"next: server-ext --data-dir {config.data_dir} serve"
        )
    else:
        text = (
            f"{record['data_dir']} is already set up for {config.domain}; nothing changed "
            f"(settings live in {record['config']})"
        )
    report(record, text, as_json=as_json)
