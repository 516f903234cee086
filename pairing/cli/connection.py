"""Resolving what to connect to, lazily: the options, the environment and the profile."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click

from pairing.cli.options import PASSWORD_ENV, Choices
from pairing.cli_output import BadInput, can_prompt, read_secret
from pairing.errors import AuthenticationFailed, InvalidJID, InvalidServerAddress, PairingError
from pairing.profiles import DEFAULT_PROFILE, Profile, ProfileError, ProfileStore, check_name
from pairing.protocol.address import ServerAddress
from pairing.protocol.jid import JID
from pairing.xmpp.component import find_component
from pairing.xmpp.connection import (
    PairingClient,
    TrustAnchor,
    login_first,
    logout,
    make_client,
    resolve_server,
)
from pairing.xmpp.saslcert import PLUGINS, supports_saslcert

T = TypeVar("T")


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
        password = None if self.profile else read_password(self.password_file, for_login=False)
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


def read_password(file: Path | None, *, for_login: bool, jid: JID | None = None) -> str:
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


def parse_account(text: str) -> JID:
    try:
        return JID.parse(text).bare
    except InvalidJID as exc:
        raise BadInput(f"--jid: {exc}") from None


def parse_server(text: str | None) -> ServerAddress | None:
    if not text:
        return None
    try:
        return ServerAddress.parse(text)
    except InvalidServerAddress as exc:
        raise BadInput(f"--server: {exc}") from None


def parse_trust(pin: str | None, cafile: Path | None) -> TrustAnchor | None:
    """The trust the options name, or None when they name none."""
    if pin is not None and cafile is not None:
        raise BadInput("give --pin or --cafile, not both")
    if pin is None and cafile is None:
        return None
    try:
        return TrustAnchor(fingerprint=pin, cafile=cafile)
    except PairingError as exc:
        raise BadInput(f"--pin: {exc}") from None


def profile_name(choices: Choices) -> str:
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
    server = parse_server(choices.get("server"))
    trust = parse_trust(choices.get("pin"), choices.get("cafile"))
    named: str | None = choices.get("profile")
    service = parse_service(choices.get("service"))
    if named is None and jid_text is not None:
        return Connection(
            jid=parse_account(jid_text),
            server=server,
            trust=trust or TrustAnchor(system=True),
            profile=None,
            password_file=choices.get("password_file"),
            service=service,
            discover=service is None,
        )
    name = profile_name(choices)
    if not store.exists(name):
        raise BadInput(store.missing_message(name))
    profile = store.load(name)
    if jid_text is not None and parse_account(jid_text) != profile.jid:
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


def parse_service(text: str | None) -> str | None:
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


def current_connection() -> Connection:
    """The connection of the command being run, from the options given to it."""
    return resolve_connection(click.get_current_context().ensure_object(Choices))
