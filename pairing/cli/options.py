"""The connection options, wherever they are given, and the options the commands share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pairing.cli_output import BadInput
from pairing.profiles import DEFAULT_PROFILE

PASSWORD_ENV = "PAIRING_PASSWORD"
PROFILE_ENV = "PAIRING_PROFILE"


# --- connection options: on the group, and --profile on every command that connects ------

#: Which setting wins when an option is given twice (on the group and on the command, or
#: on the command line and in the environment): the command line, then the environment.
_RANK = {ParameterSource.COMMANDLINE: 2, ParameterSource.ENVIRONMENT: 1}


@dataclass
class Choices:
    """The connection options as given, wherever they were given; resolved only when a
    command connects, so that `--help` and `pairing profiles` never need them."""

    values: dict[str, tuple[Any, int]] = field(default_factory=dict)

    def offer(self, key: str, value: Any, rank: int) -> None:
        if key not in self.values or rank >= self.values[key][1]:
            self.values[key] = (value, rank)

    def get(self, key: str) -> Any:
        return self.values.get(key, (None, 0))[0]


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name is not None:
        source = ctx.get_parameter_source(param.name)
        rank = _RANK.get(source, 0) if source is not None else 0
        ctx.ensure_object(Choices).offer(param.name, value, rank)
    return value


def _option(*names: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(*names, expose_value=False, callback=_remember, show_envvar=True, **kwargs)


PROFILE_OPTION = _option(
    "--profile",
    envvar=PROFILE_ENV,
    help=f"The profile to use (made by `pairing login`; default: {DEFAULT_PROFILE}).",
)
ACCOUNT_OPTIONS = [
    _option(
        "--jid",
        envvar="PAIRING_JID",
        help="Your account, e.g. alice@example.org (to log in, or instead of a profile).",
    ),
    _option(
        "--server",
        envvar="PAIRING_SERVER",
        help="HOST[:PORT] of the server (default: the profile's, else DNS SRV for the "
        "JID's domain, else the domain on port 5222).",
    ),
    _option(
        "--pin",
        envvar="PAIRING_PIN",
        help="The server certificate's SHA-256 fingerprint (from `server-ext fingerprint`).",
    ),
    _option(
        "--cafile",
        envvar="PAIRING_CAFILE",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Or a CA (or the server's own certificate) to check it with. Without --pin or "
        "--cafile, the system's CAs.",
    ),
    _option(
        "--service",
        envvar="PAIRING_SERVICE",
        help="On ejabberd or Prosody: server-ext's component that takes the commands, e.g. "
        "pairing.example.org (default: the profile's, else found in the domain's disco#items).",
    ),
    _option(
        "--password-file",
        envvar="PAIRING_PASSWORD_FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Read your password from this file (else ${PASSWORD_ENV}, else a prompt).",
    ),
]


def account_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([PROFILE_OPTION, *ACCOUNT_OPTIONS]):
        func = option(func)
    return func


# --- another account (administrators) ---------------------------------------------------


def target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--jid`` names another account (admins); ``--for`` is its former, hidden name."""
    func = click.option("--for", "for_account", hidden=True)(func)
    return click.option("--jid", "target", help="Another account (administrators only).")(func)


def target_account(target: str | None, for_account: str | None) -> str | None:
    """The account ``--jid`` (or ``--for``) names, if any."""
    if target and for_account and target != for_account:
        raise BadInput("give --jid (or its old name --for) once")
    return target or for_account


# --- --json on the commands that change something -----------------------------------------
