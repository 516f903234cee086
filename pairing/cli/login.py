"""``pairing login``, ``logout`` and ``profiles``: making, removing and listing profiles."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import click

from pairing.cli.connection import (
    parse_account,
    parse_server,
    parse_service,
    parse_trust,
    profile_name,
    read_password,
    resolve_connection,
)
from pairing.cli.devices import revoke_named
from pairing.cli.options import PASSWORD_ENV, PROFILE_OPTION, Choices, account_options
from pairing.cli_output import BadInput, emit, emit_record, say
from pairing.errors import PairingError
from pairing.profiles import CLIIdentity, Profile, ProfileError, ProfileStore, make_cli_identity
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import format_fingerprint
from pairing.protocol.jid import JID
from pairing.xmpp.component import find_component, register_certificate
from pairing.xmpp.connection import (
    PairingClient,
    TrustAnchor,
    login,
    login_first,
    logout,
    make_client,
    resolve_server,
)
from pairing.xmpp.devices import revoke_device
from pairing.xmpp.saslcert import PLUGINS, add_certificate, revoke_certificate, supports_saslcert


@click.command("login")
@account_options
@click.option("--json", "as_json", is_flag=True, help="Print the new profile as JSON.")
@click.pass_obj
def login_command(choices: Choices, as_json: bool) -> None:
    """Log in once: this CLI gets a certificate of its own, and later commands need no flags.

    Asks for your password once (or reads --password-file / $PAIRING_PASSWORD) and does not
    store it. It makes a key on this machine, registers its certificate for your account
    (XEP-0257) as the device "pairing CLI on HOST", checks that it logs in with it (SASL
    EXTERNAL), and saves the profile (--profile, default "default"). `pairing logout`
    revokes that certificate.
    """
    store = ProfileStore.default()
    name = profile_name(choices)
    jid_text: str | None = choices.get("jid")
    if not jid_text:
        raise BadInput("give your account: pairing login --jid you@example.org")
    account = parse_account(jid_text)
    server = parse_server(choices.get("server"))
    cafile: Path | None = choices.get("cafile")
    trust = parse_trust(choices.get("pin"), cafile) or TrustAnchor(system=True)
    if store.exists(name):
        raise BadInput(store.exists_message(name))
    password = read_password(choices.get("password_file"), for_login=True, jid=account)
    identity = make_cli_identity(account)
    pending = store.begin(name)
    try:
        pending.write(
            jid=account,
            server=server,
            pin=trust.fingerprint,
            cafile_pem=cafile.read_bytes() if cafile else None,
            identity=identity,
        )
        component = asyncio.run(
            _enroll_cli(
                account,
                server,
                trust,
                password,
                identity,
                pending.directory,
                parse_service(choices.get("service")),
            )
        )
        pending.set_component(component)
        profile = pending.install()
    except BaseException:
        pending.discard()
        raise
    record = {**profile.summary(), "password_stored": False}
    if as_json:
        emit_record(record, as_json=True)
        return
    click.echo(
        f"logged in as {account}: profile {name!r} logs in with the certificate "
        f"{identity.name!r} ({format_fingerprint(identity.certificate.fingerprint)}); "
        "your password was not stored"
    )


async def _enroll_cli(
    account: JID,
    server: ServerAddress | None,
    trust: TrustAnchor,
    password: str,
    identity: CLIIdentity,
    directory: Path,
    service: str | None,
) -> str | None:
    """Register ``identity`` with the password, then prove it logs in on its own.

    On the embedded server (or another XEP-0257 server) the certificate is appended with
    XEP-0257; on ejabberd or Prosody, where there is none, through server-ext's component.
    Returns the component, for the profile (None: the server itself).
    """
    from pairing.profiles import CERT_FILE, KEY_FILE

    def with_password(address: ServerAddress) -> PairingClient:
        return make_client(
            str(account), server=address, trust=trust, password=password, plugins=PLUGINS
        )

    addresses = [server] if server else await resolve_server(account.domain)
    client = await login_first(with_password, addresses)
    used = client.server_address
    try:
        if service is None and not await supports_saslcert(client, account.domain):
            service = await find_component(client, account.domain)
            if service is None:
                raise PairingError(
                    f"the server of {account.domain} offers neither XEP-0257 (certificate "
                    "management) nor server-ext's component, which `pairing login` needs: "
                    "give the component with --service (e.g. pairing."
                    f"{account.domain}), or give --jid with --password-file or "
                    f"${PASSWORD_ENV} to each command instead"
                )
        if service is not None:
            await register_certificate(client, service, identity.name, identity.certificate.der)
        else:
            await add_certificate(client, identity.name, identity.certificate.der)
    finally:
        await logout(client)
    check = make_client(
        str(account.with_resource(f"{identity.resource}-{secrets.token_hex(3)}")),
        server=used,
        trust=trust,
        certfile=directory / CERT_FILE,
        keyfile=directory / KEY_FILE,
    )
    try:
        await login(check)
    except PairingError as exc:
        # Registered but unusable (a server that does not offer EXTERNAL): take it back.
        undo = with_password(used)
        await login(undo)
        try:
            if service is not None:
                await revoke_device(undo, identity.name, service=service)
            else:
                await revoke_certificate(undo, identity.name)
        finally:
            await logout(undo)
        raise PairingError(
            f"the server registered this CLI's certificate but does not let it log in "
            f"({exc}); it was revoked again and no profile was saved"
        ) from None
    await logout(check)
    return service


@click.command("logout")
@PROFILE_OPTION
@click.option(
    "--forget",
    is_flag=True,
    help="Delete the profile even when the server cannot be reached (its certificate stays "
    "registered: revoke it later with `pairing devices revoke NAME`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def logout_command(choices: Choices, forget: bool, as_json: bool) -> None:
    """Revoke this CLI's certificate on the server (XEP-0257) and delete the profile."""
    store = ProfileStore.default()
    name = profile_name(choices)
    if not store.exists(name):
        raise BadInput(store.missing_message(name))
    try:
        profile = store.load(name)
    except ProfileError:
        if not forget:
            raise
        store.delete(name)
        say({"profile": name, "revoked": False, "deleted": True}, as_json, f"deleted {name!r}")
        return
    revoked, note = _revoke_own(profile, forget=forget)
    store.delete(name)
    record = {
        "profile": name,
        "jid": str(profile.jid),
        "certificate_name": profile.certificate_name,
        "revoked": revoked,
        "deleted": True,
    }
    say(record, as_json, f"{note}; profile {name!r} deleted")


