"""``server-ext``: run the embedded XMPP server and administer its registry."""

from __future__ import annotations

from pathlib import Path

import click

from pairing.cli_output import BadInput, friendly_group
from pairing.errors import InvalidJID
from pairing.protocol.jid import prepare_domainpart
from server_ext.cli import (
    accounts,
    audit,
    backup,
    certificates,
    devices,
    serving,
    setup,
    stock,
    tls,
    tokens,
)
from server_ext.cli.settings import Settings
from server_ext.errors import ServerExtError

__all__ = ["main"]

ENV_PREFIX = "SERVER_EXT"

EXIT_CODES = """\b
Exit status (as ejabberdctl):
  0  done
  1  refused or failed (the message says why)
  2  usage error or bad input, including a --domain that is not the server's
  3  the server is not running or cannot be reached (commands that need it)
  4  no server data in the data directory (set it up with `server-ext init`)

\b
Every option can also be set with an environment variable, shown beside it:
SERVER_EXT_DATA_DIR, SERVER_EXT_DOMAIN, SERVER_EXT_PORT, ...; options of a
subcommand are SERVER_EXT_<COMMAND>_<OPTION> (SERVER_EXT_TOKEN_CREATE_TTL).
Shell completion: eval "$(_SERVER_EXT_COMPLETE=bash_source server-ext)"."""


@click.group(
    cls=friendly_group(ServerExtError),
    context_settings={"auto_envvar_prefix": ENV_PREFIX},
    epilog=EXIT_CODES,
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=["SERVER_EXT_DATA_DIR", "SERVER_EXT_DATA"],
    default=Path("server-data"),
    show_default=True,
    help="The server's data directory: server.toml, the registry and the TLS identity.",
)
@click.option(
    "--domain",
    envvar="SERVER_EXT_DOMAIN",
    help="The XMPP domain, for `init` and the first `serve` (default localhost). Later "
    "commands read it from server.toml and refuse a different one.",
)
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(ctx: click.Context, data_dir: Path, domain: str | None) -> None:
    """Passwordless XMPP login for devices: the server side.

    Devices log in with their own certificate (SASL EXTERNAL) once it is registered for an
    account (XEP-0257). Start with `server-ext serve` (or `server-ext init --domain
    example.org` first), create an account with `server-ext user add alice`, and give
    clients the fingerprint from `server-ext fingerprint` to pin.
    """
    try:
        ctx.obj = Settings(data_dir, prepare_domainpart(domain) if domain is not None else None)
    except InvalidJID as exc:
        raise BadInput(f"--domain: {exc}") from None


main.add_command(setup.init)
main.add_command(serving.serve)
main.add_command(serving.fingerprint)
main.add_command(tls.tls)
main.add_command(accounts.user)
main.add_command(certificates.certs)
main.add_command(audit.audit)
main.add_command(tokens.token)
main.add_command(devices.devices)
main.add_command(stock.stock)
main.add_command(backup.backup)


def _name_environment_variables(command: click.Command, path: tuple[str, ...] = ()) -> None:
    """Every option gets an environment variable, shown in ``--help`` (issue 10).

    Named after the option as typed (``token create --json`` is
    ``SERVER_EXT_TOKEN_CREATE_JSON``), not after the Python parameter click's automatic
    names would use (``…_AS_JSON``); options that are server settings have short names of
    their own (``SERVER_EXT_PORT``).
    """
    for param in command.params:
        if not isinstance(param, click.Option) or param.is_eager:
            continue
        if param.envvar is None:
            long_names = [o for o in param.opts if o.startswith("--")] or param.opts
            flag = long_names[0].lstrip("-").replace("-", "_").upper()
            param.envvar = "_".join((ENV_PREFIX, *path, flag))
        param.show_envvar = True
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _name_environment_variables(sub, (*path, name.replace("-", "_").upper()))


_name_environment_variables(main)
