"""``pairing certs …``: the account's registered certificates (XEP-0257)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pairing.cli.connection import current_connection
from pairing.cli.devices import revoke_and_report
from pairing.cli.options import PROFILE_OPTION
from pairing.cli_output import emit, say
from pairing.errors import PairingError
from pairing.protocol.identity import PeerCertificate, format_fingerprint
from pairing.xmpp.component import register_certificate
from pairing.xmpp.connection import PairingClient
from pairing.xmpp.devices import list_devices
from pairing.xmpp.saslcert import add_certificate, disable_certificate, list_certificates


@click.group()
def certs() -> None:
    """List, register and disable device certificates (XEP-0257)."""


@certs.command("list")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def certs_list(as_json: bool) -> None:
    """List your registered certificates and who is online with each."""

    async def action(client: PairingClient) -> list[dict[str, Any]]:
        if client.service is not None:
            # A stock server: the component's device list says the same things.
            return [
                {
                    "name": device.name,
                    "fingerprint": device.fingerprint or None,
                    "jids": [j for j in device.jid.split(", ") if j],
                    "online": [device.jid] if device.online else [],
                }
                for device in await list_devices(client)
                if device.state != "revoked"
            ]
        return [
            {
                "name": item.name,
                "fingerprint": item.certificate.fingerprint if item.certificate else None,
                "jids": [str(j) for j in item.certificate.jids] if item.certificate else [],
                "online": list(item.users),
            }
            for item in await list_certificates(client)
        ]

    rows = current_connection().run(action)
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
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def certs_add(name: str, certfile: Path, no_cert_management: bool, as_json: bool) -> None:
    """Register the device certificate CERTFILE (PEM or DER) under NAME."""
    # Parsed once, here where it enters: a file that is no certificate is refused before the
    # password is asked for, and what is registered and printed is this one value.
    cert = PeerCertificate.parse(certfile.read_bytes())

    async def action(client: PairingClient) -> None:
        if client.service is not None:
            await register_certificate(
                client, client.service, name, cert.der, allow_management=not no_cert_management
            )
        else:
            await add_certificate(client, name, cert.der, allow_management=not no_cert_management)

    current_connection().run(action)
    say(
        {
            "name": name,
            "fingerprint": cert.fingerprint,
            "jids": [str(j) for j in cert.jids],
            "no_cert_management": no_cert_management,
        },
        as_json,
        f"registered {name!r}: {format_fingerprint(cert.fingerprint)}",
    )


@certs.command("disable")
@click.argument("name")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def certs_disable(name: str, as_json: bool) -> None:
    """Stop NAME from logging in again (sessions already open stay)."""

    async def action(client: PairingClient) -> None:
        if client.service is not None:
            raise PairingError(
                "a stock server's component does not disable certificates; revoke it instead "
                f"(`pairing devices revoke {name}`)"
            )
        await disable_certificate(client, name)

    current_connection().run(action)
    say({"name": name, "state": "disabled"}, as_json, f"disabled {name!r}")


@certs.command("revoke", hidden=True)
@click.argument("name")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def certs_revoke(name: str, as_json: bool) -> None:
    """The same as `pairing devices revoke NAME` (kept for scripts)."""
    revoke_and_report(name, as_json)