def _revoke_own(profile: Profile, *, forget: bool) -> tuple[bool, str]:
    """Revoke the profile's certificate over its own session; (revoked, what happened)."""
    expires = profile.certificate().not_after
    if expires <= dt.datetime.now(dt.UTC):
        # XEP-0257 §2: the server refuses expired certificates; it cannot log in to revoke.
        return False, f"{profile.certificate_name!r} expired on {expires:%Y-%m-%d}"
    choices = Choices()
    choices.offer("profile", profile.name, 2)
    connection = resolve_connection(choices)

    async def action(client: PairingClient) -> None:
        # XEP-0257 §3.4: the server may close this very session right after its answer.
        await revoke_named(client, profile.certificate_name)

    try:
        connection.run(action)
    except ProfileError as exc:
        # Refused already (revoked elsewhere, or unknown): nothing left to revoke.
        return False, f"the server no longer accepts {profile.certificate_name!r} ({exc})"
    except PairingError as exc:
        if not forget:
            raise
        return False, f"not revoked ({exc}); revoke {profile.certificate_name!r} later"
    return True, f"revoked {profile.certificate_name!r}"


@click.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def profiles_command(as_json: bool) -> None:
    """List your profiles (made by `pairing login`)."""
    store = ProfileStore.default()
    rows: list[dict[str, Any]] = []
    for name in store.names():
        try:
            summary = store.load(name).summary()
            rows.append(
                {**summary, "server": summary["server"] or "(DNS SRV)"} if not as_json else summary
            )
        except ProfileError as exc:
            rows.append({"name": name, "error": str(exc)})
    emit(
        rows,
        [
            ("name", "NAME"),
            ("jid", "JID"),
            ("server", "SERVER"),
            ("certificate_name", "CERTIFICATE"),
        ],
        as_json=as_json,
        empty="no profiles: `pairing login --jid you@example.org` makes one",
    )
