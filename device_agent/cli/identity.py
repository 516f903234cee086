"""``device-agent init``, ``show``, ``status``, ``reset`` and ``export``: the device's own
identity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from device_agent import enrollment, renewal, runtime
from device_agent.cli.options import (
    PIN_HELP,
    SERVER_HELP,
    json_option,
    server_settings,
    state_option,
)
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.cli_output import BadInput, emit_record, say
from pairing.errors import InvalidJID
from pairing.protocol.identity import format_fingerprint
from pairing.protocol.jid import JID


@click.command()
@click.option("--jid", required=True, help="The full JID to log in as, e.g. alice@example.org/bot.")
@click.option("--server", "server_text", help=SERVER_HELP)
@click.option("--pin", help=PIN_HELP)
@click.option("--valid-days", default=365, show_default=True, help="Certificate lifetime.")
@click.option("--force", is_flag=True, help="Replace an existing identity (destroys its key).")
@json_option
@click.pass_obj
def init(
    store: KeyStore,
    jid: str,
    server_text: str | None,
    pin: str | None,
    valid_days: int,
    force: bool,
    as_json: bool,
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
    settings = server_settings(parsed, server_text, pin)  # checked before anything is made
    identity = store.create(parsed, valid_for=dt.timedelta(days=valid_days), force=force)
    if settings is not None:
        settings.save(store.state_dir)
    elif force:
        # A server recorded for another JID would log the new identity in as that JID.
        recorded = enrollment.SERVER.read_if_present(store.state_dir)
        if recorded is not None and recorded.jid != str(parsed):
            enrollment.SERVER.remove(store.state_dir)
    register = f"pairing certs add {parsed.resource or 'NAME'} {store.cert_path}"
    if as_json:
        server = f"{settings.host}:{settings.port}" if settings is not None else None
        emit_record(
            {
                "jid": str(identity.jid),
                "certificate": str(store.cert_path),
                "sha256": identity.fingerprint,
                "not_after": identity.not_after.isoformat(),
                "server": server,
                "register": register,
            },
            as_json=True,
        )
        return
    click.echo(f"created the identity for {identity.jid}")
    click.echo(f"certificate: {store.cert_path}")
    click.echo(f"SHA-256:     {format_fingerprint(identity.fingerprint)}")
    if settings is not None:
        click.echo(f"server:      {settings.host}:{settings.port} (pinned)")
    click.echo(f"register it with: {register}")
    if settings is not None:
        click.echo("then: device-agent" + state_option(store) + " run")


@click.command()
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


@click.command()
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


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def reset(store: KeyStore, yes: bool, as_json: bool) -> None:
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
    say(
        {"state_dir": str(store.state_dir), "wiped": True},
        as_json,
        "the device identity is wiped; enroll it again (enroll, pair, or init)",
    )


EXPORT_PASSWORD_ENV = "DEVICE_AGENT_EXPORT_PASSWORD"


@click.command("export")
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
@json_option
@click.pass_obj
def export_command(
    store: KeyStore, pkcs12_path: Path, password_file: Path | None, force: bool, as_json: bool
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
    say(
        {"jid": str(identity.jid), "file": str(pkcs12_path), "sha256": identity.fingerprint},
        as_json,
        f"exported {identity.jid} to {pkcs12_path} (mode 0600, password-protected)",
    )
