"""The user's pairing window: a TCP listener, advertised over mDNS, that pairs devices by code.

Each connecting device runs a :class:`~pairing.protocol.pair_setup.UserSession`. The window
knows codes from ``--code``, scanned labels, a fleet CSV or an interactive prompt; a device
it has no code for is told "not expected" and may retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pairing.errors import PairingError
from pairing.lan.discovery import (
    DEVICE_SERVICE_TYPE,
    addresses_to_advertise,
    advertise,
    browse,
)
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
from pairing.protocol.setup_code import SetupCode, SetupLabel

log = logging.getLogger(__name__)


class CodeBook:
    """Which code belongs to which device."""

    def __init__(self) -> None:
        self.single: SetupCode | None = None
        self.by_hash: dict[bytes, SetupLabel] = {}
        self.by_device: dict[str, SetupCode] = {}
        self.prompt: Callable[[DeviceHello], Awaitable[SetupCode | None]] | None = None

    def add_label(self, label: SetupLabel) -> None:
        self.by_hash[label.setup_hash] = label
        self.by_device[label.device_id] = label.code

    def load_csv(self, path: Path) -> None:
        """Rows of ``device_id,code`` (a header row is allowed), or label payloads."""
        try:
            with path.open(newline="") as handle:
                for row in csv.reader(handle):
                    cells = [c.strip() for c in row if c.strip()]
                    if not cells or cells[0].lower() in ("device_id", "device"):
                        continue
                    if cells[0].upper().startswith("XMPP-DP-SETUP:"):
                        self.add_label(SetupLabel.parse(cells[0]))
                    elif len(cells) >= 2:
                        self.by_device[cells[0].upper()] = SetupCode.parse(cells[1])
                    else:
                        raise PairingError(f"{path}: a row needs a device id and a code: {row}")
        except OSError as exc:
            raise PairingError(f"cannot read {path}: {exc}") from None

    @property
    def expected(self) -> int | None:
        """How many devices this window waits for (None: until it times out)."""
        if self.by_device:
            return len(self.by_device)
        return 1 if self.single is not None else None

    async def lookup(self, hello: DeviceHello) -> SetupCode | None:
        label = self.by_hash.get(hello.setup_hash)
        if label is not None and label.device_id == hello.device_id:
            return label.code
        if hello.device_id in self.by_device:
            return self.by_device[hello.device_id]
        if self.single is not None:
            return self.single
        if self.prompt is not None:
            return await self.prompt(hello)
        return None


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
class PairingWindow:
    codes: CodeBook
    enroller: Enroller
    timeout: float = 300.0  # Matter: commissioning windows last 3 to 15 minutes
    attempt_timeout: float = 60.0  # Matter's PASE limit
    max_failures_per_device: int = 3
    max_concurrent: int = 16  # pairings in progress at once; more are told "busy"
    host: str = "0.0.0.0"  # noqa: S104 - devices on the LAN must reach the window
    interfaces: Sequence[str] | None = None
    report: Callable[[str], None] = print
    window_id: str = field(default_factory=lambda: secrets.token_hex(4))
    outcomes: dict[str, DeviceOutcome] = field(default_factory=dict)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _active: int = 0

    async def run(self) -> list[DeviceOutcome]:
        """Open, advertise, pair until done or timed out, then withdraw the advertisement."""
        server = await asyncio.start_server(self._connection, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
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
            await server.wait_closed()
        return list(self.outcomes.values())

    async def add_devices(self) -> list[DeviceOutcome]:
        """HomeKit-style reverse: browse for advertising devices and connect to each one we
        have a code for (a scanned label is matched by its setup hash)."""

        async def search() -> None:
            async for found in browse(interfaces=self.interfaces, service_type=DEVICE_SERVICE_TYPE):
                try:
                    setup_hash = bytes.fromhex(found.property("sh"))
                except ValueError:
                    continue
                known = (
                    setup_hash in self.codes.by_hash
                    or found.window_id in self.codes.by_device
                    or self.codes.single is not None
                    or self.codes.prompt is not None
                )
                if not known:
                    continue
                self.report(f"found device {found.window_id} at {found.host}:{found.port}")
                try:
                    reader, writer = await asyncio.open_connection(found.host, found.port)
                except OSError as exc:
                    self.report(f"device {found.window_id}: {exc}")
                    continue
                await self._connection(reader, writer)
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
        session = UserSession()
        peer = writer.get_extra_info("peername")
        if self._active >= self.max_concurrent:
            # A flood of connections must not tie up the window for the real devices.
            writer.write(SetupFailed(FailureReason.BUSY).frame().encode())
            writer.close()
            return
        self._active += 1
        try:
            await asyncio.wait_for(self._drive(session, reader, writer), self.attempt_timeout)
        except TimeoutError:
            session.abort(FailureReason.TIMEOUT)
            writer.write(session.data_to_send())
            self._note(session, "timed out")
        except (ConnectionError, PairingError) as exc:
            self._note(session, str(exc))
        except Exception:  # one device's trouble must not close the window
            log.exception("pairing with %s failed", peer)
            self._note(session, "internal error")
        finally:
            self._active -= 1
            writer.close()
            self._check_done()

    def _note(self, session: UserSession, error: str) -> None:
        if session.hello is not None:
            outcome = self._outcome(session.hello)
            if not outcome.ok:
                outcome.error = error
        self.report(f"device {session.hello.device_id if session.hello else '?'}: {error}")

    def _outcome(self, hello: DeviceHello) -> DeviceOutcome:
        return self.outcomes.setdefault(hello.device_id, DeviceOutcome(hello.device_id, hello.name))

    async def _drive(
        self, session: UserSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while not session.failed:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the device closed the connection")
            for event in session.receive_data(data):
                if isinstance(event, ProtocolViolation):
                    writer.write(session.data_to_send())  # the error frame, then we hang up
                    await writer.drain()
                await self._on_event(session, event)
            out = session.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if session.state.value == "done":
                return

    async def _on_event(self, session: UserSession, event: object) -> None:
        hello = session.hello
        if isinstance(event, DeviceIntroduced):
            outcome = self._outcome(event.hello)
            self.report(f"found device {event.hello.device_id} ({event.hello.name or 'unnamed'})")
            if outcome.ok or outcome.failures >= self.max_failures_per_device:
                session.reject()
                return
            code = await self.codes.lookup(event.hello)
            if code is None:
                self.report(f"device {event.hello.device_id}: not expected (no code for it)")
                session.reject()
                return
            session.start_setup(code.digits)
        elif isinstance(event, Paired):
            assert hello is not None
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
            if hello is not None:
                outcome = self._outcome(hello)
                if event.reason is FailureReason.WRONG_CODE:
                    outcome.failures += 1
                outcome.error = REASON_TEXT[event.reason]
            self.report(f"device {hello.device_id if hello else '?'}: {REASON_TEXT[event.reason]}")
        elif isinstance(event, ProtocolViolation):
            raise PairingError(f"protocol error: {event.text}")
