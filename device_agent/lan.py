"""Pairing a headless device on the LAN: find a window, prove the code, enroll, log in."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path

from device_agent.enrollment import EnrollmentError, ServerSettings, enroll, enroll_https
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from device_agent.setup_state import AttemptCounter, SetupState, pairing_lock
from pairing.errors import AuthenticationFailed, PairingError
from pairing.lan.connections import ConnectionTasks
from pairing.lan.discovery import (
    DEVICE_SERVICE_TYPE,
    WindowAddress,
    addresses_to_advertise,
    advertise,
    browse,
)
from pairing.lan.listener import Listener
from pairing.protocol.address import ServerAddress
from pairing.protocol.jid import JID
from pairing.protocol.pair_messages import (
    REASON_TEXT,
    DeviceHello,
    EnrollmentOffer,
    EnrollmentResult,
    EnrollMode,
    FailureReason,
    SetupFailed,
)
from pairing.protocol.pair_setup import (
    DeviceSession,
    NotExpectedByUser,
    OfferReceived,
    Paired,
    PairingFailed,
    ProtocolViolation,
    RegistrationConfirmed,
    SetupRequested,
)
from pairing.protocol.setup_code import setup_hash
from pairing.protocol.uri import EnrollmentURI
from pairing.xmpp.connection import login, logout, make_client

log = logging.getLogger(__name__)

VALIDITY = dt.timedelta(days=365)  # of a certificate made for XEP-0257 enrollment


class LockedOut(DeviceAgentError):
    """Too many wrong codes over the device's lifetime; it refuses to pair until reset."""


class PairingGaveUp(DeviceAgentError):
    """No window paired this device before the deadline."""


class Setback(Enum):
    """Why one pair-setup run ended without this device being enrolled."""

    CLOSED = auto()  # the peer hung up
    NOT_EXPECTED = auto()  # the window has no code for this device (yet): no strike
    BUSY = auto()  # HomeKit's Busy: the peer is pairing someone else; no code was tried
    WRONG_CODE = auto()  # the code did not match: a strike was recorded
    FAILED = auto()  # anything else; the run reported why


#: Setbacks after which the same peer is tried again, after a growing pause.
RETRY_LATER = {
    Setback.NOT_EXPECTED: "does not expect this device; retrying later",
    # The window may be full of idle connections its handshake deadline is about to drop.
    Setback.BUSY: "is busy; retrying later",
    # Backoff slows an online guesser; the lifetime counter stops one for good.
    Setback.WRONG_CODE: "",
}


@dataclass(frozen=True, slots=True)
class PairingLimits:
    """Defaults at least as strict as HomeKit's and Matter's (docs/threat-model.md)."""

    lifetime_failures: int = 100  # HomeKit: 100 failures, then MaxTries
    window_failures: int = 5  # per window; Matter closes a window after 20
    attempt_timeout: float = 30.0  # HomeKit's procedure timeout
    first_backoff: float = 1.0  # doubled after each wrong code
    deadline: float = 900.0  # give up after 15 minutes without success


async def pair(
    state_dir: Path,
    *,
    limits: PairingLimits = PairingLimits(),
    interfaces: Sequence[str] | None = None,
    report: Callable[[str], None] = print,
) -> JID:
    """Browse for windows and pair with the first that knows this device's code."""
    SetupState.load(state_dir)  # no label yet: say so before anything else
    with pairing_lock(state_dir):
        return await _pair(state_dir, limits, interfaces, report)


