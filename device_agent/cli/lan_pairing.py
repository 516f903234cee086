"""``device-agent label`` and ``pair``: the setup label and pairing on the LAN."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import click

from device_agent.cli.options import json_option
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.cli_output import BadInput, emit_record, say
from pairing.errors import InvalidJID
from pairing.protocol.jid import prepare_resourcepart


@click.command()
@click.option("--name", default="", help="A friendly name the user sees while pairing.")
@click.option("--resource", default="device", show_default=True, help="The resource to propose.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Write the label QR.")
@click.option("--reset", is_flag=True, help="Make a new code (the old label stops working).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def label(
    store: KeyStore, name: str, resource: str, png: Path | None, reset: bool, as_json: bool
) -> None:
    """Make the setup code for the device's label. It is shown once and never stored."""
    from device_agent.setup_state import ATTEMPTS_FILE, SETUP_FILE, SetupState
    from pairing import qr
    from pairing.protocol.setup_code import SetupLabel

    try:
        # RFC 7622 §3.4: the resource proposed in DeviceHello, prepared as the peer will.
        resource = prepare_resourcepart(resource)
    except InvalidJID as exc:
        raise BadInput(f"--resource: {exc}") from None
    if (store.state_dir / SETUP_FILE).exists() and not reset:
        raise click.ClickException(
            "a label was made already and its code is not stored; --reset makes a new one"
        )
    made = SetupLabel.generate()
    # The PNG first: if the state cannot be stored afterwards it is removed again, and the
    # old label keeps working. The other order could store a code that nobody ever saw.
    if png:
        try:
            qr.write_png(made.payload(), png)
        except OSError as exc:
            raise click.ClickException(
                f"cannot write {png}: {exc.strerror or exc}; the label is unchanged"
            ) from None
    try:
        SetupState.create(store.state_dir, made, name=name, resource=resource)
    except DeviceAgentError:
        if png:
            png.unlink(missing_ok=True)
        raise
    (store.state_dir / ATTEMPTS_FILE).unlink(missing_ok=True)
    record = {
        "device_id": made.device_id,
        "setup_id": made.setup_id,
        "code": str(made.code),
        "payload": made.payload(),
    }
    if as_json:
        emit_record(record, as_json=True)
        return
    click.echo(qr.terminal(made.payload()))
    click.echo(f"setup code: {made.code}   device {made.device_id}   setup id {made.setup_id}")
    click.echo("Print it now: the device keeps only an SRP verifier, not the code.")


@click.command()
@click.option(
    "--timeout", default=900.0, show_default=True, help="Give up after this many seconds."
)
@click.option("--interface", "interfaces", multiple=True, help="mDNS only on this IPv4 address.")
@click.option(
    "--max-failures", default=100, show_default=True, help="Wrong codes before the device locks."
)
@click.option(
    "--advertise",
    is_flag=True,
    help="HomeKit-style: advertise this device and wait for `pairing add` to connect.",
)
@json_option
@click.pass_obj
def pair(
    store: KeyStore,
    timeout: float,
    interfaces: tuple[str, ...],
    max_failures: int,
    advertise: bool,
    as_json: bool,
) -> None:
    """Find a pairing window on the LAN, prove the label's code, enroll and log in."""
    from device_agent.lan import PairingLimits, wait_for_user
    from device_agent.lan import pair as pair_on_lan

    def report(line: str) -> None:
        click.echo(f"{dt.datetime.now().strftime('%H:%M:%S')} {line}", err=True)

    limits = PairingLimits(lifetime_failures=max_failures, deadline=timeout)
    how = wait_for_user if advertise else pair_on_lan
    bound = asyncio.run(
        how(store.state_dir, limits=limits, interfaces=interfaces or None, report=report)
    )
    say(
        {"jid": str(bound), "sha256": store.load().fingerprint, "state_dir": str(store.state_dir)},
        as_json,
        f"paired: this device logs in as {bound}",
    )
