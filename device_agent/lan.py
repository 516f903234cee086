"""Pairing a headless device on the LAN: find a window, prove the code, enroll, log in."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from device_agent import runtime
from device_agent.enrollment import EnrollmentError, ServerSettings, enroll
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from device_agent.setup_state import AttemptCounter, SetupState, pairing_lock
from pairing.errors import PairingError
from pairing.lan.connections import ConnectionTasks
from pairing.lan.discovery import (
    DEVICE_SERVICE_TYPE,
    WindowAddress,
    addresses_to_advertise,
    advertise,
    browse,
)
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

log = logging.getLogger(__name__)


class LockedOut(DeviceAgentError):
    """Too many wrong codes over the device's lifetime; it refuses to pair until reset."""


class PairingGaveUp(DeviceAgentError):
    """No window paired this device before the deadline."""


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
        if outcome == "not-expected":
            report(f"window {window.window_id} does not expect this device; retrying later")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            continue
        if outcome == "busy":
            # HomeKit's Busy: the window is full for now (maybe of idle connections that its
            # handshake deadline is about to drop). No code was tried, so no strike.
            report(f"window {window.window_id} is busy; retrying later")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            continue
        if outcome == "wrong-code":
            # Backoff slows an online guesser; the lifetime counter stops one for good.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            continue
        return None
    return None


async def _attempt(
    window: WindowAddress,
    hello: DeviceHello,
    setup: SetupState,
    attempts: AttemptCounter,
    state_dir: Path,
    limits: PairingLimits,
    report: Callable[[str], None],
) -> JID | str:
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
) -> JID | str:
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
                return "closed"
            for event in session.receive_data(data):
                if isinstance(event, SetupRequested):
                    session.accept_setup()
                elif isinstance(event, NotExpectedByUser):
                    return "not-expected"
                elif isinstance(event, PairingFailed):
                    if event.reason is FailureReason.WRONG_CODE:
                        attempts.record_failure(limits.lifetime_failures)
                        report(
                            f"{where}: wrong setup code "
                            f"({attempts.failures} of {limits.lifetime_failures} allowed)"
                        )
                        await flush()
                        return "wrong-code"
                    report(f"{where}: {REASON_TEXT[event.reason]}")
                    return "busy" if event.reason is FailureReason.BUSY else "failed"
                elif isinstance(event, Paired):
                    report(f"{where}: code verified, channel encrypted")
                elif isinstance(event, OfferReceived):
                    await flush()
                    result = await _enroll(
                        session, event.offer, store, state_dir, flush, reader, report
                    )
                    session.send_result(result)
                    await flush()
                    if result.ok and result.jid is not None:
                        return result.jid
                    return "failed"
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
            bound = await enroll(
                store, EnrollmentURI(jid, offer.token, offer.host, offer.port, offer.fingerprint)
            )
        except (EnrollmentError, PairingError) as exc:
            return EnrollmentResult(False, jid, str(exc))
        report(f"enrolled; logged in with EXTERNAL as {bound}")
        return EnrollmentResult(True, bound)
    # XEP-0257 mode: the user's client registers our certificate; we prove we hold its key.
    report(f"sending the certificate for {jid} to the user's client ...")
    created = not store.exists()
    identity = store.create(jid, valid_for=dt.timedelta(days=365)) if created else store.load()
    if identity.jid != jid:
        return EnrollmentResult(
            False, jid, f"this device already is {identity.jid}; reset it first"
        )
    session.submit_certificate(identity.certificate_der, store.private_key())
    await flush()
    while True:
        data = await reader.read(65536)
        if not data:
            if created:
                store.remove()
            return EnrollmentResult(False, jid, "the user's client went away")
        events = session.receive_data(data)
        if any(isinstance(e, RegistrationConfirmed) for e in events):
            break
        if any(isinstance(e, PairingFailed | ProtocolViolation) for e in events):
            if created:
                store.remove()
            return EnrollmentResult(False, jid, "the user's client could not register it")
    ServerSettings(offer.host, offer.port, offer.fingerprint, str(jid)).save(state_dir)
    try:
        client = await runtime.connect(state_dir)
    except PairingError as exc:
        return EnrollmentResult(False, jid, str(exc))
    bound = JID.parse(str(client.boundjid.full))
    await client.disconnect(wait=2)
    report(f"registered; logged in with EXTERNAL as {bound}")
    return EnrollmentResult(True, bound)


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
            elif outcome == "wrong-code":
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
    server = await asyncio.start_server(connections.serve, host, 0)
    port = server.sockets[0].getsockname()[1]
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
            report(f"device {setup.device_id} waiting for a user's client on port {port} ...")
            try:
                return await asyncio.wait_for(done, limits.deadline)
            except TimeoutError:
                raise PairingGaveUp(
                    f"no user's client paired this device within {limits.deadline:.0f} s"
                ) from None
    finally:
        server.close()
        await connections.close()
