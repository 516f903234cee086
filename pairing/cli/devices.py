"""``pairing devices …`` and ``pairing kick``: listing devices and cutting them off."""

from __future__ import annotations

from dataclasses import asdict

import click
import slixmpp

from pairing.cli.connection import current_connection
from pairing.cli.options import PROFILE_OPTION, target_account
from pairing.cli_output import emit, say
from pairing.xmpp.connection import PairingClient
from pairing.xmpp.devices import DeviceInfo, end_sessions, list_devices, revoke_device
from pairing.xmpp.saslcert import revoke_certificate


@click.group("devices")
def devices_group() -> None:
    """Your devices: who is online, and cutting one off."""


@devices_group.command("list")
@click.option("--jid", "target", help="Another account (administrators), or * for all.")
@click.option("--for", "for_account", hidden=True)
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_list(target: str | None, for_account: str | None, as_json: bool) -> None:
    """List your devices, whether each is online, and when it last logged in."""
    account = target_account(target, for_account)

    async def action(client: slixmpp.ClientXMPP) -> list[DeviceInfo]:
        return await list_devices(client, account=account)

    rows = [asdict(d) for d in current_connection().run(action)]
    emit(
        rows,
        [
            ("id", "ID"),
            ("name", "NAME"),
            ("jid", "JID"),
            ("state", "STATE"),
            ("online", "ONLINE"),
            ("last_login", "LAST LOGIN"),
            ("expires", "EXPIRES"),
        ],
        as_json=as_json,
        empty="no devices",
    )


@devices_group.command("revoke")
@click.argument("name")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def devices_revoke(name: str, as_json: bool) -> None:
    """Revoke your device NAME (XEP-0257): it is cut off now and can never log in again."""
    revoke_and_report(name, as_json)


def revoke_and_report(name: str, as_json: bool) -> None:
    """`pairing devices revoke NAME` (and `certs revoke`): revoke, then say so."""

    async def action(client: PairingClient) -> None:
        await revoke_named(client, name)

    current_connection().run(action)
    say({"name": name, "state": "revoked"}, as_json, f"revoked {name!r}")


async def revoke_named(client: PairingClient, name: str) -> None:
    """Revoke the certificate (device) ``name``: XEP-0257 on the account's own server, the
    component's command on a stock server."""
    if client.service is not None:
        await revoke_device(client, name)
    else:
        await revoke_certificate(client, name)


@click.command("kick")
@click.argument("jid")
@click.option("--reason", default="", help="Shown to the clients.")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kick(jid: str, reason: str, as_json: bool) -> None:
    """End every session of an account now (administrators only)."""

    async def action(client: slixmpp.ClientXMPP) -> str:
        return await end_sessions(client, jid, reason=reason)

    note = current_connection().run(action)
    say({"jid": jid, "note": note}, as_json, note)
