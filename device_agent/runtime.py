"""The device at work: log in with its certificate, stay online, reconnect with backoff."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from device_agent import renewal, rotation, state_files
from device_agent.enrollment import ServerSettings, client_for
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from device_agent.state_files import MalformedRecord, StateFile
from device_agent.status_query import device_status
from pairing.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    LoginTimedOut,
    PairingError,
    RequestFailed,
    ServerIdentityMismatch,
    StreamClosed,
)
from pairing.protocol.device_status import DeviceState
from pairing.xmpp.connection import (
    CLIENT_STATE,
    STREAM_MANAGEMENT,
    PairingClient,
    can_resume,
    login,
    on_stream_error,
    say_inactive,
)

#: How long a login may take at first (see :func:`run`).
LOGIN_TIMEOUT = 10.0

#: The agent's slixmpp plugins: resumption after a short drop, and client state indication.
_PLUGINS = (STREAM_MANAGEMENT, CLIENT_STATE)

__all__ = ["AgentState", "LoginRefused", "Status", "client_for", "connect", "run"]

log = logging.getLogger(__name__)

ROTATION_RETRY = 60.0  # seconds before retrying a failed rotation
ROTATION_RETRY_THROTTLED = 900.0  # ... when the server said the device asked too often


class LoginRefused(DeviceAgentError):
    """The server refused this device's certificate; retrying will not help."""


STATUS_FILE = "status.json"


class AgentState(StrEnum):
    """What ``device-agent run`` last did (``device-agent status`` shows it)."""

    ONLINE = "online"
    REFUSED = "refused"  # the server refused the login; the agent keeps trying, slowly
    REVOKED = "revoked"  # the server said this device is revoked: the agent stopped for good
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Status:
    state: AgentState
    reason: str
    at: dt.datetime
    pid: int | None = None  # the agent's process (earlier versions did not record it)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "state": self.state.value,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }
        if self.pid is not None:
            data["pid"] = self.pid
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Status:
        state, at = state_files.text(data, "state"), state_files.text(data, "at")
        reason = state_files.text(data, "reason")
        pid = state_files.integer(data, "pid") if "pid" in data else None
        try:
            return cls(AgentState(state), reason, dt.datetime.fromisoformat(at), pid)
        except ValueError:
            raise MalformedRecord(f"unknown state {state!r} or time {at!r}") from None


STATUS = StateFile(STATUS_FILE, Status)
AGENT_LOCK = "agent.lock"


class AlreadyRunning(DeviceAgentError):
    """Another ``device-agent run`` (or bot) holds this state directory."""


def record_status(state_dir: Path, state: AgentState, reason: str = "") -> None:
    """Remember what the agent is doing or why it stopped (``device-agent status``)."""
    STATUS.write(state_dir, Status(state, reason, dt.datetime.now(dt.UTC), os.getpid()))


def read_status(state_dir: Path) -> Status | None:
    """What the agent last did, or None if it never ran; a damaged file raises."""
    return STATUS.read_if_present(state_dir)


