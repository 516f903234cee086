"""``server-ext``: run the embedded XMPP server and administer its registry."""

from __future__ import annotations

from pathlib import Path

import click

from pairing.cli_output import BadInput, friendly_group
from pairing.errors import InvalidJID
from pairing.protocol.jid import prepare_domainpart
from server_ext.cli import accounts, audit, certificates, devices, serving, tokens
from server_ext.cli.settings import Settings
from server_ext.errors import ServerExtError

__all__ = ["main"]


@click.group(cls=friendly_group(ServerExtError))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SERVER_EXT_DATA",
    default=Path("server-data"),
    show_default=True,
    help="Where the registry (SQLite) and the generated TLS certificate live.",
)
@click.option("--domain", default="localhost", show_default=True, help="The XMPP domain served.")
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(ctx: click.Context, data_dir: Path, domain: str) -> None:
    """Passwordless XMPP login for devices: the server side.

    Devices log in with their own certificate (SASL EXTERNAL) once it is registered for an
    account (XEP-0257). Start with `server-ext serve`, create an account with
    `server-ext user add alice`, and give clients the fingerprint from
    `server-ext fingerprint` to pin.
    """
    try:
        ctx.obj = Settings(data_dir, prepare_domainpart(domain))
    except InvalidJID as exc:
        raise BadInput(f"--domain: {exc}") from None


main.add_command(serving.serve)
main.add_command(serving.fingerprint)
main.add_command(accounts.user)
main.add_command(certificates.certs)
main.add_command(audit.audit)
main.add_command(tokens.token)
main.add_command(devices.devices)
