"""``pairing``: the user's side. Log in once, then manage your devices with no flags."""

from __future__ import annotations

import click

from pairing.cli import certificates, devices, lan_pairing, login, tokens
from pairing.cli.options import PASSWORD_ENV, PROFILE_ENV, Choices, account_options
from pairing.cli_output import EXIT_UNREACHABLE, EXIT_USAGE, configure_logging, friendly_group
from pairing.profiles import DEFAULT_PROFILE

__all__ = ["main"]

EPILOG = f"""\b
Start with `pairing login --jid you@example.org` (asks for your password once and
keeps no password: this CLI gets a certificate of its own); later commands need no
connection options. --jid, --server and --pin still work for scripts, without a profile.

\b
Environment (each option's own variable is shown beside it, too):
  {PROFILE_ENV}        the profile to use (default: "{DEFAULT_PROFILE}")
  PAIRING_JID, PAIRING_SERVER, PAIRING_PIN, PAIRING_CAFILE, PAIRING_PASSWORD_FILE
                         as --jid, --server, --pin, --cafile, --password-file
  {PASSWORD_ENV}       your password, for `login` and commands run without a profile
  XDG_CONFIG_HOME        profiles live in $XDG_CONFIG_HOME/xmpp-device-pairing
                         (else ~/.config/xmpp-device-pairing)

\b
Exit status (as ejabberdctl): 0 done, 1 refused or failed (the message says why),
{EXIT_USAGE} usage error or bad input, {EXIT_UNREACHABLE} the server is not running or not reachable."""  # noqa: E501


@click.group(cls=friendly_group(), epilog=EPILOG)
@account_options
@click.option("-v", "--verbose", count=True, help="Show protocol logs (-vv for debug).")
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Manage the devices that log in to your XMPP account without your password.

    Each device has its own certificate (made with `device-agent init`). Register it here
    and the device logs in with it; revoke it here and it is cut off at once.
    """
    configure_logging(verbose)
    ctx.ensure_object(Choices)


main.add_command(login.login_command)
main.add_command(login.logout_command)
main.add_command(login.profiles_command)
main.add_command(certificates.certs)
main.add_command(tokens.token)
main.add_command(tokens.tokens)
main.add_command(lan_pairing.listen)
main.add_command(lan_pairing.add)
main.add_command(devices.devices_group)
main.add_command(devices.kick)
