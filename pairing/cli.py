"""``pairing``: the user's side. Log in once, then manage your devices with no flags."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import slixmpp
from click.core import ParameterSource

from pairing.cli_output import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    BadInput,
    Duration,
    can_prompt,
    configure_logging,
    emit,
    emit_record,
    friendly_group,
    read_secret,
)
from pairing.errors import (
    AuthenticationFailed,
    InvalidJID,
    InvalidServerAddress,
    PairingError,
)
from pairing.profiles import (
    DEFAULT_PROFILE,
    CLIIdentity,
    Profile,
    ProfileError,
    ProfileStore,
    check_name,
    make_cli_identity,
)
from pairing.protocol.address import ServerAddress
from pairing.protocol.identity import PeerCertificate, format_fingerprint
from pairing.protocol.jid import JID, prepare_resourcepart
from pairing.redaction import protect
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
from pairing.xmpp.devices import DeviceInfo, end_sessions, list_devices, revoke_device
from pairing.xmpp.saslcert import (
    PLUGINS,
    add_certificate,
    disable_certificate,
    list_certificates,
    revoke_certificate,
    supports_saslcert,
)
from pairing.xmpp.tokens import TokenGrant, cancel_token, list_tokens, request_token

PASSWORD_ENV = "PAIRING_PASSWORD"
PROFILE_ENV = "PAIRING_PROFILE"
T = TypeVar("T")

EPILOG = f"""\b
Start with `pairing login --jid you@example.org` (asks for your password once and
keeps no password: this CLI gets a certificate of its own); later commands need no
connection options. --jid, --server and --pin still work for scripts, without a profile.

