"""What the stream parser (:mod:`server_ext.wire.xmlparser`) hands up, and how it fails.

Plain values, so the stream state machine and its tests can name them without the parser.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from server_ext.errors import ServerExtError
from server_ext.wire import namespaces as ns

__all__ = [
    "ElementReceived",
    "ParserEvent",
    "StreamClosed",
    "StreamOpened",
    "StreamXMLError",
    "XMLCondition",
]


class XMLCondition(StrEnum):
    """The stream error conditions this parser raises (RFC 6120 §4.9.3)."""

    INVALID_NAMESPACE = "invalid-namespace"  # §4.9.3.10
    NOT_WELL_FORMED = "not-well-formed"  # §4.9.3.13
    POLICY_VIOLATION = "policy-violation"  # §4.9.3.14
    RESTRICTED_XML = "restricted-xml"  # §4.9.3.18
    UNSUPPORTED_ENCODING = "unsupported-encoding"  # §4.9.3.22


class StreamXMLError(ServerExtError):
    """The peer's XML ends the stream with ``condition``; ``text`` is safe to send back."""

    def __init__(self, condition: XMLCondition, text: str) -> None:
        super().__init__(f"{condition}: {text}")
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer's stream header (RFC 6120 §4.7); ``xml:lang`` is under that key."""

    attributes: Mapping[str, str]
    content_namespace: str = ns.CLIENT


@dataclass(frozen=True, slots=True)
class ElementReceived:
    """A complete top-level child of the stream: a stanza or a nonza such as ``<starttls/>``."""

    element: ET.Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer sent ``</stream:stream>``."""


ParserEvent = StreamOpened | ElementReceived | StreamClosed
