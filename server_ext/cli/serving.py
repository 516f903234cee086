"""``server-ext serve`` and ``server-ext fingerprint``: the server and its TLS identity."""

from __future__ import annotations

from pathlib import Path

import click

from pairing.cli_output import (
    configure_logging,
    emit_record,
)
from pairing.protocol.identity import format_fingerprint
from server_ext.cli.settings import Settings, pass_settings
from server_ext.config import ServerConfig


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5222, show_default=True, help="STARTTLS port (RFC 6120).")
@click.option(
    "--direct-tls-port",
    default=5223,
    show_default=True,
    help="Direct TLS port (XEP-0368); 0 turns it off.",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Your own TLS certificate (PEM).",
)
@click.option(
    "--key", type=click.Path(dir_okay=False, path_type=Path), help="Its private key (PEM)."
)
@click.option(
    "--max-stanza-bytes",
    default=256 * 1024,
    show_default=True,
    help="Larger stanzas end the stream with <policy-violation/>.",
)
@click.option(
    "--auth-timeout",
    default=20.0,
    show_default=True,
    help="Seconds a connection may stay unauthenticated.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@pass_settings
def serve(
    settings: Settings,
    host: str,
    port: int,
    direct_tls_port: int,
    cert: Path | None,
    key: Path | None,
    max_stanza_bytes: int,
    auth_timeout: float,
    verbose: int,
) -> None:
    """Run the XMPP server until Ctrl-C."""
    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key go together")
    configure_logging(verbose)
    from server_ext.net.server import run

    config = ServerConfig(
        domain=settings.domain,
        data_dir=settings.data_dir,
        host=host,
        port=port,
        direct_tls_port=direct_tls_port or None,
        cert_file=cert,
        key_file=key,
        max_stanza_bytes=max_stanza_bytes,
        auth_timeout=auth_timeout,
    )
    try:
        run(config)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally wins
        pass


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def fingerprint(settings: Settings, as_json: bool) -> None:
    """Print the SHA-256 fingerprint of the server certificate (clients pin it)."""
    from server_ext.net.server_certificate import ensure_server_certificate

    cert = ensure_server_certificate(settings.data_dir, settings.domain)
    record = {
        "sha256": cert.fingerprint,
        "sha256_colons": format_fingerprint(cert.fingerprint),
        "certificate": str(cert.cert_path),
        "not_after": cert.not_after.isoformat(),
    }
    if as_json:
        emit_record(record, as_json=True)
    else:
        click.echo(record["sha256_colons"])
