"""``server-ext token …``: one-time pairing tokens."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from pairing.cli_output import (
    BadInput,
    Duration,
    emit,
    emit_record,
)
from pairing.errors import InvalidJID
from pairing.protocol.jid import prepare_resourcepart
from server_ext.cli.settings import Settings, jid_option, json_option, pass_settings, report
from server_ext.model import (
    TokenRecord,
    TokenState,
)

# --- tokens --------------------------------------------------------------------------------


def _token_row(record: TokenRecord, now: dt.datetime) -> dict[str, Any]:
    state = record.state.value
    if record.state is TokenState.PENDING and record.expires_at <= now:
        state = "expired"
    return {
        "id": record.id,
        "jid": str(record.jid),
        "name": record.name,
        "state": state,
        "created_by": record.created_by,
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "expires_at": record.expires_at.isoformat(timespec="seconds"),
        "redeemed_at": (
            record.redeemed_at.isoformat(timespec="seconds") if record.redeemed_at else None
        ),
    }


@click.group()
def token() -> None:
    """One-time tokens that let a new device enroll its certificate (QR pairing)."""


@token.command("create")
@jid_option("The account the device will belong to.", required=True)
@click.option("--resource", required=True, help="The device's resource, e.g. weatherbot.")
@click.option("--name", help="The device's name in listings (default: the resource).")
@click.option(
    "--ttl",
    type=Duration(),
    help="Lifetime: 90s, 10m, 1h or seconds [server.toml [tokens]; 10m, at most 1h].",
)
@click.option(
    "--connect",
    "connect_to",
    help="HOST:PORT the device should connect to, put into the QR code [server.toml: "
    "public_host, else the listening host or the domain, and port; with a stock server, "
    "the HTTPS API's: [https] public_host and port].",
)
@click.option(
    "--png", type=click.Path(dir_okay=False, path_type=Path), help="Write the QR code as PNG."
)
@click.option(
    "--svg", type=click.Path(dir_okay=False, path_type=Path), help="Write the QR code as SVG."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (includes the secret URI).")
@pass_settings
def token_create(
    settings: Settings,
    user_jid: str,
    resource: str,
    name: str | None,
    ttl: dt.timedelta | None,
    connect_to: str | None,
    png: Path | None,
    svg: Path | None,
    as_json: bool,
) -> None:
    """Issue a token for JID/RESOURCE and show it as a QR code and a URI."""
    from pairing import qr
    from pairing.protocol.address import ServerAddress
    from server_ext.admin.token_issuer import HTTPSEnrollment, issue_token, stock_xmpp
    from server_ext.net.data_directory import certificate_for
    from server_ext.net.server import token_rules

    account = settings.jid(user_jid)
    try:
        resource = prepare_resourcepart(resource.strip())  # RFC 7622 §3.4, as the token binds it
    except InvalidJID as exc:
        raise BadInput(f"--resource: {exc}") from None
    config = settings.config
    stock = not config.stock_kind.embedded
    if stock and not config.https_port and connect_to is None:
        raise click.ClickException(
            f"[stock] kind = {config.stock_kind.value}: devices enroll over HTTPS, but "
            "server.toml sets no [https] port"
        )
    default = (
        f"{config.https_connect_host}:{config.https_port}"
        if stock
        else f"{config.connect_host}:{config.port}"
    )
    address = ServerAddress.parse(connect_to or default)
    certificate = certificate_for(config)
    with settings.registry() as registry:
        issued = issue_token(
            registry,
            token_rules(config),
            account=account,
            resource=resource,
            name=name,
            ttl=ttl,
            created_by="cli",
            external_account=stock,
        )
    if stock:
        xmpp = stock_xmpp(config)
        target = HTTPSEnrollment(address.host, address.port, certificate.fingerprint, xmpp)
        uri = str(issued.https_uri(target))
    else:
        uri = str(
            issued.uri(host=address.host, port=address.port, fingerprint=certificate.fingerprint)
        )
    if png:
        qr.write_png(uri, png)
    if svg:
        qr.write_svg(uri, svg)
    if as_json:
        row = _token_row(issued.record, dt.datetime.now(dt.UTC))
        row["uri"] = uri
        emit_record(row, as_json=True)
        return
    click.echo(qr.terminal(uri))
    click.echo(uri)
    click.echo(
        f"token {issued.record.id} for {issued.record.jid}, valid until "
        f"{issued.record.expires_at.isoformat(timespec='seconds')}; it works once."
    )


@token.command("list")
@jid_option("Only this account's tokens.")
@click.option("--all", "show_all", is_flag=True, help="Include used, cancelled and expired ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def token_list(settings: Settings, user_jid: str | None, show_all: bool, as_json: bool) -> None:
    """List tokens (by default only those still usable). Tokens themselves are never shown."""
    account = settings.jid(user_jid) if user_jid else None
    now = dt.datetime.now(dt.UTC)
    with settings.registry() as registry:
        records = registry.tokens.all(account, None if show_all else TokenState.PENDING)
    rows = [_token_row(r, now) for r in records]
    if not show_all:
        rows = [r for r in rows if r["state"] == "pending"]
    emit(
        rows,
        [
            ("id", "ID"),
            ("jid", "JID"),
            ("name", "NAME"),
            ("state", "STATE"),
            ("expires_at", "EXPIRES"),
            ("created_by", "BY"),
        ],
        as_json=as_json,
        empty="no tokens",
    )


@token.command("cancel")
@click.argument("token_id", type=int)
@json_option
@pass_settings
def token_cancel(settings: Settings, token_id: int, as_json: bool) -> None:
    """Cancel the unused token TOKEN_ID."""
    with settings.registry() as registry:
        record = registry.tokens.cancel(token_id, actor="cli")
    report(
        _token_row(record, dt.datetime.now(dt.UTC)),
        f"cancelled token {record.id} for {record.jid}",
        as_json=as_json,
    )
