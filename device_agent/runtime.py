"""The device at work: log in with its certificate, stay online, reconnect with backoff."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from device_agent import rotation
from device_agent.enrollment import ServerSettings
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    PairingError,
    RequestFailed,
    ServerIdentityMismatch,
)
from pairing.secure_files import write_private
from pairing.xmpp.connection import (
    PairingClient,
    ServerAddress,
    TrustAnchor,
    login,
    make_client,
)

log = logging.getLogger(__name__)

ROTATION_RETRY = 60.0  # seconds before retrying a failed rotation
ROTATION_RETRY_THROTTLED = 900.0  # ... when the server said the device asked too often


class LoginRefused(DeviceAgentError):
    """The server refused this device's certificate; retrying will not help."""


STATUS_FILE = "status.json"


def record_status(state_dir: Path, state: str, reason: str = "") -> None:
    """Remember why the device stopped (shown by ``device-agent status``)."""
    payload = {"state": state, "reason": reason, "at": dt.datetime.now(dt.UTC).isoformat()}
    write_private(state_dir / STATUS_FILE, json.dumps(payload).encode())


def read_status(state_dir: Path) -> dict[str, str] | None:
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _revocation(error: Any) -> str | None:
    """The server's reason if a stream error says this certificate was revoked."""
    text = str(error["text"] or "")
    if error["condition"] in ("reset", "not-authorized") and "revoked" in text:
        return text
    return None


def client_for(state_dir: Path, *, plugins: Sequence[str] = ()) -> PairingClient:
    """A slixmpp client for this enrolled device (EXTERNAL, pinned server), not yet connected."""
    store = KeyStore(state_dir)
    identity = store.load()
    settings = ServerSettings.load(state_dir)
    return make_client(
        settings.jid,
        server=ServerAddress(settings.host, settings.port),
        trust=TrustAnchor(fingerprint=settings.fingerprint),
        certfile=identity.cert_path,
        keyfile=identity.key_path,
        plugins=plugins,
    )


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
) -> None:
    """Stay online until ``stop`` is set; raises :class:`LoginRefused` when retrying is futile.

    A revoked device does not hammer the server: it stops at the revocation (or at the first
    refused login) and records why, until ``device-agent reset``.
    """
    stop = stop or asyncio.Event()
    if rotate_before is not None:
        rotation.check_margin(state_dir, rotate_before)
    delay = min_delay
    previous = read_status(state_dir)
    if previous is not None and previous.get("state") == "revoked":
        report(
            f"refused: this device was revoked ({previous.get('reason')}); run device-agent reset"
        )
        raise LoginRefused(previous.get("reason") or "revoked")
    while not stop.is_set():
        client = client_for(state_dir)
        gone = asyncio.Event()
        revoked: list[str] = []
        client.add_event_handler("disconnected", lambda _, gone=gone: gone.set())

        def on_stream_error(error: Any, revoked: list[str] = revoked) -> None:
            reason = _revocation(error)
            if reason is not None:
                revoked.append(reason)

        client.add_event_handler("stream_error", on_stream_error)
        try:
            bound = await login(client)
        except AuthenticationFailed as exc:
            if "revoked" in exc.text:
                report(f"refused: {exc}")
                record_status(state_dir, "revoked", exc.text)
                raise LoginRefused(str(exc)) from None
            # Disabled, expired or not (yet) registered: an admin may fix that, so keep
            # trying, but only at the slowest pace.
            record_status(state_dir, "refused", exc.text)
            report(f"refused: {exc}; retrying in {max_delay:.0f} s")
            await _sleep_or_stop(stop, max_delay)
            continue
        except ServerIdentityMismatch as exc:
            report(f"refused: {exc}")
            record_status(state_dir, "refused", str(exc))
            raise LoginRefused(str(exc)) from None
        except ConnectionFailed as exc:
            # Full jitter (AWS architecture blog) keeps a fleet from reconnecting in lockstep.
            wait = random.uniform(min_delay, delay)
            report(f"offline: {exc}; retrying in {wait:.0f} s")
            delay = min(max_delay, delay * 2)
            await _sleep_or_stop(stop, wait)
            continue
        delay = min_delay
        record_status(state_dir, "online", str(bound))
        report(f"online as {bound}")
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
                successor = await rotation.rotate(state_dir, client, lambda: client_for(state_dir))
            except (DeviceAgentError, PairingError) as exc:
                # The server limits how often a device may register a successor
                # (<resource-constraint/>): wait longer then, instead of being refused again
                # and again. Meanwhile the loop above still notices a stop or a lost link.
                throttled = isinstance(exc, RequestFailed) and exc.condition == (
                    "resource-constraint"
                )
                retry = ROTATION_RETRY_THROTTLED if throttled else ROTATION_RETRY
                report(f"rotation failed, will retry in {retry:.0f} s: {exc}")
                not_before = time.monotonic() + max(min_delay, retry)
                continue
            client, gone = successor, asyncio.Event()
            client.add_event_handler("disconnected", lambda _, gone=gone: gone.set())
            client.add_event_handler("stream_error", on_stream_error)
            identity = KeyStore(state_dir).load()
            report(
                f"rotated the certificate; the new one expires {identity.not_after:%Y-%m-%d %H:%M}"
            )
        if stop.is_set():
            await client.disconnect(wait=2)
            record_status(state_dir, "stopped")
            report("stopped")
            return
        if revoked:
            record_status(state_dir, "revoked", revoked[0])
            report(f"refused: {revoked[0]}")
            raise LoginRefused(revoked[0])
        report("connection lost; reconnecting")
        await _sleep_or_stop(stop, random.uniform(0, min_delay))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
