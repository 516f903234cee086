"""``device-agent``: the device's own identity and login, without ever knowing a password."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from pathlib import Path

import click

from device_agent import enrollment, renewal, rotation, runtime
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.cli_output import BadInput, configure_logging, emit_record, friendly_group
from pairing.errors import InvalidJID, PairingError
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import format_fingerprint
from pairing.protocol.jid import JID, prepare_resourcepart
from pairing.protocol.uri import HTTPSEnrollmentURI, parse_enrollment_uri
from pairing.redaction import protect
from pairing.xmpp.connection import TrustAnchor, login, logout, make_client

DEFAULT_STATE = (
    Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "device-agent"
)


@click.group(cls=friendly_group(DeviceAgentError))
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DEVICE_AGENT_STATE",
    default=DEFAULT_STATE,
    show_default=True,
    help="Where the device keeps its key (mode 0600) and certificate.",
)
@click.option("-v", "--verbose", count=True, help="Show protocol logs (-vv for debug).")
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(ctx: click.Context, state_dir: Path, verbose: int) -> None:
    """The device side: make a key, show the certificate to register, log in with it.

    The private key is created here and never leaves this machine. Register the certificate
    for the account (`pairing certs add`, or `server-ext certs add` as an admin), then the
    device logs in with SASL EXTERNAL.
    """
    configure_logging(verbose)
    ctx.obj = KeyStore(state_dir)


def _server_settings(
    jid: JID, server_text: str | None, pin: str | None
) -> enrollment.ServerSettings | None:
    """Where a hand-registered device logs in (``--server`` and ``--pin``), parsed once."""
    if server_text is None and pin is None:
        return None
    if server_text is None or pin is None:
        raise click.UsageError(
            "give both --server HOST[:PORT] and --pin SHA256 (from `server-ext fingerprint`)"
        )
    try:
        address = ServerAddress.parse(server_text)
    except PairingError as exc:
        raise BadInput(f"--server: {exc}") from None
    try:
        trust = TrustAnchor(fingerprint=pin)
    except PairingError as exc:
        raise BadInput(f"--pin: {exc}") from None
    assert trust.fingerprint is not None
    return enrollment.ServerSettings(address.host, address.port, trust.fingerprint, str(jid))


def _state_option(store: KeyStore) -> str:
    """`` --state-dir DIR`` when it is not the default, for commands we suggest."""
    return "" if store.state_dir == DEFAULT_STATE else f" --state-dir {store.state_dir}"


_SERVER_HELP = "HOST[:PORT] the device logs in to (the manual way, XEP-0257)."
_PIN_HELP = "The server certificate's SHA-256 fingerprint (`server-ext fingerprint`)."


@main.command()
@click.option("--jid", required=True, help="The full JID to log in as, e.g. alice@example.org/bot.")
@click.option("--server", "server_text", help=_SERVER_HELP)
@click.option("--pin", help=_PIN_HELP)
@click.option("--valid-days", default=365, show_default=True, help="Certificate lifetime.")
@click.option("--force", is_flag=True, help="Replace an existing identity (destroys its key).")
@click.pass_obj
def init(
    store: KeyStore,
    jid: str,
    server_text: str | None,
    pin: str | None,
    valid_days: int,
    force: bool,
) -> None:
    """Create the device key and its self-signed certificate.

    With --server and --pin it also records where it logs in, so that once the owner has
    registered the certificate (`pairing certs add NAME FILE`), `device-agent run` and
    `device_agent.connect()` work as for an enrolled device.
    """
    try:
        parsed = JID.parse(jid)
    except InvalidJID as exc:
        raise BadInput(f"--jid: {exc}") from None
    if valid_days < 1:
        raise click.BadParameter("must be at least 1", param_hint="--valid-days")
    settings = _server_settings(parsed, server_text, pin)  # checked before anything is made
    identity = store.create(parsed, valid_for=dt.timedelta(days=valid_days), force=force)
    if settings is not None:
        settings.save(store.state_dir)
    elif force:
        # A server recorded for another JID would log the new identity in as that JID.
        recorded = enrollment.SERVER.read_if_present(store.state_dir)
        if recorded is not None and recorded.jid != str(parsed):
            enrollment.SERVER.remove(store.state_dir)
    click.echo(f"created the identity for {identity.jid}")
    click.echo(f"certificate: {store.cert_path}")
    click.echo(f"SHA-256:     {format_fingerprint(identity.fingerprint)}")
    if settings is not None:
        click.echo(f"server:      {settings.host}:{settings.port} (pinned)")
    click.echo(f"register it with: pairing certs add {parsed.resource or 'NAME'} {store.cert_path}")
    if settings is not None:
        click.echo("then: device-agent" + _state_option(store) + " run")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(store: KeyStore, as_json: bool) -> None:
    """Show the device identity (never the key)."""
    identity = store.load()
    emit_record(
        {
            "jid": str(identity.jid),
            "fingerprint": identity.fingerprint
            if as_json
            else format_fingerprint(identity.fingerprint),
            "not_after": identity.not_after.isoformat(timespec="seconds"),
            "certificate": str(store.cert_path),
            "key": str(store.key_path),
        },
        as_json=as_json,
    )


@main.command()
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
) -> None:
    """Enroll this device from a pairing QR code, or by showing one: no password, ever."""
    if sum((uri is not None, qr_image is not None, by_request)) != 1:
        raise click.UsageError("give exactly one of --uri, --qr-image or --request")
    valid_for = dt.timedelta(days=valid_days)
    if by_request:
        _enroll_by_request(store, jid, server_text, pin, name, valid_for)
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
    click.echo(f"enrolled: this device logs in as {bound} with its own certificate")


def _enroll_by_request(
    store: KeyStore,
    jid_text: str | None,
    server_text: str | None,
    pin: str | None,
    name: str | None,
    valid_for: dt.timedelta,
) -> None:
    """``enroll --request``: parse the options once, then show the QR code and wait."""
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
        click.echo(qr.terminal(issued.approve_url))
        click.echo(f"approve at: {issued.approve_url}")
        click.echo(f"user code:  {issued.user_code}")
        click.echo(
            f"waiting for the owner of {jid.bare} (until "
            f"{issued.expires.isoformat(timespec='seconds')}) ...",
            nl=True,
        )

    bound = asyncio.run(
        enroll_by_request(store, jid, endpoint, name=device_name, show=show, valid_for=valid_for)
    )
    click.echo(f"enrolled: this device logs in as {bound} with its own certificate")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(store: KeyStore, as_json: bool) -> None:
    """Show whether this device has an identity, is enrolled, and where it logs in."""
    record: dict[str, object] = {"state_dir": str(store.state_dir)}
    if not store.exists():
        record["state"] = "new"
    else:
        identity = store.load()
        record.update(
            jid=str(identity.jid),
            fingerprint=identity.fingerprint,
            certificate_expires=identity.not_after.isoformat(timespec="seconds"),
        )
        try:
            settings = enrollment.ServerSettings.load(store.state_dir)
        except DeviceAgentError:
            unfinished = enrollment.pending(store.state_dir)
            if unfinished is None:
                record["state"] = "identity only (not enrolled)"
            else:
                record["state"] = "enrollment unfinished: run the same `device-agent enroll` again"
                record["server"] = f"{unfinished.host}:{unfinished.port}"
        else:
            record["state"] = "enrolled"
            record["server"] = f"{settings.host}:{settings.port}"
            last = runtime.effective_status(store.state_dir)
            if last is not None:
                # What is true now: "online" only while the agent that said so still runs.
                record["state"] = last.state.value
                if last.reason:
                    record["reason"] = last.reason
                record["since"] = last.at.isoformat()
                if last.pid is not None and runtime.agent_running(store.state_dir):
                    record["pid"] = last.pid
    emit_record(record, as_json=as_json)


@main.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset(store: KeyStore, yes: bool) -> None:
    """Wipe the key, certificate and enrollment, so the device can be enrolled afresh."""
    if runtime.agent_running(store.state_dir):
        raise click.ClickException(
            f"a device-agent is running with {store.state_dir}; stop it before wiping"
        )
    if not yes:
        click.confirm(f"Wipe the device identity in {store.state_dir}?", abort=True)
    for state_file in (
        enrollment.SERVER,
        enrollment.PENDING,
        runtime.STATUS,
        renewal.PENDING_RENEWAL,
    ):
        state_file.remove(store.state_dir)
    store.remove()  # last: it also sweeps every temporary file, which may hold a key
    click.echo("the device identity is wiped; enroll it again (enroll, pair, or init)")


@main.command("run")
@click.option(
    "--rotate-before-days",
    type=float,
    help="Renew the certificate this many days before it expires (default: a third of "
    "its lifetime, at most 30 days).",
)
@click.option("--server", "server_text", help=_SERVER_HELP + " Recorded for later runs.")
@click.option("--pin", help=_PIN_HELP)
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
        settings = _server_settings(store.load().jid, server_text, pin)
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


@main.command("login")
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


@main.command()
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


@main.command()
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
@click.pass_obj
def pair(
    store: KeyStore,
    timeout: float,
    interfaces: tuple[str, ...],
    max_failures: int,
    advertise: bool,
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
    click.echo(f"paired: this device logs in as {bound}")


@main.command()
@click.option(
    "--exec",
    "hook",
    metavar="CMD",
    help="Run CMD after the renewal (no shell; it gets DEVICE_AGENT_CERT, DEVICE_AGENT_KEY).",
)
@click.pass_obj
def renew(store: KeyStore, hook: str | None) -> None:
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
    click.echo(
        f"renewed: {identity.jid} now logs in with {format_fingerprint(identity.fingerprint)}, "
        f"valid until {identity.not_after:%Y-%m-%d %H:%M} UTC"
    )
    if hook:
        renewal.run_hook(hook, identity, store.state_dir)


EXPORT_PASSWORD_ENV = "DEVICE_AGENT_EXPORT_PASSWORD"


@main.command("export")
@click.option(
    "--pkcs12",
    "pkcs12_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the key and certificate to this PKCS#12 (.p12) file, mode 0600.",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Read the file's password from here (else ${EXPORT_PASSWORD_ENV}, else asked twice).",
)
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.pass_obj
def export_command(
    store: KeyStore, pkcs12_path: Path, password_file: Path | None, force: bool
) -> None:
    """Export the identity for a desktop client (docs/desktop-clients.md): the key leaves.

    Whoever has the file and its password can log in as this device until it is revoked.
    """
    from device_agent.export import export_pkcs12
    from pairing.cli_output import read_secret

    store.load()  # say "no identity" before asking for a password
    click.echo(
        "Warning: this copies the device's private key out of the agent's store. Whoever "
        "has the file and its password can log in as this device; revoke the device if "
        "the file is lost.",
        err=True,
    )
    password = read_secret(
        file=password_file,
        env=EXPORT_PASSWORD_ENV,
        prompt=f"Password for {pkcs12_path}",
        confirm=True,
    )
    identity = export_pkcs12(store, pkcs12_path, password.encode(), force=force)
    click.echo(f"exported {identity.jid} to {pkcs12_path} (mode 0600, password-protected)")
