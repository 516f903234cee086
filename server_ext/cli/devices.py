"""``server-ext devices …``: the device inventory, revocation, disable and enable."""

from __future__ import annotations

import click

from pairing.cli_output import (
    emit,
    emit_record,
)
from server_ext.admin import inventory
from server_ext.cli.settings import Settings, jid_option, json_option, pass_settings, report
from server_ext.cli.stock_changes import ready_to_tell, tell_stock_server
from server_ext.model import (
    DeviceRecord,
    DeviceState,
)
from server_ext.storage.registry import Registry

# --- devices -------------------------------------------------------------------------------


@click.group()
def devices() -> None:
    """The device inventory: list, inspect, revoke, disable and enable devices."""


_USER_FOR_NAMES = jid_option("The account, when TARGET is a device name.")


@devices.command("list")
@jid_option("Only this account's devices.")
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
    """Show one device by id, full JID, fingerprint, or name (with --jid)."""
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
    settings: Settings,
    target: str,
    user_jid: str | None,
    state: DeviceState,
    reason: str,
    as_json: bool,
) -> None:
    kind = settings.config.stock_kind
    ready_to_tell(settings)
    with settings.registry() as registry:
        device = _resolve(settings, registry, target, user_jid)
        updated, changed, closed = inventory.change_state(
            registry, settings.data_dir, device, state, actor="cli", reason=reason
        )
        running = closed is not None
        if not running and not kind.embedded:
            # serve is down: tell the stock server from here, or a revoked device would
            # keep logging in (ejabberd's trust file) until serve starts again.
            closed = tell_stock_server(
                settings, registry, [updated.id], what=f"device {updated.id} is {updated.state}"
            )
    verb = {"revoked": "revoked", "disabled": "disabled", "active": "enabled"}[state.value]
    if changed:
        lines = [f"{verb} device {updated.id} ({updated.name}, {updated.account})"]
    else:
        note = f": {updated.revoked_reason}" if updated.revoked_reason else ""
        who = f"device {updated.id} ({updated.name}, {updated.account})"
        lines = [f"{who} was already {verb}{note}"]
    if closed is None:
        lines.append("the server is not running; the change applies when it starts")
    else:
        if not running:
            lines.append(f"server-ext serve is not running; told {kind.value} directly")
        if state is DeviceState.REVOKED:
            lines.append(f"closed {closed} live session(s)")
    record = {
        "id": updated.id,
        "account": str(updated.account),
        "name": updated.name,
        "state": updated.state.value,
        "changed": changed,
        "server_running": running,
        "sessions_closed": closed,
    }
    report(record, "\n".join(lines), as_json=as_json)


@devices.command("revoke")
@click.argument("target")
@_USER_FOR_NAMES
@click.option("--reason", default="", help="Recorded in the audit log and shown to the device.")
@json_option
@pass_settings
def devices_revoke(
    settings: Settings, target: str, user_jid: str | None, reason: str, as_json: bool
) -> None:
    """Revoke a device now: every certificate it ever had is revoked, its live sessions close,
    and it can never log in again."""
    _change(settings, target, user_jid, DeviceState.REVOKED, reason, as_json)


@devices.command("disable")
@click.argument("target")
@_USER_FOR_NAMES
@click.option("--reason", default="", help="Recorded in the audit log.")
@json_option
@pass_settings
def devices_disable(
    settings: Settings, target: str, user_jid: str | None, reason: str, as_json: bool
) -> None:
    """Stop a device from logging in again (live sessions stay)."""
    _change(settings, target, user_jid, DeviceState.DISABLED, reason, as_json)


@devices.command("enable")
@click.argument("target")
@_USER_FOR_NAMES
@json_option
@pass_settings
def devices_enable(settings: Settings, target: str, user_jid: str | None, as_json: bool) -> None:
    """Let a disabled device log in again (a revoked one cannot be enabled)."""
    _change(settings, target, user_jid, DeviceState.ACTIVE, "", as_json)
