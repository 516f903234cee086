"""Conditions this project adds to standard XMPP errors, so that clients need not read text.

RFC 6120 lets a stream error carry an application-specific condition element (§4.9.4); the
server puts the same element into the SASL ``<failure/>`` that refuses a revoked device.
Clients that do not know the namespace ignore it and still see ``<reset/>`` or
``<not-authorized/>`` with a human-readable text.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final

DEVICE_NS: Final = "urn:xmpp-device-pairing:device:0"
#: This device was revoked: it will never log in again, so it must stop trying.
REVOKED: Final = f"{{{DEVICE_NS}}}revoked"


def device_revoked() -> ET.Element:
    """``<revoked xmlns='urn:xmpp-device-pairing:device:0'/>``."""
    return ET.Element(REVOKED)


def says_revoked(element: ET.Element) -> bool:
    """True when a stream error or SASL failure carries the revoked condition."""
    return element.find(REVOKED) is not None
