"""``server-ext audit``: the append-only audit log."""

from __future__ import annotations

import datetime as dt

import click

from pairing.cli_output import Since, emit
from server_ext.admin import inventory
from server_ext.cli.settings import Settings, pass_settings

# --- audit ---------------------------------------------------------------------------------


@click.command()
@click.option("--device", help="Only events about this device (id, fingerprint or full JID).")
@click.option("--subject", help="Only events about this JID or certificate fingerprint.")
@click.option(
    "--since",
    type=Since(),
    help="Only events since then: 1h or 7d ago, or a date or time (2025-01-31, "
    "2025-01-31T08:00; UTC unless an offset is given).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Only the newest N events (still oldest first)."
)
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
