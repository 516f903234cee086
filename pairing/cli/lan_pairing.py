"""``pairing listen`` and ``pairing add``: pairing headless devices on the LAN."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import slixmpp

from pairing.cli.connection import current_connection
from pairing.cli.options import PROFILE_OPTION
from pairing.cli_output import can_prompt, emit
from pairing.redaction import protect
from pairing.xmpp.connection import PairingClient


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
        if not can_prompt():
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

    outcomes = current_connection().run(session)
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


@click.command()
@_code_options
@click.option(
    "--host",
    default="0.0.0.0",  # noqa: S104 - devices on the LAN must reach the window
    show_default=True,
    help="Address to listen on (devices dial the advertised addresses).",
)
@PROFILE_OPTION
def listen(host: str, **options: Any) -> None:
    """Open a pairing window on the LAN so headless devices can join your account."""
    _pair_devices(host=host, reverse=False, **options)


@click.command()
@_code_options
@PROFILE_OPTION
def add(**options: Any) -> None:
    """Find devices that advertise themselves (device-agent pair --advertise) and pair them."""
    _pair_devices(host="0.0.0.0", reverse=True, **options)  # noqa: S104
