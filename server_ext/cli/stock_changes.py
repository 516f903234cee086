"""Telling a stock server about a registry change from the admin CLI, when serve is not
running (``server_ext.stock.changes``): a revoked device is cut off at once, not at serve's
next start."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from server_ext.cli.settings import Settings
from server_ext.errors import ServerExtError
from server_ext.net.data_directory import stock_secret
from server_ext.stock.base import StockError, kind_module
from server_ext.stock.changes import apply_without_serve
from server_ext.storage.registry import Registry


def ready_to_tell(settings: Settings) -> None:
    """Import the stock kind before a change is saved: should serve be down, the CLI closes
    the device's sessions right after the change, not a slow import later."""
    if not settings.config.stock_kind.embedded:
        kind_module(settings.config.stock_kind)


def tell_stock_server(
    settings: Settings, registry: Registry, device_ids: Sequence[int], *, what: str
) -> int | None:
    """Bring the stock server in step with ``device_ids``' states (and the trust set) from
    this process; how many sessions were closed, or None for the embedded server (it reads
    the registry at every login). ``what`` names the saved change for the error message."""
    config = settings.config
    if config.stock_kind.embedded:
        return None
    secret = stock_secret(config.stock_secret_path) if config.https_port is not None else ""
    try:
        return asyncio.run(apply_without_serve(config, registry, secret, device_ids))
    except StockError as exc:
        raise ServerExtError(
            f"{what} in the registry, but {config.stock_kind.value} was not told ({exc}); "
            "start server-ext serve to bring it in step"
        ) from None
