"""``server-ext user …``: accounts, passwords, admins, and ending sessions."""

from __future__ import annotations

from pathlib import Path

import click

from pairing.cli_output import (
    emit,
    read_secret,
)
from server_ext.admin import admin_channel
from server_ext.auth.credentials import credentials_for
from server_ext.cli.settings import PASSWORD_ENV, Settings, json_option, pass_settings, report
from server_ext.cli.stock_changes import ready_to_tell, tell_stock_server
from server_ext.errors import ServerNotRunning, UnknownAccount
from server_ext.model import (
    CertState,
)

# --- users ---------------------------------------------------------------------------------


@click.group()
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
@json_option
@pass_settings
def user_add(
    settings: Settings, jid: str, admin: bool, password_file: Path | None, as_json: bool
) -> None:
    """Create the account JID (a bare name like `alice` gets this server's domain)."""
    account = settings.jid(jid)
    password = read_secret(
        file=password_file, env=PASSWORD_ENV, prompt=f"Password for {account}", confirm=True
    )
    with settings.registry() as registry:
        registry.accounts.add(account, credentials_for(password), admin=admin)
    report(
        {"jid": str(account), "admin": admin, "created": True},
        f"created {account}{' (admin)' if admin else ''}",
        as_json=as_json,
    )


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
@json_option
@pass_settings
def user_passwd(settings: Settings, jid: str, password_file: Path | None, as_json: bool) -> None:
    """Set a new password for JID."""
    account = settings.jid(jid)
    with settings.registry() as registry:
        if registry.accounts.get(account) is None:
            raise UnknownAccount(f"no account {account}")
        password = read_secret(
            file=password_file, env=PASSWORD_ENV, prompt=f"New password for {account}", confirm=True
        )
        registry.accounts.set_credentials(account, credentials_for(password), actor="cli")
    report(
        {"jid": str(account), "password_changed": True},
        f"password changed for {account}",
        as_json=as_json,
    )


@user.command("delete")
@click.argument("jid")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_settings
def user_delete(settings: Settings, jid: str, yes: bool, as_json: bool) -> None:
    """Delete JID; its certificates are revoked and the audit log is kept."""
    account = settings.jid(jid)
    if not yes:
        click.confirm(f"Delete {account} and revoke its certificates?", abort=True)
    ready_to_tell(settings)
    with settings.registry() as registry:
        revoked = registry.accounts.delete(account, actor="cli")
        device_ids = sorted({record.device.id for record in revoked})
        try:
            running = True
            for device_id in device_ids:
                reply = admin_channel.request(
                    settings.data_dir, {"op": "device-changed", "device": device_id}
                )
                running = running and reply is not None
            reply = admin_channel.request(
                settings.data_dir,
                {"op": "kick", "jid": str(account), "reason": "the account was deleted"},
            )
            running = running and reply is not None
        except admin_channel.AdminChannelError as exc:
            raise admin_channel.AdminChannelError(
                f"deleted {account} and revoked {len(revoked)} certificate(s), but the running "
                f"server was not told ({exc}); its live sessions stay open until it restarts"
            ) from None
        if not running:
            # serve is down: a stock server hears of the revoked devices from here.
            tell_stock_server(
                settings,
                registry,
                device_ids,
                what=f"deleted {account} and revoked {len(revoked)} certificate(s)",
            )
    report(
        {"jid": str(account), "deleted": True, "certificates_revoked": len(revoked)},
        f"deleted {account}; {len(revoked)} certificate(s) revoked",
        as_json=as_json,
    )


@user.command("admin")
@click.argument("jid")
@click.option("--on/--off", "admin", required=True, help="Grant or withdraw admin rights.")
@json_option
@pass_settings
def user_admin(settings: Settings, jid: str, admin: bool, as_json: bool) -> None:
    """Grant or withdraw administrator rights."""
    account = settings.jid(jid)
    with settings.registry() as registry:
        registry.accounts.set_admin(account, admin, actor="cli")
    report(
        {"jid": str(account), "admin": admin},
        f"{account} is {'now' if admin else 'no longer'} an admin",
        as_json=as_json,
    )


@user.command("kick")
@click.argument("jid")
@click.option("--reason", default="", help="Shown to the clients.")
@json_option
@pass_settings
def user_kick(settings: Settings, jid: str, reason: str, as_json: bool) -> None:
    """End every live session of an account now."""
    account = settings.jid(jid)
    reply = admin_channel.request(
        settings.data_dir, {"op": "kick", "jid": str(account), "reason": reason}
    )
    if reply is None:
        raise ServerNotRunning(
            "the server is not running (nothing listens on "
            f"{admin_channel.socket_path(settings.data_dir)}): there are no sessions to close"
        )
    if not reply.get("ok"):
        raise click.ClickException(str(reply.get("error")))
    closed = int(reply.get("closed", 0))
    report(
        {"jid": str(account), "closed": closed},
        f"closed {closed} session(s) of {account}",
        as_json=as_json,
    )
