"""What every ``server-ext`` command is given: the data directory and the domain."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from pairing.cli_output import (
    BadInput,
)
from pairing.errors import InvalidJID
from pairing.protocol.jid import JID
from server_ext.storage.registry import Registry

PASSWORD_ENV = "SERVER_EXT_PASSWORD"


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    domain: str

    def registry(self) -> Registry:
        return Registry.open(self.data_dir / "registry.sqlite3")

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
