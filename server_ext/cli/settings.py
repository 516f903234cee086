"""What every ``server-ext`` command is given: the data directory, read once it is needed.

The configuration comes from ``<data_dir>/server.toml`` (written by ``init``); a command given
a directory without one stops with :class:`NoServerData`, and a ``--domain`` that is not the
configured one is refused rather than acted on (issue 10: ``user add bob`` once created
``bob@localhost`` on an example.org server).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pairing.cli_output import BadInput, emit_record
from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.config import ServerConfig
from server_ext.config_file import config_path, read_config
from server_ext.storage.registry import Registry

PASSWORD_ENV = "SERVER_EXT_PASSWORD"

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    domain_option: str | None  # prepared (RFC 7622); None when not given

    @functools.cached_property
    def config(self) -> ServerConfig:
        """The server's configuration, checked against ``--domain`` when one was given."""
        config = read_config(self.data_dir)
        if self.domain_option is not None and self.domain_option != config.domain:
            raise BadInput(
                f"--domain {self.domain_option} is not this server's domain {config.domain} "
                f"(from {config_path(self.data_dir)}); leave --domain out"
            )
        return config

    @property
    def domain(self) -> str:
        return self.config.domain

    def registry(self) -> Registry:
        return Registry.open(self.config.database_path)

    def jid(self, text: str) -> JID:
        """``alice`` means ``alice@<domain>``; a JID of another domain is refused."""
        # Prepared per RFC 7622 exactly as SASL prepares a login name, so the account made
        # here is the one a password login reaches.
        try:
            jid = JID.parse_account(text, self.domain)
        except InvalidJID as exc:
            raise BadInput(str(exc)) from None
        if jid.domain != self.domain:
            raise click.BadParameter(f"{jid} is not in this server's domain {self.domain}")
        return jid


pass_settings = click.make_pass_decorator(Settings)


class AliasedOption(click.Option):
    """An option whose help shows only its first name; the others are old spellings kept so
    scripts written for them still work (``--user`` became ``--jid``)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        names, text = record
        first = self.opts[0]
        metavar = names.rsplit(" ", 1)[-1] if " " in names else ""
        return (f"{first} {metavar}".strip(), text)


def jid_option(help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """``--jid`` for an account, everywhere in ``server-ext`` (``--user`` still accepted)."""
    return click.option(
        "--jid", "--user", "user_jid", cls=AliasedOption, required=required, help=help_text
    )


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def report(record: dict[str, Any], text: str, *, as_json: bool) -> None:
    """What a command that changed something prints: ``text``, or ``record`` as JSON."""
    if as_json:
        emit_record(record, as_json=True)
    else:
        click.echo(text)
