"""``server-ext certs …``: registered certificates (XEP-0257)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pairing.cli_output import (
    emit,
    emit_record,
)
from pairing.protocol.identity import PeerCertificate, format_fingerprint
from server_ext.cli.settings import Settings, jid_option, json_option, pass_settings, report
from server_ext.errors import UnknownAccount, UnknownCertificate
from server_ext.model import (
    CertificateRecord,
    CertState,
)
from server_ext.policy.certificates import CertificateRefused, require_registrable
from server_ext.storage.registry import Registry

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


@click.group()
def certs() -> None:
    """Inspect and register device certificates (XEP-0257)."""


@certs.command("list")
@jid_option("Only this account's certificates.")
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
@jid_option("The account, when WHAT is a certificate name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def certs_show(settings: Settings, what: str, user_jid: str | None, as_json: bool) -> None:
    """Show one certificate, by name (with --jid) or by SHA-256 fingerprint (8+ hex digits)."""
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
        raise click.UsageError("give a fingerprint of at least 8 hex digits, or a name with --jid")
    matches = registry.devices.find(hex_digits)
    if not matches:
        raise UnknownCertificate(f"no certificate has a fingerprint starting with {hex_digits}")
    if len(matches) > 1:
        raise click.UsageError(f"{len(matches)} certificates match {hex_digits}; give more digits")
    return matches[0]


@certs.command("add")
@click.argument("name")
@click.argument("certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@jid_option("The account the device logs in as.", required=True)
@click.option(
    "--no-cert-management",
    is_flag=True,
    help="Sessions using this certificate may not manage certificates (XEP-0257).",
)
@json_option
@pass_settings
def certs_add(
    settings: Settings,
    name: str,
    certfile: Path,
    user_jid: str,
    no_cert_management: bool,
    as_json: bool,
) -> None:
    """Register the device certificate CERTFILE (PEM or DER) as NAME for an account."""
    account = settings.jid(user_jid)
    cert = PeerCertificate.parse(certfile.read_bytes())
    with settings.registry() as registry:
        try:
            require_registrable(cert, account, registry.clock())
        except CertificateRefused as exc:
            raise click.ClickException(f"refused: {exc}") from None
        if not settings.config.stock_kind.embedded:
            registry.accounts.ensure(account, actor="cli")  # its password is the stock server's
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
    from server_ext.admin.inventory import tell_trust_changed

    if not tell_trust_changed(settings.data_dir, "certs add"):
        # serve is down: a stock server trusts the certificate from now, not from its start.
        from server_ext.cli.stock_changes import tell_stock_server

        with settings.registry() as registry:
            tell_stock_server(settings, registry, [], what=f"{name!r} is registered")
    report(
        _cert_row(record),
        f"registered {name!r} for {account}: {format_fingerprint(record.fingerprint)}",
        as_json=as_json,
    )
