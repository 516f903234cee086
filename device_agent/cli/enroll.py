"""``device-agent enroll``: joining an account from a pairing QR code, or by showing one."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import click

from device_agent import enrollment
from device_agent.cli.options import json_option
from device_agent.keystore import KeyStore
from pairing.cli_output import BadInput, say
from pairing.errors import InvalidJID, PairingError
from pairing.protocol.address import ServerAddress
from pairing.protocol.jid import JID
from pairing.protocol.uri import HTTPSEnrollmentURI, parse_enrollment_uri
from pairing.redaction import protect
from pairing.xmpp.connection import TrustAnchor


@click.command()
@click.option(
    "--uri", help="The enrollment URI (XMPP-DP:1/... or XMPP-DP:2/...) from the account owner."
)
@click.option(
    "--qr-image",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Or a photo or screenshot of the QR code.",
)
@click.option(
    "--request",
    "by_request",
    is_flag=True,
    help="Or show a QR code for the owner to scan and approve on server-ext's web page "
    "(needs --jid, --server HOST:PORT of the web page, --pin).",
)
@click.option(
    "--jid", help="With --request: the full JID to log in as, e.g. alice@example.org/bot."
)
@click.option("--server", "server_text", help="With --request: server-ext's HTTPS HOST:PORT.")
@click.option("--pin", help="With --request: its certificate's SHA-256 (`server-ext fingerprint`).")
@click.option("--name", help="With --request: the device name to ask for [the resource].")
@click.option("--valid-days", default=365, show_default=True, help="Certificate lifetime.")
@json_option
@click.pass_obj
def enroll(
    store: KeyStore,
    uri: str | None,
    qr_image: Path | None,
    by_request: bool,
    jid: str | None,
    server_text: str | None,
    pin: str | None,
    name: str | None,
    valid_days: int,
    as_json: bool,
) -> None:
    """Enroll this device from a pairing QR code, or by showing one: no password, ever."""
    if sum((uri is not None, qr_image is not None, by_request)) != 1:
        raise click.UsageError("give exactly one of --uri, --qr-image or --request")
    valid_for = dt.timedelta(days=valid_days)
    if by_request:
        bound = _enroll_by_request(store, jid, server_text, pin, name, valid_for, as_json)
        _enrolled(store, bound, as_json)
        return
    if qr_image is not None:
        from pairing.qr import read_image

        click.echo(f"reading {qr_image} ...", err=True)
        uri = read_image(qr_image)
    assert uri is not None
    parsed = parse_enrollment_uri(uri)
    protect(parsed.token)
    if isinstance(parsed, HTTPSEnrollmentURI):
        # v2: enroll over server-ext's HTTPS API, then log in to the (stock) XMPP server.
        click.echo(
            f"enrolling as {parsed.jid} at https://{parsed.https_host}:{parsed.https_port} "
            f"for {parsed.xmpp_host}:{parsed.xmpp_port} ...",
            err=True,
        )
        bound = asyncio.run(enrollment.enroll_https(store, parsed, valid_for=valid_for))
    else:
        click.echo(f"enrolling as {parsed.jid} at {parsed.host}:{parsed.port} ...", err=True)
        bound = asyncio.run(enrollment.enroll(store, parsed, valid_for=valid_for))
    _enrolled(store, bound, as_json)


def _enrolled(store: KeyStore, bound: JID, as_json: bool) -> None:
    say(
        {"jid": str(bound), "sha256": store.load().fingerprint, "state_dir": str(store.state_dir)},
        as_json,
        f"enrolled: this device logs in as {bound} with its own certificate",
    )


def _enroll_by_request(
    store: KeyStore,
    jid_text: str | None,
    server_text: str | None,
    pin: str | None,
    name: str | None,
    valid_for: dt.timedelta,
    as_json: bool,
) -> JID:
    """``enroll --request``: parse the options once, then show the QR code and wait.

    With --json the code and the waiting go to stderr: stdout is the one JSON record.
    """
    from device_agent.https_client import HTTPSEndpoint
    from device_agent.pair_request import enroll_by_request
    from pairing import qr
    from pairing.protocol.pair_request import PairRequestIssued, check_name

    if jid_text is None or server_text is None or pin is None:
        raise click.UsageError("--request needs --jid, --server HOST:PORT and --pin")
    try:
        jid = JID.parse(jid_text)
    except InvalidJID as exc:
        raise BadInput(f"--jid: {exc}") from None
    if not jid.resource:
        raise BadInput("--jid: give a full JID with a resource, e.g. alice@example.org/bot")
    try:
        address = ServerAddress.parse(server_text)
        trust = TrustAnchor(fingerprint=pin)
        device_name = check_name(name or jid.resource)
    except PairingError as exc:
        raise BadInput(str(exc)) from None
    assert trust.fingerprint is not None
    endpoint = HTTPSEndpoint(address.host, address.port, trust.fingerprint)

    def show(issued: PairRequestIssued) -> None:
        click.echo(qr.terminal(issued.approve_url), err=as_json)
        click.echo(f"approve at: {issued.approve_url}", err=as_json)
        click.echo(f"user code:  {issued.user_code}", err=as_json)
        click.echo(
            f"waiting for the owner of {jid.bare} (until "
            f"{issued.expires.isoformat(timespec='seconds')}) ...",
            err=as_json,
        )

    return asyncio.run(
        enroll_by_request(store, jid, endpoint, name=device_name, show=show, valid_for=valid_for)
    )