async def _pair(
    state_dir: Path,
    limits: PairingLimits,
    interfaces: Sequence[str] | None,
    report: Callable[[str], None],
) -> JID:
    setup = SetupState.load(state_dir)
    attempts = AttemptCounter.load(state_dir)
    if attempts.locked or attempts.failures >= limits.lifetime_failures:
        raise LockedOut(
            f"{attempts.failures} wrong codes so far: the device is locked; "
            "run `device-agent label --reset` to print a new code"
        )
    hello = DeviceHello(
        setup.device_id, setup_hash(setup.setup_id, setup.device_id), setup.name, setup.resource
    )
    report(f"looking for pairing windows as device {setup.device_id} ...")

    async def search() -> JID:
        windows = browse(interfaces=interfaces)
        async with contextlib.aclosing(windows):
            async for window in windows:
                report(f"found window {window.window_id} at {window.host}:{window.port}")
                bound = await _try_window(window, hello, setup, attempts, state_dir, limits, report)
                if bound is not None:
                    return bound
        raise PairingGaveUp("discovery stopped")  # pragma: no cover - browse never ends

    try:
        return await asyncio.wait_for(search(), limits.deadline)
    except TimeoutError:
        raise PairingGaveUp(
            f"no window paired this device within {limits.deadline:.0f} s"
        ) from None


async def _try_window(
    window: WindowAddress,
    hello: DeviceHello,
    setup: SetupState,
    attempts: AttemptCounter,
    state_dir: Path,
    limits: PairingLimits,
    report: Callable[[str], None],
) -> JID | None:
    backoff = limits.first_backoff
    for _ in range(limits.window_failures):
        if attempts.locked:
            raise LockedOut(
                "too many wrong codes: the device is now locked; "
                "run `device-agent label --reset` to print a new code"
            )
        try:
            outcome = await asyncio.wait_for(
                _attempt(window, hello, setup, attempts, state_dir, limits, report),
                limits.attempt_timeout,
            )
        except TimeoutError:
            report(f"window {window.window_id}: pairing took too long")
            return None
        except (OSError, PairingError) as exc:
            report(f"window {window.window_id}: {exc}")
            return None
        if isinstance(outcome, JID):
            return outcome
        if outcome not in RETRY_LATER:
            return None
        if RETRY_LATER[outcome]:
            report(f"window {window.window_id} {RETRY_LATER[outcome]}")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 30.0)
    return None


async def _attempt(
    window: WindowAddress,
    hello: DeviceHello,
    setup: SetupState,
    attempts: AttemptCounter,
    state_dir: Path,
    limits: PairingLimits,
    report: Callable[[str], None],
) -> JID | Setback:
    reader, writer = await asyncio.open_connection(window.host, window.port)
    report(f"connected to window {window.window_id}")
    return await _session(
        reader,
        writer,
        f"window {window.window_id}",
        hello,
        setup,
        attempts,
        state_dir,
        limits,
        report,
    )


async def _session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    where: str,
    hello: DeviceHello,
    setup: SetupState,
    attempts: AttemptCounter,
    state_dir: Path,
    limits: PairingLimits,
    report: Callable[[str], None],
) -> JID | Setback:
    """One pair-setup run over an open connection, whoever opened it."""
    session = DeviceSession(hello, setup.verifier)
    store = KeyStore(state_dir)

    async def flush() -> None:
        data = session.data_to_send()
        if data:
            writer.write(data)
            await writer.drain()

    try:
        await flush()
        while True:
            data = await reader.read(65536)
            if not data:
                return Setback.CLOSED
            for event in session.receive_data(data):
                if isinstance(event, SetupRequested):
                    session.accept_setup()
                elif isinstance(event, NotExpectedByUser):
                    return Setback.NOT_EXPECTED
                elif isinstance(event, PairingFailed):
                    if event.reason is FailureReason.WRONG_CODE:
                        attempts.record_failure(limits.lifetime_failures)
                        report(
                            f"{where}: wrong setup code "
                            f"({attempts.failures} of {limits.lifetime_failures} allowed)"
                        )
                        await flush()
                        return Setback.WRONG_CODE
                    report(f"{where}: {REASON_TEXT[event.reason]}")
                    return Setback.BUSY if event.reason is FailureReason.BUSY else Setback.FAILED
                elif isinstance(event, Paired):
                    report(f"{where}: code verified, channel encrypted")
                elif isinstance(event, OfferReceived):
                    await flush()
                    result = await _enroll(
                        session, event.offer, store, state_dir, flush, reader, report
                    )
                    if session.may_send_result:  # else the user's client is gone or failed
                        session.send_result(result)
                    with contextlib.suppress(OSError):  # the result, or a queued error frame
                        await flush()
                    if result.ok and result.jid is not None:
                        return result.jid
                    report(f"{where}: {result.error}")
                    return Setback.FAILED
                elif isinstance(event, ProtocolViolation):
                    await flush()
                    raise PairingError(f"protocol error: {event.text}")
            await flush()
    finally:
        writer.close()