\b
Environment (each option's own variable is shown beside it, too):
  {PROFILE_ENV}        the profile to use (default: "{DEFAULT_PROFILE}")
  PAIRING_JID, PAIRING_SERVER, PAIRING_PIN, PAIRING_CAFILE, PAIRING_PASSWORD_FILE
                         as --jid, --server, --pin, --cafile, --password-file
  {PASSWORD_ENV}       your password, for `login` and commands run without a profile
  XDG_CONFIG_HOME        profiles live in $XDG_CONFIG_HOME/xmpp-device-pairing
                         (else ~/.config/xmpp-device-pairing)

\b
Exit status (as ejabberdctl): 0 done, 1 refused or failed (the message says why),
{EXIT_USAGE} usage error or bad input, {EXIT_UNREACHABLE} the server is not running or not reachable."""  # noqa: E501


# --- connection options: on the group, and --profile on every command that connects ------

#: Which setting wins when an option is given twice (on the group and on the command, or
#: on the command line and in the environment): the command line, then the environment.
_RANK = {ParameterSource.COMMANDLINE: 2, ParameterSource.ENVIRONMENT: 1}


@dataclass
class Choices:
    """The connection options as given, wherever they were given; resolved only when a
    command connects, so that `--help` and `pairing profiles` never need them."""

    values: dict[str, tuple[Any, int]] = field(default_factory=dict)

    def offer(self, key: str, value: Any, rank: int) -> None:
        if key not in self.values or rank >= self.values[key][1]:
            self.values[key] = (value, rank)

    def get(self, key: str) -> Any:
        return self.values.get(key, (None, 0))[0]


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name is not None:
        source = ctx.get_parameter_source(param.name)
        rank = _RANK.get(source, 0) if source is not None else 0
        ctx.ensure_object(Choices).offer(param.name, value, rank)
    return value


def _option(*names: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(*names, expose_value=False, callback=_remember, show_envvar=True, **kwargs)


PROFILE_OPTION = _option(
    "--profile",
    envvar=PROFILE_ENV,
    help=f"The profile to use (made by `pairing login`; default: {DEFAULT_PROFILE}).",
)
ACCOUNT_OPTIONS = [
    _option(
        "--jid",
        envvar="PAIRING_JID",
        help="Your account, e.g. alice@example.org (to log in, or instead of a profile).",
    ),
    _option(
        "--server",
        envvar="PAIRING_SERVER",
        help="HOST[:PORT] of the server (default: the profile's, else DNS SRV for the "
        "JID's domain, else the domain on port 5222).",
    ),
    _option(
        "--pin",
        envvar="PAIRING_PIN",
        help="The server certificate's SHA-256 fingerprint (from `server-ext fingerprint`).",
    ),
    _option(
        "--cafile",
        envvar="PAIRING_CAFILE",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Or a CA (or the server's own certificate) to check it with. Without --pin or "
        "--cafile, the system's CAs.",
    ),
    _option(
        "--service",
        envvar="PAIRING_SERVICE",
        help="On ejabberd or Prosody: server-ext's component that takes the commands, e.g. "
        "pairing.example.org (default: the profile's, else found in the domain's disco#items).",
    ),
    _option(
        "--password-file",
        envvar="PAIRING_PASSWORD_FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Read your password from this file (else ${PASSWORD_ENV}, else a prompt).",
    ),
]


def account_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([PROFILE_OPTION, *ACCOUNT_OPTIONS]):
        func = option(func)
    return func


# --- resolving what to connect to, lazily ---------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Who logs in, where, how the server is recognised, and with which credential."""

    jid: JID  # bare for a password login; the profile's account with a fresh resource
    server: ServerAddress | None  # None: DNS SRV at connection time
    trust: TrustAnchor
    profile: Profile | None  # logs in with its certificate (EXTERNAL)
    password_file: Path | None = None
    # Where the device-management commands go: server-ext's component on a stock server,
    # None for the account's own server. Looked up after login when ``discover`` is set.
    service: str | None = None
    discover: bool = False

    def run(self, action: Callable[[PairingClient], Awaitable[T]]) -> T:
        """Log in, run ``action``, log out."""
        password = None if self.profile else _password(self.password_file, for_login=False)
        return asyncio.run(self._session(action, password))

    async def _session(
        self, action: Callable[[PairingClient], Awaitable[T]], password: str | None
    ) -> T:
        client = await self.connect(password)
        try:
            client.service = await self._service(client)
            return await action(client)
        finally:
            await logout(client)

    async def _service(self, client: PairingClient) -> str | None:
        """The component to send commands to; None when the server offers them itself."""
        if self.service or not self.discover:
            return self.service
        domain = self.jid.domain
        if await supports_saslcert(client, domain):
            return None  # the embedded server (or another XEP-0257 server) itself
        return await find_component(client, domain)

    async def connect(self, password: str | None) -> PairingClient:
        profile = self.profile

        def make(address: ServerAddress) -> PairingClient:
            return make_client(
                str(self.jid),
                server=address,
                trust=self.trust,
                password=password,
                certfile=profile.certfile if profile else None,
                keyfile=profile.keyfile if profile else None,
                plugins=PLUGINS,
            )

        addresses = [self.server] if self.server else await resolve_server(self.jid.domain)
        try:
            return await login_first(make, addresses)
        except AuthenticationFailed as exc:
            if profile is None:
                raise
            raise ProfileError(_refused_profile(profile, exc)) from None


def _refused_profile(profile: Profile, exc: AuthenticationFailed) -> str:
    what = "was revoked" if exc.revoked else "was refused"
    return (
        f"the certificate of profile {profile.name!r} ({profile.certificate_name}) {what}: "
        f"{exc}. `pairing logout --profile {profile.name}` removes the profile; "
        "then `pairing login` again"
    )


def _password(file: Path | None, *, for_login: bool, jid: JID | None = None) -> str:
    if file is None and not _password_in_env() and not can_prompt():
        # Without this check a job started with `&` would stop at the prompt (SIGTTOU).
        hint = (
            "" if for_login else "run `pairing login` once in a terminal (then none is needed), or "
        )
        raise click.ClickException(
            f"no password and no terminal to ask on: {hint}give --password-file FILE or set "
            f"{PASSWORD_ENV}"
        )
    who = f" for {jid}" if jid else ""
    return read_secret(file=file, env=PASSWORD_ENV, prompt=f"Password{who}")


def _password_in_env() -> bool:
    return bool(os.environ.get(PASSWORD_ENV))


def _parse_account(text: str) -> JID:
    try:
        return JID.parse(text).bare
    except InvalidJID as exc:
        raise BadInput(f"--jid: {exc}") from None


def _parse_server(text: str | None) -> ServerAddress | None:
    if not text:
        return None
    try:
        return ServerAddress.parse(text)
    except InvalidServerAddress as exc:
        raise BadInput(f"--server: {exc}") from None


def _trust(pin: str | None, cafile: Path | None) -> TrustAnchor | None:
    """The trust the options name, or None when they name none."""
    if pin is not None and cafile is not None:
        raise BadInput("give --pin or --cafile, not both")
    if pin is None and cafile is None:
        return None
    try:
        return TrustAnchor(fingerprint=pin, cafile=cafile)
    except PairingError as exc:
        raise BadInput(f"--pin: {exc}") from None


def _profile_name(choices: Choices) -> str:
    try:
        return check_name(choices.get("profile") or DEFAULT_PROFILE)
    except ProfileError as exc:
        raise BadInput(f"--profile: {exc}") from None


def resolve_connection(choices: Choices, store: ProfileStore | None = None) -> Connection:
    """The connection the options and the profile describe; options win over the profile.

    A profile is used when one is named, or when no --jid is given (the default one); an
    explicit --jid without --profile is a password login, as scripts did before profiles.
    """
    store = store or ProfileStore.default()
    jid_text: str | None = choices.get("jid")
    server = _parse_server(choices.get("server"))
    trust = _trust(choices.get("pin"), choices.get("cafile"))
    named: str | None = choices.get("profile")
    service = _parse_service(choices.get("service"))
    if named is None and jid_text is not None:
        return Connection(
            jid=_parse_account(jid_text),
            server=server,
            trust=trust or TrustAnchor(system=True),
            profile=None,
            password_file=choices.get("password_file"),
            service=service,
            discover=service is None,
        )
    name = _profile_name(choices)
    if not store.exists(name):
        raise BadInput(store.missing_message(name))
    profile = store.load(name)
    if jid_text is not None and _parse_account(jid_text) != profile.jid:
        raise BadInput(f"--jid {jid_text} is not the account of profile {name!r} ({profile.jid})")
    _require_current(profile)
    if trust is None:
        trust = (
            TrustAnchor(fingerprint=profile.pin)
            if profile.pin
            else TrustAnchor(cafile=profile.cafile)
            if profile.cafile
            else TrustAnchor(system=True)
        )
    # A resource of its own for every run: two commands at once must not replace each
    # other's session (RFC 6120 §7.7.2.2), e.g. a `pairing listen` left running.
    resource = f"{profile.resource}-{secrets.token_hex(3)}"
    return Connection(
        jid=profile.jid.with_resource(resource),
        server=server or profile.server,
        trust=trust,
        profile=profile,
        service=service or profile.component,
    )


def _parse_service(text: str | None) -> str | None:
    if not text:
        return None
    try:
        jid = JID.parse(text)
    except InvalidJID as exc:
        raise BadInput(f"--service: {exc}") from None
    if jid.local or jid.resource:
        raise BadInput(f"--service: {text} is not a component's address (e.g. pairing.example.org)")
    return str(jid)


def _require_current(profile: Profile) -> None:
    cert = profile.certificate()
    if cert.not_after <= dt.datetime.now(dt.UTC):
        raise ProfileError(
            f"the certificate of profile {profile.name!r} expired on "
            f"{cert.not_after:%Y-%m-%d}: `pairing logout --profile {profile.name}` removes the "
            "profile; then `pairing login` again"
        )


# --- the group ----------------------------------------------------------------------------


@click.group(cls=friendly_group(), epilog=EPILOG)
@account_options
@click.option("-v", "--verbose", count=True, help="Show protocol logs (-vv for debug).")
@click.version_option(package_name="xmpp-device-pairing")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Manage the devices that log in to your XMPP account without your password.

    Each device has its own certificate (made with `device-agent init`). Register it here
    and the device logs in with it; revoke it here and it is cut off at once.
    """
    configure_logging(verbose)
    ctx.ensure_object(Choices)


def _connection() -> Connection:
    return resolve_connection(click.get_current_context().ensure_object(Choices))


# --- login, logout, profiles --------------------------------------------------------------


@main.command("login")
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
    name = _profile_name(choices)
    jid_text: str | None = choices.get("jid")
    if not jid_text:
        raise BadInput("give your account: pairing login --jid you@example.org")
    account = _parse_account(jid_text)
    server = _parse_server(choices.get("server"))
    cafile: Path | None = choices.get("cafile")
    trust = _trust(choices.get("pin"), cafile) or TrustAnchor(system=True)
    if store.exists(name):
        raise BadInput(store.exists_message(name))
    password = _password(choices.get("password_file"), for_login=True, jid=account)
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
                _parse_service(choices.get("service")),
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


@main.command("logout")
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
    name = _profile_name(choices)
    if not store.exists(name):
        raise BadInput(store.missing_message(name))
    try:
        profile = store.load(name)
    except ProfileError:
        if not forget:
            raise
        store.delete(name)
        _say({"profile": name, "revoked": False, "deleted": True}, as_json, f"deleted {name!r}")
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
    _say(record, as_json, f"{note}; profile {name!r} deleted")


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
        await _revoke_named(client, profile.certificate_name)

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


def _say(record: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        emit_record(record, as_json=True)
    else:
        click.echo(text)


@main.command("profiles")
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


# --- certificates (XEP-0257) -----------------------------------------------------------------


@main.group()
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

    rows = _connection().run(action)
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

    _connection().run(action)
    _say(
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

    _connection().run(action)
    _say({"name": name, "state": "disabled"}, as_json, f"disabled {name!r}")


@certs.command("revoke", hidden=True)
@click.argument("name")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def certs_revoke(name: str, as_json: bool) -> None:
    """The same as `pairing devices revoke NAME` (kept for scripts)."""
    _revoke(name, as_json)


# --- tokens ----------------------------------------------------------------------------------


def _target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--jid`` names another account (admins); ``--for`` is its former, hidden name."""
    func = click.option("--for", "for_account", hidden=True)(func)
    return click.option("--jid", "target", help="Another account (administrators only).")(func)


def _target(target: str | None, for_account: str | None) -> str | None:
    if target and for_account and target != for_account:
        raise BadInput("give --jid (or its old name --for) once")
    return target or for_account


@main.command()
@click.option("--resource", required=True, help="The new device's resource, e.g. weatherbot.")
@click.option("--name", help="Its name in device lists (default: the resource).")
@click.option(
    "--ttl",
    type=Duration(),
    default="10m",
    show_default=True,
    help="How long the code stays valid: 90s, 10m, 1h or plain seconds (30s to 1h).",
)
@_target_options
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Also write a PNG.")
@click.option("--svg", type=click.Path(dir_okay=False, path_type=Path), help="Also write an SVG.")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON (includes the secret URI).")
def token(
    resource: str,
    name: str | None,
    ttl: dt.timedelta,
    target: str | None,
    for_account: str | None,
    png: Path | None,
    svg: Path | None,
    as_json: bool,
) -> None:
    """Show a one-time QR code that lets a new bot join your account, without your password."""
    from pairing import qr

    # Prepared here as the server will (RFC 7622 §3.3, §3.4), so a refused name is a clear
    # local error and the token names exactly what the device will log in as.
    try:
        resource = prepare_resourcepart(resource)
    except InvalidJID as exc:
        raise BadInput(f"--resource: {exc}") from None
    account_text = _target(target, for_account)
    connection = _connection()
    try:
        account = (
            str(JID.parse_account(account_text, connection.jid.domain)) if account_text else None
        )
    except InvalidJID as exc:
        raise BadInput(f"--jid: {exc}") from None
    seconds = int(ttl.total_seconds())

    async def action(client: slixmpp.ClientXMPP) -> TokenGrant:
        return await request_token(
            client, resource, name=name, ttl_seconds=seconds, account=account
        )

    grant = connection.run(action)
    if png:
        qr.write_png(grant.uri, png)
    if svg:
        qr.write_svg(grant.uri, svg)
    if as_json:
        click.echo(json.dumps({**asdict(grant)}, indent=2))
        return
    click.echo(qr.terminal(grant.uri))
    click.echo(grant.uri)
    click.echo(
        f"Scan it on the device: device-agent enroll --qr-image PHOTO (or --uri). "
        f"It works once, for {grant.jid}, until {grant.expires}."
    )


@main.group()
def tokens() -> None:
    """Your unused pairing codes."""


@tokens.command("list")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_list(as_json: bool) -> None:
    """List your unused pairing codes (the codes themselves are never shown again)."""
    items = _connection().run(list_tokens)
    emit(
        [asdict(t) for t in items],
        [("token_id", "ID"), ("jid", "JID"), ("name", "NAME"), ("expires", "EXPIRES")],
        as_json=as_json,
        empty="no unused pairing codes",
    )


@tokens.command("cancel")
@click.argument("token_id", type=int)
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def tokens_cancel(token_id: int, as_json: bool) -> None:
    """Cancel the unused pairing code TOKEN_ID."""

    async def action(client: slixmpp.ClientXMPP) -> None:
        await cancel_token(client, token_id)

    _connection().run(action)
    _say({"token_id": token_id, "cancelled": True}, as_json, f"cancelled pairing code {token_id}")


# --- LAN pairing -----------------------------------------------------------------------------


def _code_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.option("--code", help="The setup code of the one device to pair (XXX-XX-XXX)."),
            click.option(
                "--qr",
                "labels",
                multiple=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A photo of a device label (repeatable).",
            ),
            click.option(
                "--codes",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A fleet CSV: device_id,code per line.",
            ),
            click.option(
                "--mode",
                type=click.Choice(["token", "xep0257"]),
                default="token",
                show_default=True,
                help="token: the device redeems a one-time token; xep0257: we upload its "
                "certificate.",
            ),
            click.option(
                "--timeout", default=300.0, show_default=True, help="Seconds to keep at it."
            ),
            click.option(
                "--interface", "interfaces", multiple=True, help="mDNS only on this IPv4 address."
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="Print the per-device report as JSON."
            ),
        ]
    ):
        func = option(func)
    return func


