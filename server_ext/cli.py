"""``server-ext``: run the embedded XMPP server and administer its registry."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import click

from pairing.cli_output import (
    BadInput,
    configure_logging,
    emit,
    emit_record,
    friendly_group,
    read_secret,
)
from pairing.errors import InvalidJID
from pairing.protocol.identity import PeerCertificate, format_fingerprint
from pairing.protocol.jid import JID, prepare_domainpart, prepare_resourcepart
from server_ext.admin import admin_channel, inventory
from server_ext.auth.credentials import credentials_for
from server_ext.config import ServerConfig
from server_ext.errors import ServerExtError, UnknownAccount, UnknownCertificate
from server_ext.model import (
    CertificateRecord,
    CertState,
    DeviceRecord,
    DeviceState,
    TokenRecord,
    TokenState,
)
from server_ext.policy.certificates import CertificateRefused, require_registrable
from server_ext.policy.tokens import TokenRules
from server_ext.storage.registry import Registry

PASSWORD_ENV = "SERVER_EXT_PASSWORD"


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    domain: str

    def registry(self) -> Registry:
        return Registry.open(self.data_dir / "registry.sqlite3")

    def jid(self, text: str) -> JID:
        """``alice`` means ``alice@<domain>``; a JID of another domain is refused."""
        # Prepared per RFC 7622 exactly as SASL prepares a login name, so the account made
        # here is the one a password login reaches.
        try:
            jid = JID.parse_account(text, self.domain)
        except InvalidJID as exc:
            raise BadInput(str(exc)) from None
        if jid.domain != self.domain:
            raise click.BadParameter(f"{jid} is not in this server's domain {self.domain}")
        return jid


pass_settings = click.make_pass_decorator(Settings)


@click.group(cls=friendly_group(ServerExtError))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SERVER_EXT_DATA",
    default=Path("server-data"),
    show_default=True,
    help="Where the registry (SQLite) and the generated TLS certificate live.",
)
@click.option("--domain", default="localhost", show_default=True, help="The XMPP domain served.")
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(ctx: click.Context, data_dir: Path, domain: str) -> None:
    """Passwordless XMPP login for devices: the server side.

    Devices log in with their own certificate (SASL EXTERNAL) once it is registered for an
    account (XEP-0257). Start with `server-ext serve`, create an account with
    `server-ext user add alice`, and give clients the fingerprint from
    `server-ext fingerprint` to pin.
    """
    try:
        ctx.obj = Settings(data_dir, prepare_domainpart(domain))
    except InvalidJID as exc:
        raise BadInput(f"--domain: {exc}") from None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5222, show_default=True, help="STARTTLS port (RFC 6120).")
@click.option(
    "--direct-tls-port",
    default=5223,
    show_default=True,
    help="Direct TLS port (XEP-0368); 0 turns it off.",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Your own TLS certificate (PEM).",
)
@click.option(
    "--key", type=click.Path(dir_okay=False, path_type=Path), help="Its private key (PEM)."
)
@click.option(
    "--max-stanza-bytes",
    default=256 * 1024,
    show_default=True,
    help="Larger stanzas end the stream with <policy-violation/>.",
)
@click.option(
    "--auth-timeout",
    default=20.0,
    show_default=True,
    help="Seconds a connection may stay unauthenticated.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@pass_settings
def serve(
    settings: Settings,
    host: str,
    port: int,
    direct_tls_port: int,
    cert: Path | None,
    key: Path | None,
    max_stanza_bytes: int,
    auth_timeout: float,
    verbose: int,
) -> None:
    """Run the XMPP server until Ctrl-C."""
    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key go together")
    configure_logging(verbose)
    from server_ext.net.server import run

    config = ServerConfig(
        domain=settings.domain,
        data_dir=settings.data_dir,
        host=host,
        port=port,
        direct_tls_port=direct_tls_port or None,
        cert_file=cert,
        key_file=key,
        max_stanza_bytes=max_stanza_bytes,
        auth_timeout=auth_timeout,
    )
    try:
        run(config)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally wins
        pass


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def fingerprint(settings: Settings, as_json: bool) -> None:
    """Print the SHA-256 fingerprint of the server certificate (clients pin it)."""
    from server_ext.net.server_certificate import ensure_server_certificate

    cert = ensure_server_certificate(settings.data_dir, settings.domain)
    record = {
        "sha256": cert.fingerprint,
        "sha256_colons": format_fingerprint(cert.fingerprint),
        "certificate": str(cert.cert_path),
        "not_after": cert.not_after.isoformat(),
    }
    if as_json:
        emit_record(record, as_json=True)
    else:
        click.echo(record["sha256_colons"])


# --- users ---------------------------------------------------------------------------------


@main.group()
def user() -> None:
    """Create, list, change and delete accounts."""


password_file_option = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Read the password from this file (else ${PASSWORD_ENV}, else a prompt).",
)


@user.command("add")
@click.argument("jid")
@click.option("--admin", is_flag=True, help="Make the account an administrator.")
@password_file_option
@pass_settings
def user_add(settings: Settings, jid: str, admin: bool, password_file: Path | None) -> None:
    """Create the account JID (a bare name like `alice` gets this server's domain)."""
    account = settings.jid(jid)
    password = read_secret(
        file=password_file, env=PASSWORD_ENV, prompt=f"Password for {account}", confirm=True
    )
    with settings.registry() as registry:
        registry.accounts.add(account, credentials_for(password), admin=admin)
    click.echo(f"created {account}{' (admin)' if admin else ''}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def user_list(settings: Settings, as_json: bool) -> None:
    """List the accounts."""
    with settings.registry() as registry:
        rows = [
            {
                "jid": str(a.jid),
                "admin": a.is_admin,
                "created_at": a.created_at.isoformat(timespec="seconds"),
                "certificates": len(registry.devices.certificates(a.jid, CertState.ACTIVE)),
            }
            for a in registry.accounts.all()
        ]
    emit(
        rows,
        [
            ("jid", "JID"),
            ("admin", "ADMIN"),
            ("certificates", "ACTIVE CERTS"),
            ("created_at", "CREATED"),
        ],
        as_json=as_json,
        empty="no accounts yet: server-ext user add NAME",
    )


@user.command("passwd")
@click.argument("jid")
@password_file_option
@pass_settings
def user_passwd(settings: Settings, jid: str, password_file: Path | None) -> None:
    """Set a new password for JID."""
    account = settings.jid(jid)
    with settings.registry() as registry:
        if registry.accounts.get(account) is None:
            raise UnknownAccount(f"no account {account}")
        password = read_secret(
            file=password_file, env=PASSWORD_ENV, prompt=f"New password for {account}", confirm=True
        )
        registry.accounts.set_credentials(account, credentials_for(password), actor="cli")
    click.echo(f"password changed for {account}")


@user.command("delete")
@click.argument("jid")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_settings
def user_delete(settings: Settings, jid: str, yes: bool) -> None:
    """Delete JID; its certificates are revoked and the audit log is kept."""
    account = settings.jid(jid)
    if not yes:
        click.confirm(f"Delete {account} and revoke its certificates?", abort=True)
    with settings.registry() as registry:
        revoked = registry.accounts.delete(account, actor="cli")
    try:
        for device_id in sorted({record.device.id for record in revoked}):
            admin_channel.request(settings.data_dir, {"op": "device-changed", "device": device_id})
        admin_channel.request(
            settings.data_dir,
            {"op": "kick", "jid": str(account), "reason": "the account was deleted"},
        )
    except admin_channel.AdminChannelError as exc:
        raise click.ClickException(
            f"deleted {account} and revoked {len(revoked)} certificate(s), but the running "
            f"server was not told ({exc}); its live sessions stay open until it restarts"
        ) from None
    click.echo(f"deleted {account}; {len(revoked)} certificate(s) revoked")


@user.command("admin")
@click.argument("jid")
@click.option("--on/--off", "admin", required=True, help="Grant or withdraw admin rights.")
@pass_settings
def user_admin(settings: Settings, jid: str, admin: bool) -> None:
    """Grant or withdraw administrator rights."""
    account = settings.jid(jid)
    with settings.registry() as registry:
        registry.accounts.set_admin(account, admin, actor="cli")
    click.echo(f"{account} is {'now' if admin else 'no longer'} an admin")


# --- certificates --------------------------------------------------------------------------


def _cert_row(record: CertificateRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "account": str(record.account),
        "name": record.name,
        "state": record.state.value,
        "fingerprint": record.fingerprint,
        "subject_jids": list(record.subject_jids),
        "not_before": record.not_before.isoformat(timespec="seconds"),
        "not_after": record.not_after.isoformat(timespec="seconds"),
        "no_cert_management": record.no_cert_management,
        "added_by": record.added_by,
        "added_via": record.added_via,
        "added_at": record.added_at.isoformat(timespec="seconds"),
        "last_login_at": (
            record.last_login_at.isoformat(timespec="seconds") if record.last_login_at else None
        ),
        "last_login_address": record.last_login_address,
    }


@main.group()
def certs() -> None:
    """Inspect and register device certificates (XEP-0257)."""


@certs.command("list")
@click.option("--user", "user_jid", help="Only this account's certificates.")
@click.option(
    "--state",
    type=click.Choice([s.value for s in CertState]),
    help="Only certificates in this state.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def certs_list(settings: Settings, user_jid: str | None, state: str | None, as_json: bool) -> None:
    """List registered certificates."""
    account = settings.jid(user_jid) if user_jid else None
    with settings.registry() as registry:
        records = registry.devices.certificates(account, CertState(state) if state else None)
    rows = [_cert_row(r) for r in records]
    for row in rows:
        row["fingerprint_short"] = row["fingerprint"][:16]
    emit(
        rows,
        [
            ("account", "ACCOUNT"),
            ("name", "NAME"),
            ("state", "STATE"),
            ("subject_jids", "JIDS"),
            ("not_after", "EXPIRES"),
            ("last_login_at", "LAST LOGIN"),
            ("fingerprint_short", "SHA-256"),
        ],
        as_json=as_json,
        empty="no certificates registered",
    )


@certs.command("show")
@click.argument("what")
@click.option("--user", "user_jid", help="The account, when WHAT is a certificate name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def certs_show(settings: Settings, what: str, user_jid: str | None, as_json: bool) -> None:
    """Show one certificate, by name (with --user) or by SHA-256 fingerprint (8+ hex digits)."""
    with settings.registry() as registry:
        record = _find_certificate(settings, registry, what, user_jid)
    row = _cert_row(record)
    row["fingerprint"] = (
        format_fingerprint(record.fingerprint) if not as_json else row["fingerprint"]
    )
    emit_record(row, as_json=as_json)


def _find_certificate(
    settings: Settings, registry: Registry, what: str, user_jid: str | None
) -> CertificateRecord:
    if user_jid:
        record = registry.devices.current_named(settings.jid(user_jid), what)
        if record is None:
            raise UnknownCertificate(f"{settings.jid(user_jid)} has no certificate named {what!r}")
        return record
    hex_digits = what.replace(":", "").lower()
    if len(hex_digits) < 8 or any(c not in "0123456789abcdef" for c in hex_digits):
        raise click.UsageError("give a fingerprint of at least 8 hex digits, or a name with --user")
    matches = registry.devices.find(hex_digits)
    if not matches:
        raise UnknownCertificate(f"no certificate has a fingerprint starting with {hex_digits}")
    if len(matches) > 1:
        raise click.UsageError(f"{len(matches)} certificates match {hex_digits}; give more digits")
    return matches[0]


@certs.command("add")
@click.argument("name")
@click.argument("certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--user", "user_jid", required=True, help="The account the device logs in as.")
@click.option(
    "--no-cert-management",
    is_flag=True,
    help="Sessions using this certificate may not manage certificates (XEP-0257).",
)
@pass_settings
def certs_add(
    settings: Settings, name: str, certfile: Path, user_jid: str, no_cert_management: bool
) -> None:
    """Register the device certificate CERTFILE (PEM or DER) as NAME for an account."""
    account = settings.jid(user_jid)
    cert = PeerCertificate.parse(certfile.read_bytes())
    with settings.registry() as registry:
        try:
            require_registrable(cert, account, registry.clock())
        except CertificateRefused as exc:
            raise click.ClickException(f"refused: {exc}") from None
        if registry.accounts.get(account) is None:
            raise UnknownAccount(f"no account {account}: create it with `server-ext user add`")
        record = registry.devices.add(
            account,
            name,
            cert,
            no_cert_management=no_cert_management,
            added_by="cli",
            added_via="cli",
        )
    click.echo(f"registered {name!r} for {account}: {format_fingerprint(record.fingerprint)}")


# --- audit ---------------------------------------------------------------------------------


@main.command()
@click.option("--device", help="Only events about this device (id, fingerprint or full JID).")
@click.option("--subject", help="Only events about this JID or certificate fingerprint.")
@click.option("--since", type=click.DateTime(), help="Only events at or after this time (UTC).")
@click.option("--limit", type=int, help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def audit(
    settings: Settings,
    device: str | None,
    subject: str | None,
    since: dt.datetime | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Show the append-only audit log."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    with settings.registry() as registry:
        subjects: list[str] | None = None
        if device:
            # Every certificate the device ever had: its history survives rotation and
            # revocation.
            found = inventory.resolve(registry, device, settings.domain)
            subjects = [c.fingerprint for c in registry.devices.chain(found.id)]
        elif subject:
            subjects = [subject]
        events = registry.audit.events(subjects=subjects, since=since, limit=limit)
    rows = [
        {
            "id": e.id,
            "at": e.at.isoformat(timespec="seconds"),
            "event": e.event,
            "actor": e.actor,
            "subject": e.subject,
            "address": e.address,
            "detail": e.detail if as_json else " ".join(f"{k}={v}" for k, v in e.detail.items()),
        }
        for e in events
    ]
    emit(
        rows,
        [
            ("at", "TIME"),
            ("event", "EVENT"),
            ("actor", "ACTOR"),
            ("subject", "SUBJECT"),
            ("address", "ADDRESS"),
            ("detail", "DETAIL"),
        ],
        as_json=as_json,
        empty="no events",
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


@main.group()
def token() -> None:
    """One-time tokens that let a new device enroll its certificate (QR pairing)."""


@token.command("create")
@click.option("--jid", "user_jid", required=True, help="The account the device will belong to.")
@click.option("--resource", required=True, help="The device's resource, e.g. weatherbot.")
@click.option("--name", help="The device's name in listings (default: the resource).")
@click.option("--ttl", default="10m", show_default=True, help="Lifetime: 90s, 10m, 1h (max 1h).")
@click.option(
    "--connect",
    "connect_to",
    default="127.0.0.1:5222",
    show_default=True,
    help="HOST:PORT the device should connect to (goes into the QR code).",
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
    ttl: str,
    connect_to: str,
    png: Path | None,
    svg: Path | None,
    as_json: bool,
) -> None:
    """Issue a token for JID/RESOURCE and show it as a QR code and a URI."""
    from pairing import qr
    from pairing.xmpp.connection import ServerAddress
    from server_ext.admin.token_issuer import issue_token, parse_duration
    from server_ext.net.server_certificate import ensure_server_certificate

    account = settings.jid(user_jid)
    try:
        resource = prepare_resourcepart(resource.strip())  # RFC 7622 §3.4, as the token binds it
    except InvalidJID as exc:
        raise BadInput(f"--resource: {exc}") from None
    address = ServerAddress.parse(connect_to)
    certificate = ensure_server_certificate(settings.data_dir, settings.domain)
    with settings.registry() as registry:
        issued = issue_token(
            registry,
            TokenRules(),
            account=account,
            resource=resource,
            name=name,
            ttl=parse_duration(ttl),
            created_by="cli",
        )
    uri = str(issued.uri(host=address.host, port=address.port, fingerprint=certificate.fingerprint))
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
@click.option("--jid", "user_jid", help="Only this account's tokens.")
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
@pass_settings
def token_cancel(settings: Settings, token_id: int) -> None:
    """Cancel the unused token TOKEN_ID."""
    with settings.registry() as registry:
        record = registry.tokens.cancel(token_id, actor="cli")
    click.echo(f"cancelled token {record.id} for {record.jid}")


# --- devices -------------------------------------------------------------------------------


@main.group()
def devices() -> None:
    """The device inventory: list, inspect, revoke, disable and enable devices."""


_USER_FOR_NAMES = click.option(
    "--user", "user_jid", help="The account, when TARGET is a device name."
)


@devices.command("list")
@click.option("--user", "user_jid", help="Only this account's devices.")
@click.option(
    "--state", type=click.Choice([s.value for s in DeviceState]), help="Only devices in this state."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def devices_list(
    settings: Settings, user_jid: str | None, state: str | None, as_json: bool
) -> None:
    """Every device, with whether it is online now (asked of the running server)."""
    account = settings.jid(user_jid) if user_jid else None
    online = inventory.live_sessions(settings.data_dir)
    with settings.registry() as registry:
        rows = [
            inventory.device_row(d, registry.devices.chain(d.id), online)
            for d in registry.devices.all(account, DeviceState(state) if state else None)
        ]
    if online is None:
        for row in rows:
            row["online"] = None  # unknown: the server is not running
    emit(
        rows,
        [
            ("id", "ID"),
            ("account", "ACCOUNT"),
            ("name", "NAME"),
            ("state", "STATE"),
            ("online", "ONLINE"),
            ("jids", "JID"),
            ("last_login_at", "LAST LOGIN"),
            ("expires", "EXPIRES"),
        ],
        as_json=as_json,
        empty="no devices",
    )


@devices.command("show")
@click.argument("target")
@_USER_FOR_NAMES
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def devices_show(settings: Settings, target: str, user_jid: str | None, as_json: bool) -> None:
    """Show one device by id, full JID, fingerprint, or name (with --user)."""
    online = inventory.live_sessions(settings.data_dir)
    with settings.registry() as registry:
        device = _resolve(settings, registry, target, user_jid)
        row = inventory.device_row(device, registry.devices.chain(device.id), online)
    if online is None:
        row["online"] = None
    emit_record(row, as_json=as_json)


def _resolve(
    settings: Settings, registry: Registry, target: str, user_jid: str | None
) -> DeviceRecord:
    account = settings.jid(user_jid) if user_jid else None
    return inventory.resolve(registry, target, settings.domain, account=account)


def _change(
    settings: Settings, target: str, user_jid: str | None, state: DeviceState, reason: str
) -> None:
    with settings.registry() as registry:
        device = _resolve(settings, registry, target, user_jid)
        updated, changed, closed = inventory.change_state(
            registry, settings.data_dir, device, state, actor="cli", reason=reason
        )
    verb = {"revoked": "revoked", "disabled": "disabled", "active": "enabled"}[state.value]
    if changed:
        click.echo(f"{verb} device {updated.id} ({updated.name}, {updated.account})")
    else:
        note = f": {updated.revoked_reason}" if updated.revoked_reason else ""
        click.echo(
            f"device {updated.id} ({updated.name}, {updated.account}) was already {verb}{note}"
        )
    if closed is None:
        click.echo("the server is not running; the change applies when it starts")
    elif state is DeviceState.REVOKED:
        click.echo(f"closed {closed} live session(s)")


@devices.command("revoke")
@click.argument("target")
@_USER_FOR_NAMES
@click.option("--reason", default="", help="Recorded in the audit log and shown to the device.")
@pass_settings
def devices_revoke(settings: Settings, target: str, user_jid: str | None, reason: str) -> None:
    """Revoke a device now: every certificate it ever had is revoked, its live sessions close,
    and it can never log in again."""
    _change(settings, target, user_jid, DeviceState.REVOKED, reason)


@devices.command("disable")
@click.argument("target")
@_USER_FOR_NAMES
@click.option("--reason", default="", help="Recorded in the audit log.")
@pass_settings
def devices_disable(settings: Settings, target: str, user_jid: str | None, reason: str) -> None:
    """Stop a device from logging in again (live sessions stay)."""
    _change(settings, target, user_jid, DeviceState.DISABLED, reason)


@devices.command("enable")
@click.argument("target")
@_USER_FOR_NAMES
@pass_settings
def devices_enable(settings: Settings, target: str, user_jid: str | None) -> None:
    """Let a disabled device log in again (a revoked one cannot be enabled)."""
    _change(settings, target, user_jid, DeviceState.ACTIVE, "")


@user.command("kick")
@click.argument("jid")
@click.option("--reason", default="", help="Shown to the clients.")
@pass_settings
def user_kick(settings: Settings, jid: str, reason: str) -> None:
    """End every live session of an account now."""
    account = settings.jid(jid)
    reply = admin_channel.request(
        settings.data_dir, {"op": "kick", "jid": str(account), "reason": reason}
    )
    if reply is None:
        raise click.ClickException("the server is not running")
    if not reply.get("ok"):
        raise click.ClickException(str(reply.get("error")))
    click.echo(f"closed {reply.get('closed', 0)} session(s) of {account}")
