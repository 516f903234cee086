"""The user's pairing window: a TCP listener, advertised over mDNS, that pairs devices by code.

Each connecting device runs a :class:`~pairing.protocol.pair_setup.UserSession`. The window
knows codes from ``--code``, scanned labels, a fleet CSV or an interactive prompt
(:mod:`pairing.lan.codebook` says which code may be tried on which device); a device it has
no code for is told "not expected" and may retry, without a strike.

A connection that has not proved the code is *unauthenticated*: it gets a short deadline
(``handshake_timeout``), so idle sockets cannot hold the window's slots (``max_concurrent``)
against the real devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pairing.errors import PairingError
from pairing.lan.codebook import Claim, CodeBook, CodeSource
from pairing.lan.connections import ConnectionTasks
from pairing.lan.discovery import (
    DEVICE_SERVICE_TYPE,
    addresses_to_advertise,
    advertise,
    browse,
)
from pairing.lan.listener import Listener
from pairing.protocol.pair_messages import (
    REASON_TEXT,
    DeviceHello,
    EnrollmentOffer,
    EnrollmentResult,
    FailureReason,
    SetupFailed,
)
from pairing.protocol.pair_setup import (
    CertificateReceived,
    DeviceIntroduced,
    EnrollmentFinished,
    Paired,
    PairingFailed,
    ProtocolViolation,
    UserSession,
)

__all__ = ["CodeBook", "DeviceOutcome", "Enroller", "PairingWindow"]

log = logging.getLogger(__name__)


class Enroller(Protocol):
    """How the user's side gets a device enrolled on the XMPP server."""

    async def offer_for(self, hello: DeviceHello) -> EnrollmentOffer: ...

    async def register(self, hello: DeviceHello, der: bytes) -> None: ...


@dataclass
class DeviceOutcome:
    device_id: str
    name: str
    jid: str = ""
    ok: bool = False
    error: str = ""
    failures: int = 0


@dataclass
class _Attempt:
    """One connection's pairing: its session, the code being tried and its deadline."""

    session: UserSession
    deadline: asyncio.Timeout
    claim: Claim | None = None


