"""The device at work: log in with its certificate, stay online, reconnect with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from device_agent.enrollment import ServerSettings
from device_agent.errors import DeviceAgentError
from device_agent.keystore import KeyStore
from pairing.errors import AuthenticationFailed, ConnectionFailed, ServerIdentityMismatch
from pairing.xmpp.connection import (
    PairingClient,
    ServerAddress,
    TrustAnchor,
    login,
    make_client,
)

log = logging.getLogger(__name__)


class LoginRefused(DeviceAgentError):
    """The server refused this device's certificate; retrying will not help."""


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
) -> None:
    """Stay online until ``stop`` is set; raises :class:`LoginRefused` when retrying is futile."""
    stop = stop or asyncio.Event()
    delay = min_delay
    while not stop.is_set():
        client = client_for(state_dir)
        gone = asyncio.Event()
        client.add_event_handler("disconnected", lambda _, gone=gone: gone.set())
        try:
            bound = await login(client)
        except (AuthenticationFailed, ServerIdentityMismatch) as exc:
            report(f"refused: {exc}")
            raise LoginRefused(str(exc)) from None
        except ConnectionFailed as exc:
            # Full jitter (AWS architecture blog) keeps a fleet from reconnecting in lockstep.
            wait = random.uniform(min_delay, delay)
            report(f"offline: {exc}; retrying in {wait:.0f} s")
            delay = min(max_delay, delay * 2)
            await _sleep_or_stop(stop, wait)
            continue
        delay = min_delay
        report(f"online as {bound}")
        stopped = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(gone.wait())
        await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        lost.cancel()
        if stop.is_set():
            await client.disconnect(wait=2)
            report("stopped")
            return
        report("connection lost; reconnecting")
        await _sleep_or_stop(stop, random.uniform(0, min_delay))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
