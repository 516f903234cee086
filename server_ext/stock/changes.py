"""Bringing a stock server in step with one change of the registry.

``server-ext serve`` does it for every change it hears of (the admin channel, the HTTPS face,
the handlers). When serve is not running, the admin CLI does it itself with the same code:
otherwise a device revoked meanwhile would stay in ejabberd's trust file, and its live
session open, until serve started again, while the registry already says revoked.
"""

from __future__ import annotations

from collections.abc import Sequence

from server_ext.config import ServerConfig
from server_ext.model import DeviceState
from server_ext.stock.base import StockServer, context_for, load_kind
from server_ext.storage.registry import Registry


def revocation_reason(name: str, reason: str | None) -> str:
    """What a revoked device's closed session reads (the stream error's text)."""
    return f"the device {name!r} was revoked: " + (reason or "no reason given")


async def apply_device_change(
    stock: StockServer, registry: Registry, device_id: int | None, *, close: bool = True
) -> int:
    """Close a revoked device's sessions (when ``close``), then sync the trust set; returns
    how many sessions were closed."""
    closed = 0
    device = registry.devices.get(device_id) if device_id is not None else None
    if device is not None and device.state is DeviceState.REVOKED and close:
        closed = await stock.close_device(
            device,
            registry.devices.chain(device.id),
            revocation_reason(device.name, device.revoked_reason),
        )
    await stock.sync_trust()
    return closed


async def apply_without_serve(
    config: ServerConfig, registry: Registry, secret: str, device_ids: Sequence[int]
) -> int:
    """:func:`apply_device_change` for each of ``device_ids`` (none: a certificate was
    added, only the trust set changes) from a process of its own, serve not running: the
    kind is started for these changes only. Raises StockError when the server did not
    answer."""
    stock = load_kind(config.stock_kind, context_for(config, registry, secret))
    await stock.start()
    try:
        closed = 0
        for device_id in device_ids:
            closed += await apply_device_change(stock, registry, device_id)
        await stock.sync_trust()
        return closed
    finally:
        await stock.stop()
