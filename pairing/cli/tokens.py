"""``pairing token`` and ``pairing tokens …``: one-time pairing codes for new bots."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

import click
import slixmpp

from pairing.cli.connection import current_connection
from pairing.cli.options import PROFILE_OPTION, target_account, target_options
from pairing.cli_output import BadInput, Duration, emit, say
from pairing.errors import InvalidJID
from pairing.protocol.jid import JID, prepare_resourcepart
from pairing.xmpp.tokens import TokenGrant, cancel_token, list_tokens, request_token


@click.command()
@click.option("--resource", required=True, help="The new device's resource, e.g. weatherbot.")
@click.option("--name", help="Its name in device lists (default: the resource).")
@click.option(
    "--ttl",
    type=Duration(),
    default="10m",
    show_default=True,
    help="How long the code stays valid: 90s, 10m, 1h or plain seconds (30s to 1h).",
)
@target_options
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Also write a PNG.")
@click.option("--svg", type=click.Path(dir_okay=False, path_type=Path), help="Also write an SVG.")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON (includes the secret URI).")
def token(
    resource: str,
    name: str | None,
    ttl: dt.timedelta,
    target: str | None,
    for_account: str | None,
    png: Path | None,
    svg: Path | None,
    as_json: bool,
) -> None:
    """Show a one-time QR code that lets a new bot join your account, without your password."""
    from pairing import qr

    # Prepared here as the server will (RFC 7622 §3.3, §3.4), so a refused name is a clear
    # local error and the token names exactly what the device will log in as.
    try:
        resource = prepare_resourcepart(resource)
    except InvalidJID as exc:
        raise BadInput(f"--resource: {exc}") from None
    account_text = target_account(target, for_account)
    connection = current_connection()
    try:
        account = (
            str(JID.parse_account(account_text, connection.jid.domain)) if account_text else None
        )
    except InvalidJID as exc:
        raise BadInput(f"--jid: {exc}") from None
    seconds = int(ttl.total_seconds())

    async def action(client: slixmpp.ClientXMPP) -> TokenGrant:
        return await request_token(
            client, resource, name=name, ttl_seconds=seconds, account=account
        )

    grant = connection.run(action)
    if png:
        qr.write_png(grant.uri, png)
    if svg:
        qr.write_svg(grant.uri, svg)
    if as_json:
        click.echo(json.dumps({**asdict(grant)}, indent=2))
        return
    click.echo(qr.terminal(grant.uri))
    click.echo(grant.uri)
    click.echo(
        f"Scan it on the device: device-agent enroll --qr-image PHOTO (or --uri). "
        f"It works once, for {grant.jid}, until {grant.expires}."
    )


@click.group()
def tokens() -> None:
    """Your unused pairing codes."""


@tokens.command("list")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_list(as_json: bool) -> None:
    """List your unused pairing codes (the codes themselves are never shown again)."""
    items = current_connection().run(list_tokens)
    emit(
        [asdict(t) for t in items],
        [("token_id", "ID"), ("jid", "JID"), ("name", "NAME"), ("expires", "EXPIRES")],
        as_json=as_json,
        empty="no unused pairing codes",
    )


@tokens.command("cancel")
@click.argument("token_id", type=int)
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def tokens_cancel(token_id: int, as_json: bool) -> None:
    """Cancel the unused pairing code TOKEN_ID."""

    async def action(client: slixmpp.ClientXMPP) -> None:
        await cancel_token(client, token_id)

    current_connection().run(action)
    say({"token_id": token_id, "cancelled": True}, as_json, f"cancelled pairing code {token_id}")