@contextmanager
def agent_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's agent lock while the agent runs.

    Two agents on one identity would knock each other off the same resource (RFC 6120
    §7.7.2.2) and race on rotation. The kernel drops the lock when the process dies, however
    it dies, so :func:`agent_running` can tell a recorded "online" from a live agent.
    """
    path = state_dir / AGENT_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DeviceAgentError(f"cannot use {path}: {exc.strerror or exc}") from None
    try:
        if not _try_lock(fd):
            status = read_status(state_dir)
            pid = f" (pid {status.pid})" if status is not None and status.pid else ""
            raise AlreadyRunning(
                f"another device-agent is already running with {state_dir}{pid}; stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    # `device-agent status` holds a shared lock for an instant (agent_running): a start
    # that meets it tries again a few times before it concludes that an agent runs.
    for _ in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.01)
        else:
            return True
    return False


def agent_running(state_dir: Path) -> bool:
    """Whether an agent holds this state directory's lock right now."""
    try:
        fd = os.open(state_dir / AGENT_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops the shared lock taken just now
    return False


def effective_status(state_dir: Path) -> Status | None:
    """The recorded status, corrected by what is true now: an agent that is no longer
    running is not online (it was killed, or the machine restarted), whatever it wrote."""
    status = read_status(state_dir)
    if status is None or status.state is AgentState.REVOKED:
        return status  # revoked stays revoked, running or not
    if agent_running(state_dir):
        return status
    if status.state is AgentState.STOPPED:
        return status
    was = f"not running; it was {status.state.value}" + (
        f" ({status.reason})" if status.reason else ""
    )
    return Status(AgentState.STOPPED, was, status.at, status.pid)


async def connect(
    state_dir: Path, *, plugins: Sequence[str] = (), timeout: float = 10.0
) -> PairingClient:
    """A logged-in slixmpp client for an enrolled device: the few lines a bot needs.

    >>> bot = await device_agent.connect(Path("~/.local/state/device-agent").expanduser())
    >>> bot.send_message(mto="alice@example.org", mbody="hello")
    """
    client = client_for(state_dir, plugins=plugins)
    await login(client, timeout=timeout)
    return client


async def run(
    state_dir: Path,
    *,
    report: Callable[[str], None] = print,
    min_delay: float = 1.0,
    max_delay: float = 60.0,
    stop: asyncio.Event | None = None,
    rotate_before: dt.timedelta | None = None,
    login_timeout: float = LOGIN_TIMEOUT,
) -> None:
    """Stay online until ``stop`` is set; raises :class:`LoginRefused` when retrying is futile.

    A revoked device does not hammer the server: it stops at the revocation (or at the first
    refused login) and records why, until ``device-agent reset``. A device whose certificate
    expired while it was off renews it first (docs/admin.md, "Renewal after expiry"). Online,
    it sends presence with its name, so its owner's clients show it among the account's
    resources. One agent per state directory: a second one raises :class:`AlreadyRunning`.

    A login gets ``login_timeout`` seconds; one that ran out of it doubles the time the next
    attempt gets, up to ``max_delay``, until a login succeeds: a server that is slow under
    load gets more time from its devices, not more abandoned handshakes.
    """
    stop = stop or asyncio.Event()
    if rotate_before is not None:
        rotation.check_margin(state_dir, rotate_before)
    previous = read_status(state_dir)
    if previous is not None and previous.state is AgentState.REVOKED:
        report(f"refused: this device was revoked ({previous.reason}); run device-agent reset")
        raise LoginRefused(previous.reason or "revoked")
    with agent_lock(state_dir):
        await _run(state_dir, report, min_delay, max_delay, stop, rotate_before, login_timeout)


async def _renew_expired(
    state_dir: Path, report: Callable[[str], None], stop: asyncio.Event, max_delay: float
) -> bool:
    """Renew the expired certificate before logging in; False when the loop should wait."""
    report("the certificate has expired; renewing it before logging in ...")
    try:
        await renewal.renew_expired(state_dir)
    except renewal.RenewalError as exc:
        if exc.revoked:
            report(f"refused: {exc}")
            record_status(state_dir, AgentState.REVOKED, str(exc))
            raise LoginRefused(str(exc)) from None
        record_status(state_dir, AgentState.REFUSED, str(exc))
        if exc.final:
            report(f"refused: {exc}")
            raise LoginRefused(str(exc)) from None
        report(f"{exc}; retrying in {max_delay:.0f} s")
        await _sleep_or_stop(stop, max_delay)
        return False
    identity = KeyStore(state_dir).load()
    report(f"renewed the certificate; the new one expires {identity.not_after:%Y-%m-%d %H:%M}")
    return True


def announce(client: PairingClient, state_dir: Path) -> None:
    """Initial presence (RFC 6121 §4.2) with the device's name as its status: the owner's
    own clients list the device among the account's online resources.

    First the device says it is inactive (XEP-0352), as nobody looks at its screen: the
    server then spares it the presence of the account's other resources (every other
    device of a fleet), while its own presence still reaches the owner's clients.
    """
    say_inactive(client)
    client.send_presence(pstatus=ServerSettings.load(state_dir).presence_status)


@dataclass
class _Link:
    """A client and what its handlers tell the loop: the link is gone, the device revoked."""

    client: PairingClient
    gone: asyncio.Event
    revoked: list[str]

    @classmethod
    def of(cls, client: PairingClient) -> _Link:
        link = cls(client, asyncio.Event(), [])
        client.add_event_handler("disconnected", lambda _: link.gone.set())

        def on_closed(error: StreamClosed) -> None:
            # Only the typed condition counts: a text that merely says "revoked" (a device's
            # name, a kick's reason, another server's wording) must not stop it for good.
            if error.revoked:
                link.revoked.append(error.text or "this device was revoked")

        on_stream_error(client, on_closed)
        return link

    @property
    def resumable(self) -> bool:
        """The server may still hold this client's session (XEP-0198 §5)."""
        return can_resume(self.client) and not self.revoked


async def _run(
    state_dir: Path,
    report: Callable[[str], None],
    min_delay: float,
    max_delay: float,
    stop: asyncio.Event,
    rotate_before: dt.timedelta | None,
    login_timeout: float,
) -> None:
    delay = min_delay
    timeout = login_timeout  # doubled after a login that ran out of it, up to max_delay
    link: _Link | None = None  # after a lost link: the client whose session may resume
    while not stop.is_set():
        if renewal.expired(state_dir):
            link = None
            try:
                if not await _renew_expired(state_dir, report, stop, max_delay):
                    continue
            except ServerIdentityMismatch as exc:
                report(f"refused: {exc}")
                record_status(state_dir, AgentState.REFUSED, str(exc))
                raise LoginRefused(str(exc)) from None
            except ConnectionFailed as exc:
                delay = await _back_off(exc, stop, report, min_delay, delay, max_delay)
                continue
        if link is None:
            link = _Link.of(client_for(state_dir, plugins=_PLUGINS))
        client, gone, revoked = link.client, link.gone, link.revoked
        gone.clear()
        try:
            bound = await login(client, timeout=timeout)
        except (AuthenticationFailed, StreamClosed) as exc:
            link = None
            if exc.revoked:
                report(f"refused: {exc}")
                record_status(state_dir, AgentState.REVOKED, exc.text)
                raise LoginRefused(str(exc)) from None
            if isinstance(exc, StreamClosed):
                delay = await _back_off(exc, stop, report, min_delay, delay, max_delay)
                continue
            # A stock server may refuse a revoked device as it refuses any unknown certificate
            # (ejabberd): ask server-ext, over HTTPS and signed with the key, whether it was.
            standing = await device_status(state_dir)
            if standing is not None and standing.state is DeviceState.REVOKED:
                reason = "this device was revoked" + (
                    f": {standing.reason}" if standing.reason else ""
                )
                report(f"refused: {reason}")
                record_status(state_dir, AgentState.REVOKED, reason)
                raise LoginRefused(reason) from None
            # Disabled, expired, superseded or not (yet) registered: an admin may fix that,
            # so keep trying, but only at the slowest pace.
            record_status(state_dir, AgentState.REFUSED, exc.text)
            report(f"refused: {exc}; retrying in {max_delay:.0f} s")
            await _sleep_or_stop(stop, max_delay)
            continue
        except ServerIdentityMismatch as exc:
            report(f"refused: {exc}")
            record_status(state_dir, AgentState.REFUSED, str(exc))
            raise LoginRefused(str(exc)) from None
        except ConnectionFailed as exc:
            if isinstance(exc, LoginTimedOut):
                timeout = min(2 * timeout, max(login_timeout, max_delay))
            delay = await _back_off(exc, stop, report, min_delay, delay, max_delay)
            continue
        delay = min_delay
        timeout = login_timeout
        if not client.resumed:
            announce(client, state_dir)
        record_status(state_dir, AgentState.ONLINE, str(bound))
        # A resumed session kept its presence and what the server queued meanwhile.
        report(f"online as {bound}" + (" (session resumed)" if client.resumed else ""))
        margin = rotate_before if rotate_before is not None else rotation.default_margin(state_dir)
        not_before = 0.0  # after a failed rotation: when to try again (monotonic clock)
        while True:
            wait = (rotation.due(state_dir, margin) - dt.datetime.now(dt.UTC)).total_seconds()
            wait = max(wait, not_before - time.monotonic())
            stopped = asyncio.ensure_future(stop.wait())
            lost = asyncio.ensure_future(gone.wait())
            done, _ = await asyncio.wait(
                {stopped, lost}, timeout=max(wait, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            stopped.cancel()
            lost.cancel()
            if done:
                break
            # The certificate is due: renew it without going offline.
            try:
                successor = await _rotate(state_dir, client)
            except (DeviceAgentError, PairingError) as exc:
                # The server limits how often a device may register a successor
                # (<resource-constraint/>, or rate-limited over HTTPS): wait longer then,
                # instead of being refused again and again. Meanwhile the loop above still
                # notices a stop or a lost link.
                throttled = (
                    isinstance(exc, RequestFailed) and exc.condition == "resource-constraint"
                ) or (isinstance(exc, renewal.RenewalError) and exc.condition == "rate-limited")
                retry = ROTATION_RETRY_THROTTLED if throttled else ROTATION_RETRY
                report(f"rotation failed, will retry in {retry:.0f} s: {exc}")
                not_before = time.monotonic() + max(min_delay, retry)
                continue
            link = _Link.of(successor)
            client, gone, revoked = link.client, link.gone, link.revoked
            announce(client, state_dir)
            identity = KeyStore(state_dir).load()
            report(
                f"rotated the certificate; the new one expires {identity.not_after:%Y-%m-%d %H:%M}"
            )
        if stop.is_set():
            await client.disconnect(wait=2)
            record_status(state_dir, AgentState.STOPPED)
            report("stopped")
            return
        if revoked:
            record_status(state_dir, AgentState.REVOKED, revoked[0])
            report(f"refused: {revoked[0]}")
            raise LoginRefused(revoked[0])
        if not link.resumable:
            link = None
        report("connection lost; reconnecting")
        await _sleep_or_stop(stop, random.uniform(0, min_delay))


async def _rotate(state_dir: Path, client: PairingClient) -> PairingClient:
    """Register a successor certificate and log in with it; returns the new client.

    Over the device's own session with XEP-0257 on the embedded server; over server-ext's
    HTTPS API for a device enrolled with a v2 URI (stock servers have no XEP-0257). Either
    way the new login takes the resource over (RFC 6120 §7.7.2.2) without going offline.
    """
    if not ServerSettings.load(state_dir).over_https:
        return await rotation.rotate(
            state_dir, client, lambda: client_for(state_dir, plugins=_PLUGINS)
        )
    await renewal.successor_over_https(state_dir, expired=False)
    successor = client_for(state_dir, plugins=_PLUGINS)
    await login(successor)
    return successor


async def _back_off(
    exc: ConnectionFailed,
    stop: asyncio.Event,
    report: Callable[[str], None],
    min_delay: float,
    delay: float,
    max_delay: float,
) -> float:
    """Wait before reconnecting after ``exc``; returns the next delay's upper bound."""
    # Full jitter (AWS architecture blog) keeps a fleet from reconnecting in lockstep.
    wait = random.uniform(min_delay, delay)
    report(f"offline: {exc}; retrying in {wait:.0f} s")
    await _sleep_or_stop(stop, wait)
    return min(max_delay, delay * 2)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