async def _enroll(
    session: DeviceSession,
    offer: EnrollmentOffer,
    store: KeyStore,
    state_dir: Path,
    flush: Callable[[], Awaitable[None]],
    reader: asyncio.StreamReader,
    report: Callable[[str], None],
) -> EnrollmentResult:
    jid = offer.jid  # parsed and prepared when the offer was decoded
    if offer.mode is EnrollMode.TOKEN:
        report(f"enrolling as {jid} with a one-time token ...")
        try:
            if offer.https_uri is not None:
                # An account on a stock server: enroll over server-ext's HTTPS API, then log
                # in to the stock server (the v2 URI says where both are and pins them).
                bound = await enroll_https(store, offer.https_uri)
            else:
                bound = await enroll(
                    store,
                    EnrollmentURI(jid, offer.token, offer.host, offer.port, offer.fingerprint),
                )
        except (EnrollmentError, PairingError) as exc:
            return EnrollmentResult(False, jid, str(exc))
        report(f"enrolled; logged in with EXTERNAL as {bound}")
        return EnrollmentResult(True, bound)
    # XEP-0257 mode: the user's client registers our certificate; we prove we hold its key.
    report(f"sending the certificate for {jid} to the user's client ...")
    identity = store.load() if store.exists() else store.create(jid, valid_for=VALIDITY)
    if identity.jid != jid:
        return EnrollmentResult(
            False, jid, f"this device already is {identity.jid}; reset it first"
        )
    settings = ServerSettings(offer.host, offer.port, offer.fingerprint, str(jid))
    session.submit_certificate(identity.certificate_der, store.private_key())
    await flush()
    # From here on the user's client may register the certificate at any moment, and nothing
    # it can send says that it did not: a closed connection, a plain SetupFailed frame (which
    # anyone on the LAN can forge) or a broken message may each come after the registration.
    # So the key stays whatever happens, as in the QR flow (device_agent.enrollment): deleting
    # a registered key would leave the device unable to log in as what the server knows.
    ended = await _registration(session, reader)
    if ended is None:
        settings.save(state_dir)  # the user's client said so: this device is enrolled
        try:
            bound = await _first_login(store, settings)
        except PairingError as exc:
            return EnrollmentResult(False, jid, str(exc))
        report(f"registered; logged in with EXTERNAL as {bound}")
        return EnrollmentResult(True, bound)
    # Without a confirmation only the server knows: ask it by logging in with the key.
    try:
        bound = await _first_login(store, settings)
    except AuthenticationFailed as exc:
        return EnrollmentResult(
            False,
            jid,
            f"{ended}, and the server does not accept this certificate ({exc.text}); "
            "the key is kept for the next pairing",
        )
    except PairingError as exc:
        return EnrollmentResult(
            False,
            jid,
            f"{ended}, and the server cannot tell: {exc}; the key is kept for the next pairing",
        )
    settings.save(state_dir)
    report(f"{ended}, but the certificate is registered; logged in with EXTERNAL as {bound}")
    return EnrollmentResult(True, bound)


async def _registration(session: DeviceSession, reader: asyncio.StreamReader) -> str | None:
    """Wait for the user's client to confirm the registration: None, or how it ended instead."""
    unconfirmed = "before the registration was confirmed"
    while True:
        data = await reader.read(65536)
        if not data:
            return f"the connection closed {unconfirmed}"
        events = session.receive_data(data)
        if any(isinstance(e, RegistrationConfirmed) for e in events):
            return None
        for event in events:
            if isinstance(event, PairingFailed):
                return f"the pairing stopped {unconfirmed}: {REASON_TEXT[event.reason]}"
            if isinstance(event, ProtocolViolation):
                return f"the pairing broke off {unconfirmed}: {event.text}"