def _pair_devices(
    *,
    code: str | None,
    labels: tuple[Path, ...],
    codes: Path | None,
    mode: str,
    timeout: float,
    host: str,
    interfaces: tuple[str, ...],
    as_json: bool,
    reverse: bool,
) -> None:
    from pairing import qr
    from pairing.lan.enroller import AccountEnroller
    from pairing.lan.window import CodeBook, PairingWindow
    from pairing.protocol.pair_messages import DeviceHello, EnrollMode
    from pairing.protocol.setup_code import SetupCode, SetupLabel

    book = CodeBook()
    if code:
        book.single = SetupCode.parse(code)
        protect(book.single.digits)
    for path in labels:
        book.add_label(SetupLabel.parse(qr.read_image(path)), where=str(path))
    if codes:
        book.load_csv(codes)
    if not (code or labels or codes):
        if not can_prompt():
            raise click.UsageError("give --code, --qr or --codes (no terminal to ask on)")

        async def ask(hello: DeviceHello) -> SetupCode | None:
            prompt = f"Code for device {hello.device_id} ({hello.name or 'unnamed'}), empty to skip"
            text = await asyncio.to_thread(click.prompt, prompt, default="", show_default=False)
            return SetupCode.parse(text) if text.strip() else None

        book.prompt = ask

    def report(line: str) -> None:
        click.echo(line, err=True)

    async def session(client: slixmpp.ClientXMPP) -> list[Any]:
        assert isinstance(client, PairingClient)
        window = PairingWindow(
            book,
            AccountEnroller(client, mode=EnrollMode(mode)),
            timeout=timeout,
            host=host,
            interfaces=interfaces or None,
            report=report,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, window.close)
        return await (window.add_devices() if reverse else window.run())

    outcomes = _connection().run(session)
    rows = [asdict(o) for o in outcomes]
    emit(
        rows,
        [
            ("device_id", "DEVICE"),
            ("name", "NAME"),
            ("ok", "ENROLLED"),
            ("jid", "JID"),
            ("error", "ERROR"),
        ],
        as_json=as_json,
        empty="no device paired",
    )
    if not rows or not all(r["ok"] for r in rows) or (book.expected or 0) > len(rows):
        raise click.ClickException("not every expected device was paired")