@dataclass
class PairingWindow:
    codes: CodeBook
    enroller: Enroller
    timeout: float = 300.0  # Matter: commissioning windows last 3 to 15 minutes
    attempt_timeout: float = 60.0  # Matter's PASE limit: one device, once it proved the code
    handshake_timeout: float = 10.0  # until the code is proved (the user's typing excluded)
    max_failures_per_device: int = 3
    max_concurrent: int = 16  # connections at once; more are told "busy"
    host: str = "0.0.0.0"  # noqa: S104 - devices on the LAN must reach the window
    interfaces: Sequence[str] | None = None
    report: Callable[[str], None] = print
    window_id: str = field(default_factory=lambda: secrets.token_hex(4))
    outcomes: dict[str, DeviceOutcome] = field(default_factory=dict)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    bound: list[tuple[str, int]] = field(default_factory=list)  # the listening sockets

    def __post_init__(self) -> None:
        self._connections = ConnectionTasks(self._connection)

    async def run(self) -> list[DeviceOutcome]:
        """Open, advertise, pair until done or timed out, then withdraw the advertisement."""
        # With --interface, only there (pairing.lan.listener), not on every address.
        server = await Listener.start(self._connections.serve, self.host, self.interfaces)
        self.port = server.port
        self.bound = server.bound
        try:
            addresses = addresses_to_advertise(self.host, self.interfaces)
            async with advertise(
                self.port, self.window_id, addresses=addresses, interfaces=self.interfaces
            ):
                where = ", ".join(f"{a}:{self.port}" for a in addresses)
                self.report(f"pairing window {self.window_id} open on {where}")
                try:
                    await asyncio.wait_for(self._done.wait(), self.timeout)
                except TimeoutError:
                    self.report(f"the pairing window closed after {self.timeout:.0f} s")
        finally:
            server.close()
            await self._connections.close()
            await server.wait_closed()
        return list(self.outcomes.values())

    async def add_devices(self) -> list[DeviceOutcome]:
        """HomeKit-style reverse: browse for advertising devices and connect to each one we
        have a code for (a scanned label is matched by its setup hash), one at a time."""

        async def search() -> None:
            found_devices = browse(interfaces=self.interfaces, service_type=DEVICE_SERVICE_TYPE)
            async with contextlib.aclosing(found_devices):
                async for found in found_devices:
                    try:
                        setup_hash = bytes.fromhex(found.property("sh"))
                    except ValueError:
                        continue
                    if not self.codes.knows(found.window_id, setup_hash):
                        continue
                    self.report(f"found device {found.window_id} at {found.host}:{found.port}")
                    try:
                        reader, writer = await asyncio.open_connection(found.host, found.port)
                    except OSError as exc:
                        self.report(f"device {found.window_id}: {exc}")
                        continue
                    # Waiting without passing on a cancellation: close() ends the connection.
                    pairing = asyncio.create_task(self._connections.serve(reader, writer))
                    await asyncio.wait({pairing})
                    if self._done.is_set():
                        return

        task = asyncio.create_task(search())
        try:
            await asyncio.wait_for(self._done.wait(), self.timeout)
        except TimeoutError:
            self.report(f"stopped looking for devices after {self.timeout:.0f} s")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._connections.close()
        return list(self.outcomes.values())

    def close(self) -> None:
        """Close the window now (Ctrl-C or SIGTERM); the advertisement is withdrawn."""
        self.report("closing the pairing window")
        self._done.set()

    def _check_done(self) -> None:
        expected = self.codes.expected
        finished = [
            o for o in self.outcomes.values() if o.ok or o.failures >= self.max_failures_per_device
        ]
        if expected is not None and len(finished) >= expected:
            self._done.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if len(self._connections) > self.max_concurrent:
            # A flood of connections must not tie up the window for the real devices; the
            # handshake deadline frees the slots of the idle ones soon.
            writer.write(SetupFailed(FailureReason.BUSY).frame().encode())
            return
        session = UserSession()
        try:
            async with asyncio.timeout(self.handshake_timeout) as deadline:
                await self._drive(_Attempt(session, deadline), reader, writer)
        except TimeoutError:
            session.abort(FailureReason.TIMEOUT)
            writer.write(session.data_to_send())
            self._note(session, peer, "timed out")
        except (ConnectionError, PairingError) as exc:
            self._note(session, peer, str(exc))
        except asyncio.CancelledError:
            # The window is closing under this connection: say so to the device.
            session.abort(FailureReason.WINDOW_CLOSED)
            writer.write(session.data_to_send())
            raise
        except Exception:  # one device's trouble must not close the window
            log.exception("pairing with %s failed", peer)
            self._note(session, peer, "internal error")
        finally:
            if session.hello is not None:
                self.codes.bare_finished(session.hello.device_id, proven=None)
            self._check_done()

    def _note(self, session: UserSession, peer: object, error: str) -> None:
        if session.hello is None:
            # Not a device yet (a port scan, an idle socket): nothing the user can act on.
            log.info("connection from %s: %s", peer, error)
            return
        outcome = self.outcomes.get(session.hello.device_id)
        if outcome is not None and not outcome.ok:
            outcome.error = error
        self.report(f"device {session.hello.device_id}: {error}")

    def _outcome(self, hello: DeviceHello) -> DeviceOutcome:
        return self.outcomes.setdefault(hello.device_id, DeviceOutcome(hello.device_id, hello.name))

    async def _drive(
        self, attempt: _Attempt, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = attempt.session
        while not session.failed:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the device closed the connection")
            for event in session.receive_data(data):
                if isinstance(event, ProtocolViolation):
                    writer.write(session.data_to_send())  # the error frame, then we hang up
                    await writer.drain()
                await self._on_event(attempt, event)
            out = session.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if session.state.value == "done":
                return

    async def _lookup(self, attempt: _Attempt, hello: DeviceHello) -> Claim | None:
        # The user may be asked for the code: the device waits for a person, not a peer, so
        # that time does not count against the handshake deadline.
        loop = asyncio.get_running_loop()
        paused, when = loop.time(), attempt.deadline.when()
        attempt.deadline.reschedule(None)
        try:
            return await self.codes.lookup(hello)
        finally:
            if when is not None:
                attempt.deadline.reschedule(when + loop.time() - paused)

    async def _on_event(self, attempt: _Attempt, event: object) -> None:
        session = attempt.session
        hello = session.hello
        if isinstance(event, DeviceIntroduced):
            hello = event.hello
            self.report(f"found device {hello.device_id} ({hello.name or 'unnamed'})")
            done = self.outcomes.get(hello.device_id)
            if done is not None and (done.ok or done.failures >= self.max_failures_per_device):
                session.reject()
                return
            attempt.claim = await self._lookup(attempt, hello)
            if attempt.claim is None:
                self.report(f"device {hello.device_id}: not expected (no code for it)")
                session.reject()
                return
            if attempt.claim.bound:
                self._outcome(hello)
            session.start_setup(attempt.claim.code.digits)
        elif isinstance(event, Paired):
            assert hello is not None and attempt.claim is not None
            if attempt.claim.source is CodeSource.BARE:
                self.codes.bare_finished(hello.device_id, proven=True)
                self._outcome(hello)
            # Authenticated: the rest of the procedure may take as long as enrollment needs.
            attempt.deadline.reschedule(asyncio.get_running_loop().time() + self.attempt_timeout)
            self.report(f"device {hello.device_id}: code verified, channel encrypted")
            session.send_offer(await self.enroller.offer_for(hello))
        elif isinstance(event, CertificateReceived):
            assert hello is not None
            await self.enroller.register(hello, event.der)
            self.report(f"device {hello.device_id}: certificate registered (XEP-0257)")
            session.confirm_registered()
        elif isinstance(event, EnrollmentFinished):
            assert hello is not None
            outcome = self._outcome(hello)
            result: EnrollmentResult = event.result
            outcome.ok, outcome.error = result.ok, result.error
            outcome.jid = str(result.jid) if result.jid is not None else ""
            self.report(
                f"device {hello.device_id}: "
                + (
                    f"enrolled and logged in as {result.jid}"
                    if result.ok
                    else f"failed: {result.error}"
                )
            )
        elif isinstance(event, PairingFailed):
            self._failed(attempt, event.reason)
        elif isinstance(event, ProtocolViolation):
            raise PairingError(f"protocol error: {event.text}")

    def _failed(self, attempt: _Attempt, reason: FailureReason) -> None:
        hello = attempt.session.hello
        if hello is None:
            log.info("a connection ended before saying hello: %s", REASON_TEXT[reason])
            return
        claim = attempt.claim
        if reason is FailureReason.WRONG_CODE and claim is not None and not claim.bound:
            # A bare code names no device: this one is not its device (or the code was
            # mistyped). Either way it is not tried again, and it is no failure of ours.
            self.codes.bare_finished(hello.device_id, proven=False)
            self.report(
                f"device {hello.device_id}: the code does not match; it is not tried on this "
                "device again (--qr or --codes try each code only on its own device)"
            )
            return
        outcome = self.outcomes.get(hello.device_id)
        if outcome is not None:
            if reason is FailureReason.WRONG_CODE:
                outcome.failures += 1
            outcome.error = REASON_TEXT[reason]
        self.report(f"device {hello.device_id}: {REASON_TEXT[reason]}")
