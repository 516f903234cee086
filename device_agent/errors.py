"""The error root of the ``device_agent`` package."""

from __future__ import annotations


class DeviceAgentError(Exception):
    """Base class for every error raised by ``device_agent``."""
