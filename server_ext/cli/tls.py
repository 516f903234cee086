"""``server-ext tls …``: the only commands that replace the server's key or certificate.

Devices pin the server certificate's SHA-256, so replacing it cuts off every device that has
not been given the new one. Nothing else in server-ext ever does (issue 10); these two do it
on purpose, keep the replaced pair beside the new one, and tell a running server to load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pairing.protocol.identity import format_fingerprint
from server_ext.admin import admin_channel
from server_ext.cli.settings import Settings, json_option, pass_settings, report
from server_ext.config_file import CERT_NAME, KEY_NAME
from server_ext.errors import ConfigError, ServerExtError


@click.group()
def tls() -> None:
    """Replace the server's TLS identity on purpose (rotate, import) and reload it."""


def _require_managed(settings: Settings) -> None:
    config = settings.config
    managed = (settings.data_dir / CERT_NAME, settings.data_dir / KEY_NAME)
    named = (config.cert_file, config.key_file)
    if tuple(p.absolute() if p else None for p in named) != tuple(p.absolute() for p in managed):
        raise ConfigError(
            f"server.toml serves {config.cert_file}, which is not kept in the data directory: "
            "replace that file (and send the server SIGHUP), or point [tls] back at "
            f"{CERT_NAME}/{KEY_NAME}"
        )


def _reload(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Ask the running server to load the new files; what to tell the operator."""
    reply = admin_channel.request(settings.data_dir, {"op": "reload-tls"})
    if reply is None:
        return "the server is not running; it serves the new certificate when it starts", {
            "reloaded": None
        }
    if not reply.get("ok"):
        raise ServerExtError(
            f"the new certificate is in place, but the running server kept the old one: "
            f"{reply.get('error')}"
        )
    return "the running server now serves it to new connections", {"reloaded": True}


def _done(
    settings: Settings, verb: str, new: Any, previous: Any, as_json: bool, *, note: str = ""
) -> None:
    reload_text, reload_record = _reload(settings)
    record = {
        "sha256": new.fingerprint,
        "previous_sha256": previous.fingerprint if previous else None,
        "certificate": str(new.cert_path),
        "previous_kept_as": str(new.cert_path) + ".previous" if previous else None,
        "not_after": new.not_after.isoformat(),
        **reload_record,
    }
    lines = [f"{verb}: the server certificate SHA-256 is now {format_fingerprint(new.fingerprint)}"]
    if previous:
        lines.append(f"the previous pair is kept as {record['previous_kept_as']} (and .key)")
    lines.append(reload_text)
    if note:
        lines.append(note)
    report(record, "\n".join(lines), as_json=as_json)


@tls.command("rotate")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_settings
def tls_rotate(settings: Settings, yes: bool, as_json: bool) -> None:
    """Make a new key and self-signed certificate for the domain.

    Every device and client that pinned the current fingerprint refuses the new one until
    it is given it (pair again, or update its pin).
    """
    from server_ext.net.server_certificate import rotate_server_certificate

    _require_managed(settings)
    if not yes:
        click.confirm(
            "Every device that pinned the current server certificate will refuse the new one. "
            "Make a new identity?",
            abort=True,
        )
    new, previous = rotate_server_certificate(settings.data_dir, settings.domain)
    _done(
        settings,
        "rotated",
        new,
        previous,
        as_json,
        note="give clients the new fingerprint (`server-ext fingerprint`)",
    )


@tls.command("import")
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The certificate chain (PEM, leaf first).",
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Its private key (PEM, unencrypted).",
)
@json_option
@pass_settings
def tls_import(settings: Settings, cert: Path, key: Path, as_json: bool) -> None:
    """Install your own certificate and key (checked: they match and name the domain)."""
    from server_ext.net.server_certificate import import_server_certificate

    _require_managed(settings)
    new, previous = import_server_certificate(settings.data_dir, cert, key, settings.domain)
    _done(settings, "imported", new, previous, as_json)