async def _first_login(store: KeyStore, settings: ServerSettings) -> JID:
    """Log in once with the device's certificate at ``settings``' server; the bound JID."""
    identity = store.load()
    client = make_client(
        settings.jid,
        server=ServerAddress(settings.host, settings.port),
        trust=settings.trust,
        certfile=identity.cert_path,
        keyfile=identity.key_path,
    )
    bound = await login(client)
    await logout(client)
    return bound


async def wait_for_user(
    state_dir: Path,
    *,
    limits: PairingLimits = PairingLimits(),
    host: str = "0.0.0.0",  # noqa: S104 - the user's client on the LAN must reach the device
    interfaces: Sequence[str] | None = None,
    report: Callable[[str], None] = print,
) -> JID:
    """HomeKit-style: the device listens and advertises itself; a user's client connects.

    One pairing at a time: while one runs, other clients are told ``busy``.
    """
    SetupState.load(state_dir)
    with pairing_lock(state_dir):
        return await _wait_for_user(state_dir, limits, host, interfaces, report)


async def _wait_for_user(
    state_dir: Path,
    limits: PairingLimits,
    host: str,
    interfaces: Sequence[str] | None,
    report: Callable[[str], None],
) -> JID:
    setup = SetupState.load(state_dir)
    attempts = AttemptCounter.load(state_dir)
    if attempts.locked or attempts.failures >= limits.lifetime_failures:
        raise LockedOut("the device is locked; run `device-agent label --reset` for a new code")
    sh = setup_hash(setup.setup_id, setup.device_id)
    hello = DeviceHello(setup.device_id, sh, setup.name, setup.resource)
    done: asyncio.Future[JID] = asyncio.get_running_loop().create_future()
    busy = False
    backoff = limits.first_backoff

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy, backoff
        peer = writer.get_extra_info("peername")
        where = f"user client {peer[0] if peer else '?'}"
        if busy or done.done() or attempts.locked:
            reason = FailureReason.LOCKED_OUT if attempts.locked else FailureReason.BUSY
            writer.write(SetupFailed(reason).frame().encode())
            writer.close()
            return
        busy = True
        try:
            report(f"{where} connected")
            outcome = await asyncio.wait_for(
                _session(reader, writer, where, hello, setup, attempts, state_dir, limits, report),
                limits.attempt_timeout,
            )
            if isinstance(outcome, JID):
                if not done.done():
                    done.set_result(outcome)
            elif outcome is Setback.WRONG_CODE:
                if attempts.locked and not done.done():
                    done.set_exception(LockedOut("too many wrong codes: the device is now locked"))
                # Stay busy for the backoff: a guesser gets "busy", not another try.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        except TimeoutError:
            report(f"{where}: pairing took too long")
        except (OSError, PairingError) as exc:
            report(f"{where}: {exc}")
        except DeviceAgentError as exc:
            # The device's own state failed (a strike could not be stored): stop pairing.
            if not done.done():
                done.set_exception(exc)
        finally:
            busy = False
            writer.close()

    connections = ConnectionTasks(on_connection)
    # With --interface, only there (pairing.lan.listener), not on every address.
    server = await Listener.start(connections.serve, host, interfaces)
    port = server.port
    addresses = addresses_to_advertise(host, interfaces)
    try:
        async with advertise(
            port,
            setup.device_id,
            addresses=addresses,
            interfaces=interfaces,
            service_type=DEVICE_SERVICE_TYPE,
            extra={"sh": sh.hex(), "n": setup.name[:32]},
        ):
            where = ", ".join(address for address, _ in server.bound)
            report(
                f"device {setup.device_id} listening on {where}, waiting for a user's client "
                f"on port {port} ..."
            )
            try:
                return await asyncio.wait_for(done, limits.deadline)
            except TimeoutError:
                raise PairingGaveUp(
                    f"no user's client paired this device within {limits.deadline:.0f} s"
                ) from None
    finally:
        server.close()
        await connections.close()
