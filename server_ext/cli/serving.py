"""``server-ext serve`` and ``server-ext fingerprint``: the server and its TLS identity."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import click

from pairing.cli_output import LOG_FORMATS, configure_logging, emit_record
from pairing.protocol.identity import format_fingerprint
from server_ext.cli.settings import Settings, json_option, pass_settings
from server_ext.cli.setup import initial_config, overrides, server_options
from server_ext.config_file import has_config


@click.command()
@server_options
@click.option(
    "-v", "--verbose", count=True, envvar="SERVER_EXT_VERBOSE", help="-v for debug output."
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar="SERVER_EXT_LOG_FORMAT",
    help="text: timestamped lines; json: one JSON object per line, for log shippers.",
)
@pass_settings
def serve(settings: Settings, /, verbose: int, log_format: str, **options: Any) -> None:
    """Run the XMPP server until Ctrl-C or SIGTERM; SIGHUP reloads its TLS certificate.

    The first `serve` in an empty data directory sets it up as `init` would (domain from
    --domain, else localhost). Later runs read server.toml; options given here override it
    for this run only.
    """
    changes = overrides(options)
    configure_logging(verbose, log_format=log_format, timestamps=True, base=logging.INFO)
    from server_ext.net.data_directory import initialise
    from server_ext.net.serve import run

    if has_config(settings.data_dir):
        config = settings.config
    else:
        setup = initialise(initial_config(settings, None, options))
        click.echo(
            f"set up {settings.data_dir.absolute()} for {setup.config.domain} "
            f"(settings in {settings.data_dir / 'server.toml'})",
            err=True,
        )
        config = setup.config
    config = dataclasses.replace(config, **changes)
    try:
        run(config)
    except OSError as exc:
        https = f" or HTTPS {config.https_host}:{config.https_port}" if config.https_port else ""
        raise click.ClickException(
            f"cannot listen on {config.host}:{config.port}{https}: {exc.strerror or exc}"
        ) from None
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally wins
        pass


@click.command()
@json_option
@pass_settings
def fingerprint(settings: Settings, as_json: bool) -> None:
    """Print the SHA-256 fingerprint of the server certificate (clients pin it)."""
    from server_ext.net.data_directory import certificate_for

    cert = certificate_for(settings.config)
    record = {
        "sha256": cert.fingerprint,
        "sha256_colons": format_fingerprint(cert.fingerprint),
        "certificate": str(cert.cert_path),
        "not_after": cert.not_after.isoformat(),
        "domain": settings.domain,
    }
    if as_json:
        emit_record(record, as_json=True)
    else:
        click.echo(record["sha256_colons"])
