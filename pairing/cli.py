"""``pairing``: the user's side. Log in with your password and manage your devices."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import slixmpp

from pairing.cli_output import BadInput, configure_logging, emit, friendly_group, read_secret
from pairing.errors import InvalidJID
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import PeerCertificate, format_fingerprint
from pairing.protocol.jid import JID, prepare_resourcepart
from pairing.redaction import protect
from pairing.xmpp.connection import PairingClient, TrustAnchor, login, logout, make_client
from pairing.xmpp.devices import DeviceInfo, end_sessions, list_devices
from pairing.xmpp.saslcert import (
    PLUGINS,
    add_certificate,
    disable_certificate,
    list_certificates,
    revoke_certificate,
)
from pairing.xmpp.tokens import TokenGrant, cancel_token, list_tokens, request_token

PASSWORD_ENV = "PAIRING_PASSWORD"
T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    jid: JID
    server: ServerAddress
    trust: TrustAnchor
    password_file: Path | None

    def run(self, action: Callable[[slixmpp.ClientXMPP], Awaitable[T]]) -> T:
        """Log in with the password, run ``action``, log out."""
        password = read_secret(
            file=self.password_file, env=PASSWORD_ENV, prompt=f"Password for {self.jid}"
        )

        async def session() -> T:
            client = make_client(
                str(self.jid),
                server=self.server,
                trust=self.trust,
                password=password,
                plugins=PLUGINS,
            )
            await login(client)
            try:
                return await action(client)
            finally:
                await logout(client)

        return asyncio.run(session())


@click.group(cls=friendly_group())
@click.option(
    "--jid", envvar="PAIRING_JID", required=True, help="Your account, e.g. alice@example.org."
)
@click.option(
    "--server",
    "server_text",
    envvar="PAIRING_SERVER",
    help="HOST[:PORT] of the server (default: the JID's domain, port 5222).",
)
@click.option("--pin", envvar="PAIRING_PIN", help="The server certificate's SHA-256 fingerprint.")
@click.option(
    "--cafile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Or a CA (or the server's own certificate) to check it with.",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Read your password from this file (else ${PASSWORD_ENV}, else a prompt).",
)
@click.option("-v", "--verbose", count=True, help="Show protocol logs (-vv for debug).")
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(
    ctx: click.Context,
    jid: str,
    server_text: str | None,
    pin: str | None,
    cafile: Path | None,
    password_file: Path | None,
    verbose: int,
) -> None:
    """Manage the devices that log in to your XMPP account without your password.

    Each device has its own certificate (made with `device-agent init`). Register it here
    and the device logs in with it; revoke it here and it is cut off at once.
    """
    configure_logging(verbose)
    try:
        account = JID.parse(jid).bare
    except InvalidJID as exc:
        raise BadInput(f"--jid: {exc}") from None
    if (pin is None) == (cafile is None):
        raise click.UsageError(
            "say how to recognise the server: --pin FINGERPRINT (from `server-ext fingerprint`) "
            "or --cafile FILE"
        )
    server = (
        ServerAddress.parse(server_text) if server_text else ServerAddress(account.domain, 5222)
    )
    ctx.obj = Account(account, server, TrustAnchor(fingerprint=pin, cafile=cafile), password_file)


@main.group()
def certs() -> None:
    """List, register, disable and revoke device certificates (XEP-0257)."""


@certs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def certs_list(account: Account, as_json: bool) -> None:
    """List your registered certificates and who is online with each."""
    items = account.run(list_certificates)
    rows: list[dict[str, Any]] = [
        {
            "name": item.name,
            "fingerprint": item.certificate.fingerprint if item.certificate else None,
            "jids": [str(j) for j in item.certificate.jids] if item.certificate else [],
            "online": list(item.users),
        }
        for item in items
    ]
    emit(
        rows,
        [("name", "NAME"), ("jids", "JIDS"), ("online", "ONLINE AS"), ("fingerprint", "SHA-256")],
        as_json=as_json,
        empty="no certificates registered",
    )


@certs.command("add")
@click.argument("name")
@click.argument("certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--no-cert-management",
    is_flag=True,
    help="The device may not manage certificates itself (recommended for bots).",
)
@click.pass_obj
def certs_add(account: Account, name: str, certfile: Path, no_cert_management: bool) -> None:
    """Register the device certificate CERTFILE (PEM or DER) under NAME."""
    # Parsed once, here where it enters: a file that is no certificate is refused before the
    # password is asked for, and what is registered and printed is this one value.
    cert = PeerCertificate.parse(certfile.read_bytes())

    async def action(client: slixmpp.ClientXMPP) -> None:
        await add_certificate(client, name, cert.der, allow_management=not no_cert_management)

    account.run(action)
    click.echo(f"registered {name!r}: {format_fingerprint(cert.fingerprint)}")


@certs.command("disable")
@click.argument("name")
@click.pass_obj
def certs_disable(account: Account, name: str) -> None:
    """Stop NAME from logging in again (sessions already open stay)."""

    async def action(client: slixmpp.ClientXMPP) -> None:
        await disable_certificate(client, name)

    account.run(action)
    click.echo(f"disabled {name!r}")


@certs.command("revoke")
@click.argument("name")
@click.pass_obj
def certs_revoke(account: Account, name: str) -> None:
    """Revoke NAME: its sessions are closed now and it can never log in again."""

    async def action(client: slixmpp.ClientXMPP) -> None:
        await revoke_certificate(client, name)

    account.run(action)
    click.echo(f"revoked {name!r}")


@main.command()
@click.option("--resource", required=True, help="The new device's resource, e.g. weatherbot.")
@click.option("--name", help="Its name in device lists (default: the resource).")
@click.option(
    "--ttl", default=600, show_default=True, help="Seconds the code stays valid (30-3600)."
)
@click.option("--for", "for_account", help="Another account (admins only).")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Also write a PNG.")
@click.option("--svg", type=click.Path(dir_okay=False, path_type=Path), help="Also write an SVG.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (includes the secret URI).")
@click.pass_obj
def token(
    account: Account,
    resource: str,
    name: str | None,
    ttl: int,
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
    try:
        target = str(JID.parse_account(for_account, account.jid.domain)) if for_account else None
    except InvalidJID as exc:
        raise BadInput(f"--for: {exc}") from None

    async def action(client: slixmpp.ClientXMPP) -> TokenGrant:
        return await request_token(client, resource, name=name, ttl_seconds=ttl, account=target)

    grant = account.run(action)
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


@main.group()
def tokens() -> None:
    """Your unused pairing codes."""


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def tokens_list(account: Account, as_json: bool) -> None:
    """List your unused pairing codes (the codes themselves are never shown again)."""
    items = account.run(list_tokens)
    emit(
        [asdict(t) for t in items],
        [("token_id", "ID"), ("jid", "JID"), ("name", "NAME"), ("expires", "EXPIRES")],
        as_json=as_json,
        empty="no unused pairing codes",
    )


@tokens.command("cancel")
@click.argument("token_id", type=int)
@click.pass_obj
def tokens_cancel(account: Account, token_id: int) -> None:
    """Cancel the unused pairing code TOKEN_ID."""

    async def action(client: slixmpp.ClientXMPP) -> None:
        await cancel_token(client, token_id)

    account.run(action)
    click.echo(f"cancelled pairing code {token_id}")


def _code_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.option("--code", help="The setup code of the one device to pair (XXX-XX-XXX)."),
            click.option(
                "--qr",
                "labels",
                multiple=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A photo of a device label (repeatable).",
            ),
            click.option(
                "--codes",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A fleet CSV: device_id,code per line.",
            ),
            click.option(
                "--mode",
                type=click.Choice(["token", "xep0257"]),
                default="token",
                show_default=True,
                help="token: the device redeems a one-time token; xep0257: we upload its "
                "certificate.",
            ),
            click.option(
                "--timeout", default=300.0, show_default=True, help="Seconds to keep at it."
            ),
            click.option(
                "--interface", "interfaces", multiple=True, help="mDNS only on this IPv4 address."
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="Print the per-device report as JSON."
            ),
        ]
    ):
        func = option(func)
    return func


def _pair_devices(
    account: Account,
    *,
    code: str | None,
    labels: tuple[Path, ...],
    codes: Path | None,
    mode: str,
    timeout: float,
    host: str,
    interfaces: tuple[str, ...],
    as_json: bool,
    reverse: bool,
) -> None:
    from pairing import qr
    from pairing.lan.enroller import AccountEnroller
    from pairing.lan.window import CodeBook, PairingWindow
    from pairing.protocol.pair_messages import DeviceHello, EnrollMode
    from pairing.protocol.setup_code import SetupCode, SetupLabel

    book = CodeBook()
    if code:
        book.single = SetupCode.parse(code)
        protect(book.single.digits)
    for path in labels:
        book.add_label(SetupLabel.parse(qr.read_image(path)), where=str(path))
    if codes:
        book.load_csv(codes)
    if not (code or labels or codes):
        if not sys.stdin.isatty():
            raise click.UsageError("give --code, --qr or --codes (no terminal to ask on)")

        async def ask(hello: DeviceHello) -> SetupCode | None:
            prompt = f"Code for device {hello.device_id} ({hello.name or 'unnamed'}), empty to skip"
            text = await asyncio.to_thread(click.prompt, prompt, default="", show_default=False)
            return SetupCode.parse(text) if text.strip() else None

        book.prompt = ask

    def report(line: str) -> None:
        click.echo(line, err=True)

    async def session(client: slixmpp.ClientXMPP) -> list[Any]:
        assert isinstance(client, PairingClient)
        window = PairingWindow(
            book,
            AccountEnroller(client, mode=EnrollMode(mode)),
            timeout=timeout,
            host=host,
            interfaces=interfaces or None,
            report=report,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, window.close)
        return await (window.add_devices() if reverse else window.run())

    outcomes = account.run(session)
    rows = [asdict(o) for o in outcomes]
    emit(
        rows,
        [
            ("device_id", "DEVICE"),
            ("name", "NAME"),
            ("ok", "ENROLLED"),
            ("jid", "JID"),
            ("error", "ERROR"),
        ],
        as_json=as_json,
        empty="no device paired",
    )
    if not rows or not all(r["ok"] for r in rows) or (book.expected or 0) > len(rows):
        raise click.ClickException("not every expected device was paired")


@main.command()
@_code_options
@click.option(
    "--host",
    default="0.0.0.0",  # noqa: S104 - devices on the LAN must reach the window
    show_default=True,
    help="Address to listen on (devices dial the advertised addresses).",
)
@click.pass_obj
def listen(account: Account, /, host: str, **options: Any) -> None:
    """Open a pairing window on the LAN so headless devices can join your account."""
    _pair_devices(account, host=host, reverse=False, **options)


@main.command()
@_code_options
@click.pass_obj
def add(account: Account, /, **options: Any) -> None:
    """Find devices that advertise themselves (device-agent pair --advertise) and pair them."""
    _pair_devices(account, host="0.0.0.0", reverse=True, **options)  # noqa: S104


@main.group("devices")
def devices_group() -> None:
    """Your devices: who is online, and cutting one off."""


@devices_group.command("list")
@click.option("--for", "for_account", help="Another account (admins), or * for all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def devices_list(account: Account, for_account: str | None, as_json: bool) -> None:
    """List your devices, whether each is online, and when it last logged in."""

    async def action(client: slixmpp.ClientXMPP) -> list[DeviceInfo]:
        return await list_devices(client, account=for_account)

    rows = [asdict(d) for d in account.run(action)]
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
@click.pass_obj
def devices_revoke(account: Account, name: str) -> None:
    """Revoke your device NAME (XEP-0257): it is cut off now and can never log in again."""

    async def action(client: slixmpp.ClientXMPP) -> None:
        await revoke_certificate(client, name)

    account.run(action)
    click.echo(f"revoked {name!r}")


@main.command("kick")
@click.argument("jid")
@click.option("--reason", default="", help="Shown to the clients.")
@click.pass_obj
def kick(account: Account, jid: str, reason: str) -> None:
    """End every session of an account now (administrators only)."""

    async def action(client: slixmpp.ClientXMPP) -> str:
        return await end_sessions(client, jid, reason=reason)

    click.echo(account.run(action))
