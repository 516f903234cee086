"""``device-agent``: the device's own identity and login, without ever knowing a password."""

from __future__ import annotations

from pathlib import Path

import click

from device_agent.cli import enroll, identity, lan_pairing, running
from device_agent.cli.identity import EXPORT_PASSWORD_ENV
from device_agent.cli.options import DEFAULT_STATE
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.cli_output import EXIT_UNREACHABLE, EXIT_USAGE, configure_logging, friendly_group

__all__ = ["main"]


EPILOG = f"""\b
Environment (each option's own variable is shown beside it, too):
  DEVICE_AGENT_STATE     as --state-dir
  XDG_STATE_HOME         the default state directory is $XDG_STATE_HOME/device-agent
                         (else ~/.local/state/device-agent)
  {EXPORT_PASSWORD_ENV}  the PKCS#12 file's password for `export`

\b
Exit status: 0 done, 1 refused or failed (the message says why), {EXIT_USAGE} usage error or bad
input, {EXIT_UNREACHABLE} the server is not running or not reachable."""


@click.group(cls=friendly_group(DeviceAgentError), epilog=EPILOG)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DEVICE_AGENT_STATE",
    show_envvar=True,
    default=DEFAULT_STATE,
    show_default=True,
    help="Where the device keeps its key (mode 0600) and certificate.",
)
@click.option("-v", "--verbose", count=True, help="Show protocol logs (-vv for debug).")
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(ctx: click.Context, state_dir: Path, verbose: int) -> None:
    """The device side: make a key, show the certificate to register, log in with it.

    The private key is created here and never leaves this machine. Register the certificate
    for the account (`pairing certs add`, or `server-ext certs add` as an admin), then the
    device logs in with SASL EXTERNAL.
    """
    configure_logging(verbose)
    ctx.obj = KeyStore(state_dir)


main.add_command(identity.init)
main.add_command(identity.show)
main.add_command(enroll.enroll)
main.add_command(identity.status)
main.add_command(identity.reset)
main.add_command(running.run_command)
main.add_command(running.login_command)
main.add_command(lan_pairing.label)
main.add_command(lan_pairing.pair)
main.add_command(running.renew)
main.add_command(identity.export_command)
