"""The device side: key store, enrollment and the runtime connection."""

from device_agent.errors import DeviceAgentError
from device_agent.runtime import connect

__all__ = ["DeviceAgentError", "connect"]
