"""``device-agent run``, ``login`` and ``renew``: logging in with the device certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from pathlib import Path

import click

from device_agent import enrollment, renewal, rotation, runtime
from device_agent.cli.options import PIN_HELP, SERVER_HELP, json_option, server_settings
from device_agent.keystore import KeyStore
from pairing.cli_output import say
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import format_fingerprint
from pairing.protocol.jid import JID
from pairing.xmpp.connection import TrustAnchor, login, logout, make_client


@click.command("run")
@click.option(
    "--rotate-before-days",
    type=float,
    help="Renew the certificate this many days before it expires (default: a third of "
    "its lifetime, at most 30 days).",
)
@click.option("--server", "server_text", help=SERVER_HELP + " Recorded for later runs.")
@click.option("--pin", help=PIN_HELP)
@click.pass_obj
def run_command(
    store: KeyStore, rotate_before_days: float | None, server_text: str | None, pin: str | None
) -> None:
    """Stay logged in (SASL EXTERNAL) and online, reconnecting with backoff, until stopped.

    It sends presence with the device's name, renews the certificate before it expires
    (and after, within the server's grace period, if the device was off), and stops cleanly
    on Ctrl-C or SIGTERM. A device with a setup label that is not enrolled yet first pairs
    on the LAN.
    """
    from device_agent.setup_state import SETUP

    def report(line: str) -> None:
        click.echo(f"{dt.datetime.now().strftime('%H:%M:%S')} {line}", err=True)

    if server_text is not None or pin is not None:
        settings = server_settings(store.load().jid, server_text, pin)
        assert settings is not None
        settings.save(store.state_dir)
    if not enrollment.SERVER.exists(store.state_dir) and SETUP.exists(store.state_dir):
        from device_agent.lan import pair as pair_on_lan

        asyncio.run(pair_on_lan(store.state_dir, report=report))
    store.load()
    enrollment.ServerSettings.load(store.state_dir)
    margin = dt.timedelta(days=rotate_before_days) if rotate_before_days is not None else None
    if margin is not None:
        try:
            rotation.check_margin(store.state_dir, margin)
        except rotation.RotationError as exc:
            raise click.ClickException(
                f"--rotate-before-days {rotate_before_days:g}: {exc}"
            ) from None

    async def until_stopped() -> None:
        # Ctrl-C and SIGTERM (systemd's stop) end the session politely and record "stopped".
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runtime.run(store.state_dir, report=report, rotate_before=margin, stop=stop)

    try:
        asyncio.run(until_stopped())
    except KeyboardInterrupt:  # before the handlers were installed
        report("stopped")
    except runtime.LoginRefused as exc:
        raise click.ClickException(
            f"the server refused this device: {exc}. It will not retry; "
            "`device-agent reset` wipes it for re-enrollment"
        ) from None


@click.command("login")
@click.option("--server", "server_text", help="HOST or HOST:PORT (default: from enrollment).")
@click.option("--pin", help="The server certificate's SHA-256 fingerprint.")
@click.option(
    "--cafile", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Or a CA file."
)
@click.option("--direct-tls", is_flag=True, help="The port speaks TLS from the start (XEP-0368).")
@click.pass_obj
def login_command(
    store: KeyStore, server_text: str, pin: str | None, cafile: Path | None, direct_tls: bool
) -> None:
    """Log in once with the device certificate (SASL EXTERNAL) and report the bound JID."""
    identity = store.load()
    trust: TrustAnchor | None = None
    if server_text is None:
        settings = enrollment.ServerSettings.load(store.state_dir)
        server_text = f"{settings.host}:{settings.port}"
        if pin is None and cafile is None:
            trust = settings.trust  # the pin, or the system's CAs (a v2 enrollment's choice)
    if trust is None:
        if (pin is None) == (cafile is None):
            raise click.UsageError("give exactly one of --pin or --cafile")
        trust = TrustAnchor(fingerprint=pin, cafile=cafile)
    address = ServerAddress.parse(server_text)
    server = ServerAddress(address.host, address.port, direct_tls=direct_tls)

    async def once() -> JID:
        client = make_client(
            str(identity.jid),
            server=server,
            trust=trust,
            certfile=identity.cert_path,
            keyfile=identity.key_path,
        )
        bound = await login(client)
        await logout(client)
        return bound

    bound = asyncio.run(once())
    click.echo(f"logged in as {bound}")


@click.command()
@click.option(
    "--exec",
    "hook",
    metavar="CMD",
    help="Run CMD after the renewal (no shell; it gets DEVICE_AGENT_CERT, DEVICE_AGENT_KEY).",
)
@json_option
@click.pass_obj
def renew(store: KeyStore, hook: str | None, as_json: bool) -> None:
    """Renew the device certificate now, then run --exec.

    A valid certificate is rotated over the device's own EXTERNAL session; an expired one
    (within the server's grace period, never revoked) is renewed before login.
    """
    store.load()
    enrollment.ServerSettings.load(store.state_dir)
    if runtime.agent_running(store.state_dir):
        raise click.ClickException(
            f"a device-agent is running with {store.state_dir}; it renews by itself"
        )
    identity = asyncio.run(renewal.renew(store.state_dir))
    say(
        {
            "jid": str(identity.jid),
            "sha256": identity.fingerprint,
            "not_after": identity.not_after.isoformat(),
        },
        as_json,
        f"renewed: {identity.jid} now logs in with {format_fingerprint(identity.fingerprint)}, "
        f"valid until {identity.not_after:%Y-%m-%d %H:%M} UTC",
    )
    if hook:
        renewal.run_hook(hook, identity, store.state_dir)
