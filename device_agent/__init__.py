"""The device side: key store, enrollment and the runtime connection."""

from device_agent.errors import DeviceAgentError

__all__ = ["DeviceAgentError"]