@main.command()
@_code_options
@click.option(
    "--host",
    default="0.0.0.0",  # noqa: S104 - devices on the LAN must reach the window
    show_default=True,
    help="Address to listen on (devices dial the advertised addresses).",
)
@PROFILE_OPTION
def listen(host: str, **options: Any) -> None:
    """Open a pairing window on the LAN so headless devices can join your account."""
    _pair_devices(host=host, reverse=False, **options)


@main.command()
@_code_options
@PROFILE_OPTION
def add(**options: Any) -> None:
    """Find devices that advertise themselves (device-agent pair --advertise) and pair them."""
    _pair_devices(host="0.0.0.0", reverse=True, **options)  # noqa: S104


@main.group("devices")
def devices_group() -> None:
    """Your devices: who is online, and cutting one off."""


@devices_group.command("list")
@click.option("--jid", "target", help="Another account (administrators), or * for all.")
@click.option("--for", "for_account", hidden=True)
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_list(target: str | None, for_account: str | None, as_json: bool) -> None:
    """List your devices, whether each is online, and when it last logged in."""
    account = _target(target, for_account)

    async def action(client: slixmpp.ClientXMPP) -> list[DeviceInfo]:
        return await list_devices(client, account=account)

    rows = [asdict(d) for d in _connection().run(action)]
    emit(
        rows,
        [
            ("id", "ID"),
            ("name", "NAME"),
            ("jid", "JID"),
            ("state", "STATE"),
            ("online", "ONLINE"),
            ("last_login", "LAST LOGIN"),
            ("expires", "EXPIRES"),
        ],
        as_json=as_json,
        empty="no devices",
    )


@devices_group.command("revoke")
@click.argument("name")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def devices_revoke(name: str, as_json: bool) -> None:
    """Revoke your device NAME (XEP-0257): it is cut off now and can never log in again."""
    _revoke(name, as_json)


def _revoke(name: str, as_json: bool) -> None:
    async def action(client: PairingClient) -> None:
        await _revoke_named(client, name)

    _connection().run(action)
    _say({"name": name, "state": "revoked"}, as_json, f"revoked {name!r}")


async def _revoke_named(client: PairingClient, name: str) -> None:
    """Revoke the certificate (device) ``name``: XEP-0257 on the account's own server, the
    component's command on a stock server."""
    if client.service is not None:
        await revoke_device(client, name)
    else:
        await revoke_certificate(client, name)


@main.command("kick")
@click.argument("jid")
@click.option("--reason", default="", help="Shown to the clients.")
@PROFILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kick(jid: str, reason: str, as_json: bool) -> None:
    """End every session of an account now (administrators only)."""

    async def action(client: slixmpp.ClientXMPP) -> str:
        return await end_sessions(client, jid, reason=reason)

    note = _connection().run(action)
    _say({"jid": jid, "note": note}, as_json, note)
